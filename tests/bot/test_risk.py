"""Account-level risk limits, each reached and released; the fake exchange's order log is the
truth. Kill switch, circuit breaker, daily loss, total and per-leader exposure, exits first,
and an exit skipped for slippage retried."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import LEADERS, NO, YES, Harness, held
from polymarket_bot import server
from polymarket_bot.server import start_servers
from test_config_cli import run_cli
from test_http import get


def sides(h: Harness) -> list[tuple[str, str]]:
    return [(o["order"]["side"], o["order"]["tokenId"]) for o in h.ex.s.orders]


def test_kill_switch_holds_every_order_until_removed(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()                                         # we hold 20 YES
    (h.tmp / "kill-switch").touch()                       # the operator, from a shell
    h.trade(ago=3, transactionHash="0x2")
    h.trade(side="SELL", size=100, price=0.49, ago=3, transactionHash="0x3")
    e.poll_once()
    assert len(h.ex.s.orders) == 1                        # no order at all, not even the exit
    assert server.health(e)[1]["kill_switch"] is True and "\npolymarket_kill_switch 1\n" in e.metrics.render()
    assert e.metrics.get("polymarket_trades_skipped_total", reason="kill_switch") == 2
    assert e.metrics.get("polymarket_risk_blocked_total", limit="kill_switch") == 2
    (h.tmp / "kill-switch").unlink()
    e.poll_once()                                         # released: the held exit goes out
    assert sides(h)[-1] == ("SELL", YES) and server.health(e)[1]["kill_switch"] is False
    h.trade(ago=1, transactionHash="0x4")
    e.poll_once()
    assert sides(h)[-1] == ("BUY", YES)


def test_circuit_breaker_pauses_after_consecutive_order_errors(h: Harness) -> None:
    e = h.engine(MAX_CONSECUTIVE_ORDER_ERRORS="2", CIRCUIT_BREAKER_SECONDS="1")
    h.ex.add_fault("/order", "400", count=2)              # two orders refused in a row
    h.trade(ago=3, transactionHash="0x1")
    h.trade(ago=3, transactionHash="0x2")
    e.poll_once()
    assert e.metrics.get("polymarket_circuit_breaker_trips_total") == 1
    h.trade(ago=2, transactionHash="0x3")
    e.poll_once()
    assert h.ex.s.orders == [] and h.decisions(e)[-1][1].startswith("circuit_breaker")
    assert e.risk_status()["circuit_breaker"]["open_for_seconds"] > 0
    time.sleep(1.1)                                       # CIRCUIT_BREAKER_SECONDS later
    h.trade(ago=1, transactionHash="0x4")
    e.poll_once()
    assert len(h.ex.s.orders) == 1


def test_max_total_exposure_reached_and_released(h: Harness) -> None:
    e = h.engine(MAX_TOTAL_EXPOSURE_USD="15")
    h.trade(ago=5, transactionHash="0x1")
    h.trade(ago=4, transactionHash="0x2")
    h.trade(ago=3, transactionHash="0x3")
    e.poll_once()
    assert [o["order"]["makerAmount"] for o in h.ex.s.orders] == ["10000000", "5000000"]
    assert h.decisions(e)[-1] == ("skipped", "max_total_exposure")
    h.trade(side="SELL", size=100, price=0.49, ago=2, transactionHash="0x4")   # the leader exits
    e.poll_once()
    h.trade(ago=1, transactionHash="0x5")
    e.poll_once()
    assert sides(h)[-2:] == [("SELL", YES), ("BUY", YES)]


def test_max_leader_exposure_reached_and_released(h: Harness) -> None:
    e = h.engine(MAX_LEADER_EXPOSURE_USD="10")
    h.trade(leader=0, ago=5, transactionHash="0x1")
    h.trade(leader=0, asset=NO, ago=4, transactionHash="0x2")
    h.trade(leader=1, asset=NO, ago=4, transactionHash="0x3")
    e.poll_once()
    assert sides(h) == [("BUY", YES), ("BUY", NO)]           # leader 0's second buy held, leader 1's not
    assert e.metrics.get("polymarket_trades_skipped_total", reason="max_leader_exposure") == 1
    h.trade(leader=0, side="SELL", size=100, price=0.49, ago=2, transactionHash="0x4")
    e.poll_once()
    h.trade(leader=0, ago=1, transactionHash="0x5")
    e.poll_once()
    assert sides(h)[-2:] == [("SELL", YES), ("BUY", YES)]


def test_max_daily_loss_stops_buys_not_sells(h: Harness) -> None:
    e = h.engine(MAX_DAILY_LOSS_USD="3")
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()                                         # 20 YES for 10 USD
    h.ex.set_book(YES, [[0.30, 10000]], [[0.31, 10000]])  # marked at 6 USD: 4 USD down today
    e.last_mark_to_market = 0
    h.trade(asset=NO, ago=3, transactionHash="0x2")
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and h.decisions(e)[-1] == ("skipped", "max_daily_loss")
    assert e.risk_status()["daily_loss_usd"] == pytest.approx(4)
    h.ex.set_book(YES, [[0.50, 10000]], [[0.51, 10000]])  # the price recovers: released
    e.last_mark_to_market = 0
    h.trade(asset=NO, ago=2, transactionHash="0x3")
    e.poll_once()
    assert sides(h)[-1] == ("BUY", NO)
    h.ex.set_book(YES, [[0.30, 10000]], [[0.31, 10000]])  # down again: a sell still runs
    e.last_mark_to_market = 0
    h.trade(side="SELL", size=100, price=0.30, ago=1, transactionHash="0x4")
    e.poll_once()
    assert sides(h)[-1] == ("SELL", YES)


def test_exits_go_before_buys_in_a_poll(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=9, transactionHash="0x1")
    e.poll_once()
    h.trade(leader=1, asset=NO, ago=5, transactionHash="0x2")              # older buy
    h.trade(side="SELL", size=100, price=0.49, ago=2, transactionHash="0x3")  # newer exit
    e.poll_once()
    assert sides(h)[1:] == [("SELL", YES), ("BUY", NO)]


def test_exit_skipped_for_slippage_is_retried_until_max_trade_age(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=9, transactionHash="0x1")
    e.poll_once()
    h.ex.set_book(YES, [[0.40, 10000]], [[0.50, 10000]])  # best bid below 0.49 - 2 %
    h.trade(side="SELL", size=100, price=0.49, ago=2, transactionHash="0x2")
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and h.decisions(e)[-1][1].startswith("slippage")
    e.poll_once()
    assert len(h.ex.s.orders) == 1                        # still out of tolerance: waits
    h.ex.set_book(YES, [[0.49, 10000]], [[0.50, 10000]])
    e.poll_once()
    assert sides(h)[-1] == ("SELL", YES) and h.decisions(e)[-1] == ("copied", "exit retried")
    assert LEADERS


def test_exit_retry_gives_up_after_max_trade_age(h: Harness) -> None:
    e = h.engine(MAX_TRADE_AGE_SECONDS="3")
    h.trade(ago=1, transactionHash="0x1")
    e.poll_once()
    h.ex.set_book(YES, [[0.40, 10000]], [[0.50, 10000]])
    h.trade(side="SELL", size=100, price=0.49, ago=1, transactionHash="0x2")
    e.poll_once()
    time.sleep(2.5)
    h.ex.set_book(YES, [[0.49, 10000]], [[0.50, 10000]])
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and not e.exit_retries


RISK_KEYS = ("MAX_DAILY_LOSS_USD", "MAX_TOTAL_EXPOSURE_USD", "MAX_LEADER_EXPOSURE_USD", "KILL_SWITCH_FILE",
             "MAX_CONSECUTIVE_ORDER_ERRORS", "CIRCUIT_BREAKER_SECONDS", "RECONCILE_INTERVAL_SECONDS")


def test_each_limit_is_documented_checked_and_shown(h: Harness, tmp_path: Path) -> None:
    r = run_cli("--help")
    assert all(k in r.stdout for k in RISK_KEYS)
    assert "default /etc/polymarket/kill-switch" in r.stdout
    bad = tmp_path / "bad"
    bad.write_text("MAX_DAILY_LOSS_USD=-1\nMAX_TOTAL_EXPOSURE_USD=lots\nMAX_LEADER_EXPOSURE_USD=nan\n"
                   "KILL_SWITCH_FILE=relative\nMAX_CONSECUTIVE_ORDER_ERRORS=0\nCIRCUIT_BREAKER_SECONDS=0\n"
                   "RECONCILE_INTERVAL_SECONDS=1\n")
    bad.chmod(0o600)
    r = run_cli("--config", str(bad), "validate-config")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 7 and all(line.startswith("error: ") for line in lines)
    assert [k for k in RISK_KEYS if any(k in line for line in lines)] == list(RISK_KEYS)
    e = h.engine(MAX_DAILY_LOSS_USD="50", MAX_TOTAL_EXPOSURE_USD="500", MAX_LEADER_EXPOSURE_USD="100")
    dash, met = start_servers(e, 0, 0)
    try:
        (h.tmp / "kill-switch").touch()
        e.poll_once()
        base = f"http://127.0.0.1:{dash.server_address[1]}"
        status, body = get(base + "/health")
        assert status == 200 and body["kill_switch"] is True      # live, but holding every order
        status, system = get(base + "/system", "s3cret-token")
        risk = system["risk"]
    finally:
        for srv in (dash, met):
            srv.shutdown()
            srv.server_close()
    assert risk["kill_switch"]["active"] is True
    assert risk["max_daily_loss_usd"] == 50 and risk["max_total_exposure_usd"] == 500
    assert risk["max_leader_exposure_usd"] == 100 and risk["kill_switch"]["file"].endswith("kill-switch")
    assert risk["circuit_breaker"]["max_consecutive_order_errors"] == 5
    assert risk["circuit_breaker"]["pause_seconds"] == 300 and risk["reconcile_interval_seconds"] == 300


def test_kill_switch_made_between_decision_and_send_holds_the_exit_then_retries_it(h: Harness) -> None:
    """Issue 9 (outside review): the switch is checked right before the order leaves; an exit it
    holds there is tried again once it is removed, not dropped."""
    from attack_exchange import AttackExchange
    e = h.engine()
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()                                         # we hold 20 YES
    ex = AttackExchange(fill_price=0.49)
    ex.attach(e)
    switch = h.tmp / "kill-switch"
    ex.before_book = lambda: switch.touch()               # made while the sell is being priced
    h.trade(side="SELL", size=100, price=0.49, ago=2, transactionHash="0x2")
    e.poll_once()
    assert ex.posts == [] and h.decisions(e)[-1][0] == "skipped"
    assert e.metrics.get("polymarket_trades_skipped_total", reason="kill_switch") == 1
    ex.before_book = None
    switch.unlink()
    e.poll_once()
    assert len(ex.posts) == 1 and h.decisions(e)[-1][0] == "copied"
    assert held(e, YES).shares == 0
