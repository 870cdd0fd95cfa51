"""The settings table of config.py, the man page, README.rst and the shipped env file agree.

Each key of ``config.SETTINGS`` (what ``polymarket-bot --help`` lists) must have an entry
with its default in the man page's SETTINGS section and in README.rst's Settings list; the
keys an operator is expected to set must be in the shipped ``.env`` (set or commented out),
with the default as value and no secret in it. A key added to config.py without its
documentation, a default changed in one place only, or a key renamed fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from polymarket_bot import config

PKG = ROOT / "packages" / "polymarket-bot"
MAN = PKG / "debian-overlay" / "polymarket-bot.1"
README = PKG / "README.rst"
ENV = PKG / "debian-overlay" / "env" / ".env"

SECRETS = {"PRIVATE_KEY", "API_SECRET_KEY", "ENCRYPTION_KEY"}
# What an operator sets (or should know to set) on a new host: the template names each one.
OPERATOR_KEYS = {
    "COPY_LEADERS", "TRADING_MODE", "WALLET_ADDRESS", "SIGNATURE_TYPE", "BIND_ADDRESS",
    "DASHBOARD_PORT", "METRICS_PORT", "MAX_POSITION_SIZE", "STOP_LOSS_PERCENTAGE",
    # account-level risk limits and the kill switch (issue 9)
    "MAX_DAILY_LOSS_USD", "MAX_TOTAL_EXPOSURE_USD", "MAX_LEADER_EXPOSURE_USD", "KILL_SWITCH_FILE",
    "MAX_CONSECUTIVE_ORDER_ERRORS", "CIRCUIT_BREAKER_SECONDS",
}
DEFAULTS = {s.key: s.default for s in config.SETTINGS}

_MAN_ENTRY = re.compile(r'^\.BR ([A-Z][A-Z0-9_]*) " \(default (.*)\)"$')
_README_ENTRY = re.compile(r"^\* ``([A-Z][A-Z0-9_]*)``(?: \(``(.*)``\))?$")
_ENV_ENTRY = re.compile(r"^(#)?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def _section(lines: list[str], start: str, end: re.Pattern[str]) -> list[str]:
    assert start in lines, f"no {start!r} section"
    out: list[str] = []
    for line in lines[lines.index(start) + 1:]:
        if end.match(line):
            break
        out.append(line)
    return out


def man_entries(text: str) -> dict[str, str]:
    """KEY -> default of each ``.BR KEY " (default X)"`` tag of the SETTINGS section (roff unescaped)."""
    out: dict[str, str] = {}
    for line in _section(text.splitlines(), ".SH SETTINGS", re.compile(r"^\.SH ")):
        m = _MAN_ENTRY.match(line)
        if m:
            default = m.group(2).replace("\\-", "-").replace("\\\\", "\\")
            out[m.group(1)] = "" if default == "empty" else default
    return out


def readme_entries(text: str) -> dict[str, str]:
    """KEY -> default of each ``* ``KEY`` (``X``)`` item of the Settings section."""
    lines = text.splitlines()
    assert "Settings" in lines, "no Settings section"
    body = lines[lines.index("Settings") + 2:]  # after the title's underline
    out: dict[str, str] = {}
    for line, below in zip(body, [*body[1:], ""], strict=True):
        if re.fullmatch(r"-{3,}|={3,}", below):  # the next section's title
            break
        m = _README_ENTRY.match(line)
        if m:
            out[m.group(1)] = m.group(2) or ""
    return out


def env_entries(text: str) -> dict[str, tuple[str, bool]]:
    """KEY -> (value, commented out) of each ``KEY=value`` or ``#KEY=value`` line."""
    out: dict[str, tuple[str, bool]] = {}
    for line in text.splitlines():
        m = _ENV_ENTRY.match(line)
        if m:
            out[m.group(2)] = (m.group(3), bool(m.group(1)))
    return out


def drift(documented: dict[str, str], keys: dict[str, str]) -> list[str]:
    """What the documentation says that config.py does not: missing keys, stale keys, other defaults."""
    out = [f"{k}: missing" for k in keys if k not in documented]
    out += [f"{k}: not a key of config.py" for k in documented if k not in keys]
    out += [f"{k}: default {documented[k]!r}, config.py says {keys[k]!r}"
            for k in keys if k in documented and documented[k] != keys[k]]
    return out


def test_man_page_lists_every_key_with_its_default() -> None:
    assert drift(man_entries(MAN.read_text(encoding="utf-8")), DEFAULTS) == []


def test_readme_lists_every_key_with_its_default() -> None:
    assert drift(readme_entries(README.read_text(encoding="utf-8")), DEFAULTS) == []


def test_checkers_see_a_missing_key_a_stale_key_and_a_changed_default() -> None:
    """The checks above can fail: a key dropped from, added to or changed in the docs is reported."""
    man = MAN.read_text(encoding="utf-8")
    dropped = "\n".join(ln for ln in man.splitlines() if "KILL_SWITCH_FILE \" (default" not in ln)
    assert drift(man_entries(dropped), DEFAULTS) == ["KILL_SWITCH_FILE: missing"]
    stale = man.replace('.BR LEASE_NODE " (default empty)"', '.BR LEASE_NAME " (default empty)"')
    assert drift(man_entries(stale), DEFAULTS) == ["LEASE_NODE: missing", "LEASE_NAME: not a key of config.py"]
    readme = README.read_text(encoding="utf-8").replace("* ``MAX_CONSECUTIVE_ORDER_ERRORS`` (``5``)",
                                                        "* ``MAX_CONSECUTIVE_ORDER_ERRORS`` (``3``)")
    assert drift(readme_entries(readme), DEFAULTS) == [
        "MAX_CONSECUTIVE_ORDER_ERRORS: default '3', config.py says '5'"]


def test_env_template_names_the_operator_keys_with_their_defaults_and_no_secret() -> None:
    entries = env_entries(ENV.read_text(encoding="utf-8"))
    assert sorted(OPERATOR_KEYS - entries.keys()) == []
    assert sorted(entries.keys() - config.KNOWN) == []
    by_key = {s.key: s for s in config.SETTINGS}
    for key, (value, _commented) in entries.items():
        if key in SECRETS:
            assert value in config.PLACEHOLDER_KEYS | config.PLACEHOLDER_SECRETS, f"{key} holds a value"
        else:
            s = by_key[key]
            assert s.parse(value) == s.parse(s.default), f"{key}={value}: config.py's default is {s.default!r}"
    # the risk limits are there for the operator to find, commented out at their defaults
    for key in ("MAX_DAILY_LOSS_USD", "MAX_TOTAL_EXPOSURE_USD", "MAX_LEADER_EXPOSURE_USD",
                "KILL_SWITCH_FILE", "MAX_CONSECUTIVE_ORDER_ERRORS", "CIRCUIT_BREAKER_SECONDS"):
        assert entries[key] == (DEFAULTS[key], True)


def test_env_template_is_a_valid_configuration(tmp_path: Path) -> None:
    """The shipped file loads as it is: dry-run, no warning about a secret in it."""
    env = tmp_path / ".env"
    env.write_bytes(ENV.read_bytes())
    env.chmod(0o600)
    cfg = config.load(env, {})
    assert cfg.mode is config.TradingMode.DRY_RUN
    assert cfg.kill_switch_file == Path("/etc/polymarket/kill-switch")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings() -> None:
    r = subprocess.run(["groff", "-man", "-ww", "-z", str(MAN)], capture_output=True, text=True, check=False)
    assert (r.returncode, r.stderr) == (0, "")
