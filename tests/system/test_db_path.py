"""The ledger's path has one owner, the bot's DB_PATH: backup, restore, replication and promotion follow it.

polymarket-backup and polymarket-ha ask ``polymarket-bot config get DB_PATH`` (issue 8); before, each had
/var/lib/polymarket/trade_history.db written in, and a changed DB_PATH left the ledger out of backups
("config only") and out of replication. Each test moves the ledger to ALT, another file directly in
/var/lib/polymarket (never a subdirectory: the bot's user could swap it for a link under root's writes), and
looks at the bytes: in the restic snapshot, at ALT after a restore, in the
standby's replica, at the standby's ALT after a failover. Nothing is ever created at the old path.

The HA test boots test_ha's three-node LAN (namespaces and containers of fixed names): run it under
``flock /tmp/ha-system-test.lock``, as test_ha.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_backup import require_restic
from tests.system.test_ha import ADDR, health, holds_vip, lan, preseed, wait

pytestmark = pytest.mark.system

ALT = "/var/lib/polymarket/alt-ledger.db"
OLD = "/var/lib/polymarket/trade_history.db"
REPO_DIR = "/var/backups/polymarket/restic"
RESTIC = f"restic -r {REPO_DIR} --password-file /etc/polymarket-backup/repository-password"


def set_db_path(c: harness.Container, value: str) -> None:
    c.sh(f"sed -i '/^DB_PATH=/d' /etc/polymarket/.env && echo 'DB_PATH={value}' >> /etc/polymarket/.env")


def marks(c: harness.Container, db: str = ALT) -> list[str]:
    return c.sh(f"sqlite3 'file:{db}?mode=ro' 'select v from m order by rowid'").stdout.split()


def mark(c: harness.Container, value: str) -> None:
    """A row written into the live ledger at ALT as the bot's user (the bot has the file open meanwhile)."""
    c.sh(f"runuser -u polymarket-bot -- sqlite3 {ALT} "
         f"\"create table if not exists m(v text); insert into m values ('{value}');\"")  # fmt: skip


def has_ledger(c: harness.Container) -> bool:
    return c.sh(f"test -s {ALT}", check=False).returncode == 0


def forget_old(c: harness.Container) -> None:
    """The ledger the bot made at install, at the default DB_PATH, before it was moved: gone, to see nothing
    makes it again."""
    c.sh(f"rm -f {OLD} {OLD}-wal {OLD}-shm {OLD}.lock")


def one_error(r: object) -> str:
    stderr = getattr(r, "stderr", "")
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_backup_and_restore_follow_db_path(container: harness.Container, dist: Path) -> None:
    c = container
    require_restic(c)
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")])
    set_db_path(c, ALT)
    assert c.sh("polymarket-bot config get DB_PATH").stdout == f"{ALT}\n"
    assert "configuration OK" in c.sh("polymarket-bot validate-config").stdout
    c.sh("systemctl restart polymarket-bot")  # run makes the ledger, as the service user
    wait(functools.partial(has_ledger, c), 60, "the bot's ledger at DB_PATH")
    forget_old(c)
    mark(c, "alt-before")

    out = c.sh("polymarket-backup backup --kind manual")
    assert "snapshot " in out.stdout and "config only" not in out.stderr, out.stderr
    # The snapshot holds ALT's rows (under the one in-snapshot name, so that old snapshots restore anywhere).
    dumped = c.sh(f"{RESTIC} dump latest /var/lib/polymarket-backup/staging/trade_history.db > /tmp/dump.db && "
                  "sqlite3 /tmp/dump.db 'select v from m'").stdout.split()  # fmt: skip
    assert dumped == ["alt-before"]

    time.sleep(1.1)
    mark(c, "alt-after")
    owner = c.sh(f"stat -c '%U %G %a' {ALT}").stdout.strip()
    restore = c.sh("polymarket-backup restore", check=False)
    assert restore.returncode == 0, restore.stderr
    assert "ledger restored from snapshot" in restore.stdout
    assert marks(c) == ["alt-before"]
    assert c.sh(f"stat -c '%U %G %a' {ALT}").stdout.strip() == owner
    assert c.sh("systemctl is-active polymarket-bot.service", check=False).stdout.strip() == "active"
    assert c.sh(f"test -e {OLD}", check=False).returncode == 1, "something used the old hard-coded path"

    # An older backup.conf's LEDGER line: the same file is a note, another file is refused (nothing backed up).
    before = c.sh(f"{RESTIC} snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'").stdout
    c.sh(f"echo 'LEDGER={ALT}' >> /etc/polymarket-backup/backup.conf")
    same = c.sh("polymarket-backup backup --kind manual")
    assert "LEDGER is no longer read" in same.stderr
    c.sh(f"sed -i 's|^LEDGER=.*|LEDGER={OLD}|' /etc/polymarket-backup/backup.conf")
    other = c.sh("polymarket-backup backup --kind manual", check=False)
    assert other.returncode == 3 and f"LEDGER={OLD} is not the bot's DB_PATH ({ALT})" in one_error(other)
    c.sh("sed -i '/^LEDGER=/d' /etc/polymarket-backup/backup.conf")
    after = c.sh(f"{RESTIC} snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'").stdout
    assert int(after) == int(before) + 1

    # A DB_PATH outside /var/lib/polymarket (where the units let the service write, where root acts) is refused
    # by the bot's own checks, and the backup says so in one line rather than backing up "config only".
    set_db_path(c, "/var/tmp/ledger.db")
    bad = c.sh("polymarket-bot validate-config", check=False)
    assert bad.returncode == 1
    assert "DB_PATH: /var/tmp/ledger.db is not a file directly in /var/lib/polymarket" in one_error(bad)
    refused = c.sh("polymarket-backup backup", check=False)
    assert refused.returncode == 3, refused.stderr
    assert one_error(refused).startswith("error: cannot tell where the ledger is: polymarket-bot config get DB_PATH")
    assert "not a file directly in /var/lib/polymarket" in refused.stderr
    # Nor a subdirectory of it: the bot's user owns /var/lib/polymarket and could swap alt/ for a link between
    # root's check and root's writes. Refused by the bot, so backup and restore stop; nothing made in alt/.
    c.sh("install -d -o polymarket-bot -g polymarket-bot /var/lib/polymarket/alt")
    set_db_path(c, "/var/lib/polymarket/alt/ledger.db")
    sub = c.sh("polymarket-bot validate-config", check=False)
    assert sub.returncode == 1 and "is not a file directly in /var/lib/polymarket" in one_error(sub)
    for argv in ("polymarket-backup backup", "polymarket-backup restore"):
        refused = c.sh(argv, check=False)
        assert refused.returncode == 3 and "cannot tell where the ledger is" in one_error(refused), argv
    assert c.sh("ls -A /var/lib/polymarket/alt").stdout == ""
    # Nor is a secret ever printed.
    secret = c.sh("polymarket-bot config get API_SECRET_KEY", check=False)
    assert secret.returncode == 1 and secret.stdout == "" and "is a secret" in one_error(secret)


def test_replication_and_promotion_follow_db_path(rootfs: Path, dist: Path) -> None:
    with lan(rootfs) as net:
        p, s = net.nodes["primary"], net.nodes["standby"]
        for role, c in (("primary", p), ("standby", s)):
            # Prometheus (in the shared rootfs) would hold the bot's METRICS_PORT: no monitoring on a bot node.
            c.sh("systemctl disable --now prometheus.service prometheus-alertmanager.service", check=False)
            preseed(c, role, net.iface[role])
            c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-ha")])
            set_db_path(c, ALT)
            c.sh("systemctl restart polymarket-bot")
            wait(functools.partial(has_ledger, c), 60, "the ledger at DB_PATH")
            forget_old(c)
        for a, b in ((p, s), (s, p)):
            key = a.sh("polymarket-ha pubkey").stdout.strip()
            host = " ".join(a.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
            b.sh(f"polymarket-ha trust-peer '{key}' --host-key '{host}'")

        wait(lambda: holds_vip(p), 40, "the VIP on the primary")
        wait(lambda: health(p, ADDR["primary"]).get("role") == "active", 60, "the primary's bot active")
        wait(functools.partial(has_ledger, p), 30, "the primary's ledger at DB_PATH")
        mark(p, "from-primary-alt")
        run = p.sh("systemctl start polymarket-ha-replicate.service", check=False)
        assert run.returncode == 0, (p.sh("journalctl -u polymarket-ha-replicate -o cat | tail -20").stdout
                                     + p.sh("polymarket-ha --debug replicate 2>&1", check=False).stdout
                                     + p.sh("cd /var/lib/polymarket-ha && runuser -u polymarket-ha -- rsync -v -t "
                                            "--chmod=F0600 -e 'ssh -i .ssh/id_ed25519 -o BatchMode=yes "
                                            "-o UserKnownHostsFile=.ssh/known_hosts' outgoing/trade_history.db "
                                            f"polymarket-ha@{ADDR['standby']}:trade_history.db 2>&1; "
                                            "ls -la outgoing", check=False).stdout
                                     + s.sh("ls -la /var/lib/polymarket-ha/replica; journalctl -o cat | tail -30",
                                            check=False).stdout)  # fmt: skip
        assert f"snapshot of {ALT} sent" in p.sh("journalctl -u polymarket-ha-replicate -o cat").stdout
        assert marks(s, "/var/lib/polymarket-ha/replica/trade_history.db") == ["from-primary-alt"]

        # Failover: the standby promotes the replica into its own DB_PATH, its bot trades on it.
        wait(lambda: health(s, ADDR["standby"]).get("role") == "passive", 30, "the standby's bot passive")
        p.sh("systemctl stop keepalived")
        wait(lambda: holds_vip(s), 15, "the VIP on the standby")
        wait(lambda: health(s, ADDR["standby"]).get("role") == "active", 60, "the standby's bot active")
        assert marks(s) == ["from-primary-alt"]
        assert s.sh(f"stat -c '%U %a' {ALT}").stdout.split() == ["polymarket-bot", "600"]
        assert s.sh("ls /var/lib/polymarket-ha/previous").stdout.strip()  # the standby's own ledger, kept
        for c in (p, s):
            assert c.sh(f"test -e {OLD}", check=False).returncode == 1, "something used the old hard-coded path"
