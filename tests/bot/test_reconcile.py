"""Positions reconciled with the exchange: at start, every RECONCILE_INTERVAL_SECONDS and when
the node turns active; drift beyond one tick of size is corrected, counted and audited."""

from __future__ import annotations

import time

import pytest
from conftest import ME, NO, YES, Harness, held
from polymarket_bot import engine as engine_mod


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "RECONCILE_SETTLE", 0.0)


def test_drift_corrected_at_reconcile_with_an_audit_row(h: Harness) -> None:
    e = h.engine()
    h.trade()
    e.poll_once()
    assert held(e, YES).shares == pytest.approx(20)
    h.ex.set_balance(ME, 15, token=YES)          # the exchange holds 15 (a fill we never saw)
    h.ex.set_balance(ME, 7, token=NO)            # and 7 of a token the ledger does not know
    e.last_reconcile = time.time() - 301         # RECONCILE_INTERVAL_SECONDS (300) elapsed
    e.poll_once()
    assert held(e, YES).shares == pytest.approx(15)
    assert held(e, YES).cost == pytest.approx(7.5)   # the average price kept
    assert held(e, NO).shares == pytest.approx(7)
    assert e.metrics.get("polymarket_position_drift") == 2
    audit = {a["asset"]: a for a in e.ledger.audit()}
    assert audit[YES]["ledger_shares"] == pytest.approx(20) and audit[YES]["exchange_shares"] == pytest.approx(15)
    assert "interval" in audit[YES]["reason"]
    assert "polymarket_position_drift 2" in e.metrics.render()


def test_drift_within_one_tick_is_left_alone(h: Harness) -> None:
    e = h.engine()
    h.trade()
    e.poll_once()
    h.ex.set_balance(ME, 19.995, token=YES)
    assert e.reconcile("interval") == 0 and e.ledger.audit() == []


def test_reconcile_at_start_and_after_promotion(h: Harness) -> None:
    h.ex.set_balance(ME, 12, token=YES)           # held before this ledger existed
    e = h.engine()
    e.poll_once()                                 # start
    assert held(e, YES).shares == pytest.approx(12)
    (h.tmp / "passive").touch()
    e.poll_once()
    h.ex.set_balance(ME, 30, token=YES)           # the old primary traded before the failover
    e.poll_once()
    assert held(e, YES).shares == pytest.approx(12)   # passive: nothing yet
    (h.tmp / "passive").unlink()                  # polymarket-ha promotes this node
    e.poll_once()
    assert held(e, YES).shares == pytest.approx(30)
    assert "promotion" in e.ledger.audit()[-1]["reason"]


def test_a_just_traded_asset_waits_for_the_data_api(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "RECONCILE_SETTLE", 120.0)
    e = h.engine()
    h.trade()
    e.poll_once()
    h.ex.set_balance(ME, 0, token=YES)            # the Data API has not caught up with our fill
    assert e.reconcile("interval") == 0
    assert held(e, YES).shares == pytest.approx(20)
