"""restore --with-config (and --from-offsite, which implies it) puts the ledger where the RESTORED .env's DB_PATH
says, asked of the bot's parser on the staged .env (``polymarket-bot --config STAGED config get DB_PATH``),
not where the host's old .env said (issue 8). The restic and systemctl steps and the bot are stand-ins; the
ledger's bytes on disk are the real outcome (booted: tests/system/test_db_path.py)."""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests import payload


def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, snapshot_env: str) -> tuple[ModuleType, Path]:
    pb = payload.backup()
    lib, etc = tmp_path / "lib", tmp_path / "etc"
    lib.mkdir()
    etc.mkdir()
    (etc / ".env").write_text(f"DB_PATH={lib}/trade_history.db\n")
    asked: list[list[str]] = []

    def bot(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """polymarket-bot [--config FILE] config get DB_PATH: FILE's (else the live .env's) DB_PATH line."""
        asked.append(argv)
        env = Path(argv[2]) if argv[1] == "--config" else etc / ".env"
        line = next(x for x in env.read_text().splitlines() if x.startswith("DB_PATH="))
        return subprocess.CompletedProcess(argv, 0, line.removeprefix("DB_PATH=") + "\n", "")

    def restored_ledger(cfg: Any, snap_id: str, dest: Path, src: Any = None) -> None:
        with sqlite3.connect(dest) as db:
            db.execute("create table m(v text)")
            db.execute("insert into m values ('from-snapshot')")
        db.close()

    def stage(cfg: Any, snap_id: str, src: Any = None, **kw: Any) -> list[tuple[Path, Path]]:
        temp = etc / "..env.pmrestore"
        temp.write_text(snapshot_env.format(lib=lib))
        return [(temp, etc / ".env")]

    monkeypatch.setattr(pb, "subprocess", SimpleNamespace(run=bot, DEVNULL=subprocess.DEVNULL,
                                                          TimeoutExpired=subprocess.TimeoutExpired))  # fmt: skip
    for name, value in {"LEDGER_DIR": lib, "BOT_ENV": etc / ".env", "STATE": tmp_path / "state",
                        "restore_ledger_to": restored_ledger, "stage_config": stage,
                        "systemctl": lambda *a: subprocess.CompletedProcess(a, 3, "", ""),
                        "backup_now": lambda cfg, kind: "before01"}.items():  # fmt: skip
        monkeypatch.setattr(pb, name, value)
    pb.asked = asked  # type: ignore[attr-defined]
    return pb, lib


def restore(pb: ModuleType, with_config: bool) -> None:
    args = argparse.Namespace(with_config=with_config, snapshot=None, time=None, offsite_conf=None)
    snap = {"id": "abc123", "short_id": "abc123", "time": "2026-11-30T10:00:00Z"}
    assert pb.restore(pb.Config(), args, pb.LOCAL, [snap], pb.Progress(), None) == pb.EXIT_OK


def rows(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        found = [v for (v,) in c.execute("select v from m")]
    c.close()
    return found


def test_with_config_the_ledger_goes_where_the_restored_env_says(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    pb, lib = host(monkeypatch, tmp_path, "DB_PATH={lib}/alt-ledger.db\n")
    restore(pb, with_config=True)
    assert rows(lib / "alt-ledger.db") == ["from-snapshot"]
    assert not (lib / "trade_history.db").exists(), "the host's old DB_PATH was used"
    assert (tmp_path / "etc" / ".env").read_text() == f"DB_PATH={lib}/alt-ledger.db\n"
    assert ["polymarket-bot", "--config", str(tmp_path / "etc" / "..env.pmrestore"), "config", "get",
            "DB_PATH"] in pb.asked  # fmt: skip
    assert sorted(p.name for p in lib.iterdir()) == ["alt-ledger.db"]  # no staged file left behind


def test_without_config_the_live_env_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pb, lib = host(monkeypatch, tmp_path, "DB_PATH={lib}/alt-ledger.db\n")
    restore(pb, with_config=False)
    assert rows(lib / "trade_history.db") == ["from-snapshot"]
    assert not (lib / "alt-ledger.db").exists()


def test_a_restored_env_naming_a_subdirectory_is_refused_and_nothing_changes(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:  # fmt: skip
    pb, lib = host(monkeypatch, tmp_path, "DB_PATH={lib}/alt/ledger.db\n")
    (lib / "alt").mkdir()
    with pytest.raises(pb.BackupError) as exc:
        restore(pb, with_config=True)
    assert "restore refused, nothing changed: cannot tell where the ledger is" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert list((lib / "alt").iterdir()) == [] and sorted(p.name for p in lib.iterdir()) == ["alt"]
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == [".env"]  # the staged .env dropped
