"""Issue 11's other faults, and the README's rolling upgrade, on the three-node lease cluster of
tests/system/test_ha_lease.py (one boot for all; each fault a test of its own, in this order):

- the bot restarted on the active node (``systemctl restart``, as an upgrade or an operator does);
- keepalived killed (kill -9) on the node that holds the lease;
- the standby rebooted;
- polymarket-bot purged and installed again on the standby (its postrm removes /run/polymarket);
- a rolling upgrade of both nodes the README's way (standby upgraded, switchover, primary upgraded,
  switchover back) while the leader's trades flow and a client asks HAProxy on the lb every 0.1 s.

The partitions, the freeze and the killed lease keeper are test_ha_lease.py's. Every fault is judged on the
fake exchange's order log (who sent each order, when): no second in which two nodes sent orders, no leader
trade copied twice, none younger than MAX_TRADE_AGE_SECONDS missed. Measurements are printed (pytest -s)
and kept in .cache/ha-faults-report.json. Run it under ``flock /tmp/ha-system-test.lock``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.ha_cluster import (
    ADDR,
    Lan,
    bring_up,
    bumped,
    failed_seconds,
    haproxy_prober,
    lease_holder,
    message,
    other,
    trading,
    verdict,
    wait,
    wait_holder,
)
from tests.system.test_ha_lease import configure_bot, started

REPORT = harness.CACHE / "ha-faults-report.json"


@pytest.fixture(scope="module")
def cluster(rootfs: Path, dist: Path) -> Iterator[Lan]:
    with started(rootfs, dist, REPORT) as net:
        yield net


def fault_run(net: Lan, name: str, fault: Callable[[str], None], settle: float = 10) -> dict[str, Any]:
    """Run ``fault`` (given the holder), let the trades flow ``settle`` s more, wait until a holder trades
    again, and assert the three invariants on the order log."""
    holder = wait_holder(net)
    since = time.time()
    fault(holder)
    time.sleep(settle)
    now = wait_holder(net)
    wait(lambda: trading(net, now, time.time() - 6), 90, f"{now} trading after {name}")
    time.sleep(6)  # the trades seen while passive are copied at the promotion: let it finish
    r = verdict(net, name, since, holder)
    assert r["seconds_with_two_senders"] == 0, message(name, r)
    assert r["duplicate_orders"] == 0, message(name, r)
    assert r["missed_trades"] == 0, message(name, r)
    return r


def test_bot_restarted_on_the_active_node(cluster: Lan) -> None:
    def restart(holder: str) -> None:
        cluster.nodes[holder].sh("systemctl restart polymarket-bot")

    r = fault_run(cluster, "bot restarted on the active node", restart)
    assert r["holder_after"] == r["holder_before"], message("a planned bot restart moved the lease", r)


def test_keepalived_killed_on_the_holder(cluster: Lan) -> None:
    """kill -9 of keepalived: its ExecStopPost makes the node passive; it must come back and trade again
    (or the peer must), never leave nobody trading."""

    def kill(holder: str) -> None:
        # every process of the unit, as `systemctl kill -s KILL` does; that command itself exits 1 under bookworm's
        # systemd 252 in these containers (it also signals through the cgroup: "Input/output error")
        # (and the cgroup's path under /sys/fs/cgroup differs there): the main process and its children, the
        # VRRP and checker processes, are every process of keepalived.
        cluster.nodes[holder].sh("pid=$(systemctl show -P MainPID keepalived) && [ \"$pid\" -gt 0 ] && "
                                 "kill -KILL $pid $(pgrep -P $pid)")

    r = fault_run(cluster, "keepalived killed (kill -9) on the holder", kill, settle=25)
    # keepalived is back on the holder (Debian's unit does not restart it: it stayed dead, the VIP it had
    # added left on the node whatever became of the lease), MASTER again with the VIP.
    c = cluster.nodes[str(r["holder_after"])]
    wait(lambda: c.sh("systemctl is-active keepalived", check=False).stdout.strip() == "active", 60,
         "keepalived running again on the holder")  # fmt: skip
    wait(lambda: c.sh("cat /run/polymarket-ha/vrrp-state", check=False).stdout.strip() == "MASTER", 30,
         "the holder's keepalived MASTER again")  # fmt: skip


def test_standby_rebooted(cluster: Lan) -> None:
    def reboot(_holder: str) -> None:
        cluster.nodes["standby"].reboot()
        bring_up(cluster, "standby")

    fault_run(cluster, "standby rebooted", reboot)
    s = cluster.nodes["standby"]
    holder = lease_holder(cluster)
    if holder != "standby":
        assert '"role": "passive"' in s.sh(f"curl -s --max-time 3 http://{ADDR['standby']}:8080/health").stdout


def test_bot_purged_and_reinstalled_on_the_standby(cluster: Lan) -> None:
    """The bot's postrm removes /run/polymarket (the passive file and the lease file with it): the node
    reinstalled must still send nothing while the other node holds the lease."""
    s = cluster.nodes["standby"]

    def purge(_holder: str) -> None:
        s.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-bot")
        s.install_debs([deb(cluster.dist, "polymarket-bot")])
        configure_bot(s)  # purge removed its .env: configured again as at the first install

    r = fault_run(cluster, "polymarket-bot purged and reinstalled on the standby", purge)
    if r["holder_before"] != "standby":
        assert "standby" not in r["senders"], message("the reinstalled standby sent orders", r)


def test_rolling_upgrade_the_readme_way(cluster: Lan) -> None:
    """README "Go-live order": upgrade the node that does not trade and validate it, hand over with
    `polymarket-ha switchover`, upgrade the other, hand back. Trades flow; HAProxy is asked every 0.1 s."""
    net = cluster
    holder = wait_holder(net)
    first, second = other(holder), holder
    with tempfile.TemporaryDirectory(prefix="pm-upgrade-") as tmp:
        new = [bumped(deb(net.dist, p), "+rolling1", Path(tmp)) for p in ("polymarket-bot", "polymarket-ha")]
        want = new[0].name.split("_")[1]
        timeline: dict[str, float] = {}
        since = time.time()
        with haproxy_prober(net) as probes:
            time.sleep(3)  # a few answers before the first step
            for step, node in (("upgrade", first), ("switchover", second), ("upgrade", second),
                               ("switchover", first)):  # fmt: skip
                c = net.nodes[node]
                t0 = time.time()
                if step == "upgrade":
                    c.install_debs(new)
                    assert c.sh("dpkg-query -W -f '${Version}' polymarket-bot").stdout == want
                    assert c.sh("systemctl is-active polymarket-bot keepalived polymarket-ha-lease",
                                check=False).returncode == 0, c.sh("systemctl --failed", check=False).stdout
                    url = f"http://{ADDR[node]}:8080/health"
                    try:
                        wait(lambda: '"role"' in c.sh(f"curl -s --max-time 2 {url}", check=False).stdout,  # noqa: B023
                             60, f"the upgraded {node}'s bot answering")  # fmt: skip
                    except AssertionError as exc:  # what the node shows, for the open cause (issue 11)
                        seen = c.sh(f"curl -sS -m 2 -o /dev/null -w '%{{http_code}}' {url}; echo; "
                                    "systemctl status --no-pager -n 0 polymarket-bot; ss -ltnp; "
                                    "journalctl -u polymarket-bot -n 60 --no-pager -o short-monotonic",
                                    check=False)  # fmt: skip
                        raise AssertionError(f"{exc}\n{seen.stdout}\n{seen.stderr}") from None
                else:
                    out = c.sh("polymarket-ha switchover 2>&1").stdout
                    to = other(node)
                    wait(lambda: trading(net, to, t0), 60, f"the {to} trading after the switchover")  # noqa: B023
                    timeline[f"switchover {node}->{to}: first order of the {to} after"] = round(
                        min(o["received"] for o in net.fake("/_control/orders")
                            if o["sender"] == ADDR[to] and o["received"] > t0) - t0, 1)  # fmt: skip
                    print(out)
                timeline[f"{step} {node} took"] = round(time.time() - t0, 1)
                time.sleep(6)
            time.sleep(10)
    r = verdict(net, "rolling upgrade (README way)", since, holder)
    probe = failed_seconds(probes)
    r.update({"haproxy": probe, "timeline": timeline})
    net.report["rolling upgrade (README way)"] = r
    print("\nrolling upgrade: " + json.dumps(r, indent=2))
    assert lease_holder(net) == holder, "the lease is not back on the node that held it before the upgrade"
    assert r["seconds_with_two_senders"] == 0, message("rolling upgrade", r)
    assert r["duplicate_orders"] == 0, message("rolling upgrade", r)
    assert r["missed_trades"] == 0, message("rolling upgrade", r)
    assert probe["requests"] > 100
