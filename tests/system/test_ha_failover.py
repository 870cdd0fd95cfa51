"""Failover on a replica deliberately 5 minutes stale (issue 11, item 3), with real etcd, keepalived,
replication over ssh and both bots live, in three booted containers (the segment, the fake exchange
and the leader's trade every 2 s of tests/system/test_ha_lease.py).

The README's one-time key exchange is done, one replica of the holder's ledger is sent to the other
node, then the replication timers are stopped and the leader's trades flow for five minutes: the
replica lacks every copy of those five minutes. The holder dies (its container's init is killed: every
process at once, its etcd member too). The other node takes the lease, its promotion adopts the stale
replica (as polymarket-ha does: the replica is newer than this node's own trading), and its bot reads
the keys etcd holds as copied before its first order. MAX_TRADE_AGE_SECONDS is 600, so every trade
of the stale window is still copyable: without the fence each would be copied a second time.

Asserted on the fake exchange's order log: 0 duplicate orders, and every leader trade published
(those of the failover window included) copied exactly once. Measured and printed (pytest -s; also
.cache/ha-failover-report.json): the replica's age at the failover, the time to the new holder's first
order, the fence's latency per order.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.test_ha_lease import (
    ADDR,
    NODES,
    Lan,
    fence_latencies,
    latency_summary,
    lease_holder,
    started,
    trade_of,
    trading,
    wait,
)

STALE = 300  # seconds the replica is behind at the failover: the replication timer's period
MAX_AGE = 600
REPORT = harness.CACHE / "ha-failover-report.json"


@pytest.fixture(scope="module")
def pair(rootfs: Path, dist: Path) -> Iterator[Lan]:
    with started(rootfs, dist, REPORT, replication=True, MAX_TRADE_AGE_SECONDS=str(MAX_AGE)) as net:
        yield net


def test_failover_on_a_five_minute_stale_replica_copies_no_trade_twice(pair: Lan) -> None:
    holder = lease_holder(pair)
    assert holder is not None
    other = "standby" if holder == "primary" else "primary"
    h, o = pair.nodes[holder], pair.nodes[other]
    for c in (h, o):
        c.sh("systemctl stop polymarket-ha-replicate.timer polymarket-ha-replicate-full.timer")
    # The last replication before the failover (run as the timer would; once more if a loaded run fails).
    for _ in range(3):
        if h.sh("systemctl start polymarket-ha-replicate.service", check=False).returncode == 0:
            break
        time.sleep(5)
    else:
        raise AssertionError(h.sh("journalctl -u polymarket-ha-replicate -o cat | tail -20", check=False).stdout)
    replica = "/var/lib/polymarket-ha/replica/trade_history.db"
    replicated_at = float(o.sh(f"stat -c %Y {replica}").stdout)
    copied_in_replica = int(o.sh(f"sqlite3 'file:{replica}?mode=ro' \"select count(*) from orders\"").stdout)
    time.sleep(max(0.0, replicated_at + STALE - time.time()))
    stale_orders = [x for x in pair.fake("/_control/orders") if x["received"] > replicated_at]
    assert len(stale_orders) >= STALE / 2 * 0.8, "the leader's trades did not flow while the replica aged"
    assert all(x["sender"] == ADDR[holder] for x in stale_orders)
    fence_before = latency_summary(fence_latencies(h, replicated_at))

    # The holder dies: its container's init killed, every process of it at once (bot, keeper, etcd member).
    assert h.proc is not None
    killed_at = time.time()
    os.kill(h.leader, signal.SIGKILL)
    h.proc.wait(30)
    wait(lambda: trading(pair, other, killed_at), 120, f"{other} copying after the failover")
    first = min(x["received"] for x in pair.fake("/_control/orders")
                if x["sender"] == ADDR[other] and x["received"] > killed_at)  # fmt: skip
    time.sleep(20)  # trades keep flowing on the new holder
    pair.fake("/_control/flow", {"on": False})
    time.sleep(6)

    # The promotion did adopt the stale replica (the previous ledger is kept in previous/).
    why = o.sh("journalctl -o cat --no-pager | grep -E 'VRRP MASTER|lease: |generation' | tail -20; "
               "cat /run/polymarket-ha/lease-generation /var/lib/polymarket-ha/lease-generation; "
               f"sqlite3 'file:{replica}?mode=ro' \"select * from meta\"", check=False)  # fmt: skip
    assert o.sh("ls /var/lib/polymarket-ha/previous").stdout.strip(), f"the replica was not adopted:\n{why.stdout}"
    orders = pair.fake("/_control/orders")
    per_trade: dict[int, int] = {}
    for x in orders:
        per_trade[trade_of(x)] = per_trade.get(trade_of(x), 0) + 1
    published = [i for i, _at in pair.fake("/_control/flow")["log"]]
    twice = {i: n for i, n in per_trade.items() if n > 1}
    missed = [i for i in published if i not in per_trade]
    window = [i for i, at in pair.fake("/_control/flow")["log"] if killed_at <= at <= first]
    result = {
        "holder_before": holder, "holder_after": other,
        "replica_age_at_failover_s": round(killed_at - replicated_at, 1),
        "orders_in_the_replica": copied_in_replica,
        "trades_copied_after_the_replica_by_the_dead_holder": len(stale_orders),
        "trades_published_in_the_failover_window": len(window),
        "first_order_of_new_holder_after_kill_s": round(first - killed_at, 1),
        "leader_trades": len(published), "orders": len(orders),
        "duplicate_orders": sum(n - 1 for n in twice.values()), "missed_trades": len(missed),
        "fence_latency_old_holder": fence_before,
        "fence_latency_new_holder": latency_summary(fence_latencies(o, killed_at)),
        "promotion": [line for line in o.sh("journalctl -u polymarket-bot -o cat", check=False).stdout.splitlines()
                      if "node turned active" in line or "copied by neither node" in line][-3:],
    }  # fmt: skip
    pair.report["failover on a 5 min stale replica"] = result
    print("\nfailover on a stale replica: " + json.dumps(result, indent=2))
    assert result["replica_age_at_failover_s"] >= STALE
    assert not twice, f"leader trades copied twice: {twice}"
    assert not missed, f"leader trades never copied: {missed}"
    assert {x["sender"] for x in orders} <= {ADDR[n] for n in NODES}
