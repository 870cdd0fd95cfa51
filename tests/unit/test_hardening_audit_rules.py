"""polymarket-hardening's audit rules, read as files (the VM tier loads them in a real kernel)."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packages" / "polymarket-hardening" / "audit.rules"
BOT_SYSUSERS = REPO / "packages" / "polymarket-bot" / "debian-overlay" / "polymarket-bot.sysusers"

# Directories every Debian and Ubuntu system has (base-files, usrmerge, systemd's
# /run, libpam-modules' /etc/security, Priority: required). A watch whose parent
# directory is missing stops auditctl at that line: no rule after it loads,
# audit-rules.service fails and auditd does not start.
ALWAYS_PRESENT = {"/etc", "/var/lib", "/usr/bin", "/usr/sbin", "/var/log", "/run", "/etc/security"}

# The keys of CIS Ubuntu 24.04 Level 1 section 6.2.3 this package ships (issue 12).
CIS_KEYS = {"scope", "user_emulation", "time-change", "identity", "perm_mod", "mounts", "session", "logins",
            "delete", "kernel_modules"}

# Syscall numbers of amd64 (b64) and i386 (b32) for the names the rules use: auditctl -l prints a rule's
# syscalls in this order, and the rules are written as it prints them (the VM tier compares the two).
SYSCALLS = {
    "b64": {"execve": 59, "rename": 82, "unlink": 87, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93,
            "lchown": 94, "adjtimex": 159, "settimeofday": 164, "mount": 165, "init_module": 175,
            "delete_module": 176, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
            "lremovexattr": 198, "fremovexattr": 199, "clock_settime": 227, "fchownat": 260, "unlinkat": 263,
            "renameat": 264, "fchmodat": 268, "finit_module": 313, "socket": 41},
    "b32": {"unlink": 10, "execve": 11, "chmod": 15, "lchown": 16, "mount": 21, "rename": 38, "settimeofday": 79,
            "fchmod": 94, "fchown": 95, "adjtimex": 124, "init_module": 128, "delete_module": 129, "chown": 182,
            "setxattr": 226, "lsetxattr": 227, "fsetxattr": 228, "removexattr": 235, "lremovexattr": 236,
            "fremovexattr": 237, "clock_settime": 264, "fchownat": 298, "unlinkat": 301, "renameat": 302,
            "fchmodat": 306, "finit_module": 350},
}  # fmt: skip


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


def syscall_rules() -> list[tuple[str, list[str], str, str]]:
    """(arch, syscalls, the rest of the rule after the syscalls, key) of every -a rule with an arch."""
    out = []
    for line in RULES.read_text().splitlines():
        words = line.split()
        if words[:1] == ["-a"] and ("arch=b64" in line or "arch=b32" in line):
            arch = line.split("arch=")[1].split()[0]
            syscalls = words[words.index("-S") + 1].split(",")
            rest = " ".join(words[words.index("-S") + 2:])
            out.append((arch, syscalls, rest.replace("-k ", "key="), words[words.index("-k") + 1]))
    return out


def test_cis_audit_categories_are_all_there() -> None:
    keys = set(watches().values()) | {key for *_, key in syscall_rules()}
    for line in RULES.read_text().splitlines():
        if line.startswith("-a ") and "-k " in line:
            keys.add(line.split("-k ")[1].split()[0])
    assert keys >= CIS_KEYS, CIS_KEYS - keys


def test_every_cis_syscall_rule_covers_both_abis() -> None:
    """A 32-bit program must not get around a rule: every b64 rule of the CIS keys has its b32 twin."""
    rules = {(arch, frozenset(sc), rest) for arch, sc, rest, key in syscall_rules() if key in CIS_KEYS}
    for arch, syscalls, rest in rules:
        twin = "b32" if arch == "b64" else "b64"
        assert (twin, syscalls, rest) in rules, f"{arch} {sorted(syscalls)} {rest}: no {twin} rule"


def test_syscalls_are_written_in_the_order_auditctl_lists_them() -> None:
    for arch, syscalls, _, _ in syscall_rules():
        numbers = [SYSCALLS[arch][name] for name in syscalls]
        assert numbers == sorted(numbers), f"{arch}: {','.join(syscalls)}"
