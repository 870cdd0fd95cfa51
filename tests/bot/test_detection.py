"""Detection that cannot starve: late publication on both feeds under heavy unrelated traffic,
a 6,000-fill backlog that delays nobody else, and each published Data API limit its own budget."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import COND, LEADERS, ME, NO, YES, Harness
from polymarket_bot import server
from polymarket_bot.httpclient import RateLimiter

OTHER = "0x" + "ee" * 20


def unrelated(h: Harness, n: int, span: float, end: float) -> None:
    """``n`` fills of a wallet nobody follows, evenly over ``span`` seconds up to ``end``."""
    with h.ex.s.lock:
        for i in range(n):
            h.ex.add_trade({"proxyWallet": OTHER, "side": "BUY", "asset": NO, "size": 5, "price": 0.5,
                            "timestamp": int(end - span + span * i / n), "transactionHash": f"0xo{end}{i}"})


@pytest.mark.parametrize("feed", ["global", "per-leader"])
def test_late_publication_under_150_fills_per_second(h: Harness, feed: str) -> None:
    e = h.engine(LEADER_FEED=feed, COPY_LEADERS=",".join(LEADERS[:6]))
    now = time.time()
    unrelated(h, 150 * 30, 30, now)              # 30 s of 150 fills/s before we start
    e.poll_once()
    stop = threading.Event()

    def traffic() -> None:                       # and 150 fills/s while we run
        while not stop.is_set():
            unrelated(h, 15, 0.1, time.time())
            time.sleep(0.1)

    flow = threading.Thread(target=traffic)
    flow.start()
    try:
        h.trade(leader=3, ago=12, visible_after=0.2, transactionHash="0xlate")  # published 12 s late
        end = time.time() + 6
        while time.time() < end and not h.ex.s.orders:
            e.poll_once()
            time.sleep(0.05)
    finally:
        stop.set()
        flow.join()
    assert len(h.ex.s.orders) == 1 and h.ex.s.orders[0]["order"]["tokenId"] == YES
    assert e.metrics.get("polymarket_errors_total", kind="data_api") == 0


@pytest.mark.parametrize("feed", ["global", "per-leader"])
def test_6000_fill_backlog_delays_no_other_leader(h: Harness, feed: str) -> None:
    e = h.engine(LEADER_FEED=feed, COPY_LEADERS=",".join(LEADERS[:6] if feed == "global" else LEADERS[:2]))
    now = time.time()
    for leader in LEADERS[:6]:
        e.ledger.set_mark(f"hwm:{leader}", now - 3600)   # we were down for an hour
    with h.ex.s.lock:                                   # leader 0 filled 6,000 times meanwhile
        for i in range(6000):
            h.ex.add_trade({"proxyWallet": LEADERS[0], "side": "BUY", "asset": NO, "size": 5, "price": 0.5,
                            "timestamp": int(now - 3000 + i * 0.45), "transactionHash": f"0xb{i}"})
    h.trade(leader=1, ago=1, transactionHash="0xfresh")
    e.poll_once()
    assert [o["order"]["tokenId"] for o in h.ex.s.orders] == [YES]     # copied in the first poll
    status, body = server.health(e)
    assert status == 200, body
    polls = 1
    while e.backlog and polls < 20:
        e.poll_once()
        polls += 1
    assert not e.backlog and polls <= 8
    seen = e.ledger.db.execute("SELECT COUNT(*) FROM leader_trades WHERE leader=?", (LEADERS[0],)).fetchone()[0]
    assert seen == 6000
    assert e.metrics.get("polymarket_errors_total", kind="data_api") == 0   # never a 400 past the offset cap
    assert server.health(e)[0] == 200


def test_a_400_for_one_leader_does_not_stop_the_others(h: Harness) -> None:
    e = h.engine()
    h.trade(leader=0, transactionHash="0xa")
    h.trade(leader=1, transactionHash="0xb")
    h.ex.add_fault("/activity", "400", count=1)  # the first leader read of the poll is refused
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and server.health(e)[0] == 200   # the other leader was read
    e.poll_once()
    assert len(h.ex.s.orders) == 2                                  # and the refused one next poll


def test_200_sells_stay_within_the_positions_limit(h: Harness) -> None:
    leaders = LEADERS[:40]
    e = h.engine(LEADER_FEED="global", COPY_LEADERS=",".join(leaders))
    h.trade(leader=0, ago=5, transactionHash="0xbuy")
    e.poll_once()
    assert e.ledger.position("live", YES) is not None
    for i, leader in enumerate(leaders):
        h.ex.set_leader_position(leader, YES, 1_000_000)
        for j in range(5):                        # 200 sells, tiny against the leaders' positions
            h.trade(leader=i, side="SELL", size=1, price=0.49, transactionHash=f"0xs{i}-{j}")
    before = h.ex.s.requests.get("/positions", 0)
    e.poll_once()
    assert h.ex.s.requests.get("/positions", 0) - before == 40   # once per leader per poll, not per sell
    times = sorted(t for t, p in h.ex.s.request_log if p == "/positions")
    assert max(sum(1 for u in times if t <= u < t + 10) for t in times) <= 150
    assert COND


def test_rate_budget_of_a_window_never_exceeds_its_limit() -> None:
    lim = RateLimiter.window(15, 1.0)               # 15 per second, scaled down from 150 per 10 s
    stamps = []
    for _ in range(40):
        lim.acquire()
        stamps.append(time.monotonic())
    assert max(sum(1 for u in stamps if t <= u < t + 1.0) for t in stamps) <= 15
    assert ME
