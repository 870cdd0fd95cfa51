"""A promotion chooses between the replica and this node's own ledger by lease generation, never by file times
(issue 11: "Comparisons use a generation counter or timestamps inside the ledger, never file mtimes").

The generation is the leader key's etcd create revision, which only grows: the lease keeper records the one it
holds a valid lease under (/run, copied to /var/lib by the trading node's heartbeat and promotion), and the bot
keeps the one it began to trade under in its ledger's meta. A replica whose generation is newer is adopted even
when its file looks older than this node's last-active; an older one is refused even when its file is newer.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload


@pytest.fixture
def ha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    mod = payload.ha()
    for name, rel in (("REPLICA_DIR", "replica"), ("PREVIOUS_DIR", "previous"), ("LAST_ACTIVE", "last-active"),
                      ("OWN_GENERATION", "lease-generation"), ("RUN_GENERATION", "run/lease-generation")):
        monkeypatch.setattr(mod, name, tmp_path / rel)
    (tmp_path / "replica").mkdir()
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(mod, "BOT_USER", "root")
    return mod


def ledger(path: Path, marker: str, generation: int | None) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE m (v TEXT)")
        con.execute("INSERT INTO m VALUES (?)", (marker,))
        if generation is not None:
            con.execute("INSERT INTO meta VALUES ('lease_generation', ?)", (str(generation),))
    con.close()


def marker(path: Path) -> str:
    with sqlite3.connect(path) as con:
        value: str = con.execute("SELECT v FROM m").fetchone()[0]
    con.close()
    return value


def settings(ha: ModuleType, lease: bool) -> Any:
    return type("S", (), {"lease": lease})()


@pytest.mark.parametrize(("own", "replica", "adopted"), [
    (None, 5, True),    # never held a lease here: the replica is the newer history
    (5, 9, True),       # the peer traded after this node
    (9, 5, False),      # this node traded after the peer
    (9, 9, False),      # no newer than ours
    (9, None, False),   # a replica without a generation, this node traded under one
])  # fmt: skip
def test_the_generation_decides_not_the_file_times(ha: ModuleType, tmp_path: Path, own: int | None,
                                                   replica: int | None, adopted: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(ha, "run", lambda argv, **kw: ran.append(argv))
    local = tmp_path / "lib" / "trade_history.db"
    ledger(local, "local", own)
    ledger(tmp_path / "replica" / "trade_history.db", "replica", replica)
    # the lease this node holds now, at its promotion: always the newest, never what decides
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lease-generation").write_text("1000\n")
    if own is not None:  # what this node traded under before
        (tmp_path / "lease-generation").write_text(f"{own}\n")
    # the file times say the opposite of the generations: they must not matter
    (tmp_path / "last-active").write_text("")
    newer, older = (1_000_000, 2_000_000) if adopted else (2_000_000, 1_000_000)
    os.utime(tmp_path / "last-active", (older, older))
    os.utime(tmp_path / "replica" / "trade_history.db", (newer, newer))
    detail = ha.adopt_replica(settings(ha, True), local)
    assert marker(local) == ("replica" if adopted else "local"), detail
    assert bool(ran) == adopted
    if not adopted:
        assert "kept local" in detail and "generation" in detail


def test_without_the_lease_the_file_times_still_decide(ha: ModuleType, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """VRRP only (no etcd, no generation): last-active against the replica's time, as before."""
    monkeypatch.setattr(ha, "run", lambda argv, **kw: pytest.fail(f"ran {argv}"))
    local = tmp_path / "lib" / "trade_history.db"
    ledger(local, "local", None)
    ledger(tmp_path / "replica" / "trade_history.db", "replica", None)
    (tmp_path / "last-active").write_text("")
    os.utime(tmp_path / "replica" / "trade_history.db", (1_000_000, 1_000_000))
    assert "kept local" in ha.adopt_replica(settings(ha, False), local)
    assert marker(local) == "local"


def test_own_generation_is_what_this_node_traded_under_and_survives_a_reboot(ha: ModuleType, tmp_path: Path) -> None:
    assert ha.own_generation() is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "lease-generation").write_text("12\n")  # held now (the keeper): not traded under yet
    assert ha.own_generation() is None
    ha.persist_generation()  # the promotion's end, or the trading node's heartbeat
    assert (tmp_path / "lease-generation").read_text() == "12\n"
    (tmp_path / "run" / "lease-generation").unlink()  # a reboot empties /run
    assert ha.own_generation() == 12
    (tmp_path / "run" / "lease-generation").write_text("7\n")  # never lowered
    ha.persist_generation()
    assert ha.own_generation() == 12
    (tmp_path / "lease-generation").unlink()
    (tmp_path / "lease-generation").symlink_to(tmp_path / "run" / "lease-generation")
    assert ha.read_generation(tmp_path / "lease-generation") is None  # a link is never read


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "-3", "12 ", "0x10"])
def test_a_hostile_generation_in_the_replica_is_no_generation(ha: ModuleType, tmp_path: Path, value: str) -> None:
    """The peer (or the trading node's bot user) wrote the replica: an odd value is None, never an exception that
    would stop the promotion with the node MASTER and its bot passive."""
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("INSERT INTO meta VALUES ('lease_generation', ?)", (value,))
    con.close()
    expected = 12 if value == "12 " else None
    assert ha.ledger_generation(db) == expected


def test_a_meta_view_that_never_ends_is_refused(ha: ModuleType, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE VIEW meta AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                    "SELECT 'lease_generation' AS key, x AS value FROM c")
    con.close()
    assert ha.ledger_generation(db) is None  # a view is not read at all (it returned at once)
