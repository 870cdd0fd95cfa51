"""Outside review of issue 7 item 10 (builder inputs), as an attacker and a new operator.

Every test here was a defect found on the code of the time, first marked xfail(strict=True); each
passes since its fix.  The bad inventories are under data/attack/ (their first line says what was
wrong).
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import cli, inventory, project, text
from builder.cli import main
from builder.errors import InputError

REPO = Path(__file__).resolve().parents[2]
ATTACK = Path(__file__).resolve().parent / "data" / "attack"
GOOD = REPO / "autoinstall" / "inventory.yaml"
TEST_KEY = Path(__file__).resolve().parent / "data" / "inventories" / "test-archive-keyring.asc"


def _bad(name: str, reason: str) -> object:
    """A sample refused since the fix; ``reason`` says what it did before."""
    return pytest.param(name, id=name)


# Each is accepted today (exit 0, media written) or ends in a traceback; each should be one
# "error: FILE:LINE: ..." line, exit 2, nothing written.
BAD = [
    _bad("host-named-pxe", "Low: host 'pxe' puts pxe/user-data, pxe/seed.iso into the PXE tree (TFTP root)"),
    _bad("host-named-local", "Low: host 'local' duplicates GRUB --id local; its MAC boots the local disk"),
    _bad("host-named-ignore", "Low: dnsmasq reads dhcp-host=MAC,ignore,... as 'ignore this MAC'"),
    _bad("host-named-45m", "Low: dnsmasq reads a host name 45m as a lease time"),
    _bad("host-named-digits", "Low: dnsmasq reads an all-digit host name as a lease time"),
    _bad(
        "interface-alias",
        "Medium: builder INTERFACE takes ':' (and '.', '..'), polymarket-ha check-value refuses them: "
        "the install fails in its last late-command, after the disks were erased",
    ),
    _bad("interface-dotdot", "Medium: interface '..' accepted (dnsmasq interface=.., polymarket-ha refuses)"),
    _bad(
        "admin-is-group-operator",
        "Medium: admin.user equal to an existing group (operator, staff, users, adm, sudo...): cloud-init's "
        "useradd fails at first boot, no admin, password and root logins off: locked out",
    ),
    _bad("admin-is-group-sudo", "Medium: admin.user sudo: useradd fails (group sudo exists): locked out"),
    _bad(
        "admin-is-dhcpcd",
        "Medium: dhcpcd (dhcpcd-base, Ubuntu 24.04's DHCP client account) is not in SYSTEM_ACCOUNTS: "
        "cloud-init makes the existing service account the NOPASSWD sudoer",
    ),
    _bad("disk-twice-by-another-name", "Low: /dev/sda and /dev/./sda: RAID 1 over one disk"),
    _bad("disk-dotdot", "Low: DISK takes '..': /dev/../etc/passwd given to curtin as a disk"),
    _bad(
        "ecdsa-key-type-only",
        "Low/Medium: ECDSA/sk keys are checked for their type string only; sshd ignores the key: "
        "a sole such key locks the admin out",
    ),
    _bad("apt-url-garbage-host", "Low: http_url's host class [A-Za-z0-9.:\\[\\]-]+ takes ']:[:'"),
    _bad("apt-url-bad-port", "Low: port 99999 accepted; apt-get update fails in the installer"),
    _bad("huge-integer", "Low: a number over 4300 digits: PyYAML's int() ValueError escapes as a traceback"),
    _bad("invalid-utf8", "Low: a non-UTF-8 inventory: UnicodeDecodeError traceback, exit 1"),
]


@pytest.mark.parametrize("name", BAD)
def test_bad_inventory_is_one_line_exit_2_nothing_written(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ATTACK)
    out = tmp_path / "out"
    code = main(["-q", "autoinstall", "--inventory", f"{name}.yaml", "--output", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2, err
    lines = [line for line in err if line.startswith(("error:", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}.yaml:"), err
    assert not out.exists()


def test_a_non_string_host_name_error_has_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ATTACK)
    code = main(["-q", "autoinstall", "--inventory", "host-named-null.yaml", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and re.match(r"error: host-named-null\.yaml:[0-9]+: ", err[0]), err


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_alias_bomb_in_a_refused_value_is_one_line_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "builder", "-q", "autoinstall", "--inventory",
             str(ATTACK / "alias-bomb-in-error-message.yaml"), "--output", str(tmp_path / "o")],
            cwd=REPO, capture_output=True, text=True, timeout=20, preexec_fn=_limit_memory,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("still running after 20 s")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-500:]
    assert time.monotonic() - started < 20


def test_output_directory_holding_other_files_is_not_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ATTACK)
    out = tmp_path / "dist"
    (out / "repo" / "pool").mkdir(parents=True)
    (out / "repo" / "pool" / "polymarket-bot_1.0.0_all.deb").write_bytes(b"precious")
    inv = tmp_path / "inventory.yaml"
    inv.write_text(GOOD.read_text().replace("../dist/repo/polymarket-archive-keyring.asc", str(TEST_KEY)))
    code = main(["-q", "autoinstall", "--inventory", str(inv), "--output", str(out)])
    capsys.readouterr()
    # Either refused (exit 2: not a media directory) or rendered beside what was there.
    assert (out / "repo" / "pool" / "polymarket-bot_1.0.0_all.deb").exists(), f"exit {code}"


@pytest.mark.parametrize("url", ["http://]:[/x", "http://192.168.1.5:99999/x", "http://-/x", "http://h:/x"])
def test_http_url_refuses_what_is_no_url(url: str) -> None:
    with pytest.raises(ValueError):
        text.http_url(url)


@pytest.mark.parametrize(
    "key",
    [
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= x",
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t x",
    ],
    ids=["ecdsa-type-only", "sk-ed25519-type-only"],
)
def test_ssh_key_holding_only_its_type_is_refused(key: str) -> None:
    assert inventory.ssh_key_problem(key) is not None


def test_an_argument_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InputError):
        cli.check_arguments(["release", "--version", "1.1.0", "-m", "caf\udce9"])


@pytest.mark.parametrize("value", ["\u00b2", "99999999999999999"], ids=["superscript-two", "year-out-of-range"])
def test_source_date_epoch_is_a_usable_time_or_an_input_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    try:
        epoch = project.source_date_epoch_env()
    except InputError:
        return
    if epoch is not None:
        time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
