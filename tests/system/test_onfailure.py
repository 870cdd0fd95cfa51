"""OnFailure= in a booted container: a failed timer-run service (polymarket-backup.service, made to
fail by taking its repository password away) is logged in one journal line by polymarket-failure@.service
(polymarket-hardening) and counted in the node exporter's textfile directory, which the prometheus user
cannot redirect; without polymarket-hardening the OnFailure= line changes nothing; purge deletes the counts
and the textfile.

Where polymarket-backup cannot be installed (restic older than 0.16: bookworm's 0.14), the failing unit is
polymarket-bot's timer-run polymarket-bot-prune.service (same OnFailure= line), made to fail by a bad value in
the bot's env file: the mechanism under test is polymarket-hardening's, whichever unit fails."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from tests import payload
from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_backup import RESTIC_MINIMUM

pytestmark = pytest.mark.system

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
PROM = f"{TEXTFILE_DIR}/polymarket-failures.prom"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxqHhM4S0PeXsCIxBwKlK9lDqXMS0eAq3Tk0oBn2Z0c admin@test"


def failing_unit(c: harness.Container, dist: Path) -> str:
    """Install the package of the timer-run unit this tree can fail (see the module's text); its name."""
    version = c.sh("dpkg-query -W -f='${Version}' restic").stdout
    if c.sh(f"dpkg --compare-versions '{version}' ge {RESTIC_MINIMUM}", check=False).returncode == 0:
        c.install_debs([deb(dist, "polymarket-backup")])
        return "polymarket-backup.service"
    c.install_debs([deb(dist, "polymarket-bot")])
    return "polymarket-bot-prune.service"


def break_unit(c: harness.Container, unit: str) -> None:
    """From now on every run of ``unit`` fails."""
    if unit == "polymarket-backup.service":
        c.sh("mv /etc/polymarket-backup/repository-password /root/repository-password")
    else:
        c.sh("echo 'POLL_INTERVAL=abc' >>/etc/polymarket/.env")  # a bad hand edit: every command refuses it


def fail_once(c: harness.Container, unit: str) -> None:
    """One run of the service its timer starts, failing; returns once the handler (if any) is done."""
    handler = f"polymarket-failure@{unit}.service"
    before = c.sh(f"systemctl show -P InvocationID {handler}", check=False).stdout.strip()
    assert c.sh(f"systemctl start {unit}", check=False).returncode != 0
    assert c.sh(f"systemctl show -P Result {unit}").stdout.strip() == "exit-code"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        inv = c.sh(f"systemctl show -P InvocationID {handler}", check=False).stdout.strip()
        state = c.sh(f"systemctl show -P ActiveState {handler}", check=False).stdout.strip()
        loaded = c.sh(f"systemctl show -P LoadState {handler}", check=False).stdout.strip()
        if loaded == "not-found" or (inv and inv != before and state in ("inactive", "failed")):
            return
        time.sleep(0.2)
    raise AssertionError(f"{handler} did not run")


def handler_lines(c: harness.Container, unit: str) -> list[str]:
    handler = f"polymarket-failure@{unit}.service"
    return c.sh(f"journalctl -q -o cat -u {shlex.quote(handler)}", check=False).stdout.splitlines()


def count(c: harness.Container, unit: str) -> str:
    return c.sh(f"grep -F 'polymarket_unit_failures_total{{unit=\"{unit}\"}}' {PROM}").stdout.split()[-1]


def test_failed_timer_run_is_logged_and_counted(container: harness.Container, dist: Path) -> None:
    c = container
    unit = failing_unit(c, dist)
    handler = f"polymarket-failure@{unit}.service"
    assert "OnFailure=polymarket-failure@%n.service" in c.sh(f"systemctl cat {unit}").stdout
    break_unit(c, unit)

    # Without polymarket-hardening (no template): the unit fails as before, nothing else happens.
    fail_once(c, unit)
    assert c.sh(f"systemctl is-failed {unit}", check=False).stdout.strip() == "failed"
    assert c.sh(f"systemctl show -P LoadState {handler}", check=False).stdout.strip() == "not-found"
    assert c.sh(f"test -e {PROM}", check=False).returncode != 0

    # polymarket-hardening installed, the node exporter's directory as its package ships it.
    c.sh("useradd -m -s /bin/sh admin && install -d -m 0700 -o admin -g admin ~admin/.ssh && "
         f"echo {shlex.quote(KEY)} >~admin/.ssh/authorized_keys")
    c.sh("debconf-set-selections", input="polymarket-hardening polymarket-hardening/admin_network string "
                                         "10.20.0.0/24\n")
    c.install_debs([deb(dist, "polymarket-hardening")])
    c.sh(f"install -d -o root -g root -m 0755 {TEXTFILE_DIR} && chown prometheus:prometheus /var/lib/prometheus")
    c.sh(f"systemctl reset-failed {unit}")

    fail_once(c, unit)
    lines = handler_lines(c, unit)
    ours = [line for line in lines if line.startswith(f"{unit} failed:")]
    assert len(ours) == 1, lines
    assert "result=exit-code" in ours[0] and "exit-code=exited" in ours[0] and "failure 1 counted" in ours[0]
    prio = c.sh(f"journalctl -q -o verbose -u {shlex.quote(handler)} --output-fields=PRIORITY,MESSAGE").stdout
    assert "PRIORITY=3" in prio
    assert count(c, unit) == "1"
    assert c.sh(f"stat -c '%U %a' {PROM}").stdout.split() == ["root", "644"]
    assert c.sh(f"promtool check metrics <{PROM}").returncode == 0
    assert c.sh("stat -c '%U %a' /var/lib/polymarket-hardening/unit-failures/counts.json").stdout.split() == [
        "root", "644"]

    fail_once(c, unit)
    assert count(c, unit) == "2"

    # The prometheus user owns /var/lib/prometheus: a symlink it plants as the file is replaced, not
    # followed; a directory it swaps for a symlink is refused (the failure is still counted, the
    # handler fails and says so in its one line).
    c.sh("printf 'root only\\n' >/etc/victim && chmod 0644 /etc/victim && install -d -m 0755 /etc/victimdir")
    c.sh(f"chown prometheus {TEXTFILE_DIR}")     # a host where the collector's directory is prometheus's
    c.sh(f"runuser -u prometheus -- ln -sfn /etc/victim {PROM}")
    fail_once(c, unit)
    assert c.sh("cat /etc/victim").stdout == "root only\n"
    assert c.sh(f"test -f {PROM} && ! test -L {PROM}", check=False).returncode == 0
    assert count(c, unit) == "3"

    c.sh("runuser -u prometheus -- sh -c 'cd /var/lib/prometheus && mv node-exporter ne.real && "
         "ln -s /etc/victimdir node-exporter'")
    fail_once(c, unit)
    assert c.sh("ls -A /etc/victimdir").stdout == ""
    assert c.sh(f"systemctl show -P Result {handler}").stdout.strip() == "exit-code"
    last = [line for line in handler_lines(c, unit) if line.startswith(f"{unit} failed:")][-1]
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
    unit = failing_unit(c, dist)
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
    break_unit(c, unit)
    fail_once(c, unit)
    deadline = time.monotonic() + 90
    alerts = ""
    while time.monotonic() < deadline:
        alerts = c.sh("curl -s http://127.0.0.1:9099/api/v1/alerts", check=False).stdout
        if '"alertname":"PolymarketUnitFailed"' in alerts and '"state":"firing"' in alerts:
            break
        time.sleep(1)
    assert f'"unit":"{unit}"' in alerts and '"state":"firing"' in alerts, alerts
    assert f"{unit} failed on lb" in alerts
