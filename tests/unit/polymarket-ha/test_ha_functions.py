"""Unit tests of polymarket_ha.py's functions (polymarket-ha's /usr/sbin/polymarket-ha, loaded by tests.payload):
the settings parser, the rendered keepalived, haproxy, etcd and bot configuration, the trading lease and the
etcd CA. The .deb's content: tests/package/test_ha_deb.py."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload


def ha_module() -> ModuleType:
    return payload.ha()


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


SETTINGS = """ROLE="{role}"
OWN_ADDRESS="{own}"
PEER_ADDRESS="{peer}"
VIRTUAL_IP="192.168.1.10/24"
INTERFACE="enp1s0"
ROUTER_ID="51"
BACKENDS="{backends}"
"""


def test_keepalived_config_by_role() -> None:
    ha = ha_module()
    primary = ha.render_keepalived(ha.parse_settings(SETTINGS.format(role="primary", own="192.168.1.100",
                                                                     peer="192.168.1.101", backends="")))  # fmt: skip
    standby = ha.render_keepalived(ha.parse_settings(SETTINGS.format(role="standby", own="192.168.1.101",
                                                                     peer="192.168.1.100", backends="")))  # fmt: skip
    assert "priority 150" in primary and "priority 100" in standby
    for conf in (primary, standby):
        assert "state BACKUP" in conf and "nopreempt" in conf and "check_unicast_src" in conf
        assert "192.168.1.10/24 dev enp1s0" in conf
        assert "auth_type" not in conf and "auth_pass" not in conf
        assert 'notify "/usr/sbin/polymarket-ha notify"' in conf
        assert "enable_script_security" in conf
    assert "unicast_src_ip 192.168.1.100" in primary and "192.168.1.101\n" in primary


def test_haproxy_config_checks_health_and_role() -> None:
    ha = ha_module()
    backends = "192.168.1.100 192.168.1.101"
    s = ha.parse_settings(SETTINGS.format(role="lb", own="192.168.1.102", peer="", backends=backends))
    cfg = ha.render_haproxy(s)
    assert "bind 192.168.1.102:8080" in cfg
    assert "option httpchk GET /health" in cfg and "http-check expect status 200" in cfg
    assert "server primary 192.168.1.100:8080 check" in cfg
    assert "server standby 192.168.1.101:8080 check inter 1s fall 2 rise 1 backup" in cfg
    # no active node (a handover, an exchange outage): a live bot answers rather than HAProxy's 503
    assert "use_backend polymarket_bots if { nbsrv(polymarket_bots) gt 0 }" in cfg
    assert "default_backend polymarket_live" in cfg and "option httpchk GET /live" in cfg
    if shutil.which("haproxy"):
        path = Path(tempfile.mkdtemp()) / "haproxy.cfg"
        path.write_text("defaults\n    timeout connect 3s\n    timeout client 30s\n    timeout server 30s\n" + cfg)
        check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("bad", ['ROLE="boss"', 'OWN_ADDRESS="1.2.3"', 'VIRTUAL_IP="x"', 'ROUTER_ID="300"',
                                 'INTERFACE="a;b"', 'PEER_ADDRESS=""', 'WITNESS_ADDRESS="10.0.0.300"',
                                 'WITNESS_ADDRESS="10.0.0.2"'])  # fmt: skip
def test_bad_settings_are_one_line_errors(bad: str) -> None:
    ha = ha_module()
    text = SETTINGS.format(role="primary", own="10.0.0.1", peer="10.0.0.2", backends="")
    key = bad.split("=", 1)[0]
    text = "\n".join(bad if line.startswith(f"{key}=") else line for line in text.splitlines())
    if key not in text:
        text += bad + "\n"
    with pytest.raises(ha.HAError):
        ha.parse_settings(text)


def test_timers_do_nothing_successfully_on_an_unconfigured_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed by hand, before dpkg-reconfigure: the 5-minute and 1-minute timers must not leave failed units."""
    import argparse

    ha = ha_module()

    def unconfigured() -> object:
        raise ha.HAError("VIRTUAL_IP '' is not an address[/prefix]", "dpkg-reconfigure polymarket-ha")

    monkeypatch.setattr(ha, "load_settings", unconfigured)
    assert ha.cmd_replicate(argparse.Namespace(full=False)) == 0
    assert ha.cmd_heartbeat(argparse.Namespace()) == 0


# -- the trading lease (issue 11) --------------------------------------------------------------------------


LEASE = {"primary": ("10.0.0.1", "10.0.0.2"), "standby": ("10.0.0.2", "10.0.0.1")}


def lease_settings(ha: ModuleType, role: str, witness: str = "10.0.0.3") -> object:
    if role == "lb":
        return ha.parse_settings(SETTINGS.format(role="lb", own="10.0.0.3", peer="", backends="10.0.0.1 10.0.0.2"))
    own, peer = LEASE[role]
    return ha.parse_settings(SETTINGS.format(role=role, own=own, peer=peer, backends="")
                             + f'WITNESS_ADDRESS="{witness}"\n')


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_etcd_member_config_three_members_tls_everywhere() -> None:
    ha = ha_module()
    envs = {role: env_of(ha.render_etcd_env(lease_settings(ha, role))) for role in ("primary", "standby", "lb")}
    cluster = "primary=https://10.0.0.1:2380,standby=https://10.0.0.2:2380,lb=https://10.0.0.3:2380"
    for role, env in envs.items():
        assert env["ETCD_NAME"] == role
        # The same three members, in the same order, everywhere (etcd refuses to bootstrap otherwise).
        assert ",".join(sorted(env["ETCD_INITIAL_CLUSTER"].split(","))) == ",".join(sorted(cluster.split(",")))
        assert env["ETCD_LISTEN_CLIENT_URLS"].startswith("https://") and env["ETCD_LISTEN_PEER_URLS"].startswith(
            "https://")
        assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
        assert env["ETCD_TRUSTED_CA_FILE"] == env["ETCD_PEER_TRUSTED_CA_FILE"] == "/etc/polymarket-ha/etcd/ca.crt"
        assert env["ETCD_DATA_DIR"] == "/var/lib/etcd/polymarket"   # never etcd-server's default single member
        assert "http://" not in "".join(env.values())
    assert envs["lb"]["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.0.0.3:2379"


def test_lease_configures_keepalived_bot_and_files_only_with_a_witness(tmp_path: Path) -> None:
    import argparse

    ha = ha_module()
    s = lease_settings(ha, "primary")
    conf = ha.render_keepalived(s)
    assert 'script "/usr/sbin/polymarket-ha lease-check"' in conf
    assert "polymarket_bot\n        polymarket_lease\n" in conf
    env = env_of(ha.render_bot_env(s))
    assert env["LEASE_FILE"] == "/run/polymarket/lease" and env["LEASE_NODE"] == "primary"
    legacy = lease_settings(ha, "primary", witness="")
    assert "lease" not in ha.render_keepalived(legacy) and "LEASE" not in ha.render_bot_env(legacy)
    settings = tmp_path / "ha.conf"
    settings.write_text(SETTINGS.format(role="standby", own="10.0.0.2", peer="10.0.0.1", backends="")
                        + 'WITNESS_ADDRESS="10.0.0.3"\n')
    ha.cmd_render(argparse.Namespace(settings=str(settings), out=str(tmp_path / "out")))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bot.env", "etcd.env", "keepalived.conf"]
    with pytest.raises(ha.HAError):
        ha.check_value("witness_address", "10.0.0.3x")
    assert ha.check_value("witness_address", "") == ""


def test_lease_file_validity(tmp_path: Path) -> None:
    import json
    import os

    ha = ha_module()
    path = tmp_path / "lease"
    now = ha.boottime()

    def lease(**over: object) -> None:
        path.write_text(json.dumps({**ha.lease_record("primary", now + 3), **over}))

    assert ha.lease_valid("primary", path) == (False, f"no lease file {path}")
    lease()
    assert ha.lease_valid("primary", path)[0] is True
    assert ha.lease_valid("standby", path)[0] is False
    assert ha.lease_valid("primary", path, now=now + 3.01)[0] is False     # the deadline is a hard stop
    lease(deadline=now - 0.01)
    assert "expired" in ha.lease_valid("primary", path)[1]
    lease(boot_id="another-boot")
    assert ha.lease_valid("primary", path) == (False, "the lease is from another boot")
    lease(clock="CLOCK_MONOTONIC")
    assert ha.lease_valid("primary", path)[0] is False
    lease()
    os.replace(path, tmp_path / "real")
    path.symlink_to(tmp_path / "real")                                      # never read through a link
    assert ha.lease_valid("primary", path)[0] is False


HOST_BOOT = "b76dacdb-8837-4621-82da-ee8c3bee0dff"       # the kernel's boot ID (the machine's, the host's)
CONTAINER_BOOT = "0ad597b0-5672-4505-951f-c599dcc16642"  # systemd-nspawn's, over /proc/sys/kernel/random/boot_id


def test_lease_boot_id_is_systemds_not_the_sandboxed_keepers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on bookworm (systemd 252) in systemd-nspawn: the keeper's sandbox (ProtectKernelTunables=) shows it the
    host kernel's boot ID, while keepalived's lease-check sees the container's, so every lease was "from another
    boot" and no node ever held it. The keeper now writes the ID systemd passes it (%b, 32 hex digits), in
    /proc's form, and a reader that sees the container's ID in /proc finds the lease valid."""
    import json
    import uuid

    ha = ha_module()
    host, container = tmp_path / "host-boot-id", tmp_path / "container-boot-id"
    host.write_text(HOST_BOOT + "\n")
    container.write_text(CONTAINER_BOOT + "\n")
    path = tmp_path / "lease"
    # The keeper: its /proc shows the host's ID; its unit passes systemd's %b.
    monkeypatch.setattr(ha, "BOOT_ID_FILE", host)
    monkeypatch.setenv("POLYMARKET_HA_BOOT_ID", uuid.UUID(CONTAINER_BOOT).hex)
    ha.LeaseKeeper("primary", None, path).write("primary", ha.boottime() + 3)
    assert json.loads(path.read_text())["boot_id"] == CONTAINER_BOOT              # /proc's form, as the bot compares
    # keepalived's lease-check: no variable, its /proc shows the container's ID.
    monkeypatch.delenv("POLYMARKET_HA_BOOT_ID")
    monkeypatch.setattr(ha, "BOOT_ID_FILE", container)
    assert ha.lease_valid("primary", path)[0] is True
    monkeypatch.setattr(ha, "BOOT_ID_FILE", host)                                 # a lease of another boot still is not
    assert ha.lease_valid("primary", path) == (False, "the lease is from another boot")
    for bad in ("", "%b", "not-a-boot-id", "0ad597b0" * 5):                      # anything but 32 hex digits: /proc
        monkeypatch.setenv("POLYMARKET_HA_BOOT_ID", bad)
        assert ha.boot_id() == HOST_BOOT


def test_lease_keeper_unit_passes_systemds_boot_id() -> None:
    unit = (payload.PACKAGES / "polymarket-ha" / "systemd" / "polymarket-ha-lease.service").read_text()
    service = unit.split("[Service]", 1)[1].split("\n[", 1)[0].splitlines()
    assert "Environment=POLYMARKET_HA_BOOT_ID=%b" in service
    assert "ProtectKernelTunables=yes" in service                                # the sandbox stays as it was


def test_lease_deadline_is_from_the_keepalive_sent_minus_the_margins(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A keepalive that took 2 s to answer gives a deadline from when it was sent, not when it returned;
    a new holder is not valid until LEASE_TTL after it last saw another holder."""
    import json

    ha = ha_module()
    clock = [1000.0]
    monkeypatch.setattr(ha, "boottime", lambda: clock[0])

    class SlowEtcd:
        def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
            clock[0] += 2.0
            if path == "/v3/lease/keepalive":
                return {"ID": "7", "TTL": "6"}
            if path == "/v3/kv/range":
                return {"kvs": [{"value": ha._b64("primary"), "lease": "7"}]}
            raise AssertionError(path)

    keeper = ha.LeaseKeeper("primary", SlowEtcd(), tmp_path / "lease")
    keeper.lease_id = "7"
    keeper.other_seen = 990.0
    keeper.keepalive()                                                      # sent at 1000, answered at 1004
    deadline = json.loads((tmp_path / "lease").read_text())["deadline"]
    assert deadline == pytest.approx(1000 + 6 * (1 - ha.LEASE_RATE) - ha.LEASE_MARGIN)
    keeper.other_seen = clock[0] - 1                                        # another holder seen 1 s ago
    keeper.keepalive()
    record = json.loads((tmp_path / "lease").read_text())
    assert record["holder"] == "primary" and record["deadline"] == 0       # held, not yet valid for orders


def test_cluster_ca_signs_members_and_join_checks_key_and_address(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The CA on the lb signs a node's request for the name and address of the lb's settings only;
    etcd-join refuses a certificate for another key or another address."""
    import argparse
    import grp
    import io
    import os

    _need("openssl")
    ha = ha_module()
    monkeypatch.setattr(ha, "_etcd_group", lambda: os.getgid())

    def node(name: str) -> None:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        for attr, file in (("ETCD_DIR", ""), ("ETCD_CA_KEY", "ca.key"), ("ETCD_CA", "ca.crt"),
                           ("ETCD_KEY", "member.key"), ("ETCD_CSR", "member.csr"), ("ETCD_CERT", "member.crt")):
            monkeypatch.setattr(ha, attr, d / file if file else d)

    del grp
    lb, primary, standby = (lease_settings(ha, r) for r in ("lb", "primary", "standby"))
    node("lb")
    ha.ensure_ca(lb)
    assert oct((tmp_path / "lb/ca.key").stat().st_mode & 0o777) == "0o600"
    node("primary")
    ha.ensure_member_key(primary)
    csr = (tmp_path / "primary/member.csr").read_text()
    node("standby")
    ha.ensure_member_key(standby)
    node("lb")
    bundle = ha.sign_member(lb, "primary", csr) + (tmp_path / "lb/ca.crt").read_text()
    assert "IP Address:10.0.0.1" in ha.openssl("x509", "-noout", "-ext", "subjectAltName", stdin=bundle)
    with pytest.raises(ha.HAError):
        ha.sign_member(lb, "primary", "-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n")
    with pytest.raises(ha.HAError):
        ha.sign_member(lb, "boss", csr)
    monkeypatch.setattr(ha, "run", lambda argv, **kw: None)
    monkeypatch.setattr(ha, "load_settings", lambda: standby)
    node("standby")
    monkeypatch.setattr("sys.stdin", io.StringIO(bundle))
    with pytest.raises(ha.HAError, match="not for this node's key"):
        ha.cmd_etcd_join(argparse.Namespace())                               # the primary's cert on the standby
    assert not (tmp_path / "standby/member.crt").exists()
    monkeypatch.setattr(ha, "load_settings", lambda: primary)
    node("primary")
    monkeypatch.setattr("sys.stdin", io.StringIO(bundle))
    assert ha.cmd_etcd_join(argparse.Namespace()) == 0
    ha.openssl("verify", "-CAfile", str(tmp_path / "primary/ca.crt"), str(tmp_path / "primary/member.crt"))
