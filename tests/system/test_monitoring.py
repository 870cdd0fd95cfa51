"""polymarket-monitoring installed from its .deb in a booted container (the archive's prometheus and
prometheus-alertmanager from the root filesystem): the daemons run on the rendered files and listen on the loopback
only, the dead-man's switch reaches Alertmanager and, through the webhook URL's 0600 file (url_file), the webhook,
the archive's own configuration files stay as shipped, a secret is a 0600 file, and a bad debconf answer is refused
with one line while the rendered files stay."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb

pytestmark = pytest.mark.system

PRESEED = """\
polymarket-monitoring polymarket-monitoring/bot_targets string primary=127.0.0.1
polymarket-monitoring polymarket-monitoring/node_targets string lb=127.0.0.1
polymarket-monitoring polymarket-monitoring/webhook_url string http://127.0.0.1:8099/hook?token=s3cr3t-hook
"""
# Not on the loopback: what a host of the network would connect to (added to lo: the container's private network
# has no other interface). TEST-NET-1, never routed.
OUTSIDE = "192.0.2.10"


def wait_for(c: harness.Container, command: str, want: str, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    out = ""
    while time.monotonic() < deadline:
        out = c.sh(command, check=False).stdout
        if want in out:
            return out
        time.sleep(2)
    raise AssertionError(f"{want!r} not in the answer of {command!r} within {seconds} s: {out[-2000:]}")


def test_install_alerts_secret_and_bad_value(container: harness.Container, dist: Path) -> None:
    c = container
    # The preseeded webhook becomes Alertmanager's url_file, which 0.26 reads first: polymarket-monitoring refuses
    # the webhook_url on an older one (bookworm has 0.25; noble 0.26), so the install this test is about cannot be.
    harness.require_version(c, "prometheus-alertmanager", "0.26", "webhook_url is written as url_file")
    # The shared trees leave the preinstalled archive daemons disabled (harness.QUIET_DAEMONS); on a real
    # host they come enabled by their own packages, pulled in by polymarket-monitoring's Depends.
    c.sh("systemctl enable " + " ".join(harness.QUIET_DAEMONS))
    c.sh("debconf-set-selections", input=PRESEED)
    # The webhook's receiver: a server that logs each request (it answers a POST with 501; Alertmanager retries).
    c.sh("mkdir -p /root/hook && systemd-run --unit hook python3 -m http.server 8099 --bind 127.0.0.1 "
         "--directory /root/hook")
    c.install_debs([deb(dist, "polymarket-monitoring")])

    # Prometheus runs on our files: our rules are loaded, our targets scraped with their node label.
    wait_for(c, "curl -s http://localhost:9090/api/v1/rules", "PolymarketDeadMansSwitch")
    targets = json.loads(wait_for(c, "curl -s http://localhost:9090/api/v1/targets", '"polymarket-bot"'))
    jobs = {(t["labels"]["job"], t["labels"].get("node")) for t in targets["data"]["activeTargets"]}
    assert {("polymarket-bot", "primary"), ("node", "lb")} <= jobs
    flags = json.loads(c.sh("curl -s http://localhost:9090/api/v1/status/flags").stdout)["data"]
    assert flags["config.file"] == "/etc/polymarket-monitoring/prometheus.yml"
    assert flags["storage.tsdb.retention.size"] == "4GiB"
    # The always-firing alert reaches Alertmanager, which runs on our file.
    try:
        wait_for(c, "curl -s http://localhost:9093/api/v2/alerts", "PolymarketDeadMansSwitch")
    except AssertionError as exc:
        journal = c.sh("systemctl cat prometheus-alertmanager; journalctl -u prometheus-alertmanager -o cat | tail -20",
                       check=False).stdout
        raise AssertionError(f"{exc}\n{journal}") from None
    status = json.loads(c.sh("curl -s http://localhost:9093/api/v2/status").stdout)
    assert "PolymarketTwoNodesTrading" in status["config"]["original"]

    # Nothing listening wider than it must: no authentication on either, so the loopback only.
    listening = c.sh("ss -ltnH").stdout.split("\n")
    local = sorted(line.split()[3] for line in listening if line.split()[3:4]
                   and line.split()[3].rsplit(":", 1)[1] in ("9090", "9093"))
    assert local == ["127.0.0.1:9090", "127.0.0.1:9093"], listening
    c.sh(f"ip address add {OUTSIDE}/32 dev lo")
    for port in (9090, 9093):
        proc = c.sh(f"python3 -c 'import socket; socket.create_connection((\"{OUTSIDE}\", {port}), 10)'",
                    check=False)
        assert proc.returncode == 1 and "ConnectionRefusedError" in proc.stderr, (port, proc.stderr)
    assert c.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/-/ready").stdout == "200"

    # The webhook URL (a token in it) is a 0600 file of the user Alertmanager runs as, named by url_file; no
    # rendered file carries it, amtool accepts the file, and the dead-man's switch reaches the webhook through it.
    # 0640 root:prometheus: the daemons read it, their user cannot rewrite it.
    secret = "/etc/polymarket-monitoring/secrets/webhook_url"
    assert c.sh(f"stat -c '%a %U %G' {secret}").stdout.split() == ["640", "root", "prometheus"]
    assert c.sh(f"cat {secret}").stdout == "http://127.0.0.1:8099/hook?token=s3cr3t-hook"
    assert c.sh(f"runuser -u prometheus -- cat {secret}").stdout == "http://127.0.0.1:8099/hook?token=s3cr3t-hook"
    proc = c.sh(f"runuser -u prometheus -- sh -c 'echo http://evil.invalid/ > {secret}'", check=False)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc.stderr
    # In no file every local user reads: not the rendered YAML, not monitoring.conf (0644).
    assert c.sh("grep -l s3cr3t-hook /etc/polymarket-monitoring/*.yml /etc/polymarket-monitoring/monitoring.conf",
                check=False).stdout == ""
    assert f"url_file: {secret}" in c.sh("cat /etc/polymarket-monitoring/alertmanager.yml").stdout
    c.sh("amtool check-config /etc/polymarket-monitoring/alertmanager.yml")
    wait_for(c, "journalctl -u hook -o cat", "POST /hook?token=s3cr3t-hook")
    # The archive's own configuration files are as shipped (never edited).
    assert c.sh("dpkg --verify prometheus prometheus-alertmanager", check=False).stdout == ""

    # A secret from stdin: 0640 root:prometheus, in no rendered file.
    c.sh("polymarket-monitoring secret set smtp_password", input="s3cr3t-pass\n")
    mode = c.sh("stat -c '%a %U %G' /etc/polymarket-monitoring/secrets/smtp_password").stdout.split()
    assert mode == ["640", "root", "prometheus"]
    assert c.sh("grep -rl s3cr3t-pass /etc/polymarket-monitoring/*.yml /var/cache/debconf", check=False).stdout == ""

    # A bad value edited into monitoring.conf (the master copy of the answers): one line, non-zero at
    # dpkg-reconfigure, the rendered files and the running configuration stay.
    before = c.sh("sha256sum /etc/polymarket-monitoring/*.yml").stdout
    c.sh("sed -i 's/^METRICS_PORT=.*/METRICS_PORT=\"99999\"/' /etc/polymarket-monitoring/monitoring.conf")
    proc = c.sh("dpkg-reconfigure -f noninteractive polymarket-monitoring", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: metrics_port: '99999' is not a port (1-65535) (set it with: dpkg-reconfigure "
                      "polymarket-monitoring, or in /etc/polymarket-monitoring/monitoring.conf)"], proc.stderr
    after = c.sh("sha256sum /etc/polymarket-monitoring/*.yml").stdout
    assert after == before
    assert c.sh("systemctl is-active prometheus prometheus-alertmanager").stdout.split() == ["active", "active"]

    c.sh("sed -i 's/^METRICS_PORT=.*/METRICS_PORT=\"9090\"/' /etc/polymarket-monitoring/monitoring.conf")
    # The webhook URL's copy is its secret file (monitoring.conf has none): a hand edit there that monitoring.conf's
    # grammar could not hold ($) is one line and exit 1 at dpkg-reconfigure (the URL not shown), nothing written.
    conf = c.sh("sha256sum /etc/polymarket-monitoring/monitoring.conf").stdout
    c.sh(f"printf '%s' 'http://127.0.0.1:8099/hook?token=ab$cd' > {secret}")
    proc = c.sh("dpkg-reconfigure -f noninteractive polymarket-monitoring", check=False)
    assert proc.returncode != 0
    errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: webhook_url: the character $ is not allowed"), proc.stderr
    assert "token=ab" not in proc.stderr
    assert c.sh("sha256sum /etc/polymarket-monitoring/monitoring.conf").stdout == conf
    assert c.sh("sha256sum /etc/polymarket-monitoring/*.yml").stdout == before
    c.sh(f"printf '%s' 'http://127.0.0.1:8099/hook?token=s3cr3t-hook' > {secret}")

    # A bad NODE_TARGETS the same way: each NAME=ADDRESS checked, a control character shown as \xNN, never raw.
    for value, line in (("lb=127.0.0.1 x=b=c", "error: node_targets: 'x=b=c' is not NAME=ADDRESS"),
                        ("lb=127.0.0.1\x1b[31m", "error: node_targets: a control character (\\x1b) in "
                                                  "'lb=127.0.0.1\\x1b[31m'")):
        edit = f'NODE_TARGETS="{value}"'
        c.sh(f"grep -v '^NODE_TARGETS=' /etc/polymarket-monitoring/monitoring.conf > /root/conf && "
             f"printf '%s\\n' {shlex.quote(edit)} >> /root/conf && "
             "cat /root/conf > /etc/polymarket-monitoring/monitoring.conf")
        proc = c.sh("dpkg-reconfigure -f noninteractive polymarket-monitoring", check=False)
        assert proc.returncode != 0
        errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(line), proc.stderr
        assert "\x1b" not in proc.stderr
        assert c.sh("sha256sum /etc/polymarket-monitoring/*.yml").stdout == before
        assert c.sh(f"cat {secret}").stdout == "http://127.0.0.1:8099/hook?token=s3cr3t-hook"

    # A first install with an answer monitoring.conf cannot hold (` in an address): one line, the install fails,
    # no monitoring.conf (it used to be installed, then refused by render: the config script could not read it).
    c.sh("dpkg --purge polymarket-monitoring")
    assert c.sh("test -e /etc/polymarket-monitoring/monitoring.conf", check=False).returncode == 1
    c.sh("debconf-set-selections", input="polymarket-monitoring polymarket-monitoring/email_to string a`b@example.com\n"
         "polymarket-monitoring polymarket-monitoring/smtp_smarthost string mail.example.com:587\n"
         "polymarket-monitoring polymarket-monitoring/smtp_from string x@example.com\n")
    proc = c.sh("DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/polymarket-test/"
                + deb(dist, "polymarket-monitoring").name, check=False)
    assert proc.returncode != 0
    errors = [e for e in proc.stderr.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: email_to: the character ` is not allowed"), proc.stderr
    assert c.sh("test -e /etc/polymarket-monitoring/monitoring.conf", check=False).returncode == 1
