"""Package tests of polymarket-ha: contents, modes, conffiles, scripts, lintian, rendered configuration."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.package import debs
from tests.package.debs import PLAIN_ENV, REPO

PAYLOAD = REPO / "packages" / "polymarket-ha"


PACKAGE = "polymarket-ha"
_need = debs.need


FILES = {
    "/usr/lib/polymarket-ha/polymarket_ha.py": 0o755,
    "/usr/lib/polymarket-ha/check-bot": 0o755,
    "/usr/lib/polymarket-ha/apply": 0o755,
    "/usr/lib/polymarket-ha/firewall": 0o755,
    "/usr/lib/systemd/system/polymarket-ha-firewall.service": 0o644,
    "/usr/lib/systemd/system/polymarket-ha-lease.service": 0o644,
    "/usr/lib/systemd/system/etcd.service.d/polymarket-ha.conf": 0o644,
    "/usr/sbin/polymarket-floating-ip": 0o755,
    "/usr/lib/systemd/system/keepalived.service.d/polymarket-ha.conf": 0o644,
    "/usr/lib/systemd/system/haproxy.service.d/polymarket-ha.conf": 0o644,
    "/usr/lib/systemd/system/polymarket-bot.service.d/polymarket-ha.conf": 0o644,
    "/usr/lib/systemd/system/polymarket-ha-heartbeat.timer": 0o644,
    "/usr/lib/systemd/system/polymarket-ha-replicate.timer": 0o644,
    "/usr/lib/systemd/system/polymarket-ha-replicate-full.timer": 0o644,
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
    for pkg in ("keepalived", "haproxy", "rsync", "openssh-client", "openssh-server", "iputils-arping", "ucf",
                "etcd-server", "openssl"):
        assert pkg in depends


def test_debconf_templates(control: Path) -> None:
    templates = (control / "templates").read_text()
    for q in ("role", "own_address", "peer_address", "virtual_ip", "interface", "router_id", "backends",
              "witness_address", "metrics_allow"):
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


def test_floating_ip_validates_input() -> None:
    script = str(PAYLOAD / "polymarket-floating-ip")
    for args, code in ((["bogus"], 2), (["check", "300.1.1.1"], 2), (["check", "10.0.0.1/40"], 2), ([], 2)):
        proc = subprocess.run(["sh", script, *args], capture_output=True, text=True, env=PLAIN_ENV)
        assert proc.returncode == code, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
