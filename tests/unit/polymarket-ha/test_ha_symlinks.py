"""polymarket-ha's root file writes (ha.conf outputs, previous/, promoting marker, replica, peer keys) refuse or
replace a planted link and leave its target alone (issue 7, items 1 and 11); canary: tests/unit/conftest.py."""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import payload
from tests.payload import unchanged

ha_module = payload.ha


def test_ha_write_file_replaces_a_planted_link_never_writes_through_it(tmp_path: Path, canary: Path) -> None:
    ha = ha_module()
    target = tmp_path / "last-replication.json"
    (tmp_path / ".last-replication.json.tmp").symlink_to(canary)
    target.symlink_to(canary)
    ha.write_file(target, b"{}\n", 0o644)
    assert unchanged(canary)
    assert not target.is_symlink() and target.read_bytes() == b"{}\n"
    assert target.stat().st_mode & 0o777 == 0o644


def test_ha_touch_does_not_follow_a_link(tmp_path: Path, canary: Path) -> None:
    ha = ha_module()
    os.utime(canary, (1_000_000, 1_000_000))
    link = tmp_path / "last-active"
    link.symlink_to(canary)
    ha._touch(link)
    assert canary.stat().st_mtime == 1_000_000 and unchanged(canary)


def test_ha_previous_dir_must_be_roots_own(tmp_path: Path, canary: Path) -> None:
    ha = ha_module()
    (tmp_path / "previous").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ha.HAError, match="is not a directory"):
        ha._root_dir_fd(tmp_path / "previous")


def test_ha_move_into_previous_drops_a_link_across_filesystems(tmp_path: Path, canary: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    ha = ha_module()
    prev = tmp_path / "prev"
    prev.mkdir(mode=0o700)
    link = tmp_path / "trade_history.db-wal"
    link.symlink_to(canary)
    real = os.rename

    def exdev(*args: object, **kw: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(ha.os, "rename", exdev)
    fd = os.open(prev, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ha._move_into(link, fd, "trade_history.db-wal.1")
        data = tmp_path / "trade_history.db"
        data.write_bytes(b"ledger")
        ha._move_into(data, fd, "trade_history.db.1")
    finally:
        os.close(fd)
    monkeypatch.setattr(ha.os, "rename", real)
    assert unchanged(canary) and not os.path.lexists(link)
    assert sorted(os.listdir(prev)) == ["trade_history.db.1"]
    assert (prev / "trade_history.db.1").read_bytes() == b"ledger"


def test_ha_previous_keeps_the_last_promotions_only(tmp_path: Path) -> None:
    ha = ha_module()
    for i in range(8):
        for suffix in ("", "-wal"):
            (tmp_path / f"trade_history.db{suffix}.2026010{i}T000000Z").write_text("x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        gone = ha.prune_previous(fd, keep=5)
    finally:
        os.close(fd)
    assert len(gone) == 6
    stamps = sorted({p.name.rsplit(".", 1)[1] for p in tmp_path.iterdir()})
    assert stamps == [f"2026010{i}T000000Z" for i in range(3, 8)]


def test_ha_promoting_marker_is_stale_when_its_process_is_gone_or_too_old(tmp_path: Path) -> None:
    ha = ha_module()
    marker = tmp_path / "promoting"
    marker.write_text(f"{os.getpid()}\n")
    assert ha.promoting_live(marker)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marker.write_text(dead.stdout)
    assert not ha.promoting_live(marker)  # killed midway
    marker.write_text(f"{os.getpid()}\n")
    old = time.time() - ha.PROMOTING_MAX_AGE - 1
    os.utime(marker, (old, old))
    assert not ha.promoting_live(marker)  # older than any promotion
    marker.write_text("")  # the old code's empty marker
    assert not ha.promoting_live(marker)


def test_check_bot_ignores_a_stale_promoting_marker() -> None:
    """The shell check keepalived runs: the same rule as promoting_live (the marker path is fixed, so this
    checks the script's text; the booted test kills a promotion for real)."""
    script = (Path(str(ha_module().__file__)).parent / "check-bot").read_text()
    assert '[ -d "/proc/$pid" ]' in script and "-mmin -5" in script
    assert ha_module().PROMOTING_MAX_AGE == 300


def _blob(*parts: bytes) -> str:
    return base64.b64encode(b"".join(len(p).to_bytes(4, "big") + p for p in parts)).decode()


GOOD = "ssh-ed25519 " + _blob(b"ssh-ed25519", bytes(range(32)))


@pytest.mark.parametrize("bad", [
    GOOD[:50],                                              # truncated
    GOOD[:-4],                                              # truncated on a base64 boundary
    GOOD + "\nssh-dss AAAAB3NzaC1kc3M= injected",            # a second line
    GOOD + "\r",                                            # control character
    'command="/bin/sh -c id" ' + GOOD,                      # options before the type
    "restrict " + GOOD,
    "ssh-rsa " + _blob(b"ssh-rsa", b"\x01\x00\x01", bytes(64)),   # another type
    "ssh-ed25519 " + _blob(b"ssh-rsa", bytes(32)),          # wrong inner type
    "ssh-ed25519 " + _blob(b"ssh-ed25519", bytes(31)),      # 31-byte key
    "ssh-ed25519 " + _blob(b"ssh-ed25519", bytes(32), b"x"),  # trailing data
    "ssh-ed25519 " + _blob(b"ssh-ed25519", bytes(32)) + "==",  # padding junk
    "ssh-ed25519 AAAA!!!!",                                 # not base64
    "ssh-ed25519",
    "",
])  # fmt: skip
def test_trust_peer_refuses_hostile_keys(bad: str) -> None:
    ha = ha_module()
    with pytest.raises(ha.HAError):
        ha.parse_ed25519(bad, "key")


def test_trust_peer_accepts_a_real_key_and_drops_the_comment(tmp_path: Path) -> None:
    ha = ha_module()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    line = (tmp_path / "k.pub").read_text().strip()
    assert ha.parse_ed25519(line, "key") == " ".join(line.split()[:2])
    assert ha.parse_ed25519(GOOD + " a comment", "key") == GOOD


def test_trust_peer_keeps_the_working_files_on_a_bad_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ha = ha_module()
    ssh = tmp_path / ".ssh"
    monkeypatch.setattr(ha, "SSH_DIR", ssh)
    monkeypatch.setattr(ha, "KNOWN_HOSTS", ssh / "known_hosts")
    monkeypatch.setattr(ha, "load_settings", lambda: ha.Settings("primary", "10.0.0.1", "10.0.0.2", "10.0.0.10/24",
                                                                   "eth0", 51, ()))  # fmt: skip
    me = SimpleNamespace(pw_uid=os.getuid(), pw_gid=os.getgid())
    monkeypatch.setattr(ha.pwd, "getpwnam", lambda name: me)
    ha.cmd_trust_peer(argparse.Namespace(key=GOOD, host_key=GOOD))
    before = {p.name: p.read_bytes() for p in ssh.iterdir()}
    assert b"restrict,from=\"10.0.0.2\"" in before["authorized_keys"]
    assert before["known_hosts"] == f"10.0.0.2 {GOOD}\n".encode()
    for key, host in ((GOOD[:40], GOOD), (GOOD, GOOD[:40]), (GOOD + "\nssh-ed25519 AAAA", GOOD)):
        with pytest.raises(ha.HAError):
            ha.cmd_trust_peer(argparse.Namespace(key=key, host_key=host))
        assert {p.name: p.read_bytes() for p in ssh.iterdir()} == before


def test_replication_pins_the_host_key() -> None:
    ha = ha_module()
    assert "StrictHostKeyChecking=yes" in ha.ssh_command() and "accept-new" not in ha.ssh_command()




def test_ha_a_linked_replica_is_refused_and_the_local_ledger_kept(tmp_path: Path, canary: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The replica directory belongs to polymarket-ha (the peer writes it): a link there is never read by root."""
    ha = ha_module()
    replica = tmp_path / "replica"
    replica.mkdir()
    (replica / "trade_history.db").symlink_to(canary)
    monkeypatch.setattr(ha, "REPLICA_DIR", replica)
    monkeypatch.setattr(ha, "LAST_ACTIVE", tmp_path / "last-active")
    monkeypatch.setattr(ha, "run", lambda argv, **kw: pytest.fail(f"ran {argv}"))
    detail = ha.adopt_replica(None, tmp_path / "lib" / "trade_history.db")
    assert "is a symlink: refused" in detail and "kept the local ledger" in detail
    assert unchanged(canary)
