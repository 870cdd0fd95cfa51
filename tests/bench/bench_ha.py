"""make bench-ha: how long a failover takes, measured on the three-node lease cluster of the system tests.

The cluster of tests/system/test_ha_lease.py (primary, standby, lb in booted containers on a private segment,
etcd, keepalived, HAProxy, both bots live against the project's fake exchange, a leader trade every 2 s) is
booted once. Then, RUNS times: the node holding the lease dies (its container's init is killed: every process
at once, and its link to the segment goes down, as a machine losing power), and from that instant are timed:

- the VIP on the other node (``ip addr`` inside it, polled every ~0.2 s);
- the first order the other node sends (the fake exchange's order log, which notes the sender);
- the leader trades published around the failover that no node copied (lost), and those copied twice.

The dead node is booted again and rejoins as the passive one before the next run, so runs alternate between
the two nodes. Prints each run and min/median/max; no pass/fail (the system tests assert). Needs root and
the system tests' prerequisites; takes about 3 minutes to boot plus about a minute a run. Also written to
.cache/ha-bench-report.json. Holds /tmp/ha-system-test.lock when run by make.

    sudo .venv/bin/python -m tests.bench.bench_ha [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from tests.system import harness
from tests.system.ha_cluster import (
    ADDR,
    VIP,
    Lan,
    bring_up,
    holds_vip,
    other,
    per_trade,
    wait,
    wait_holder,
)
from tests.system.test_ha_lease import started

REPORT = harness.CACHE / "ha-bench-report.json"


def netns_of(net: Lan, role: str) -> str:
    return net.bridge_ns.rsplit("-", 1)[0] + f"-{role}"  # lan() names them TAG-lan and TAG-ROLE


def die(net: Lan, role: str) -> float:
    """Power loss of ``role``: its link down, every process of it killed at once; the moment it happened."""
    c = net.nodes[role]
    assert c.proc is not None
    subprocess.run(["ip", "-n", net.bridge_ns, "link", "set", f"b{role[0]}", "down"], check=True)
    at = time.time()
    os.kill(c.leader, signal.SIGKILL)
    c.proc.wait(30)
    return at


def revive(net: Lan, role: str) -> None:
    """Boot the dead node again on the same tree: it comes back passive (the other node holds the lease)."""
    ns = netns_of(net, role)
    # What the kernel of a powered-off machine does not keep: the VIP keepalived had added.
    subprocess.run(["ip", "-n", ns, "addr", "del", f"{VIP}/24", "dev", net.iface[role]], capture_output=True)
    subprocess.run(["ip", "-n", net.bridge_ns, "link", "set", f"b{role[0]}", "up"], check=True)
    net.nodes[role].start()
    bring_up(net, role)


def ready_follower(net: Lan, role: str) -> bool:
    """``role``'s bot answers, its keepalived runs, and its lease keeper names the other node as the holder."""
    c = net.nodes[role]
    health = c.sh(f"curl -s --max-time 2 http://{ADDR[role]}:8080/live", check=False).stdout
    state = c.sh("cat /run/polymarket-ha/vrrp-state", check=False).stdout.strip()
    try:
        holder = json.loads(c.sh("cat /run/polymarket/lease", check=False).stdout or "{}").get("holder")
    except ValueError:
        return False
    return '"role"' in health and state in ("BACKUP", "FAULT") and holder == other(role)


def one_run(net: Lan, n: int) -> dict[str, Any]:
    holder = wait_holder(net)
    new = other(holder)
    wait(lambda: ready_follower(net, new), 180, f"the {new} a ready follower")
    time.sleep(8)  # trades flow on the holder; the follower has seen them passive
    before = per_trade(net.fake("/_control/orders"))
    killed = die(net, holder)
    vip_at = first_at = None
    end = killed + 120
    while time.time() < end and (vip_at is None or first_at is None):
        if vip_at is None and holds_vip(net.nodes[new]):
            vip_at = time.time()
        if first_at is None:
            mine = [o["received"] for o in net.fake("/_control/orders")
                    if o["sender"] == ADDR[new] and o["received"] > killed]  # fmt: skip
            first_at = min(mine) if mine else None
        time.sleep(0.2)
    time.sleep(12)  # the failover window's trades are copied at the promotion; let them land
    orders = net.fake("/_control/orders")
    after = per_trade(orders)
    published = [i for i, at in net.fake("/_control/flow")["log"] if killed - 10 <= at <= time.time() - 5]
    result = {
        "run": n, "died": holder, "took_over": new,
        "vip_moved_s": round(vip_at - killed, 1) if vip_at else None,
        "first_order_s": round(first_at - killed, 1) if first_at else None,
        "leader_trades_around": len(published),
        "lost": len([i for i in published if i not in after]),
        "duplicated": sum(max(0, c - max(1, before.get(i, 0))) for i, c in after.items()),
        "senders_after_death": sorted({o["sender"] for o in orders if o["received"] > killed}),
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    revive(net, holder)
    return result


def spread(values: list[float]) -> str:
    if not values:
        return "no value"
    return f"min {min(values):.1f} s, median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    missing = harness.missing_prerequisites()
    if missing:
        print(f"error: bench-ha needs: {', '.join(missing)}", file=sys.stderr)
        return 3
    dist = harness.REPO / "dist"
    if not list(dist.glob("polymarket-ha_*.deb")) or not list(dist.glob("polymarket-bot_*.deb")):
        subprocess.run(["make", "-C", str(harness.REPO), "build"], check=True)
    booted = time.monotonic()
    runs: list[dict[str, Any]] = []
    with started(harness.rootfs_tarball(), dist, REPORT) as net:
        print(f"cluster up in {time.monotonic() - booted:.0f} s; {args.runs} failovers", flush=True)
        for n in range(1, args.runs + 1):
            runs.append(one_run(net, n))
        summary = {
            "runs": len(runs),
            "primary death -> VIP moved": spread([r["vip_moved_s"] for r in runs if r["vip_moved_s"] is not None]),
            "primary death -> first order on the new node": spread(
                [r["first_order_s"] for r in runs if r["first_order_s"] is not None]),
            "orders lost": sum(r["lost"] for r in runs),
            "orders duplicated": sum(r["duplicated"] for r in runs),
            "failovers without a first order within 120 s": sum(1 for r in runs if r["first_order_s"] is None),
        }  # fmt: skip
        net.report.update({"runs": runs, "summary": summary})
    print("\nHA failover bench (tests/bench/bench_ha.py):")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
