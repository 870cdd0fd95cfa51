"""The ledger's write transactions (one helper, ``Ledger._transaction``): an early return commits, an
error rolls back, and either way the connection is left outside any transaction. Observed on the
database file through a second connection, not through the ledger's own reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import YES
from polymarket_bot.ledger import Ledger

TRADE = {"proxyWallet": "0x" + "ab" * 20, "side": "BUY", "asset": YES, "size": 10, "price": 0.5,
         "timestamp": 1_700_000_000, "transactionHash": "0xfeed"}


def count(db: Path, table: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


def test_a_seen_trade_returns_none_and_the_next_write_still_commits(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger(db)
    try:
        assert ledger.record_trade("k1", TRADE) is not None
        assert ledger.record_trade("k1", TRADE) is None          # the early return inside the transaction
        assert ledger.record_trade("k2", TRADE) is not None      # BEGIN works again: the first one ended
        assert not ledger.db.in_transaction
        assert count(db, "leader_trades") == 2 and count(db, "decisions") == 2
    finally:
        ledger.close()


def test_an_error_inside_a_write_rolls_it_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "ledger.db"
    ledger = Ledger(db)
    try:
        decision = ledger.record_trade("k1", TRADE)
        assert decision is not None
        order = ledger.prepare_order(decision, mode="live", token_id=YES, side="BUY", order_type="FAK", price=0.5,
                                     size=20, usd=10, order_hash="0xh", request={}, condition_id="c")
        assert order is not None

        def fail(*_: object) -> float:
            raise RuntimeError("disk gone")

        monkeypatch.setattr(ledger, "_apply_fill", fail)   # after finish_order's UPDATE of the order
        with pytest.raises(RuntimeError):
            ledger.finish_order(order, status="matched", response={}, filled_shares=20, filled_usd=10,
                                latency_ms=1.0, decision="copied")
        assert not ledger.db.in_transaction
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            assert con.execute("SELECT status FROM orders WHERE id=?", (order,)).fetchone() == ("sending",)
            assert con.execute("SELECT decision FROM decisions WHERE id=?", (decision,)).fetchone() == ("pending",)
        finally:
            con.close()
    finally:
        ledger.close()
