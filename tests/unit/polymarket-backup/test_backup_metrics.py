"""polymarket-backup's textfile metrics (polymarket-monitoring's metrics contract, issue 10) and the
password input of ``restore --from-offsite`` (issue 11). Booted: tests/system/test_backup_offsite.py."""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import payload
from tests.payload import unchanged

CONTRACT = ("polymarket_backup_last_success_timestamp_seconds", "polymarket_backup_last_verify_ok",
            "polymarket_backup_last_offsite_timestamp_seconds")  # fmt: skip


def values(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z_]+) (\S+)$", text, re.M)}


def test_metrics_merge_into_one_textfile_with_the_contract_names(tmp_path: Path) -> None:
    pb = payload.backup()
    state, textdir = tmp_path / "state" / "metrics.json", tmp_path / "node-exporter"
    old = os.umask(0o077)  # as the command runs
    try:
        pb.record_metrics({"polymarket_backup_last_success_timestamp_seconds": 1700000000.5,
                           "polymarket_backup_snapshots": 3.0}, state, textdir)  # fmt: skip
        pb.record_metrics({"polymarket_backup_last_verify_ok": 1.0}, state, textdir)
        pb.record_metrics({"polymarket_backup_last_offsite_timestamp_seconds": 1700000100.0}, state, textdir)
    finally:
        os.umask(old)
    prom = textdir / "polymarket-backup.prom"
    got = values(prom.read_text())
    assert got == {"polymarket_backup_last_success_timestamp_seconds": 1700000000.5,
                   "polymarket_backup_last_verify_ok": 1.0, "polymarket_backup_snapshots": 3.0,
                   "polymarket_backup_last_offsite_timestamp_seconds": 1700000100.0}  # fmt: skip
    # The node exporter (its own user) reads the directory and the file; nothing else is left there.
    assert textdir.stat().st_mode & 0o777 == 0o755 and prom.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in textdir.iterdir()) == ["polymarket-backup.prom"]
    # A failed verify turns the gauge to 0, the other values stay.
    pb.record_metrics({"polymarket_backup_last_verify_ok": 0.0}, state, textdir)
    got = values(prom.read_text())
    assert got["polymarket_backup_last_verify_ok"] == 0.0 and set(CONTRACT) <= set(got)
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=prom.read_text(), capture_output=True,
                               text=True)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_metrics_never_written_through_a_link(tmp_path: Path, canary: Path, caplog: pytest.LogCaptureFixture) -> None:
    pb = payload.backup()
    state, textdir = tmp_path / "metrics.json", tmp_path / "node-exporter"
    textdir.mkdir()
    # A link at the final name and at the temporary name: both replaced, the target untouched.
    (textdir / "polymarket-backup.prom").symlink_to(canary)
    (textdir / f".polymarket-backup.prom.{os.getpid()}.tmp").symlink_to(canary)
    pb.record_metrics({"polymarket_backup_last_verify_ok": 1.0}, state, textdir)
    assert unchanged(canary)
    prom = textdir / "polymarket-backup.prom"
    assert not prom.is_symlink() and "polymarket_backup_last_verify_ok 1" in prom.read_text()
    # The directory itself a link: nothing written there, a warning, no exception (a backup never fails on it).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere)
    pb.record_metrics({"polymarket_backup_last_verify_ok": 1.0}, state, linked)
    assert list(elsewhere.iterdir()) == []
    assert "metrics not written" in caplog.text


def test_a_failed_verify_writes_0_and_a_passed_one_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pb = payload.backup()
    written: list[dict[str, float]] = []
    monkeypatch.setattr(pb, "record_metrics", lambda v, *a: written.append(v))

    def broken(cfg: object, args: object) -> int:
        raise pb.BackupError("repository check failed", pb.EXIT_CHECK)

    monkeypatch.setattr(pb, "verify", broken)
    with pytest.raises(pb.BackupError):
        pb.cmd_verify(pb.Config(), argparse.Namespace())
    monkeypatch.setattr(pb, "verify", lambda cfg, args: 0)
    assert pb.cmd_verify(pb.Config(), argparse.Namespace()) == 0
    assert [w["polymarket_backup_last_verify_ok"] for w in written] == [0.0, 1.0]


def test_offsite_password_from_a_file_or_stdin_never_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pb = payload.backup()
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    assert pb.read_password(str(secret)) == "correct horse"
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\r\nsecond line\n"))
    assert pb.read_password("-") == "from stdin"
    for bad in ("", "\n", "   \n"):
        secret.write_text(bad)
        with pytest.raises(pb.BackupError) as exc:
            pb.read_password(str(secret))
        assert exc.value.code == pb.EXIT_USAGE
    with pytest.raises(pb.BackupError, match="cannot read the password"):
        pb.read_password(str(tmp_path / "missing"))
    # No option takes the password itself.
    args = pb.parse_args(["restore", "--from-offsite", "--password-file", "-"])
    assert args.from_offsite and args.password_file == "-"
    with pytest.raises(SystemExit):
        pb.parse_args(["restore", "--from-offsite", "--password", "x"])


def test_units_may_write_the_textfile_directory() -> None:
    """The sandboxed units (ProtectSystem=strict) can write the textfile; tmpfiles makes its directory."""
    units = payload.PACKAGES / "polymarket-backup" / "systemd"
    for name in ("polymarket-backup", "polymarket-backup-verify", "polymarket-backup-offsite"):
        text = (units / f"{name}.service").read_text()
        assert "ReadWritePaths=-/var/lib/prometheus/node-exporter" in text, name
    tmpfiles = (payload.PACKAGES.parent / "debian" / "polymarket-backup.tmpfiles").read_text()
    assert "d /var/lib/prometheus/node-exporter - - - -" in tmpfiles
