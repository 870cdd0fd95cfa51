"""What every string a user gives the builder must be: one line of printable text.

Two boundaries call this, and only they: the inventory loader (every YAML key
and value) and the command line (every argument).  A newline in a MAC address,
an SSH key or a changelog message would otherwise reach netplan, grub,
authorized_keys or debian/changelog as a second line nobody validated.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
import urllib.parse

# C0 controls (newline, carriage return, tab, NUL...), DEL, C1 controls
# (U+0085 NEXT LINE among them), the Unicode line and paragraph separators,
# and the bidirectional overrides and isolates that make text read other
# than it is.
# A lone surrogate is a byte that was not UTF-8 (Python's surrogateescape of
# a Latin-1 argument): it cannot be written to a UTF-8 file.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMES = {0x00: "NUL", 0x09: "tab", 0x0A: "newline", 0x0D: "carriage return", 0x7F: "DEL"}

# The path of an http(s) URL: plain characters only (no query, no fragment).
URL_PATH = re.compile(r"(/[A-Za-z0-9._~/%+-]*)?")
# A DNS name: dot-separated labels of letters, digits and inner hyphens (253 characters at most).
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(\.{_LABEL})*\.?")

# How much of a refused value an error message shows: a value may be an alias
# bomb (a list of 10^9 items made of a few nested aliases) or a megabyte string.
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel = 1
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 60
SHOWN_LIMIT = 80


def control_problem(value: str) -> str | None:
    """Why ``value`` is not one line of printable text (None when it is)."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        byte = f" (byte 0x{code - 0xDC00:02X})" if 0xDC80 <= code <= 0xDCFF else ""
        return f"text that is not UTF-8{byte} at position {found.start() + 1} is not allowed"
    name = _NAMES.get(code)
    what = f"a control character (U+{code:04X}{', ' + name if name else ''})"
    return f"{what} at position {found.start() + 1} is not allowed"


def shown(value: object) -> str:
    """``value`` for an error message: its repr, bounded in depth, items and length, whatever it is."""
    if isinstance(value, str):
        return repr(value) if len(value) <= SHOWN_LIMIT else f"{value[: SHOWN_LIMIT - 3]!r}..."
    text = _SHOWN.repr(value)
    return text if len(text) <= SHOWN_LIMIT else f"{text[: SHOWN_LIMIT - 3]}..."


def _host_ok(host: str) -> bool:
    """A DNS name, an IPv4 address, or an [IPv6] literal."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return isinstance(ipaddress.ip_address(host[1:-1]), ipaddress.IPv6Address)
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", host):  # all digits and dots: an IPv4 address or nothing
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return bool(DNS_NAME.fullmatch(host))


def http_url(value: str) -> str:
    """``value`` without a trailing slash, or ValueError when it is not one plain http(s) URL: a host
    (DNS name, IPv4 or [IPv6]), an optional port 1-65535, a plain path; no user, query or fragment."""
    if control_problem(value) or not value.isascii():
        raise ValueError(value)
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(value) from None
    netloc = parts.netloc
    host, colon, port_text = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not colon:
        host = netloc
    if (
        parts.scheme not in ("http", "https")
        or not value.startswith(f"{parts.scheme}://")
        or "@" in netloc
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
        or not _host_ok(host)
        or (colon and not (port_text.isdigit() and port is not None and 1 <= port <= 65535))
        or not URL_PATH.fullmatch(parts.path)
    ):
        raise ValueError(value)
    return value.rstrip("/")


def is_http_url(value: str) -> bool:
    try:
        http_url(value)
    except ValueError:
        return False
    return True
