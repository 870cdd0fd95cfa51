"""Unit tests of polymarket-backup's functions (the script /usr/sbin/polymarket-backup, loaded by tests.payload):
point-in-time selection, the config parsers and the ledger snapshot. The .deb's content: tests/package."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload

PAYLOAD = payload.PACKAGES / "polymarket-backup"


def cli() -> ModuleType:
    return payload.backup()


def test_point_in_time_picks_the_newest_at_or_before() -> None:
    mod = cli()
    snaps = [{"id": "a", "time": "2026-01-01T01:00:00.123456789+00:00"},
             {"id": "b", "time": "2026-01-01T01:15:00.5Z"},
             {"id": "c", "time": "2026-01-01T01:30:00+00:00"}]  # fmt: skip
    utc = datetime.UTC
    assert mod.pick_snapshot(snaps, datetime.datetime(2026, 1, 1, 1, 15, 0, 500000, tzinfo=utc))["id"] == "b"
    assert mod.pick_snapshot(snaps, datetime.datetime(2026, 1, 1, 1, 29, tzinfo=utc))["id"] == "b"
    assert mod.pick_snapshot(snaps, datetime.datetime(2027, 1, 1, tzinfo=utc))["id"] == "c"
    with pytest.raises(mod.BackupError, match="no snapshot at or before"):
        mod.pick_snapshot(snaps, datetime.datetime(2026, 1, 1, 0, 59, tzinfo=utc))
    assert mod.parse_when("2026-01-01 01:15").tzinfo is not None
    with pytest.raises(mod.BackupError) as exc:
        mod.parse_when("yesterday")
    assert exc.value.code == mod.EXIT_USAGE


def test_config_is_parsed_not_sourced(tmp_path: Path) -> None:
    mod = cli()
    conf = tmp_path / "backup.conf"
    conf.write_text((PAYLOAD / "backup.conf").read_text())
    cfg = mod.load_config(conf)
    assert cfg.keep_within == "30d" and cfg.read_data_subset == "10%"
    assert cfg.config_paths == ("/etc/polymarket", "/etc/polymarket-*")
    conf.write_text("KEEP_WITHIN=$(rm -rf /)\n")
    with pytest.raises(mod.BackupError, match="KEEP_WITHIN"):
        mod.load_config(conf)


def test_offsite_config(tmp_path: Path) -> None:
    mod = cli()
    conf = tmp_path / "offsite.conf"
    conf.write_text((PAYLOAD / "offsite.conf.example").read_text())
    conf.chmod(0o600)
    assert mod.load_offsite(conf) is None  # shipped unconfigured
    conf.write_text("S3_ENDPOINT=http://127.0.0.1:9000\nS3_BUCKET=polymarket-backups/production\n"
                    "AWS_ACCESS_KEY_ID=id\nAWS_SECRET_ACCESS_KEY='s3cr3t'\n")  # fmt: skip
    off = mod.load_offsite(conf)
    assert off is not None
    assert off.repository == "s3:http://127.0.0.1:9000/polymarket-backups/production"
    assert off.env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and "s3cr3t" not in off.repository
    conf.chmod(0o644)
    with pytest.raises(mod.BackupError, match="readable by others"):
        mod.load_offsite(conf)


def test_snapshot_uses_the_backup_api_and_checks_integrity(tmp_path: Path) -> None:
    import sqlite3

    mod = cli()
    src = tmp_path / "live.db"
    con = sqlite3.connect(src)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()  # still in the WAL, not in the main file
    mod.snapshot_ledger(src, tmp_path / "snap.db")
    con.close()
    assert mod.integrity(tmp_path / "snap.db") == "ok"
    assert sqlite3.connect(tmp_path / "snap.db").execute("SELECT x FROM t").fetchall() == [(1,)]
    (tmp_path / "junk.db").write_bytes(b"SQLite format 3\0" + b"\xff" * 4000)
    assert mod.integrity(tmp_path / "junk.db") != "ok"
