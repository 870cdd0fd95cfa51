"""polymarket-backup as root never writes through a link planted in the bot's directory (issue 7, item 1);
canary: tests/unit/conftest.py; in a booted container: tests/system/test_symlinks.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests import payload
from tests.payload import unchanged

backup_module = payload.backup


def test_backup_install_ledger_replaces_a_planted_link(tmp_path: Path, canary: Path) -> None:
    pb = backup_module()
    good = tmp_path / "good.db"
    good.write_bytes(b"restored ledger")
    ledger_dir = tmp_path / "lib"
    ledger_dir.mkdir()
    ledger = ledger_dir / "trade_history.db"
    ledger.write_bytes(b"live")
    ledger.chmod(0o640)
    incoming = ledger_dir / ".trade_history.db.restore"
    incoming.symlink_to(canary)
    pb.install_ledger(good, incoming, like=ledger)
    assert unchanged(canary)
    assert not incoming.is_symlink() and incoming.read_bytes() == b"restored ledger"
    assert incoming.stat().st_mode & 0o777 == 0o640
    # The ledger itself a link: owned like its directory, the link's target untouched.
    ledger.unlink()
    ledger.symlink_to(canary)
    pb.install_ledger(good, incoming, like=ledger)
    assert unchanged(canary) and incoming.stat().st_mode & 0o777 == 0o640


def test_backup_create_exclusive_never_opens_a_link(tmp_path: Path, canary: Path) -> None:
    pb = backup_module()
    partial = tmp_path / ".trade_history.db.restore.partial"
    partial.symlink_to(canary)
    fd = pb.create_exclusive(partial)
    os.write(fd, b"dump")
    os.close(fd)
    assert unchanged(canary) and partial.read_bytes() == b"dump"


def test_backup_prunes_old_plaintext_pre_restore_copies(tmp_path: Path) -> None:
    pb = backup_module()
    cfg = pb.Config(repository=tmp_path / "restic")
    legacy = tmp_path / "pre-restore"
    (legacy / "config.20200101T000000" / "etc" / "polymarket").mkdir(parents=True)
    (legacy / "config.20200101T000000" / "etc" / "polymarket" / ".env").write_text("PRIVATE_KEY=0xsecret\n")
    (legacy / "trade_history.db.20200101T000000").write_text("old")
    (legacy / "trade_history.db.20991231T000000").write_text("recent")
    old = time.time() - 40 * 86400
    for p in ("config.20200101T000000", "trade_history.db.20200101T000000"):
        os.utime(legacy / p, (old, old))
    assert sorted(pb.prune_pre_restore(cfg, "30d")) == ["config.20200101T000000", "trade_history.db.20200101T000000"]
    assert sorted(p.name for p in legacy.iterdir()) == ["trade_history.db.20991231T000000"]
    assert pb.duration_seconds("1y6m2d12h") == (366 + 6 * 31 + 2) * 86400 + 12 * 3600


