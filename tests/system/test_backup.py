"""polymarket-backup installed from its .deb in booted trixie (or bookworm) containers.

The bot's real ledger: polymarket-bot is installed too and its own Ledger
class writes to /var/lib/polymarket/trade_history.db (WAL) while backups run.
Backups run through the packaged systemd units (their sandbox included)
where it matters, through the command otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb

pytestmark = pytest.mark.system

LEDGER = "/var/lib/polymarket/trade_history.db"
REPO_DIR = "/var/backups/polymarket/restic"
BOT_PY = "from polymarket_bot.ledger import Ledger; ledger = Ledger('" + LEDGER + "')"
# The writer: the bot's own Ledger, as the bot's user, as fast as it can.
WRITER = f"{BOT_PY}\nwhile True: ledger.new_decision('writer')\n"
SECRET = "moto-test-secret-key-never-logged"
# polymarket-backup Depends: restic (>= 0.16): an archive with an older one (bookworm's 0.14) cannot install it.
RESTIC_MINIMUM = "0.16"


def require_restic(where: harness.Container | Path) -> None:
    """Skip where polymarket-backup cannot be installed: the tree's restic is older than it depends on."""
    harness.require_version(where, "restic", RESTIC_MINIMUM, "polymarket-backup passes restic --retry-lock")


def sql(c: harness.Container, query: str) -> str:
    return c.sh(f'sqlite3 {LEDGER} "{query}"').stdout.strip()


def mark(c: harness.Container, kind: str) -> None:
    """One decision of this kind, written through the bot's Ledger as the bot's user."""
    c.sh(f"runuser -u polymarket-bot -- python3 -c \"{BOT_PY}; ledger.new_decision('{kind}')\"")


def kinds(c: harness.Container) -> set[str]:
    return set(sql(c, "SELECT DISTINCT kind FROM decisions").split())


def install(c: harness.Container, dist: Path) -> None:
    require_restic(c)
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")])


def test_backup_verify_restore(container: harness.Container, dist: Path) -> None:
    c = container
    install(c, dist)

    # Install: a random password and the offsite settings, both 0600 root; timers on.
    assert c.sh("stat -c '%a %U %G %s' /etc/polymarket-backup/repository-password").stdout.split()[:3] == [
        "600", "root", "root"]  # fmt: skip
    assert int(c.sh("stat -c %s /etc/polymarket-backup/repository-password").stdout) >= 32
    assert c.sh("stat -c '%a %U' /etc/polymarket-backup/offsite.conf").stdout.split() == ["600", "root"]
    for timer in ("polymarket-backup", "polymarket-backup-verify", "polymarket-backup-prune",
                  "polymarket-backup-offsite"):  # fmt: skip
        assert c.sh(f"systemctl is-active {timer}.timer").stdout.strip() == "active", timer
    assert "*:0/15" in c.sh("systemctl cat polymarket-backup.timer").stdout

    # A backup through the sandboxed unit while the bot's Ledger writes to the WAL ledger.
    c.sh(f"install -d -o polymarket-bot -g polymarket-bot -m 0750 /var/lib/polymarket && "
         f"runuser -u polymarket-bot -- python3 -c \"{BOT_PY}\"")  # fmt: skip
    c.sh("cat > /usr/local/lib/ledger-writer.py", input=WRITER)
    c.sh("systemd-run --unit=ledger-writer --property=User=polymarket-bot python3 /usr/local/lib/ledger-writer.py")
    time.sleep(1)
    before = int(sql(c, "SELECT count(*) FROM decisions"))
    c.sh("systemctl start polymarket-backup.service")
    assert int(sql(c, "SELECT count(*) FROM decisions")) > before, "the writer was not writing"
    c.sh("systemctl stop ledger-writer.service")
    log = c.sh("journalctl -u polymarket-backup.service -o cat").stdout
    assert "passes integrity_check" in log and "snapshot " in log, log
    listing = c.sh("polymarket-backup list").stdout
    assert "polymarket-ledger" in listing and "1 snapshot(s)" in listing
    assert c.sh(f"stat -c '%a %U' {REPO_DIR}").stdout.split() == ["700", "root"]
    # The staging copy is gone; the repository is encrypted (no ledger bytes in clear).
    assert c.sh("ls -A /var/lib/polymarket-backup/staging").stdout.strip() == ""
    assert c.sh(f"grep -rl 'SQLite format 3' {REPO_DIR}", check=False).returncode == 1

    verify = c.sh("polymarket-backup verify --read-data-subset 100%")
    assert "passes integrity_check" in verify.stdout

    # Point in time: T1 after the first state; rows written later are gone after restore.
    mark(c, "pit-before")
    c.sh("polymarket-backup backup --kind manual")
    time.sleep(1.1)  # --time has whole seconds: T1 is after the snapshot, the next one after T1
    t1 = c.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(1.1)
    mark(c, "pit-after")
    c.sh("echo '# changed after T1' >> /etc/polymarket/.env")
    c.sh("polymarket-backup backup --kind manual")
    assert {"pit-before", "pit-after"} <= kinds(c)
    owner = c.sh(f"stat -c '%U %G %a' {LEDGER}").stdout.strip()
    bot_before = c.sh("systemctl is-active polymarket-bot.service", check=False).stdout.strip()
    restore = c.sh(f"polymarket-backup restore --time '{t1}' --with-config", check=False)
    assert restore.returncode == 0, restore.stderr + c.sh(
        "journalctl -u 'polymarket-bot*' -o cat | tail -n 30", check=False).stdout  # fmt: skip
    assert "ledger restored from snapshot" in restore.stdout and "configuration file(s)" in restore.stdout
    # The bot is stopped for the swap and running again afterwards.
    assert bot_before == "active"
    assert "stopping polymarket-bot.service" in restore.stderr and "starting polymarket-bot.service" in restore.stderr
    assert c.sh("systemctl is-active polymarket-bot.service", check=False).stdout.strip() == "active"
    after = kinds(c)
    assert "pit-before" in after and "pit-after" not in after, after
    assert c.sh(f"stat -c '%U %G %a' {LEDGER}").stdout.strip() == owner
    assert c.sh(f"sqlite3 {LEDGER} 'PRAGMA integrity_check'").stdout.strip() == "ok"
    # The state of before is an encrypted snapshot of its own (no plaintext copy on disk), and restoring it undoes.
    pre = [line.split()[0] for line in c.sh("polymarket-backup list").stdout.splitlines() if "pre-restore" in line]
    assert len(pre) == 1 and f"--snapshot {pre[0]}" in restore.stdout, restore.stdout
    assert c.sh("test -e /var/backups/polymarket/pre-restore", check=False).returncode == 1
    assert c.sh("grep -rl 'changed after T1' /var/backups /var/lib/polymarket-backup", check=False).returncode == 1
    # The configuration of T1 is back, with its owner and mode; the later one is kept aside.
    assert "changed after T1" not in c.sh("cat /etc/polymarket/.env").stdout
    assert c.sh("stat -c '%a %U' /etc/polymarket/.env").stdout.split() == ["600", "polymarket-bot"]
    undo = c.sh(f"polymarket-backup restore --snapshot {pre[0]} --with-config")
    assert "ledger restored" in undo.stdout
    assert c.sh("ls -A /etc/polymarket | grep pmrestore", check=False).returncode == 1
    assert {"pit-before", "pit-after"} <= kinds(c) and "changed after T1" in c.sh("cat /etc/polymarket/.env").stdout
    assert c.sh("ls -A /etc/polymarket | grep pmrestore", check=False).returncode == 1
    files = c.sh(f"restic -r {REPO_DIR} --password-file /etc/polymarket-backup/repository-password ls latest").stdout
    assert "/etc/polymarket/.env" in files and "/etc/polymarket-backup/offsite.conf" in files
    assert "repository-password" not in files
    # Before the first snapshot: refused, nothing changed.
    refused = c.sh("polymarket-backup restore --time '2000-01-01 00:00'", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: no snapshot at or before")

    # The daily verify and prune run under their units' sandboxes.
    # What older versions kept in plaintext under pre-restore/ goes once older than the retention.
    c.sh("install -d -m 0700 /var/backups/polymarket/pre-restore/config.20200101T000000/etc/polymarket && "
         "echo PRIVATE_KEY=0xold > /var/backups/polymarket/pre-restore/config.20200101T000000/etc/polymarket/.env && "
         "touch -d '40 days ago' /var/backups/polymarket/pre-restore/config.20200101T000000 && "
         "echo recent > /var/backups/polymarket/pre-restore/trade_history.db.20991231T000000")  # fmt: skip
    c.sh("systemctl start polymarket-backup-verify.service polymarket-backup-prune.service")
    assert c.sh("ls -A /var/backups/polymarket/pre-restore").stdout.split() == ["trade_history.db.20991231T000000"]
    assert "passes integrity_check" in c.sh("journalctl -u polymarket-backup-verify.service -o cat").stdout
    assert "snapshots of the last 30d kept" in c.sh("journalctl -u polymarket-backup-prune.service -o cat").stdout
    assert "5 snapshot(s)" in c.sh("polymarket-backup list").stdout  # none older than 30 days (2 pre-restore)

    # A damaged pack is found by verify and named.
    pack = c.sh(f"find {REPO_DIR}/data -type f -size +2k | sort | head -n 1").stdout.strip()
    assert pack
    c.sh(f"printf 'garbage-garbage-garbage' | dd of={pack} bs=1 seek=600 conv=notrunc status=none")
    bad = c.sh("polymarket-backup verify --read-data-subset 100%", check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    err_line = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert err_line and os.path.basename(pack) in err_line[0], bad.stderr

    # With every pack damaged, restore refuses and the live ledger is untouched.
    c.sh(f"for f in $(find {REPO_DIR}/data -type f); do "
         "printf 'garbage-garbage' | dd of=$f bs=1 seek=200 conv=notrunc status=none; done")  # fmt: skip
    digest = c.sh(f"sha256sum {LEDGER}").stdout
    failed = c.sh("polymarket-backup restore", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "error: restore refused, nothing changed: restic dump failed" in failed.stderr
    assert c.sh(f"sha256sum {LEDGER}").stdout == digest
    assert ".trade_history.db.restore" not in c.sh("ls -A /var/lib/polymarket").stdout

    # Purge keeps the backups and their password (they are useless apart).
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-backup")
    assert c.sh(f"test -e {REPO_DIR}/config && test -s /etc/polymarket-backup/repository-password",
                check=False).returncode == 0  # fmt: skip
    assert c.sh("test -e /etc/polymarket-backup/offsite.conf", check=False).returncode == 1


@contextlib.contextmanager
def s3_namespace(name: str) -> Iterator[tuple[str, int]]:
    """A network namespace of our own with moto's S3 server on its loopback.

    The container joins this namespace (--network-namespace-path), so restic
    inside it reaches S3 at 127.0.0.1:PORT, and nothing here listens on or
    talks to this machine's own network.
    """
    moto = shutil.which("moto_server", path=str(harness.REPO / ".venv" / "bin"))
    if moto is None:
        pytest.skip("moto_server missing (make venv installs moto[server])")
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = None
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        port = 5000
        argv = ["ip", "netns", "exec", name, moto, "-H", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(["ip", "netns", "exec", name, "python3", "-c",
                                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/')"],
                                   capture_output=True)  # fmt: skip
            if probe.returncode == 0:
                break
            time.sleep(0.3)
        else:
            raise harness.HarnessError("moto_server did not come up")
        yield name, port
    finally:
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(10)
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_offsite_copy_to_s3(rootfs: Path, dist: Path) -> None:
    """``polymarket-backup offsite`` through its sandboxed unit into a moto S3 bucket.

    moto runs on the host, but inside a network namespace this test creates;
    the container shares that namespace only, so both meet on a loopback that
    is not this machine's.
    """
    require_restic(rootfs)
    ns = f"pmtest-s3-{os.getpid()}"
    with s3_namespace(ns) as (name, port), harness.booted(
        rootfs, name="pmtest-s3", network="none", extra_args=[f"--network-namespace-path=/run/netns/{name}"]
    ) as c:
        install(c, dist)
        c.sh(f"install -d -o polymarket-bot -g polymarket-bot -m 0750 /var/lib/polymarket && "
             f"runuser -u polymarket-bot -- python3 -c \"{BOT_PY}; ledger.new_decision('offsite')\"")  # fmt: skip

        # Not configured: a no-op that says so.
        idle = c.sh("polymarket-backup offsite")
        assert "not configured" in idle.stdout

        c.sh("cat >> /etc/polymarket-backup/offsite.conf", input=(
            f"S3_ENDPOINT=http://127.0.0.1:{port}\nS3_BUCKET=polymarket-backups/production\n"
            f"AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY={SECRET}\n"))  # fmt: skip
        c.sh("polymarket-backup backup")
        c.sh("systemctl start polymarket-backup-offsite.service")
        log = c.sh("journalctl -u polymarket-backup-offsite.service -o cat").stdout
        assert "offsite copy done: 1 snapshot(s) in s3:http://127.0.0.1" in log, log
        assert SECRET not in log and SECRET not in c.sh("journalctl -o cat").stdout

        # A second run copies only what is new.
        c.sh("polymarket-backup backup && polymarket-backup offsite")
        assert "2 snapshot(s)" in c.sh("polymarket-backup offsite").stdout

        # The bucket holds a restic repository under production/ (read from the namespace).
        listing = subprocess.run(
            ["ip", "netns", "exec", name, "python3", "-c",
             f"import urllib.request; print(urllib.request.urlopen("
             f"'http://127.0.0.1:{port}/polymarket-backups?prefix=production/').read().decode())"],
            capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "<Key>production/config</Key>" in listing
        assert "<Key>production/snapshots/" in listing

        # Restore from the offsite copy alone: the ledger decrypts with the same password.
        dump = c.sh(
            "set -a && . /etc/polymarket-backup/offsite.conf && "
            "restic -r s3:$S3_ENDPOINT/$S3_BUCKET --password-file /etc/polymarket-backup/repository-password "
            "dump latest /var/lib/polymarket-backup/staging/trade_history.db > /tmp/offsite.db && "
            "sqlite3 /tmp/offsite.db \"SELECT count(*) FROM decisions WHERE kind='offsite'\"")
        assert dump.stdout.strip() == "1"


def test_purging_the_bot_keeps_the_backups(container: harness.Container, dist: Path) -> None:
    """The repository is polymarket-backup's: purging polymarket-bot neither deletes nor owns it (issue 7, item 2)."""
    c = container
    install(c, dist)
    assert c.sh("stat -c '%U %a' /var/backups/polymarket").stdout.split() == ["root", "700"]
    mark(c, "before-purge")
    c.sh("polymarket-backup backup")
    c.sh("touch /run/polymarket/passive")  # polymarket-ha's switch: not the bot's to delete
    c.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-bot")
    assert c.sh("test -e /var/lib/polymarket", check=False).returncode == 1  # the bot's own data is gone
    assert c.sh("test -e /run/polymarket/passive", check=False).returncode == 0
    assert "repository ok" in c.sh("polymarket-backup verify --read-data-subset 100%").stdout
    assert "polymarket-ledger" in c.sh("polymarket-backup list").stdout
    dump = c.sh(f"restic -r {REPO_DIR} --password-file /etc/polymarket-backup/repository-password "
                "dump latest /var/lib/polymarket-backup/staging/trade_history.db > /tmp/l.db && "
                "sqlite3 /tmp/l.db \"select count(*) from decisions where kind='before-purge'\"")  # fmt: skip
    assert dump.stdout.strip() == "1"
    # And systemd-tmpfiles (boot) keeps it root's.
    c.sh("systemd-tmpfiles --create")
    assert c.sh("stat -c '%U %a' /var/backups/polymarket").stdout.split() == ["root", "700"]
