"""Shared by tests/system/test_ha_faults.py and tests/bench/bench_ha.py: the three-node lease cluster of
tests/system/test_ha_lease.py (imported from there, not copied), plus what a fault run needs on top of it:
a node brought back after a reboot or a kill, the order log's verdict on one fault, an upgraded .deb, and a
prober that asks HAProxy on the lb the whole time.

Every run of an HA system test holds /tmp/ha-system-test.lock (the segment's namespace names are fixed).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.system.test_ha_lease import (
    ADDR,
    NODES,
    VIP,
    Lan,
    analyse,
    holds_vip,
    lease_holder,
    trade_of,
    trading,
    wait,
)

__all__ = ["ADDR", "NODES", "VIP", "Lan", "analyse", "holds_vip", "lease_holder", "trade_of", "trading", "wait"]


def other(node: str) -> str:
    return "standby" if node == "primary" else "primary"


def wait_holder(net: Lan, timeout: float = 90) -> str:
    wait(lambda: lease_holder(net) is not None, timeout, "a lease holder")
    holder = lease_holder(net)
    assert holder is not None
    return holder


def bring_up(net: Lan, role: str) -> None:
    """After a reboot (or a kill and a new boot) of ``role``'s container: its address again (the segment's
    interface lives in a namespace of the test, which outlives the container), then its services up."""
    c = net.nodes[role]
    name = net.iface[role]
    c.sh(f"ip addr replace {ADDR[role]}/24 dev {name} && ip link set {name} up && ip link set lo up")
    wait(lambda: c.sh("systemctl is-active etcd polymarket-ha-lease keepalived", check=False).returncode == 0,
         120, f"etcd, the lease keeper and keepalived on the {role} after its boot")  # fmt: skip


def verdict(net: Lan, name: str, since: float, holder_before: str) -> dict[str, Any]:
    """The order log's verdict on one fault (orders received since ``since``), recorded in the report."""
    result = analyse(net, since)
    orders = net.fake("/_control/orders")
    holder_after = lease_holder(net)
    first = [o["received"] for o in orders
             if o["received"] > since and holder_after and o["sender"] == ADDR[holder_after]]  # fmt: skip
    times = sorted(o["received"] for o in orders if o["received"] >= since)
    result.update({"holder_before": holder_before, "holder_after": holder_after,
                   "first_order_of_holder_after_s": round(first[0] - since, 1) if first else None,
                   "longest_pause_between_orders_s": round(max((b - a for a, b in itertools.pairwise(times)),
                                                               default=0.0), 1)})  # fmt: skip
    net.report[name] = result
    print(f"\n{name}: {json.dumps(result)}")
    return result


def message(name: str, r: dict[str, Any]) -> str:
    return (f"{name}: {r['seconds_with_two_senders']} s with two senders, {r['duplicate_orders']} duplicate "
            f"orders, {r['missed_trades']} missed of {r['leader_trades']} leader trades; {json.dumps(r)}")


# -- an upgrade: the same package with a higher version -----------------------------------------------------

def bumped(deb: Path, suffix: str, out: Path) -> Path:
    """``deb`` repacked with Version: VERSION+SUFFIX (the payload and maintainer scripts unchanged): dpkg
    upgrades to it as to any newer release (prerm upgrade, postinst configure OLD), with no rebuild."""
    with tempfile.TemporaryDirectory(prefix="pm-bump-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
        control = tree / "DEBIAN" / "control"
        lines = control.read_text().splitlines()
        version = ""
        for i, line in enumerate(lines):
            if line.startswith("Version: "):
                version = line.split(": ", 1)[1] + suffix
                lines[i] = f"Version: {version}"
        control.write_text("\n".join(lines) + "\n")
        package = deb.name.split("_", 1)[0]
        target = out / f"{package}_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(tree), str(target)], check=True,
                       capture_output=True)  # fmt: skip
        return target


# -- HAProxy on the lb, asked the whole time ----------------------------------------------------------------

PROBER = r"""
import json, sys, time, urllib.request, urllib.error
url, period = sys.argv[1], float(sys.argv[2])
while True:
    t = time.time()
    try:
        with urllib.request.urlopen(url, timeout=1.5) as r:
            body = r.read(4096)
            status = r.status
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    except Exception as e:
        status, body = 0, str(e).encode()
    try:
        role = json.loads(body).get("role", "")
    except Exception:
        role = ""
    print(json.dumps([round(t, 3), status, role]), flush=True)
    time.sleep(max(0.0, period - (time.time() - t)))
"""


@contextlib.contextmanager
def haproxy_prober(net: Lan, period: float = 0.1) -> Iterator[list[tuple[float, int, str]]]:
    """GET http://LB:8080/health through HAProxy every ``period`` s from the segment, for the block's duration;
    the list holds (time, HTTP status or 0 for no answer, the answering bot's role)."""
    url = f"http://{ADDR['lb']}:8080/health"
    results: list[tuple[float, int, str]] = []
    with tempfile.TemporaryDirectory(prefix="pm-probe-") as tmp:
        script = Path(tmp) / "prober.py"
        script.write_text(PROBER)
        log = Path(tmp) / "probe.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", net.bridge_ns, sys.executable, str(script), url,
                                     str(period)], stdout=out, stderr=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        try:
            yield results
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            for line in log.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    t, status, role = json.loads(line)
                    results.append((float(t), int(status), str(role)))


def failed_seconds(results: list[tuple[float, int, str]]) -> dict[str, Any]:
    """What the HAProxy prober saw: the seconds in which a request failed (no answer or not 200), and the
    longest run of failed requests, in seconds."""
    failed = [t for t, status, _role in results if status != 200]
    longest = run_start = 0.0
    prev_failed = False
    for t, status, _role in results:
        if status != 200 and not prev_failed:
            run_start = t
        if status != 200:
            longest = max(longest, t - run_start)
        prev_failed = status != 200
    passive = [t for t, status, role in results if status == 200 and role != "active"]
    return {"requests": len(results), "failed_requests": len(failed),
            "seconds_with_failed_requests": len({int(t) for t in failed}),
            "longest_failure_s": round(longest, 2),
            "seconds_answered_by_a_passive_bot": len({int(t) for t in passive})}


def per_trade(orders: list[dict[str, Any]]) -> dict[int, int]:
    """How many orders copy each leader trade."""
    counts: dict[int, int] = {}
    for o in orders:
        counts[trade_of(o)] = counts.get(trade_of(o), 0) + 1
    return counts
