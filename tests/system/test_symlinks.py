"""Root never writes through a link that polymarket-bot can plant (issue 7, item 1), and the HA leftovers of item 11.

/var/lib/polymarket belongs to polymarket-bot: a compromised bot can put a symlink at any name in it. Each
test plants one, as the bot's user, pointing at a root-owned canary, runs the real installed command in a
booted container, and checks the canary (bytes, owner, mode) and the outcome.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_backup import require_restic

pytestmark = pytest.mark.system

LEDGER = "/var/lib/polymarket/trade_history.db"
CANARY = "/root/canary"
CANARY_TEXT = "canary of root: must never change\n"


def plant_canary(c: harness.Container) -> str:
    c.sh(f"printf '{CANARY_TEXT}' > {CANARY} && chmod 0600 {CANARY} && chown root:root {CANARY}")
    return canary_state(c)


def canary_state(c: harness.Container) -> str:
    return c.sh(f"stat -c '%U:%G %a %s' {CANARY} && sha256sum {CANARY}").stdout


def plant(c: harness.Container, link: str, target: str = CANARY) -> None:
    """As polymarket-bot, in its own directory: what a compromised bot can do."""
    c.sh(f"runuser -u polymarket-bot -- ln -sfn {target} {link}")
    assert c.sh(f"test -L {link}", check=False).returncode == 0


def make_ledger(c: harness.Container, marker: str, path: str = LEDGER, user: str = "polymarket-bot") -> None:
    c.sh(f"runuser -u {user} -- sqlite3 {path} \"create table if not exists m(v text); "
         f"insert into m values ('{marker}');\"")  # fmt: skip


# -- polymarket-backup restore ------------------------------------------------------------------------------


def test_backup_restore_never_writes_through_a_planted_link(container: harness.Container, dist: Path) -> None:
    c = container
    require_restic(c)
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")])
    c.sh("systemctl stop polymarket-bot")
    make_ledger(c, "backed-up")
    c.sh("polymarket-backup backup")
    before = plant_canary(c)
    plant(c, "/var/lib/polymarket/.trade_history.db.restore.partial")
    plant(c, "/var/lib/polymarket/.trade_history.db.restore")
    restore = c.sh("polymarket-backup restore", check=False)
    assert canary_state(c) == before, restore.stderr
    assert restore.returncode == 0, restore.stderr
    assert c.sh(f"stat -c '%F %U %G' {LEDGER}").stdout.split() == ["regular", "file", "polymarket-bot",
                                                                    "polymarket-bot"]  # fmt: skip
    assert c.sh(f"sqlite3 {LEDGER} 'select v from m'").stdout.split() == ["backed-up"]
    assert c.sh("test -e /var/lib/polymarket/.trade_history.db.restore", check=False).returncode == 1

    # A link at the ledger's -wal: either the restore succeeds and only the link goes, or (the live ledger,
    # read as the bot, never as root, cannot be saved first) it is refused with one line and nothing changes.
    plant(c, "/var/lib/polymarket/trade_history.db-wal")
    ledger = c.sh(f"sha256sum {LEDGER}").stdout
    again = c.sh("polymarket-backup restore", check=False)
    assert canary_state(c) == before
    if again.returncode == 0:
        assert c.sh(f"test -e {LEDGER}-wal -o -L {LEDGER}-wal", check=False).returncode == 1
    else:
        # refused before any write: 1 (restore refused) or 3 (the ledger's configuration names a link)
        assert again.returncode in (1, 3), again.stderr
        assert "restore refused" in again.stderr or "root's helpers follow no link" in again.stderr
        assert c.sh(f"sha256sum {LEDGER}").stdout == ledger


# -- polymarket-compliance report ---------------------------------------------------------------------------


def test_compliance_reports_live_outside_the_bots_directory(container: harness.Container, dist: Path) -> None:
    c = container
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-hardening")])
    before = plant_canary(c)
    c.sh("install -d -m 0700 /root/canary-dir && echo keep > /root/canary-dir/f")
    dir_before = c.sh("stat -c '%U:%G %a' /root/canary-dir /root/canary-dir/f").stdout
    # An older version's report directory, with a real report and two planted links inside.
    c.sh("install -d -m 0750 -g polymarket-bot /var/lib/polymarket/compliance && "
         "echo old-report > /var/lib/polymarket/compliance/compliance-20250101T060000Z.txt")
    # (the bot cannot write in that root-owned directory; it can replace it: that is the next step)
    c.sh(f"ln -s {CANARY} /var/lib/polymarket/compliance/.latest.txt.tmp && "
         f"ln -s {CANARY} /var/lib/polymarket/compliance/compliance-20250102T060000Z.txt")
    c.sh("systemctl start polymarket-compliance.service", check=False)
    assert canary_state(c) == before
    new = "/var/lib/polymarket-hardening/compliance"
    assert c.sh(f"stat -c '%U:%G %a' {new}").stdout.strip() == "root:polymarket-bot 750"
    assert c.sh(f"stat -c '%U:%G %a' {new}/latest.json {new}/latest.txt").stdout.split() == [
        "root:polymarket-bot", "640", "root:polymarket-bot", "640"]  # fmt: skip
    assert c.sh(f"cat {new}/compliance-20250101T060000Z.txt").stdout == "old-report\n"
    assert c.sh(f"test -e {new}/compliance-20250102T060000Z.txt", check=False).returncode == 1
    assert c.sh("test -e /var/lib/polymarket/compliance -o -L /var/lib/polymarket/compliance",
                check=False).returncode == 1  # fmt: skip
    # The bot reads the report (its /compliance page) and cannot change it.
    assert '"score"' in c.sh(f"runuser -u polymarket-bot -- cat {new}/latest.json").stdout
    assert c.sh(f"runuser -u polymarket-bot -- sh -c 'echo x >> {new}/latest.json'", check=False).returncode != 0

    # The bot replaces the old path by a link to a root directory: removed, never followed.
    plant(c, "/var/lib/polymarket/compliance", "/root/canary-dir")
    out = c.sh("polymarket-compliance report", check=False)
    assert out.returncode in (0, 1), out.stderr
    assert c.sh("stat -c '%U:%G %a' /root/canary-dir /root/canary-dir/f").stdout == dir_before
    assert c.sh("cat /root/canary-dir/f").stdout == "keep\n"
    assert c.sh("ls -A /root/canary-dir").stdout.split() == ["f"]
    assert c.sh("test -L /var/lib/polymarket/compliance", check=False).returncode == 1
    assert canary_state(c) == before


# -- polymarket-ha promotion, stale marker, host key pinning, trust-peer validation -------------------------


def install_ha_on_loopback(c: harness.Container, dist: Path) -> None:
    """A primary whose peer is itself on 127.0.0.1 and whose VIP sits on lo: promotion and replication run
    for real (keepalived is stopped; the test calls the notify script as keepalived would)."""
    c.sh("debconf-set-selections", input="".join(
        f"polymarket-ha polymarket-ha/{k} {t} {v}\n" for k, (t, v) in {
            "role": ("select", "primary"), "own_address": ("string", "127.0.0.1"),
            "peer_address": ("string", "127.0.0.1"), "virtual_ip": ("string", "10.9.9.9/32"),
            "interface": ("string", "lo"), "backends": ("string", "")}.items()))  # fmt: skip
    # The shared rootfs's Prometheus (polymarket-monitoring's) holds *:9090, the bot's METRICS_PORT.
    c.sh("systemctl disable --now prometheus.service prometheus-alertmanager.service")
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-ha")])
    c.sh("systemctl stop keepalived; systemctl mask --runtime keepalived; ip addr add 10.9.9.9/32 dev lo")


def bot_healthy(c: harness.Container) -> bool:
    return c.sh("curl -fsS --max-time 2 http://127.0.0.1:8080/health", check=False).returncode == 0


def test_ha_promotion_pinning_and_stale_marker(container: harness.Container, dist: Path) -> None:
    c = container
    install_ha_on_loopback(c, dist)
    deadline = time.monotonic() + 60
    while not bot_healthy(c) and time.monotonic() < deadline:
        time.sleep(0.5)
    make_ledger(c, "local")
    replica = "/var/lib/polymarket-ha/replica/trade_history.db"
    make_ledger(c, "from-peer", replica, "polymarket-ha")
    c.sh(f"sqlite3 {replica} 'pragma journal_mode=delete' >/dev/null")
    c.sh("rm -f /var/lib/polymarket-ha/last-active")

    # 1. Promotion with a planted .promote link: the canary is untouched, the replica adopted.
    before = plant_canary(c)
    plant(c, "/var/lib/polymarket/.trade_history.db.promote")
    notify = c.sh("polymarket-ha notify INSTANCE polymarket MASTER", check=False, timeout=200)
    assert canary_state(c) == before, notify.stderr
    assert notify.returncode == 0, notify.stderr
    assert "adopted the replica" in notify.stderr
    assert c.sh(f"stat -c '%F %U %a' {LEDGER}").stdout.split() == ["regular", "file", "polymarket-bot", "600"]
    assert c.sh(f"sqlite3 {LEDGER} 'select v from m'").stdout.split() == ["from-peer"]
    assert any(n.startswith("trade_history.db.") for n in c.sh("ls /var/lib/polymarket-ha/previous").stdout.split())

    # 2. trust-peer: hostile keys are refused with one line and the working files stay as they were.
    pub = c.sh("polymarket-ha pubkey").stdout.strip()
    host = " ".join(c.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    ok = c.sh(f"polymarket-ha trust-peer '{pub}' --host-key '{host}'")
    assert "pinned" in ok.stdout
    files = "/var/lib/polymarket-ha/.ssh/authorized_keys /var/lib/polymarket-ha/.ssh/known_hosts"
    good = c.sh(f"sha256sum {files}").stdout
    for bad in (pub[:60], pub.replace("ssh-ed25519", "ssh-rsa"), f'command="/bin/sh" {pub}',
                pub + "\nssh-dss AAAAB3 evil"):  # fmt: skip
        out = c.sh(f"KEY={_q(bad)}; polymarket-ha trust-peer \"$KEY\" --host-key '{host}'", check=False)
        assert out.returncode == 1 and out.stderr.startswith("error: the key "), (bad, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    bad_host = c.sh(f"polymarket-ha trust-peer '{pub}' --host-key '{host[:40]}'", check=False)
    assert bad_host.returncode == 1 and bad_host.stderr.startswith("error: the host key ")
    assert c.sh(f"sha256sum {files}").stdout == good

    # 3. Replication checks the pinned host key: a wrong one fails and is not replaced (no TOFU).
    c.sh(f"rm {replica}")  # made by hand above; rsync (rrsync -wo) does not overwrite it
    sent = c.sh("polymarket-ha replicate", check=False)
    assert sent.returncode == 0, sent.stderr
    other = c.sh("ssh-keygen -q -t ed25519 -N '' -f /root/other && cat /root/other.pub").stdout.split()
    c.sh(f"polymarket-ha trust-peer '{pub}' --host-key '{other[0]} {other[1]}'")
    pinned = c.sh("cat /var/lib/polymarket-ha/.ssh/known_hosts").stdout
    failed = c.sh("polymarket-ha replicate", check=False)
    assert failed.returncode == 1 and "Host key verification failed" in failed.stderr, failed.stderr
    assert c.sh("cat /var/lib/polymarket-ha/.ssh/known_hosts").stdout == pinned

    # 4. A promotion killed midway (kill -9) leaves a marker that check-bot ignores: the node fails over.
    c.sh("systemctl mask --runtime polymarket-bot && systemctl stop polymarket-bot")  # the promotion hangs
    c.sh("systemd-run --unit=promo --collect polymarket-ha notify INSTANCE polymarket MASTER")
    deadline = time.monotonic() + 30
    while c.sh("test -s /run/polymarket-ha/promoting", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no promoting marker"
        time.sleep(0.2)
    assert c.sh("/usr/lib/polymarket-ha/check-bot 127.0.0.1 8080", check=False).returncode == 0  # under way
    c.sh("systemctl kill -s KILL promo.service")
    time.sleep(1)
    assert c.sh("test -e /run/polymarket-ha/promoting", check=False).returncode == 0  # left behind
    assert c.sh("/usr/lib/polymarket-ha/check-bot 127.0.0.1 8080", check=False).returncode != 0
    c.sh("polymarket-ha heartbeat", check=False)
    assert c.sh("test -e /run/polymarket-ha/promoting", check=False).returncode == 1


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
