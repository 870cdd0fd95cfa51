"""What every string a user gives the builder must be: one line of printable text.

Two boundaries call this, and only they: the inventory loader (every YAML key
and value) and the command line (every argument).  A newline in a MAC address,
an SSH key or a changelog message would otherwise reach netplan, grub,
authorized_keys or debian/changelog as a second line nobody validated.
"""

from __future__ import annotations

import re

# C0 controls (newline, carriage return, tab, NUL...), DEL, C1 controls
# (U+0085 NEXT LINE among them), the Unicode line and paragraph separators,
# and the bidirectional overrides and isolates that make text read other
# than it is.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMES = {0x00: "NUL", 0x09: "tab", 0x0A: "newline", 0x0D: "carriage return", 0x7F: "DEL"}

# An http(s) URL of a host (name, IPv4 or [IPv6], optional port) and a plain path.
HTTP_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/%+-]*)?")


def control_problem(value: str) -> str | None:
    """Why ``value`` is not one line of printable text (None when it is)."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    code = ord(found.group())
    name = _NAMES.get(code)
    what = f"a control character (U+{code:04X}{', ' + name if name else ''})"
    return f"{what} at position {found.start() + 1} is not allowed"


def http_url(value: str) -> str:
    """``value`` without a trailing slash, or ValueError when it is not a plain http(s) URL."""
    if not HTTP_URL.fullmatch(value):
        raise ValueError(value)
    return value.rstrip("/")
