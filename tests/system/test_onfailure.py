"""OnFailure= in a booted trixie container: a failed timer-run service (polymarket-backup.service, made to
fail by taking its repository password away) is logged in one journal line by polymarket-failure@.service
(polymarket-hardening) and counted in the node exporter's textfile directory, which the prometheus user
cannot redirect; without polymarket-hardening the OnFailure= line changes nothing; purge deletes the counts
and the textfile."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from tests import payload
from tests.system import harness
from tests.system.conftest import deb

pytestmark = pytest.mark.system

UNIT = "polymarket-backup.service"
HANDLER = f"polymarket-failure@{UNIT}.service"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PROM = f"{TEXTFILE_DIR}/polymarket-failures.prom"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxqHhM4S0PeXsCIxBwKlK9lDqXMS0eAq3Tk0oBn2Z0c admin@test"


def fail_backup(c: harness.Container) -> None:
    """One run of the service its timer starts, failing; returns once the handler (if any) is done."""
    before = c.sh(f"systemctl show -P InvocationID {HANDLER}", check=False).stdout.strip()
    assert c.sh(f"systemctl start {UNIT}", check=False).returncode != 0
    assert c.sh(f"systemctl show -P Result {UNIT}").stdout.strip() == "exit-code"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        inv = c.sh(f"systemctl show -P InvocationID {HANDLER}", check=False).stdout.strip()
        state = c.sh(f"systemctl show -P ActiveState {HANDLER}", check=False).stdout.strip()
        loaded = c.sh(f"systemctl show -P LoadState {HANDLER}", check=False).stdout.strip()
        if loaded == "not-found" or (inv and inv != before and state in ("inactive", "failed")):
            return
        time.sleep(0.2)
    raise AssertionError(f"{HANDLER} did not run")


def handler_lines(c: harness.Container) -> list[str]:
    return c.sh(f"journalctl -q -o cat -u {shlex.quote(HANDLER)}", check=False).stdout.splitlines()


def count(c: harness.Container) -> str:
    return c.sh(f"grep -F 'polymarket_unit_failures_total{{unit=\"{UNIT}\"}}' {PROM}").stdout.split()[-1]


def test_failed_timer_run_is_logged_and_counted(container: harness.Container, dist: Path) -> None:
    c = container
    c.install_debs([deb(dist, "polymarket-backup")])
    assert "OnFailure=polymarket-failure@%n.service" in c.sh(f"systemctl cat {UNIT}").stdout
    c.sh("mv /etc/polymarket-backup/repository-password /root/repository-password")

    # Without polymarket-hardening (no template): the unit fails as before, nothing else happens.
    fail_backup(c)
    assert c.sh(f"systemctl is-failed {UNIT}", check=False).stdout.strip() == "failed"
    assert c.sh(f"systemctl show -P LoadState {HANDLER}", check=False).stdout.strip() == "not-found"
    assert c.sh(f"test -e {PROM}", check=False).returncode != 0

    # polymarket-hardening installed, the node exporter's directory as its package ships it.
    c.sh("useradd -m -s /bin/sh admin && install -d -m 0700 -o admin -g admin ~admin/.ssh && "
         f"echo {shlex.quote(KEY)} >~admin/.ssh/authorized_keys")
    c.sh("debconf-set-selections", input="polymarket-hardening polymarket-hardening/admin_network string "
                                         "10.20.0.0/24\n")
    c.install_debs([deb(dist, "polymarket-hardening")])
    c.sh(f"install -d -o root -g root -m 0755 {TEXTFILE_DIR} && chown prometheus:prometheus /var/lib/prometheus")
    c.sh(f"systemctl reset-failed {UNIT}")

    fail_backup(c)
    lines = handler_lines(c)
    ours = [line for line in lines if line.startswith(f"{UNIT} failed:")]
    assert len(ours) == 1, lines
    assert "result=exit-code" in ours[0] and "exit-code=exited" in ours[0] and "failure 1 counted" in ours[0]
    prio = c.sh(f"journalctl -q -o verbose -u {shlex.quote(HANDLER)} --output-fields=PRIORITY,MESSAGE").stdout
    assert "PRIORITY=3" in prio
    assert count(c) == "1"
    assert c.sh(f"stat -c '%U %a' {PROM}").stdout.split() == ["root", "644"]
    assert c.sh(f"promtool check metrics <{PROM}").returncode == 0
    assert c.sh("stat -c '%U %a' /var/lib/polymarket-hardening/unit-failures/counts.json").stdout.split() == [
        "root", "644"]

    fail_backup(c)
    assert count(c) == "2"

    # The prometheus user owns /var/lib/prometheus: a symlink it plants as the file is replaced, not
    # followed; a directory it swaps for a symlink is refused (the failure is still counted, the
    # handler fails and says so in its one line).
    c.sh("printf 'root only\\n' >/etc/victim && chmod 0644 /etc/victim && install -d -m 0755 /etc/victimdir")
    c.sh(f"chown prometheus {TEXTFILE_DIR}")     # a host where the collector's directory is prometheus's
    c.sh(f"runuser -u prometheus -- ln -sfn /etc/victim {PROM}")
    fail_backup(c)
    assert c.sh("cat /etc/victim").stdout == "root only\n"
    assert c.sh(f"test -f {PROM} && ! test -L {PROM}", check=False).returncode == 0
    assert count(c) == "3"

    c.sh("runuser -u prometheus -- sh -c 'cd /var/lib/prometheus && mv node-exporter ne.real && "
         "ln -s /etc/victimdir node-exporter'")
    fail_backup(c)
    assert c.sh("ls -A /etc/victimdir").stdout == ""
    assert c.sh(f"systemctl show -P Result {HANDLER}").stdout.strip() == "exit-code"
    last = [line for line in handler_lines(c) if line.startswith(f"{UNIT} failed:")][-1]
    assert "failure 4 counted" in last and "not written" in last, last

    # Purge deletes the counts and the textfile (remove keeps them).
    c.sh(f"rm {TEXTFILE_DIR} && mv /var/lib/prometheus/ne.real {TEXTFILE_DIR} && test -f {PROM}")
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y polymarket-hardening")
    assert c.sh(f"test -f {PROM} && test -d /var/lib/polymarket-hardening/unit-failures", check=False).returncode == 0
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-hardening")
    assert c.sh(f"test -e {PROM}", check=False).returncode != 0
    assert c.sh("test -e /var/lib/polymarket-hardening", check=False).returncode != 0
    assert c.sh(f"test -d {TEXTFILE_DIR}", check=False).returncode == 0      # the node exporter's directory stays


def test_failed_timer_run_fires_the_alert(container: harness.Container, dist: Path) -> None:
    """The pipeline from the failure to the alert: Prometheus (the rootfs's) scrapes the textfile as the node
    exporter would serve it (the rootfs has no node exporter: a plain HTTP server over its directory stands in)
    and evaluates polymarket-monitoring's rendered rules; the first failure of polymarket-backup.service makes
    PolymarketUnitFailed fire for that unit."""
    c = container
    c.install_debs([deb(dist, "polymarket-backup")])
    c.sh("useradd -m -s /bin/sh admin && install -d -m 0700 -o admin -g admin ~admin/.ssh && "
         f"echo {shlex.quote(KEY)} >~admin/.ssh/authorized_keys")
    c.sh("debconf-set-selections", input="polymarket-hardening polymarket-hardening/admin_network string "
                                         "10.20.0.0/24\n")
    c.install_debs([deb(dist, "polymarket-hardening")])
    c.sh(f"install -d -o root -g root -m 0755 {TEXTFILE_DIR}")
    mon = payload.load("polymarket-monitoring", "polymarket_monitoring.py")
    rules = mon.render({q: d for q, (_, d) in mon.QUESTIONS.items()})["rules.yml"]
    c.sh("install -d /root/prom && cat >/root/prom/rules.yml", input=rules)
    c.sh("cat >/root/prom/prometheus.yml", input=(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [/root/prom/rules.yml]\n"
        "scrape_configs:\n"
        "- job_name: node\n"
        "  metrics_path: /polymarket-failures.prom\n"
        "  static_configs: [{targets: ['127.0.0.1:9101'], labels: {node: lb}}]\n"))
    c.sh(f"systemd-run --unit=textfile-http python3 -m http.server --bind 127.0.0.1 --directory {TEXTFILE_DIR} 9101")
    c.sh("systemd-run --unit=prom-test prometheus --config.file=/root/prom/prometheus.yml "
         "--storage.tsdb.path=/root/prom/data --web.listen-address=127.0.0.1:9099")
    c.sh("mv /etc/polymarket-backup/repository-password /root/repository-password")
    fail_backup(c)
    deadline = time.monotonic() + 90
    alerts = ""
    while time.monotonic() < deadline:
        alerts = c.sh("curl -s http://127.0.0.1:9099/api/v1/alerts", check=False).stdout
        if '"alertname":"PolymarketUnitFailed"' in alerts and '"state":"firing"' in alerts:
            break
        time.sleep(1)
    assert f'"unit":"{UNIT}"' in alerts and '"state":"firing"' in alerts, alerts
    assert f"{UNIT} failed on lb" in alerts
