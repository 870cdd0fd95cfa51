"""Outside review of issue 7 items 1 and 11 (root never writes through links): what still gets through.

Each test plants, as the unprivileged user named, what that user can plant in a directory it owns, runs the
real installed command as root in a booted container, and checks a root-owned canary. The comment in
polymarket_ha.py names polymarket-ha as well as polymarket-bot as a user who "can put a symlink where root
is about to write"; O_NOFOLLOW guards only the last component of a path, and `install -d` follows links.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_backup import require_restic

pytestmark = pytest.mark.system

STATE = "/var/lib/polymarket-ha"


def install_ha(c: harness.Container, dist: Path) -> None:
    c.sh("debconf-set-selections", input="".join(
        f"polymarket-ha polymarket-ha/{k} {t} {v}\n" for k, (t, v) in {
            "role": ("select", "primary"), "own_address": ("string", "127.0.0.1"),
            "peer_address": ("string", "127.0.0.1"), "virtual_ip": ("string", "10.9.9.9/32"),
            "interface": ("string", "lo"), "backends": ("string", "")}.items()))  # fmt: skip
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-ha")])


def plant(c: harness.Container, script: str) -> None:
    """``script`` run in STATE as polymarket-ha; since STATE is root's it is refused there (asserted), and root
    plants the same, as an older version's polymarket-ha could have before this upgrade: root must still never
    follow what it finds."""
    as_ha = c.sh(f"runuser -u polymarket-ha -- sh -c 'cd {STATE} && {script}'", check=False)
    if as_ha.returncode != 0:
        assert "Permission denied" in as_ha.stderr, as_ha.stderr
        assert c.sh(f"stat -c '%U %a' {STATE}").stdout.split() == ["root", "750"]
        c.sh(f"cd {STATE} && {script}")


def dir_state(c: harness.Container, *paths: str) -> str:
    return c.sh(f"stat -c '%n %U:%G %a' {' '.join(paths)}").stdout


def test_ha_postinst_never_chowns_through_links_in_its_state_dir(container: harness.Container, dist: Path) -> None:
    c = container
    install_ha(c, dist)
    c.sh("for d in out prev rep; do install -d -m 0755 -o root -g root /root/t-$d; done")
    before = dir_state(c, "/root/t-out", "/root/t-prev", "/root/t-rep")
    # As polymarket-ha, in its own directory (renaming a subdirectory within its parent needs no more).
    plant(c, "mv outgoing o.old && ln -s /root/t-out outgoing && "
          "mv previous p.old && ln -s /root/t-prev previous && mv replica r.old && ln -s /root/t-rep replica")
    c.sh("dpkg-reconfigure -f noninteractive polymarket-ha", check=False, timeout=300)
    # today: /root/t-out polymarket-bot:polymarket-ha 750, /root/t-prev root:root 700,
    #        /root/t-rep polymarket-ha:polymarket-ha 700
    assert dir_state(c, "/root/t-out", "/root/t-prev", "/root/t-rep") == before


def test_trust_peer_never_writes_through_a_linked_ssh_dir(container: harness.Container, dist: Path) -> None:
    c = container
    install_ha(c, dist)
    c.sh("install -d -m 0700 /root/ssh-canary && echo 'ssh-ed25519 AAAA admin' > /root/ssh-canary/authorized_keys")
    before = c.sh("ls -lAn --time-style=+ /root/ssh-canary && sha256sum /root/ssh-canary/*").stdout
    pub = c.sh("polymarket-ha pubkey").stdout.strip()
    host = " ".join(c.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
    plant(c, "mv .ssh ssh.old && ln -s /root/ssh-canary .ssh")
    out = c.sh(f"polymarket-ha trust-peer '{pub}' --host-key '{host}'", check=False)
    # today: exit 0, /root/ssh-canary/authorized_keys is the rrsync line, polymarket-ha's, plus a known_hosts
    assert c.sh("ls -lAn --time-style=+ /root/ssh-canary && sha256sum /root/ssh-canary/*").stdout == before, out
    assert out.returncode == 1 and out.stderr.startswith("error: "), out.stderr


def test_backup_does_not_hang_on_a_child_the_bot_stops(container: harness.Container, dist: Path) -> None:
    c = container
    require_restic(c)
    c.install_debs([deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")])
    c.sh("runuser -u polymarket-bot -- sqlite3 /var/lib/polymarket/trade_history.db "
         "'create table if not exists m(v text)'")
    # The compromised bot: any process of its uid may signal the reader root started as that uid.
    c.sh("cat > /usr/local/bin/stopper && chmod 755 /usr/local/bin/stopper", input=(
        "#!/bin/sh\nwhile :; do for p in $(pgrep -u polymarket-bot -f 'con[.]serialize'); do kill -STOP $p; done; "
        "sleep 0.02; done\n"))
    c.sh("systemd-run --unit=stopper --uid=polymarket-bot --gid=polymarket-bot /usr/local/bin/stopper")
    out = c.sh("timeout 150 polymarket-backup backup", check=False, timeout=200)
    c.sh("systemctl stop stopper", check=False)
    # Refusing (exit 1, one line) is fine; never waiting forever. today: killed by timeout, exit 124.
    assert out.returncode != 124, out.stderr
    assert c.sh("systemctl show -p TimeoutStartUSec --value polymarket-backup.service").stdout.strip() != "infinity"


def ha_master_on_loopback(c: harness.Container, dist: Path) -> None:
    """A primary whose peer is itself (127.0.0.1), the VIP on lo, VRRP state MASTER (keepalived masked)."""
    install_ha(c, dist)
    c.sh("systemctl stop keepalived; systemctl mask --runtime keepalived; ip addr add 10.9.9.9/32 dev lo && "
         "echo MASTER > /run/polymarket-ha/vrrp-state")  # fmt: skip
    c.sh("runuser -u polymarket-bot -- sqlite3 /var/lib/polymarket/trade_history.db "
         "'create table if not exists m(v text)'")  # fmt: skip


def test_replicate_does_not_hang_on_a_snapshot_the_bot_stops(container: harness.Container, dist: Path) -> None:
    c = container
    ha_master_on_loopback(c, dist)
    c.sh("cat > /usr/local/bin/stopper && chmod 755 /usr/local/bin/stopper", input=(
        "#!/bin/sh\nwhile :; do for p in $(pgrep -u polymarket-bot -f 'polymarket_ha[.]py snapshot'); do "
        "kill -STOP $p; done; sleep 0.02; done\n"))  # fmt: skip
    c.sh("systemd-run --unit=stopper --uid=polymarket-bot --gid=polymarket-bot /usr/local/bin/stopper")
    out = c.sh("timeout 150 polymarket-ha replicate", check=False, timeout=200)
    c.sh("systemctl stop stopper", check=False)
    assert out.returncode != 124, out.stderr  # today: killed by timeout (124)


def test_heartbeat_and_status_do_not_hang_on_a_fifo(container: harness.Container, dist: Path) -> None:
    c = container
    ha_master_on_loopback(c, dist)
    plant(c, "rm -f last-replication.json && mkfifo last-replication.json")
    beat = c.sh("timeout 30 polymarket-ha heartbeat", check=False, timeout=60)
    status = c.sh("timeout 30 polymarket-ha status", check=False, timeout=60)
    assert (beat.returncode, status.returncode) != (124, 124)  # today: both killed by timeout
    assert beat.returncode != 124 and status.returncode != 124, (beat.stderr, status.stderr)
