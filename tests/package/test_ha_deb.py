"""Package tests of polymarket-ha: contents, modes, conffiles, scripts, lintian, rendered configuration."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.package import debs
from tests.package.debs import PLAIN_ENV, REPO

PAYLOAD = REPO / "packages" / "polymarket-ha"


PACKAGE = "polymarket-ha"
_need = debs.need


def ha_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("polymarket_ha", PAYLOAD / "polymarket_ha.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["polymarket_ha"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FILES = {
    "/usr/lib/polymarket-ha/polymarket_ha.py": 0o755,
    "/usr/lib/polymarket-ha/check-bot": 0o755,
    "/usr/lib/polymarket-ha/apply": 0o755,
    "/usr/lib/polymarket-ha/firewall": 0o755,
    "/lib/systemd/system/polymarket-ha-firewall.service": 0o644,
    "/usr/sbin/polymarket-floating-ip": 0o755,
    "/lib/systemd/system/keepalived.service.d/polymarket-ha.conf": 0o644,
    "/lib/systemd/system/haproxy.service.d/polymarket-ha.conf": 0o644,
    "/lib/systemd/system/polymarket-bot.service.d/polymarket-ha.conf": 0o644,
    "/lib/systemd/system/polymarket-ha-heartbeat.timer": 0o644,
    "/lib/systemd/system/polymarket-ha-replicate.timer": 0o644,
    "/lib/systemd/system/polymarket-ha-replicate-full.timer": 0o644,
    "/usr/lib/tmpfiles.d/polymarket-ha.conf": 0o644,
    "/usr/lib/sysusers.d/polymarket-ha.conf": 0o644,
    "/usr/share/man/man8/polymarket-ha.8.gz": 0o644,
    "/usr/share/man/man8/polymarket-floating-ip.8.gz": 0o644,
}


def test_files_and_modes(members: dict[str, tarfile.TarInfo]) -> None:
    for path, mode in FILES.items():
        assert path in members, path
        assert members[path].mode & 0o7777 == mode, path
        assert members[path].uname == "root", path
    assert members["/usr/sbin/polymarket-ha"].linkname == "../lib/polymarket-ha/polymarket_ha.py"


def test_no_generated_or_foreign_config_is_shipped(members: dict[str, tarfile.TarInfo], control: Path) -> None:
    # keepalived.conf, haproxy.cfg and the env files are made by the postinst (ucf), never conffiles.
    assert not [m for m in members if m.startswith(("/etc/keepalived", "/etc/haproxy", "/etc/polymarket-ha"))]
    assert not (control / "conffiles").exists()


def test_depends(deb: Path) -> None:
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True).stdout
    for pkg in ("keepalived", "haproxy", "rsync", "openssh-client", "openssh-server", "iputils-arping", "ucf"):
        assert pkg in depends


def test_debconf_templates(control: Path) -> None:
    templates = (control / "templates").read_text()
    for q in ("role", "own_address", "peer_address", "virtual_ip", "interface", "router_id", "backends"):
        assert f"Template: polymarket-ha/{q}\n" in templates
    assert "Choices: primary, standby, lb" in templates


def test_only_the_timers_are_started(control: Path) -> None:
    postinst = (control / "postinst").read_text()
    for t in ("heartbeat", "replicate", "replicate-full"):
        assert f"polymarket-ha-{t}.timer" in postinst
    assert "deb-systemd-invoke start polymarket-ha-replicate.service" not in postinst


@pytest.mark.parametrize("script", ["config", "postinst", "prerm", "postrm"])
def test_maintainer_scripts_shellcheck_clean(control: Path, script: str) -> None:
    _need("shellcheck")
    path = control / script
    assert path.read_text().startswith("#!/bin/sh\nset -e\n")
    proc = subprocess.run(["shellcheck", "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_payload_scripts_shellcheck_clean() -> None:
    _need("shellcheck")
    scripts = [PAYLOAD / n for n in ("apply", "check-bot", "firewall", "polymarket-floating-ip")]
    proc = subprocess.run(["shellcheck", "-s", "sh", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_lintian_clean(deb: Path) -> None:
    _need("lintian")
    proc = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)], capture_output=True, text=True,
                          env=PLAIN_ENV)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
    assert "server standby 192.168.1.101:8080 check inter 2s fall 2 rise 2 backup" in cfg


@pytest.mark.parametrize("bad", ['ROLE="boss"', 'OWN_ADDRESS="1.2.3"', 'VIRTUAL_IP="x"', 'ROUTER_ID="300"',
                                 'INTERFACE="a;b"', 'PEER_ADDRESS=""'])  # fmt: skip
def test_bad_settings_are_one_line_errors(bad: str) -> None:
    ha = ha_module()
    text = SETTINGS.format(role="primary", own="10.0.0.1", peer="10.0.0.2", backends="")
    key = bad.split("=", 1)[0]
    text = "\n".join(bad if line.startswith(f"{key}=") else line for line in text.splitlines())
    with pytest.raises(ha.HAError):
        ha.parse_settings(text)


def test_floating_ip_validates_input() -> None:
    script = str(PAYLOAD / "polymarket-floating-ip")
    for args, code in ((["bogus"], 2), (["check", "300.1.1.1"], 2), (["check", "10.0.0.1/40"], 2), ([], 2)):
        proc = subprocess.run(["sh", script, *args], capture_output=True, text=True, env=PLAIN_ENV)
        assert proc.returncode == code, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1


def test_timers_do_nothing_successfully_on_an_unconfigured_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed by hand, before dpkg-reconfigure: the 5-minute and 1-minute timers must not leave failed units."""
    import argparse

    ha = ha_module()

    def unconfigured() -> object:
        raise ha.HAError("VIRTUAL_IP '' is not an address[/prefix]", "dpkg-reconfigure polymarket-ha")

    monkeypatch.setattr(ha, "load_settings", unconfigured)
    assert ha.cmd_replicate(argparse.Namespace(full=False)) == 0
    assert ha.cmd_heartbeat(argparse.Namespace()) == 0
