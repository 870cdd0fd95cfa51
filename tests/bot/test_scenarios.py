"""The engine against the fake exchange on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import COND, LEADERS, ME, NEG_COND, NO, NYES, YES, Harness, held
from polymarket_bot import crypto, signing
from polymarket_bot import engine as engine_mod
from polymarket_bot.engine import Engine


def test_live_buy_becomes_one_signed_accepted_order(h: Harness) -> None:
    e = h.engine()
    h.trade(size=100, price=0.5)
    assert e.poll_once() == 1
    orders = h.ex.s.orders
    assert len(orders) == 1
    o = orders[0]["order"]
    assert o["side"] == "BUY" and o["tokenId"] == YES and o["maker"] == ME and orders[0]["orderType"] == "FAK"
    assert o["makerAmount"] == "10000000"  # 10 USD, fixed sizing
    assert h.decisions(e) == [("copied", "matched")]
    pos = e.ledger.position("live", YES)
    assert pos is not None and pos.shares == pytest.approx(20.0) and pos.cost == pytest.approx(10.0)
    assert e.poll_once() == 0 and len(h.ex.s.orders) == 1  # seen again: never copied twice
    assert e.metrics.get("polymarket_trades_copied_total") == 1


def test_neg_risk_market_signs_for_the_neg_risk_exchange(h: Harness) -> None:
    e = h.engine()
    h.trade(asset=NYES, size=50, price=0.5)
    e.poll_once()
    (o,) = h.ex.s.orders
    assert o["neg_risk"] is True
    order, sig = signing.order_from_payload({"order": o["order"]})
    digest = order.digest(137, neg_risk=True)
    assert crypto.recover_address(digest, bytes.fromhex(sig[2:])) == ME
    assert crypto.recover_address(order.digest(137, neg_risk=False), bytes.fromhex(sig[2:])) != ME


def test_dry_run_sends_nothing_but_records_paper_fill(h: Harness) -> None:
    e = h.engine(TRADING_MODE="dry-run")
    h.trade()
    e.poll_once()
    assert h.ex.s.orders == []
    assert h.decisions(e) == [("copied", "dry-run")]
    assert e.ledger.position("dry-run", YES) is not None


def test_placeholder_key_forces_dry_run(h: Harness) -> None:
    e = h.engine(PRIVATE_KEY="your_private_key_here")
    assert str(e.mode) == "dry-run"
    h.trade()
    e.poll_once()
    assert h.ex.s.orders == []


def test_several_leaders_buys_and_proportional_sells(h: Harness) -> None:
    e = h.engine(SIZING_MODE="ratio", SIZE_RATIO="0.5")
    h.trade(leader=0, size=100, price=0.5, ago=3)   # 50 USD leader -> 25 USD
    h.trade(leader=1, asset=NO, size=40, price=0.5, ago=3)  # 20 USD -> 10 USD
    assert e.poll_once() == 2
    assert held(e, YES).shares == pytest.approx(50)
    h.trade(leader=0, side="SELL", size=25, price=0.49)  # sold a quarter of 100
    e.poll_once()
    sell = h.ex.s.orders[-1]["order"]
    assert sell["side"] == "SELL" and sell["makerAmount"] == "12500000"  # a quarter of our 50
    assert held(e, YES).shares == pytest.approx(37.5)


def test_partial_fill_is_recorded_as_filled(h: Harness) -> None:
    h.ex.set_book(YES, [[0.49, 100]], [[0.50, 8]])  # only 4 USD on offer within the limit
    e = h.engine()
    h.trade()
    e.poll_once()
    assert h.decisions(e) == [("copied", "partial fill")]
    assert held(e, YES).shares == pytest.approx(8)


def test_fok_unfillable_is_a_business_rejection_not_retried(h: Harness) -> None:
    h.ex.set_book(YES, [[0.49, 100]], [[0.50, 8]])
    e = h.engine(ORDER_TYPE="FOK")
    h.trade()
    e.poll_once()
    assert h.ex.s.requests["/order"] == 1
    (d,) = h.decisions(e)
    assert d[0] == "rejected" and "FOK" in d[1]


def test_restart_mid_stream_no_duplicate_no_gap(h: Harness) -> None:
    e1 = h.engine()
    h.trade(leader=0, ago=5, transactionHash="0xaa")
    e1.poll_once()
    e1.ledger.close()
    h.engines.remove(e1)
    # while we are down: one more trade, and two fills in one transaction
    h.trade(leader=0, ago=3, transactionHash="0xbb")
    h.trade(leader=1, ago=2, transactionHash="0xcc", size=30)
    h.trade(leader=1, ago=2, transactionHash="0xcc", size=30)
    e2 = h.engine()
    assert e2.poll_once() == 3
    assert len(h.ex.s.orders) == 4
    assert e2.poll_once() == 0 and len(h.ex.s.orders) == 4


def test_exchange_down_and_back(h: Harness) -> None:
    e = h.engine()
    h.trade()
    h.ex.add_fault("/activity", "503", count=20)
    e.poll_once()
    assert h.ex.s.orders == [] and e.metrics.get("polymarket_errors_total", kind="data_api") >= 1
    h.ex.s.faults.clear()
    e.poll_once()
    assert len(h.ex.s.orders) == 1


@pytest.mark.parametrize("kind", ["429", "500", "malformed", "empty", "close"])
def test_transient_faults_are_retried_or_caught_up(h: Harness, kind: str) -> None:
    e = h.engine()
    h.trade()
    h.ex.add_fault("/activity", kind, count=1)
    h.ex.add_fault("/order", "429" if kind in ("empty", "close") else kind, count=1)
    e.poll_once()
    e.poll_once()
    assert len(h.ex.s.orders) == 1
    assert h.decisions(e) == [("copied", "matched")]


def test_order_timeout_is_retried_with_same_signed_order(h: Harness) -> None:
    e = h.engine(HTTP_TIMEOUT="0.3")
    h.trade()
    h.ex.add_fault("/order", "timeout", count=1, delay=0.5)
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and h.decisions(e) == [("copied", "matched")]


def test_late_trade_is_still_seen(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=1)
    e.poll_once()
    h.trade(ago=20, visible_after=0.2, transactionHash="0xlate")
    e.poll_once()
    time.sleep(0.25)
    e.poll_once()
    assert len(h.ex.s.orders) == 2


def test_global_feed_follows_many_leaders_with_few_requests(h: Harness) -> None:
    e = h.engine(COPY_LEADERS=",".join(LEADERS[:100]))
    e.poll_once()  # start-up catch-up, one request per leader
    before = h.ex.s.requests.get("/activity", 0) + h.ex.s.requests.get("/trades", 0)
    for i in (3, 50, 99):
        h.trade(leader=i)
    h.ex.add_trade({"proxyWallet": "0x" + "ee" * 20, "side": "BUY", "asset": YES, "size": 5, "price": 0.5})
    e.poll_once()
    after = h.ex.s.requests.get("/activity", 0) + h.ex.s.requests.get("/trades", 0)
    assert after - before == 1
    assert len(h.ex.s.orders) == 3


def _reason(h: Harness, e: Engine) -> str:
    return h.decisions(e)[-1][1].split(":")[0]


@pytest.mark.parametrize(("env", "trade", "reason"), [
    ({}, {"price": 0.40}, "slippage"),
    ({}, {"ago": 90}, "too_old"),
    ({"MARKET_ALLOWLIST": "other-market"}, {}, "not_allowlisted"),
    ({"MARKET_DENYLIST": "will-it-rain"}, {}, "denylisted"),
    ({"MARKET_DENYLIST": COND}, {}, "denylisted"),
    ({}, {"side": "SELL"}, "no_position"),
    ({}, {"outcomeIndex": 1}, "outcome_mismatch"),
    ({"FIXED_AMOUNT_USD": "1"}, {}, "below_min_size"),
    ({"MAX_ORDER_SIZE": "2", "MAX_POSITION_SIZE": "1000"}, {}, "max_order_size"),
    ({"MAX_DAILY_VOLUME": "2"}, {}, "max_daily_volume"),
])
def test_guards(h: Harness, env: dict[str, str], trade: dict[str, Any], reason: str) -> None:
    e = h.engine(**env)
    h.trade(**trade)
    e.poll_once()
    assert h.ex.s.orders == []
    assert h.decisions(e)[-1][0] == "skipped"
    assert _reason(h, e) == reason
    assert e.metrics.get("polymarket_trades_skipped_total", reason=reason) == 1


def test_position_cap_limits_then_skips(h: Harness) -> None:
    e = h.engine(MAX_POSITION_SIZE="15", MAX_ORDER_SIZE="10")
    h.trade(ago=3, transactionHash="0x1")
    h.trade(ago=2, transactionHash="0x2")
    h.trade(ago=1, transactionHash="0x3")
    e.poll_once()
    amounts = [o["order"]["makerAmount"] for o in h.ex.s.orders]
    assert amounts == ["10000000", "5000000"]
    assert h.decisions(e)[-1] == ("skipped", "max_position_size")


def test_insufficient_balance(h: Harness) -> None:
    h.ex.set_balance(ME, 1)
    e = h.engine()
    h.trade()
    e.poll_once()
    assert h.ex.s.orders == [] and _reason(h, e) == "insufficient_balance"


def test_market_closed(h: Harness) -> None:
    h.ex.add_market({"conditionId": "0x" + "ee" * 32, "slug": "old", "tokens": ["3001", "3002"], "closed": True})
    e = h.engine()
    h.trade(asset="3001")
    e.poll_once()
    assert _reason(h, e) == "market_closed"


def test_never_sells_more_than_held(h: Harness) -> None:
    e = h.engine()
    h.trade(ago=3)
    e.poll_once()  # we hold 20 shares
    h.ex.set_balance(ME, 6, token=YES)  # but the exchange says only 6 remain
    h.trade(side="SELL", size=100, price=0.49)
    e.poll_once()
    assert h.ex.s.orders[-1]["order"]["makerAmount"] == "6000000"


def test_passive_file_stops_orders_without_restart(h: Harness) -> None:
    e = h.engine()
    (h.tmp / "passive").touch()
    h.trade(ago=3, transactionHash="0x1")
    e.poll_once()
    assert e.passive and h.ex.s.orders == [] and _reason(h, e) == "passive"
    (h.tmp / "passive").unlink()
    h.trade(ago=1, transactionHash="0x2")
    e.poll_once()
    assert not e.passive and len(h.ex.s.orders) == 1


def test_stop_loss_closes_a_fallen_position(h: Harness) -> None:
    e = h.engine(STOP_LOSS_PERCENTAGE="10")
    h.trade()
    e.poll_once()
    h.ex.set_book(YES, [[0.40, 1000]], [[0.41, 1000]])
    e.last_stop_loss = 0
    e.poll_once()
    sell = h.ex.s.orders[-1]["order"]
    assert sell["side"] == "SELL" and sell["makerAmount"] == "20000000"
    assert held(e, YES).shares == 0
    assert h.decisions(e)[-1] == ("copied", "stop_loss")


def test_balance_sizing_scales_with_our_balance(h: Harness) -> None:
    h.ex.s.leader_values[LEADERS[0]] = 100000.0  # leader has 10x our 10000
    e = h.engine(SIZING_MODE="balance")
    h.trade(size=400, price=0.5)  # 200 USD -> 20 USD for us
    e.poll_once()
    assert h.ex.s.orders[0]["order"]["makerAmount"] == "20000000"


def test_fake_rejects_bad_signature_and_bad_hmac(h: Harness) -> None:
    from conftest import KEY
    from polymarket_bot.httpclient import HttpError, JsonClient
    from polymarket_bot.secrets import Secret

    e = h.engine()
    creds = e.api_creds()
    order = signing.Order(salt=1, maker=ME, signer=ME, token_id=int(YES), maker_amount=10_000_000,
                          taker_amount=20_000_000, side=signing.Side.BUY, timestamp=int(time.time() * 1000))
    bad_sig = signing.sign_order(order, Secret(KEY), 137, neg_risk=True)  # wrong domain for this market
    body = signing.dumps(signing.order_payload(order, bad_sig, creds.api_key, "FAK"))
    c = JsonClient(h.fake.url, retries=0)
    hdr = signing.l2_headers(ME, creds, int(time.time()), "POST", "/order", body)
    with pytest.raises(HttpError) as exc:
        c.post("/order", body, headers=hdr)
    assert exc.value.status == 400 and exc.value.body == {"error": "invalid signature"}
    good = signing.dumps(signing.order_payload(order, signing.sign_order(order, Secret(KEY), 137, False),
                                               creds.api_key, "FAK"))
    hdr = signing.l2_headers(ME, creds, int(time.time()), "POST", "/order", body)  # HMAC of another body
    with pytest.raises(HttpError) as exc:
        c.post("/order", good, headers=hdr)
    assert exc.value.status == 401
    l1 = signing.l1_headers(Secret("0x" + "22" * 32), 137, int(time.time()))
    l1["POLY_ADDRESS"] = ME
    with pytest.raises(HttpError) as exc:
        c.get("/auth/derive-api-key", headers=l1)
    assert exc.value.status == 401
    assert NEG_COND and NYES and NO


def test_markets_of_recent_activity_are_warmed_off_the_hot_path(h: Harness) -> None:
    h.trade(leader=0, ago=90)                   # too old to copy, but its market is warmed
    h.trade(leader=1, asset=NYES, ago=90)
    e = h.engine()
    e.warm_up()
    assert e.creds is not None                  # the API key is derived before the first trade
    e.poll_once()
    assert set(e.markets) == {COND, NEG_COND} and h.ex.s.requests["/markets"] == 2
    h.trade(leader=0)
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and h.ex.s.requests["/markets"] == 2  # copied from the cache
    # a cache entry near expiry is refreshed between polls; one unused for long is dropped
    at, m = e.markets[COND]
    e.markets[COND] = (at - 0.9 * engine_mod.MARKET_TTL, m)
    e.markets[NEG_COND] = (at - 0.9 * engine_mod.MARKET_TTL, e.markets[NEG_COND][1])
    e.market_used[NEG_COND] = at - 2 * engine_mod.MARKET_KEEP_UNUSED
    e.poll_once()
    assert e.markets[COND][0] >= at and NEG_COND not in e.markets and h.ex.s.requests["/markets"] == 3


def test_high_water_marks_written_once_per_leader_that_moved(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    e = h.engine()
    for _ in range(5):
        h.trade(leader=0)
    writes: list[str] = []
    real = e.ledger.set_mark

    def set_mark(key: str, value: float) -> None:
        writes.append(key)
        real(key, value)

    monkeypatch.setattr(e.ledger, "set_mark", set_mark)
    e.poll_once()
    assert writes == [f"hwm:{LEADERS[0]}"]
    e.poll_once()                               # nothing new: no write
    assert writes == [f"hwm:{LEADERS[0]}"]


def test_wal_checkpoint_runs_between_polls_not_in_the_order_commit(h: Harness) -> None:
    e = h.engine()
    assert e.ledger.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    h.trade()
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and not e.wal_dirty
    busy, log_pages, done = e.ledger.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log_pages == done  # nothing left behind in the WAL
