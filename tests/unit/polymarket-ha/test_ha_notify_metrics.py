"""polymarket_ha.py, issue 11: last-active only when this node really stopped trading (cause 4), the first
replication without waiting for the 5-minute timer (cause 9), the lb without a VIP question (cause 8), and the
textfile metrics of polymarket-monitoring's contract, written atomically and never through a link."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload
from tests.payload import unchanged

LB = 'ROLE="lb"\nOWN_ADDRESS="192.168.1.102"\nVIRTUAL_IP=""\nBACKENDS="{backends}"\n'
NODE = ('ROLE="primary"\nOWN_ADDRESS="192.168.1.100"\nPEER_ADDRESS="192.168.1.101"\nVIRTUAL_IP="192.168.1.10/24"\n'
        'INTERFACE="enp1s0"\n')


@pytest.fixture
def ha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The module with its state files in tmp_path."""
    ha = payload.ha()
    run = tmp_path / "run-ha"
    run.mkdir()
    (tmp_path / "run").mkdir()
    for name, value in {"RUN_DIR": run, "VRRP_STATE": run / "vrrp-state", "NOTIFY_LOCK": run / "notify.lock",
                        "METRICS_LOCK": run / "metrics.lock", "LEASE_SEEN": run / "lease-held",
                        "PASSIVE": tmp_path / "run" / "passive", "STATUS_JSON": tmp_path / "run" / "ha-status.json",
                        "LAST_ACTIVE": tmp_path / "last-active", "LAST_REPLICATION": tmp_path / "last-replication.json",
                        "REPLICA_DIR": tmp_path / "replica", "TEXTFILE_DIR": tmp_path / "node-exporter",
                        "LEASE_FILE": tmp_path / "run" / "lease"}.items():  # fmt: skip
        monkeypatch.setattr(ha, name, value)
    return ha


def notify(ha: ModuleType, state: str) -> int:
    return int(ha.cmd_notify(argparse.Namespace(type="INSTANCE", name="polymarket", state=state, priority=None)))


@pytest.mark.parametrize("state", ["BACKUP", "FAULT", "STOP"])
def test_a_passive_node_leaving_nothing_keeps_its_last_active(ha: ModuleType, state: str) -> None:
    """Cause 4: keepalived restarted on the passive standby (BACKUP, FAULT, STOP notifies) used to touch last-active,
    so the next promotion found a fresh replica "older than this node's own trading" and kept a stale ledger."""
    ha.VRRP_STATE.write_text("BACKUP\n")
    ha.PASSIVE.write_text("")
    ha.LAST_ACTIVE.write_text("")
    os.utime(ha.LAST_ACTIVE, (1_000_000, 1_000_000))
    assert notify(ha, state) == 0
    assert ha.LAST_ACTIVE.stat().st_mtime == 1_000_000
    assert ha.PASSIVE.exists() and ha.VRRP_STATE.read_text() == f"{state}\n"


def test_the_trading_node_that_leaves_master_marks_its_last_trading(ha: ModuleType) -> None:
    ha.VRRP_STATE.write_text("MASTER\n")
    ha.LAST_ACTIVE.write_text("")
    os.utime(ha.LAST_ACTIVE, (1_000_000, 1_000_000))
    assert notify(ha, "BACKUP") == 0
    assert time.time() - ha.LAST_ACTIVE.stat().st_mtime < 60
    assert ha.PASSIVE.exists()


def test_the_lb_needs_a_vip_only_without_backends() -> None:
    """Cause 8: with two BACKENDS the lb renders HAProxy without a VIP; with none, a missing VIP is an error."""
    ha = payload.ha()
    s = ha.parse_settings(LB.format(backends="192.168.1.100 192.168.1.101"))
    assert s.virtual_ip == "" and "server standby 192.168.1.101:8080" in ha.render_haproxy(s)
    with pytest.raises(ha.HAError, match="VIRTUAL_IP is not set"):
        ha.parse_settings(LB.format(backends=""))
    with pytest.raises(ha.HAError, match="VIRTUAL_IP is not set"):
        ha.parse_settings(NODE.replace('VIRTUAL_IP="192.168.1.10/24"', 'VIRTUAL_IP=""'))


def heartbeat(ha: ModuleType, monkeypatch: pytest.MonkeyPatch, last: dict[str, Any] | None) -> list[list[str]]:
    s = ha.parse_settings(NODE)
    ran: list[list[str]] = []
    monkeypatch.setattr(ha, "settings_for_timer", lambda _what: s)
    monkeypatch.setattr(ha, "gather", lambda _s: {"vrrp_state": "MASTER", "vip_held": True, "passive": False,
                                                   "split_brain": False, "last_replication": last,
                                                   "peer": {"http": 200, "role": "passive"}})  # fmt: skip
    monkeypatch.setattr(ha, "run", lambda argv, **kw: ran.append(argv))
    monkeypatch.setattr(ha, "write_metrics", lambda *a, **kw: None)
    ha.cmd_heartbeat(argparse.Namespace())
    return ran


def test_the_active_heartbeat_starts_a_replication_until_one_succeeds(ha: ModuleType,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Cause 9: nothing was sent until the first 5-minute timer; now the active node's heartbeat (every minute)
    starts one while none has succeeded yet (never sent, or the last run failed)."""
    start = ["systemctl", "start", "--no-block", "polymarket-ha-replicate.service"]
    assert heartbeat(ha, monkeypatch, None) == [start]
    assert heartbeat(ha, monkeypatch, {"result": "rsync exit 255: Connection refused"}) == [start]
    assert heartbeat(ha, monkeypatch, {"result": "ok"}) == []


def test_metrics_textfile_contract(ha: ModuleType, tmp_path: Path) -> None:
    s = ha.parse_settings(NODE + 'WITNESS_ADDRESS="192.168.1.102"\n')
    ha.VRRP_STATE.write_text("MASTER\n")
    ha.LAST_REPLICATION.write_text('{"result": "ok", "last_ok_at": 1764500000.5}\n')
    ha.LEASE_FILE.write_text(__import__("json").dumps(ha.lease_record("primary", ha.boottime() + 5)))
    directory = tmp_path / "var" / "lib" / "prometheus" / "node-exporter"  # made, as the node exporter has it
    old_umask = os.umask(0o177)  # keepalived's, for its notify and check scripts
    try:
        ha.write_metrics(s, {"split_brain": False}, directory, owner=os.geteuid())
    finally:
        os.umask(old_umask)
    prom = (directory / "polymarket-ha.prom").read_text()
    assert "polymarket_ha_lease_holder 1\n" in prom
    assert "polymarket_ha_last_replication_timestamp_seconds 1764500000.5\n" in prom
    assert "polymarket_ha_vrrp_master 1\n" in prom and "polymarket_ha_split_brain 0\n" in prom
    assert "# TYPE polymarket_ha_lease_holder gauge\n" in prom
    assert directory.stat().st_mode & 0o777 == 0o755
    assert (directory / "polymarket-ha.prom").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in directory.iterdir()] == ["polymarket-ha.prom"]  # no temporary file left
    # A replica received here newer than anything sent: that is the pair's newest copy.
    ha.REPLICA_DIR.mkdir()
    (ha.REPLICA_DIR / "trade_history.db").write_text("")
    os.utime(ha.REPLICA_DIR / "trade_history.db", (1764600000, 1764600000))
    ha.VRRP_STATE.write_text("BACKUP\n")
    ha.write_metrics(s, {"split_brain": True}, directory, owner=os.geteuid())
    prom = (directory / "polymarket-ha.prom").read_text()
    assert "polymarket_ha_last_replication_timestamp_seconds 1764600000.0\n" in prom
    assert "polymarket_ha_vrrp_master 0\n" in prom and "polymarket_ha_split_brain 1\n" in prom


def test_metrics_never_written_through_a_link(ha: ModuleType, tmp_path: Path, canary: Path) -> None:
    s = ha.parse_settings(NODE)
    directory = tmp_path / "node-exporter"
    directory.mkdir(mode=0o755)
    (directory / ".polymarket-ha.prom.tmp").symlink_to(canary)
    (directory / "polymarket-ha.prom").symlink_to(canary)
    ha.write_metrics(s, {}, directory, owner=os.geteuid())
    assert unchanged(canary)
    assert not (directory / "polymarket-ha.prom").is_symlink()
    assert "polymarket_ha_vrrp_master 0" in (directory / "polymarket-ha.prom").read_text()
    # The directory itself a link (prometheus owns /var/lib/prometheus and could plant one): nothing written.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere)
    ha.write_metrics(s, {}, linked, owner=os.geteuid())
    assert list(elsewhere.iterdir()) == []
    # A directory others may write into: refused.
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    ha.write_metrics(s, {}, loose, owner=os.geteuid())
    assert list(loose.iterdir()) == []


def test_lease_check_rewrites_the_metric_only_when_the_lease_changes(ha: ModuleType,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    monkeypatch.setattr(ha, "write_metrics", lambda *a, **kw: writes.append(1))
    for held in (True, True, True, False, False, True):
        ha.note_lease_held(held)
    assert len(writes) == 3


class FakeEtcd:
    """etcd's leader key as the peer's keeper would move it: taken by the standby once this node's keeper stopped."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.keeper_running = True

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "/v3/kv/range"
        if not self.keeper_running and self.holder == "primary":
            self.holder = "standby"  # the lease was revoked: the peer's keeper campaigns and takes the key
        import base64
        return {"kvs": [{"value": base64.b64encode(self.holder.encode()).decode()}]} if self.holder else {}


def test_switchover_with_the_lease_stops_the_keeper_until_the_peer_holds_the_key(
        ha: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    s = ha.parse_settings(NODE + 'WITNESS_ADDRESS="192.168.1.102"\n')
    etcd = FakeEtcd("primary")
    ran: list[list[str]] = []
    vip = {"held": True}

    def run(argv: list[str], **kw: Any) -> Any:
        ran.append(argv)
        if argv[:2] == ["systemctl", "stop"]:
            etcd.keeper_running = False
            vip["held"] = False
        return argparse.Namespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(ha, "load_settings", lambda *a: s)
    monkeypatch.setattr(ha, "Etcd", lambda *a, **kw: etcd)
    monkeypatch.setattr(ha, "run", run)
    monkeypatch.setattr(ha, "holds_vip", lambda _s: vip["held"])
    peer = {"http": 200}
    monkeypatch.setattr(ha, "http_health", lambda *a, **kw: {**peer, "role": "passive"})
    ha.LEASE_FILE.write_text(__import__("json").dumps(ha.lease_record("primary", ha.boottime() + 5)))
    assert ha.cmd_switchover(argparse.Namespace(timeout=5)) == 0
    assert ran == [["systemctl", "stop", "polymarket-ha-lease.service"],
                   ["systemctl", "start", "polymarket-ha-lease.service"]]
    assert "the standby holds the lease" in capsys.readouterr().out
    # The peer's bot not live, or this node not the holder: refused before anything is stopped.
    ran.clear()
    etcd.holder, etcd.keeper_running = "primary", True
    peer["http"] = 0
    with pytest.raises(ha.HAError, match="the standby's bot is not live"):
        ha.cmd_switchover(argparse.Namespace(timeout=5))
    assert ran == []
    ha.LEASE_FILE.write_text(__import__("json").dumps(ha.lease_record("standby", ha.boottime() + 5)))
    with pytest.raises(ha.HAError, match="does not hold the trading lease"):
        ha.cmd_switchover(argparse.Namespace(timeout=5))
    assert ran == []
