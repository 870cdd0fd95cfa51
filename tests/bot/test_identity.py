"""Every order has an identity the exchange knows: a lost, late or duplicated answer is resolved
by asking the exchange (the fake's order log is the truth), never by guessing."""

from __future__ import annotations

import time

import pytest
from conftest import ME, YES, Harness
from polymarket_bot import server
from polymarket_bot.engine import Engine


def holdings(h: Harness) -> float:
    return h.ex.s.holdings.get((ME.lower(), YES), 0) / 1e6


def true_position(h: Harness, e: Engine) -> float:
    pos = e.ledger.position("live", YES)
    return pos.shares if pos else 0.0


def then_leader_sells_all(h: Harness, e: Engine) -> None:
    h.trade(side="SELL", size=100, price=0.49, transactionHash="0xsell")
    e.poll_once()
    assert len(h.ex.s.orders) == 2
    sell = h.ex.s.orders[-1]["order"]
    assert sell["side"] == "SELL" and sell["makerAmount"] == "20000000"
    assert holdings(h) == 0 and true_position(h, e) == 0


def test_lost_answer_after_acceptance_is_resolved_with_the_exchange(h: Harness) -> None:
    e = h.engine()
    h.trade(transactionHash="0xbuy")
    h.ex.add_fault("/order", "reset_after")     # accepted and matched, the answer never arrives
    e.poll_once()
    assert len(h.ex.s.orders) == 1               # the retry was "Duplicated", not a second order
    assert h.ex.s.requests["/order"] == 2
    assert holdings(h) == pytest.approx(20) and true_position(h, e) == pytest.approx(20)
    assert h.decisions(e) == [("copied", "matched")]
    then_leader_sells_all(h, e)


def test_late_answer_after_the_client_timeout_is_resolved(h: Harness) -> None:
    e = h.engine(HTTP_TIMEOUT="0.3")
    h.trade(transactionHash="0xbuy")
    h.ex.add_fault("/order", "hold", delay=0.8)  # matched at once, answered after our timeout
    e.poll_once()
    assert len(h.ex.s.orders) == 1
    assert holdings(h) == pytest.approx(20) and true_position(h, e) == pytest.approx(20)
    then_leader_sells_all(h, e)


def test_partial_fill_resolved_as_filled_not_requested(h: Harness) -> None:
    h.ex.set_book(YES, [[0.49, 100]], [[0.50, 8]])
    e = h.engine()
    h.trade()
    h.ex.add_fault("/order", "reset_after")
    e.poll_once()
    assert holdings(h) == pytest.approx(8) and true_position(h, e) == pytest.approx(8)
    assert e.ledger.orders()[0]["filled_usd"] == pytest.approx(4)


def test_exchange_cannot_be_asked_decision_stays_open_and_health_says_so(h: Harness) -> None:
    e = h.engine()
    h.trade()
    h.ex.add_fault("/order", "reset_after")
    h.ex.add_fault("/data/order/", "503", count=100)
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and true_position(h, e) == 0   # not guessed either way
    assert h.decisions(e)[0][0] == "unknown" and e.open_decisions == 1
    status, body = server.health(e)
    assert status == 200 and body["open_decisions"] == 1          # liveness stays green, JSON tells
    assert "\npolymarket_open_decisions 1\n" in e.metrics.render()
    h.ex.s.faults.clear()
    e.last_resolve = 0
    e.poll_once()
    assert e.open_decisions == 0 and h.decisions(e) == [("copied", "matched")]
    assert true_position(h, e) == pytest.approx(holdings(h)) == pytest.approx(20)
    assert server.health(e)[1]["open_decisions"] == 0


def test_delayed_answer_is_followed_to_its_fill(h: Harness) -> None:
    """Issue 9 (outside review): "delayed" (success, no amounts yet) is not a final 0-share copy."""
    e = h.engine()
    h.ex.s.delay_matching = True
    h.trade(transactionHash="0xbuy")
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and h.ex.s.orders[0]["status"] == "DELAYED"
    assert h.decisions(e)[0][0] == "unknown" and e.open_decisions == 1 and true_position(h, e) == 0
    e.last_resolve = 0
    e.poll_once()                                   # still delayed: asked, stays open, nothing re-sent
    assert h.decisions(e)[0][0] == "unknown" and len(h.ex.s.orders) == 1
    h.ex.release_delayed()
    e.last_resolve = 0
    e.poll_once()
    assert e.open_decisions == 0 and h.decisions(e)[0][0] == "copied"
    assert true_position(h, e) == pytest.approx(holdings(h)) == pytest.approx(20)
    assert len(h.ex.s.orders) == 1


def test_duplicated_never_shown_stays_open_past_the_horizon(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9 (outside review): past ACK_HORIZON an order the exchange acknowledged ("Duplicated")
    but never shows is still not guessed: the decision stays open, /health counts it, nothing is
    re-sent and nothing booked."""
    from attack_exchange import AttackExchange
    from polymarket_bot import engine as engine_mod
    monkeypatch.setattr(engine_mod, "ACK_HORIZON", 0.5)
    e = h.engine()
    ex = AttackExchange()
    ex.attach(e)
    ex.post_mode = "duplicated"
    ex.order_lag = ex.trades_lag = 3600.0
    h.trade(transactionHash="0xbuy")
    e.poll_once()
    time.sleep(0.7)
    e.resolve_open()
    d = e.ledger.decisions(1)[0]
    assert d["decision"] == "unknown" and "check the order" in d["reason"]
    assert e.ledger.orders()[0]["status"] == "acknowledged" and true_position(h, e) == 0
    assert len(ex.posts) == 1 and server.health(e)[1]["open_decisions"] == 1
