"""polymarket-ha with real keepalived, HAProxy, rsync and ssh in three booted containers.

The containers share a private L2 segment made for the test: a bridge inside a
network namespace of its own and one veth pair per container, one end in the
bridge, the other in a namespace that the container boots in
(--network-namespace-path=). Nothing is created in this machine's own network
namespace; all addresses (10.213.0.0/24) live inside those namespaces. The
project's fake exchange runs on the bridge (10.213.0.20): the bots poll a
leader's trades there (dry-run), so a Data API outage can be made by stopping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.harness import Container

NET = "10.213.0"
VIP = f"{NET}.10"
ADDR = {"primary": f"{NET}.11", "standby": f"{NET}.12", "lb": f"{NET}.13"}
PEER = {"primary": ADDR["standby"], "standby": ADDR["primary"], "lb": ""}
DB = "/var/lib/polymarket/trade_history.db"
REPLICA = "/var/lib/polymarket-ha/replica/trade_history.db"
PROM = "/var/lib/prometheus/node-exporter/polymarket-ha.prom"
FAKE_ADDR = f"{NET}.20"
FAKE = f"http://{FAKE_ADDR}:8900"
LEADER = "0x" + "ab" * 20

# The project's fake exchange, on the segment (the bridge's namespace).
RUNNER = r"""
import sys
from http.server import ThreadingHTTPServer
sys.path.insert(0, sys.argv[1])
from polymarket_bot import fake_exchange as fx

class Server(fx.FakeServer):
    def __init__(self):
        self.exchange = fx.Exchange()
        ThreadingHTTPServer.__init__(self, (sys.argv[2], 8900), fx.Handler)

srv = Server()
print("ready", flush=True)
srv.serve_forever()
"""


def wait(pred: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass
class Lan:
    nodes: dict[str, Container]
    iface: dict[str, str]
    bridge_ns: str = ""
    fake: subprocess.Popen[str] | None = None


@contextlib.contextmanager
def lan(rootfs: Path) -> Iterator[Lan]:
    tag = f"pmha{os.getpid() % 10000}"
    spaces = {role: f"{tag}-{role}" for role in ADDR}
    ifaces = {role: f"lan{role[0]}" for role in ADDR}
    bridge_ns = f"{tag}-lan"
    made = []
    try:
        for ns in (bridge_ns, *spaces.values()):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        sh("ip", "-n", bridge_ns, "link", "set", "lo", "up")
        sh("ip", "-n", bridge_ns, "addr", "add", f"{FAKE_ADDR}/24", "dev", "br0")  # the fake exchange's
        for role, name in ifaces.items():
            # Both ends are created inside namespaces of this test: nothing on this machine's network.
            sh("ip", "-n", bridge_ns, "link", "add", f"b{role[0]}", "type", "veth", "peer", "name", name,
               "netns", spaces[role])  # fmt: skip
            sh("ip", "-n", bridge_ns, "link", "set", f"b{role[0]}", "master", "br0", "up")
        with contextlib.ExitStack() as stack:
            nodes = {}
            for role, name in ifaces.items():
                netns = f"--network-namespace-path=/run/netns/{spaces[role]}"
                caps = "--capability=CAP_NET_ADMIN,CAP_NET_RAW"  # keepalived's, as on a real host
                boot = harness.booted(rootfs, name=f"ha-{role}", network="none", extra_args=[netns, caps])
                c = stack.enter_context(boot)
                c.sh(f"ip addr add {ADDR[role]}/24 dev {name} && ip link set {name} up && ip link set lo up")
                nodes[role] = c
            yield Lan(nodes, ifaces, bridge_ns)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def preseed(c: Container, role: str, iface: str) -> None:
    answers = {"role": ("select", role), "own_address": ("string", ADDR[role]),
               "peer_address": ("string", PEER[role]), "virtual_ip": ("string", f"{VIP}/24"),
               "interface": ("string", iface),
               "backends": ("string", f"{ADDR['primary']} {ADDR['standby']}" if role == "lb" else "")}  # fmt: skip
    c.sh("debconf-set-selections", input="".join(f"polymarket-ha polymarket-ha/{k} {t} {v}\n"
                                                 for k, (t, v) in answers.items()))  # fmt: skip


def health(c: Container, address: str) -> dict[str, object]:
    out = c.sh(f"curl -s --max-time 2 http://{address}:8080/health", check=False).stdout
    try:
        result = json.loads(out)
    except ValueError:
        return {}
    assert isinstance(result, dict)
    return result


def holds_vip(c: Container) -> bool:
    return f" {VIP}/" in c.sh("ip -o -4 addr show", check=False).stdout


def vrrp(c: Container) -> str:
    return c.sh("cat /run/polymarket-ha/vrrp-state", check=False).stdout.strip()


def http_code(c: Container, address: str, path: str = "/health") -> str:
    return c.sh(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 http://{address}:8080{path}",
                check=False).stdout  # fmt: skip


def configure_bot(c: Container) -> None:
    """Dry-run (no key) following one leader on the fake exchange."""
    settings = {"COPY_LEADERS": LEADER, "POLYMARKET_DATA_API_URL": FAKE, "POLYMARKET_CLOB_URL": FAKE,
                "POLYMARKET_GAMMA_URL": FAKE, "GEOBLOCK_URL": "", "POLL_INTERVAL": "1"}  # fmt: skip
    c.sh("; ".join(f"sed -i '/^{k}=/d' /etc/polymarket/.env" for k in settings))
    c.sh("cat >> /etc/polymarket/.env", input="".join(f"{k}={v}\n" for k, v in settings.items()))
    c.sh("systemctl restart polymarket-bot")


def metrics(c: Container) -> dict[str, float]:
    text = c.path(PROM).read_text() if c.path(PROM).exists() else ""
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}


@pytest.fixture(scope="module")
def ha(rootfs: Path, dist: Path) -> Iterator[Lan]:
    with lan(rootfs) as net, tempfile.TemporaryDirectory(prefix="pm-fake-") as tmp:
        runner = Path(tmp) / "runner.py"
        runner.write_text(RUNNER)
        net.fake = subprocess.Popen(
            ["ip", "netns", "exec", net.bridge_ns, sys.executable, str(runner),
             str(harness.REPO / "packages" / "polymarket-bot"), FAKE_ADDR],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)  # fmt: skip
        try:
            assert net.fake.stdout is not None and net.fake.stdout.readline().strip() == "ready"
            install(net, dist)
            yield net
        finally:
            os.killpg(net.fake.pid, signal.SIGKILL)
            net.fake.wait(10)


def install(net: Lan, dist: Path) -> None:
    for role, c in net.nodes.items():
        # The shared rootfs carries polymarket-monitoring's Prometheus and Alertmanager (enabled, started at
        # boot): Prometheus on *:9090 is the bot's METRICS_PORT, and the bot exits with EADDRINUSE. A node of
        # this test has no monitoring, as in production (monitoring is the lb's, without a bot).
        c.sh("systemctl disable --now prometheus.service prometheus-alertmanager.service")
        if role != "lb":
            # As polymarket-hardening leaves a node: incoming denied but 22 and the admin network's 8080.
            c.sh(f"ufw default deny incoming && ufw limit 22/tcp && ufw allow from {NET}.0/24 to any port 8080 "
                 "proto tcp && ufw --force enable")  # fmt: skip
        preseed(c, role, net.iface[role])
        debs = [deb(dist, "polymarket-ha")] if role == "lb" else [deb(dist, "polymarket-bot"),
                                                                     deb(dist, "polymarket-ha")]  # fmt: skip
        c.install_debs(debs)
        if role != "lb":
            configure_bot(c)
            # Only trust-peer and the heartbeat may send the first replica (issue 11 cause 9): the
            # 5-minute timer would hide whether they do. Later tests start replications by hand.
            c.sh("systemctl stop polymarket-ha-replicate.timer")
    p, s = net.nodes["primary"], net.nodes["standby"]
    # The one-time key exchange of the README: the replication key and the ssh host key, both given.
    for a, b in ((p, s), (s, p)):
        key = a.sh("polymarket-ha pubkey").stdout.strip()
        host = " ".join(a.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
        b.sh(f"polymarket-ha trust-peer '{key}' --host-key '{host}'")


def test_installed_layout_and_generated_config(ha: Lan) -> None:
    p, lb = ha.nodes["primary"], ha.nodes["lb"]
    conf = p.sh("cat /etc/polymarket-ha/keepalived.conf").stdout
    assert "priority 150" in conf and "nopreempt" in conf and f"unicast_peer {{\n        {ADDR['standby']}" in conf
    assert "auth_pass" not in conf
    assert p.sh("systemctl is-active keepalived").stdout.strip() == "active"
    assert "polymarket-ha.conf" in p.sh("systemctl cat keepalived").stdout
    for t in ("heartbeat", "replicate", "replicate-full"):
        assert p.sh(f"systemctl is-enabled polymarket-ha-{t}.timer").stdout.strip() == "enabled"
    # VRRP, ssh and /health opened to the peer only (without VRRP both nodes would take the VIP).
    rules = p.sh("ufw status").stdout
    assert f"{ADDR['standby']}/vrrp" in rules and "# polymarket-ha" in rules
    # The peer's host key is pinned: replication never learns one by itself (no accept-new).
    host = " ".join(ha.nodes["standby"].sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    assert p.sh("cat /var/lib/polymarket-ha/.ssh/known_hosts").stdout == f"{ADDR['standby']} {host}\n"
    auth = p.sh("cat /var/lib/polymarket-ha/.ssh/authorized_keys").stdout
    assert auth.startswith(f'restrict,from="{ADDR["standby"]}",command="/usr/bin/rrsync -wo ')
    assert p.sh("stat -c '%a %U' /var/lib/polymarket-ha/.ssh/id_ed25519").stdout.split() == ["600", "polymarket-ha"]
    cfg = lb.sh("cat /etc/polymarket-ha/haproxy.cfg").stdout
    assert "option httpchk GET /health" in cfg and "http-check expect status 200" in cfg
    assert not lb.path("/etc/polymarket-ha/keepalived.conf").exists()


def test_a_hand_edited_ha_conf_without_quotes_is_read_the_same_by_every_helper(ha: Lan) -> None:
    """Issue 8: firewall and apply read ha.conf through polymarket-ha get (the one parser), so an unquoted hand
    edit keeps the peer's VRRP rule (sed saw no ROLE and deleted them all), and a value the parser rejects stops
    firewall with its error line, the rules in place untouched. On the standby: a check that fails on the primary
    would hand the VIP over for good (nopreempt)."""
    s, lb = ha.nodes["standby"], ha.nodes["lb"]
    conf = "/etc/polymarket-ha/ha.conf"
    saved = {c: c.sh(f"cat {conf}").stdout for c in (s, lb)}
    try:
        for c in (s, lb):
            c.sh(f"sed -i 's/\"//g' {conf}")
            assert c.sh(f"grep -c '\"' {conf}", check=False).stdout.strip() == "0"
        assert s.sh("polymarket-ha get ROLE").stdout == "standby\n"
        assert s.sh("polymarket-ha get PEER_ADDRESS").stdout == f"{ADDR['primary']}\n"
        s.sh("/usr/lib/polymarket-ha/firewall")
        rules = s.sh("ufw status").stdout
        assert f"{ADDR['primary']}/vrrp" in rules and "8080/tcp" in rules and "# polymarket-ha" in rules
        out = lb.sh("/usr/lib/polymarket-ha/apply 0.1 2>&1")
        assert "unknown ROLE" not in out.stdout
        assert lb.sh("systemctl is-active haproxy").stdout.strip() == "active"
        # A value the parser rejects: firewall fails with one line and deletes nothing.
        s.sh(f"sed -i 's/^ROLE=.*/ROLE=bogus/' {conf}")
        bad = s.sh("/usr/lib/polymarket-ha/firewall", check=False)
        assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
            "error: ROLE 'bogus' is not one of primary, standby, lb (hint: dpkg-reconfigure polymarket-ha)"]
        assert f"{ADDR['primary']}/vrrp" in s.sh("ufw status").stdout
        assert s.sh("polymarket-ha get NO_SUCH_KEY", check=False).returncode == 2
    finally:
        for c, text in saved.items():
            c.sh(f"cat >{conf}", input=text)


def test_primary_holds_vip_and_trades_standby_passive(ha: Lan) -> None:
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    wait(lambda: holds_vip(p), 40, "the VIP on the primary")
    wait(lambda: health(p, ADDR["primary"]).get("role") == "active", 60, "the primary's bot active")
    assert not holds_vip(s)
    wait(lambda: health(s, ADDR["standby"]).get("role") == "passive", 30, "the standby's bot passive (and healthy)")
    st = json.loads(p.sh("polymarket-ha status --json").stdout)
    assert st["vrrp_state"] == "MASTER" and st["vip_held"] and st["peer"]["role"] == "passive"
    assert p.sh("polymarket-floating-ip check").returncode == 0
    assert s.sh("polymarket-floating-ip check", check=False).returncode == 1
    assert s.sh("polymarket-floating-ip check 300.1.1.1", check=False).returncode == 2
    # The heartbeat writes the status the bot's /ha page can show.
    p.sh("systemctl start polymarket-ha-heartbeat.service")
    assert json.loads(p.sh("cat /run/polymarket/ha-status.json").stdout)["vip_held"] is True


def test_the_first_replica_arrives_without_waiting_for_the_timer(ha: Lan) -> None:
    """Issue 11 cause 9: nothing was replicated until the first 5-minute timer (stopped here), so an early
    failover had no replica. The active node sends one right after trust-peer, or its heartbeat (every minute)
    does while none has succeeded. The textfile metrics of the monitoring contract say so on both nodes."""
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    wait(lambda: s.path(REPLICA).exists(), 150, "the first replica on the standby, with no replicate timer")
    assert s.sh(f"sqlite3 'file:{REPLICA}?mode=ro' 'PRAGMA integrity_check'").stdout.strip() == "ok"
    sent = json.loads(p.sh("cat /var/lib/polymarket-ha/last-replication.json").stdout)
    assert sent["result"] == "ok" and time.time() - sent["last_ok_at"] < 300
    # Metrics (node exporter's textfile directory, made root's 0755 as the node exporter ships it).
    p.sh("systemctl start polymarket-ha-heartbeat.service")
    s.sh("systemctl start polymarket-ha-heartbeat.service")
    assert p.sh("stat -c '%U %a' /var/lib/prometheus/node-exporter").stdout.split() == ["root", "755"]
    assert p.sh(f"stat -c '%U %a' {PROM}").stdout.split() == ["root", "644"]
    mp, ms = metrics(p), metrics(s)
    assert mp["polymarket_ha_vrrp_master"] == 1 and ms["polymarket_ha_vrrp_master"] == 0
    assert mp["polymarket_ha_last_replication_timestamp_seconds"] == pytest.approx(sent["last_ok_at"], abs=0.01)
    replica_at = float(s.sh(f"stat -c %Y {REPLICA}").stdout)
    assert ms["polymarket_ha_last_replication_timestamp_seconds"] == pytest.approx(replica_at, abs=1)
    assert mp["polymarket_ha_split_brain"] == 0 == ms["polymarket_ha_split_brain"]
    assert "polymarket_ha_lease_holder" not in mp  # no witness here: no lease to export


def test_replication_ships_a_consistent_snapshot(ha: Lan) -> None:
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    wait(lambda: p.path(DB).exists(), 30, "the primary's ledger")
    p.sh(f"runuser -u polymarket-bot -- sqlite3 {DB} "
         "\"create table if not exists ha_marker(v text); insert into ha_marker values ('from-primary');\"")
    if p.sh("systemctl start polymarket-ha-replicate.service", check=False).returncode != 0:
        raise AssertionError(p.sh("journalctl -u polymarket-ha-replicate -o cat | tail -20; "
                                  "cat /var/lib/polymarket-ha/last-replication.json", check=False).stdout)
    replica = "/var/lib/polymarket-ha/replica/trade_history.db"
    assert s.sh(f"sqlite3 'file:{replica}?mode=ro' 'PRAGMA integrity_check'").stdout.strip() == "ok"
    assert s.sh(f"sqlite3 'file:{replica}?mode=ro' 'select v from ha_marker'").stdout.strip() == "from-primary"
    assert json.loads(p.sh("cat /var/lib/polymarket-ha/last-replication.json").stdout)["result"] == "ok"
    # The standby is not active: its replicate run sends nothing.
    assert "not the active node" in s.sh("polymarket-ha replicate 2>&1").stdout
    # The peer's key can write replicas, nothing else (no shell).
    denied = p.sh(f"runuser -u polymarket-ha -- ssh -i /var/lib/polymarket-ha/.ssh/id_ed25519 -o BatchMode=yes "
                  f"-o UserKnownHostsFile=/var/lib/polymarket-ha/.ssh/known_hosts polymarket-ha@{ADDR['standby']} id",
                  check=False)  # fmt: skip
    assert "uid=" not in denied.stdout


def test_haproxy_on_the_lb_reaches_the_active_node(ha: Lan) -> None:
    lb = ha.nodes["lb"]
    wait(lambda: health(lb, ADDR["lb"]).get("role") == "active", 30, "HAProxy to the active bot")


def test_a_data_api_outage_never_moves_the_vip(ha: Lan) -> None:
    """Issue 11 cause 7: /health is 503 on both nodes at once when the exchange stops answering (its freshness);
    the VIP and the lease follow the bot process's liveness (/live), so 30 s of outage move nothing."""
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    assert ha.fake is not None
    wait(lambda: holds_vip(p) and health(p, ADDR["primary"]).get("status") == "ok", 60, "the primary healthy")
    os.killpg(ha.fake.pid, signal.SIGSTOP)  # the whole exchange: connections open, no answer
    codes, states = set(), set()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            assert holds_vip(p) and not holds_vip(s), "the VIP moved during a Data API outage"
            codes.add(http_code(p, ADDR["primary"]))
            states |= {vrrp(p), vrrp(s)}
            time.sleep(1)
    finally:
        os.killpg(ha.fake.pid, signal.SIGCONT)
    assert "503" in codes, f"the outage never showed on /health: {codes}"
    assert states == {"MASTER", "BACKUP"}, states
    assert http_code(p, ADDR["primary"], "/live") == "200"
    wait(lambda: health(p, ADDR["primary"]).get("status") == "ok", 60, "/health 200 again after the outage")
    assert holds_vip(p) and health(p, ADDR["primary"]).get("role") == "active"


def test_a_planned_bot_restart_never_moves_the_vip(ha: Lan) -> None:
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    assert holds_vip(p)
    p.sh("systemctl restart polymarket-bot")
    states = set()
    end = time.monotonic() + 20
    while time.monotonic() < end:
        assert holds_vip(p) and not holds_vip(s), "the VIP moved during a planned restart of the bot"
        states |= {vrrp(p), vrrp(s)}
        time.sleep(1)
    assert states == {"MASTER", "BACKUP"}, states
    wait(lambda: health(p, ADDR["primary"]).get("role") == "active", 30, "the restarted bot active")


def test_failover_moves_vip_promotes_replica_and_lb_follows(ha: Lan) -> None:
    p, s, lb = ha.nodes["primary"], ha.nodes["standby"], ha.nodes["lb"]
    wait(lambda: holds_vip(p), 20, "the VIP on the primary")
    p.sh("systemctl stop keepalived")
    started = time.monotonic()
    wait(lambda: holds_vip(s), 15, "the VIP on the standby")
    assert time.monotonic() - started < 10
    assert not holds_vip(p)
    wait(lambda: health(s, ADDR["standby"]).get("role") == "active", 60, "the standby's bot active")
    wait(lambda: health(p, ADDR["primary"]).get("role") == "passive", 15, "the old primary passive")
    # Promotion put the primary's replica in place before the bot left passive.
    assert s.sh(f"sqlite3 {DB} 'select v from ha_marker'").stdout.strip() == "from-primary"
    assert s.sh("ls /var/lib/polymarket-ha/previous").stdout.strip()
    wait(lambda: health(lb, ADDR["lb"]).get("role") == "active", 20, "HAProxy to the new active bot")
    # The old primary comes back as BACKUP (nopreempt): still one trading node.
    p.sh("systemctl start keepalived")
    time.sleep(5)
    assert holds_vip(s) and not holds_vip(p)
    assert health(p, ADDR["primary"]).get("role") == "passive"


def test_a_dead_bot_gives_up_the_vip_and_failback_adopts_the_reverse_replica(ha: Lan) -> None:
    p, s = ha.nodes["primary"], ha.nodes["standby"]
    assert holds_vip(s)  # after the failover above
    # The standby now trades and replicates the other way.
    s.sh(f"runuser -u polymarket-bot -- sqlite3 {DB} \"insert into ha_marker values ('from-standby');\"")
    # The timer runs it every 5 minutes; one run failed once in a loaded CI run (cause not found: see the
    # journal below if it fails three times), so the test allows what the timer would do: run it again.
    for _ in range(3):
        if s.sh("systemctl start polymarket-ha-replicate.service", check=False).returncode == 0:
            break
        time.sleep(5)
    else:  # the journal of the failed runs, read after them
        raise AssertionError(s.sh("journalctl -u polymarket-ha-replicate -o cat | tail -20", check=False).stdout)
    assert "VIP held:    yes" in s.sh("polymarket-ha status").stdout
    # Issue 11 cause 4: keepalived restarted on the passive primary (BACKUP, STOP notifies) after the replica
    # arrived used to touch its last-active, so the failback below kept its stale ledger (no 'from-standby').
    p.sh("systemctl restart keepalived")
    wait(lambda: vrrp(p) == "BACKUP", 20, "the restarted keepalived BACKUP on the primary")
    s.sh("systemctl stop polymarket-bot")
    wait(lambda: holds_vip(p), 20, "the VIP back on the primary, whose bot is healthy")
    wait(lambda: health(p, ADDR["primary"]).get("role") == "active", 60, "the primary's bot active again")
    # Its own ledger was older than the standby's replica: the replica was put in place.
    rows = p.sh(f"sqlite3 {DB} 'select v from ha_marker order by rowid'").stdout.split()
    assert rows == ["from-primary", "from-standby"]


def test_planned_switchover_hands_over_at_once(ha: Lan) -> None:
    """Under nopreempt the VIP never moves back by itself (README go-live step 4 said starting keepalived on the
    primary would): "polymarket-ha switchover" on the node that trades hands it over, and stays BACKUP."""
    holder, other = (ha.nodes["primary"], ha.nodes["standby"])
    if not holds_vip(holder):
        holder, other = other, holder
    wait(lambda: health(holder, ADDR[role_of(ha, holder)]).get("role") == "active", 60, "the holder active")
    # A peer whose bot is down cannot take over: refused before anything is stopped.
    other.sh("systemctl stop polymarket-bot")
    bad = holder.sh("polymarket-ha switchover", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: the ") and "bot is not live" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1 and holds_vip(holder) and vrrp(holder) == "MASTER"
    other.sh("systemctl start polymarket-bot")
    wait(lambda: health(other, ADDR[role_of(ha, other)]).get("role") == "passive", 60, "the peer's bot passive")
    started = time.monotonic()
    out = holder.sh("polymarket-ha switchover 2>&1").stdout
    print(f"\nswitchover (VRRP only): {time.monotonic() - started:.1f} s: {out.strip()}")
    assert holds_vip(other) and not holds_vip(holder)
    assert health(other, ADDR[role_of(ha, other)]).get("role") == "active"
    wait(lambda: vrrp(holder) == "BACKUP", 20, "the old holder BACKUP again")
    assert holder.sh("systemctl is-active keepalived").stdout.strip() == "active"
    assert health(holder, ADDR[role_of(ha, holder)]).get("role") == "passive"
    time.sleep(5)  # nopreempt: it stays where it was handed
    assert holds_vip(other) and not holds_vip(holder)
    # On the node that does not trade: refused with one line, nothing changed.
    bad = holder.sh("polymarket-ha switchover", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: this node") and len(bad.stderr.splitlines()) == 1
    assert holds_vip(other)


def test_a_frozen_bot_gives_up_the_vip(ha: Lan) -> None:
    """Cause 7, the other half: a bot that does not answer (SIGSTOP: a hang) fails /live, and the VIP moves."""
    holder, other = (ha.nodes["primary"], ha.nodes["standby"])
    if not holds_vip(holder):
        holder, other = other, holder
    wait(lambda: holds_vip(holder) and health(other, ADDR[role_of(ha, other)]).get("role") == "passive", 60,
         "one active node, one passive")  # fmt: skip
    pid = holder.sh("systemctl show -P MainPID polymarket-bot").stdout.strip()
    # check-bot forgives a bot started less than 30 s ago (not listening yet): freeze one that is older.
    up = int(holder.sh(f"ps -o etimes= -p {pid}").stdout)
    time.sleep(max(0, 32 - up))
    holder.sh(f"kill -STOP {pid}")
    started = time.monotonic()
    try:
        wait(lambda: holds_vip(other), 30, "the VIP on the node whose bot is live")
        print(f"\nfrozen bot: VIP moved after {time.monotonic() - started:.1f} s")
        assert not holds_vip(holder)
    finally:
        holder.sh(f"kill -CONT {pid}")
    wait(lambda: health(other, ADDR[role_of(ha, other)]).get("role") == "active", 60, "the other bot active")
    wait(lambda: health(holder, ADDR[role_of(ha, holder)]).get("role") == "passive", 30, "the thawed bot passive")


def role_of(ha: Lan, c: Container) -> str:
    return next(r for r, n in ha.nodes.items() if n is c)


def test_remove_leaves_no_active_config_and_purge_cleans_up(ha: Lan) -> None:
    s = ha.nodes["standby"] if not holds_vip(ha.nodes["standby"]) else ha.nodes["primary"]
    s.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y polymarket-ha")
    assert s.sh("systemctl is-active keepalived", check=False).stdout.strip() != "active"
    assert "polymarket-ha" not in s.sh("systemctl cat keepalived", check=False).stdout
    assert s.sh("test -e /run/polymarket/passive", check=False).returncode == 0  # the operator decides who trades next
    assert "polymarket-ha" not in s.sh("ufw status").stdout
    s.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-ha")
    assert not s.path("/etc/polymarket-ha").exists() and not s.path("/var/lib/polymarket-ha").exists()


def test_install_in_a_plain_chroot_touches_no_running_network(rootfs: Path, dist: Path) -> None:
    with harness.fresh_tree(rootfs) as root:
        for d in (deb(dist, "polymarket-bot"), deb(dist, "polymarket-ha")):
            (root / "tmp" / d.name).write_bytes(d.read_bytes())
        harness.chroot_sh(root, "echo 'polymarket-ha polymarket-ha/role select primary\n"
                                f"polymarket-ha polymarket-ha/own_address string {ADDR['primary']}\n"
                                f"polymarket-ha polymarket-ha/peer_address string {ADDR['standby']}\n"
                                f"polymarket-ha polymarket-ha/virtual_ip string {VIP}' | debconf-set-selections")
        out = harness.chroot_sh(root, "DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/*.deb 2>&1").stdout
        assert "keepalived did not start" not in out
        assert "priority 150" in (root / "etc/polymarket-ha/keepalived.conf").read_text()
        assert (root / "var/lib/polymarket-ha/.ssh/id_ed25519").exists()
        # Enabled for the first boot, not started.
        assert (root / "etc/systemd/system/multi-user.target.wants/keepalived.service").is_symlink()


def test_lb_installed_by_hand_fails_loudly_until_its_vip_is_given(rootfs: Path, dist: Path) -> None:
    """Issue 11 cause 8, the hand-install path (no media preseed): an lb without BACKENDS sends to the VIP, which
    was never asked; HAProxy kept an empty config while apt-get exited 0, and a later preseed was overwritten
    by the empty value read back from ha.conf. Now the install fails with one line and writes nothing; the
    value preseeded afterwards is used."""
    with harness.booted(rootfs, name="ha-handlb") as c:
        c.sh("systemctl disable --now prometheus.service prometheus-alertmanager.service")
        c.sh("debconf-set-selections", input="polymarket-ha polymarket-ha/role select lb\n"
                                             "polymarket-ha polymarket-ha/own_address string 127.0.0.1\n")
        c.copy_in(deb(dist, "polymarket-ha"), "/root/polymarket-ha.deb")
        proc = c.sh("DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y /root/polymarket-ha.deb 2>&1",
                    check=False, timeout=400)  # fmt: skip
        assert proc.returncode != 0, proc.stdout
        errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "VIRTUAL_IP is not set" in errors[0], proc.stdout
        assert not c.path("/etc/polymarket-ha/ha.conf").exists()
        assert not c.path("/etc/polymarket-ha/haproxy.cfg").exists()
        # The operator gives the answer afterwards: it is used.
        c.sh("debconf-set-selections", input=f"polymarket-ha polymarket-ha/virtual_ip string {VIP}/24\n")
        c.sh("DEBIAN_FRONTEND=noninteractive timeout 300 dpkg --configure -a", timeout=400)
        assert f'VIRTUAL_IP="{VIP}/24"' in c.path("/etc/polymarket-ha/ha.conf").read_text()
        assert f"server node1 {VIP}:8080 check" in c.path("/etc/polymarket-ha/haproxy.cfg").read_text()
        # An empty value in ha.conf is "not answered", not an answer: a value preseeded later wins over it (the
        # config script read BACKENDS="" back over the preseed); a value given in ha.conf still wins.
        c.sh("debconf-set-selections", input=f"polymarket-ha polymarket-ha/backends string {ADDR['primary']}\n"
                                             "polymarket-ha polymarket-ha/virtual_ip string \n")
        c.sh("DEBIAN_FRONTEND=noninteractive timeout 300 dpkg-reconfigure polymarket-ha", timeout=400)
        conf = c.path("/etc/polymarket-ha/ha.conf").read_text()
        assert f'BACKENDS="{ADDR["primary"]}"' in conf and f'VIRTUAL_IP="{VIP}/24"' in conf, conf
        assert f"server node1 {ADDR['primary']}:8080 check" in c.path("/etc/polymarket-ha/haproxy.cfg").read_text()
