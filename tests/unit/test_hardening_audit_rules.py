"""polymarket-hardening's audit rules, read as files (the VM tier loads them in a real kernel)."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packages" / "polymarket-hardening" / "audit.rules"
BOT_SYSUSERS = REPO / "packages" / "polymarket-bot" / "debian-overlay" / "polymarket-bot.sysusers"

# Directories every Debian and Ubuntu system has (base-files, usrmerge). A watch
# whose parent directory is missing stops auditctl at that line: no rule after
# it loads, audit-rules.service fails and auditd does not start.
ALWAYS_PRESENT = {"/etc", "/var/lib", "/usr/bin", "/usr/sbin"}


def watches() -> dict[str, str]:
    """path -> key of every -w rule."""
    out = {}
    for line in RULES.read_text().splitlines():
        words = line.split()
        if words[:1] == ["-w"]:
            out[words[1]] = words[words.index("-k") + 1]
    return out


def test_every_watch_has_a_parent_directory_that_always_exists() -> None:
    for path in watches():
        parent = str(Path(path.rstrip("/")).parent)
        assert parent in ALWAYS_PRESENT, f"{path}: parent {parent} is not a directory every host has"


def test_the_bot_files_watch_is_the_bots_home() -> None:
    """The bot's data directory is its home in sysusers.d (it was /home/polymarket-bot/, which never exists)."""
    (home,) = [shlex.split(line)[4] for line in BOT_SYSUSERS.read_text().splitlines() if line.startswith("u ")]
    files = [path for path, key in watches().items() if key == "polymarket_files"]
    assert files == [home.rstrip("/") + "/"]
