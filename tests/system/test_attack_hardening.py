"""Outside review of issue 7, items 4-7: attacks on polymarket-hardening's no-lockout guard,
the service accounts' sshd restrictions and the ufw ssh ports, in booted containers.

Each test marked xfail(strict=True) is a defect found by the review: it fails on today's
code and must pass once fixed (then remove the marker). The others record what held.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import DROPIN, PKG
from tests.system.test_lockout import SSH, password_login, plant_key, service_users

pytestmark = pytest.mark.system


def password_admin_with_client_key(c: harness.Container) -> None:
    """admin with a password (the way in before the hardening) and a client key in /root/k."""
    c.sh("useradd -m -s /bin/bash admin && echo admin:s3cret-pw | chpasswd")
    c.sh("ssh-keygen -q -t ed25519 -N '' -f /root/k")


def admin_can_log_in(c: harness.Container) -> bool:
    """True when admin still gets in with its key or its password (what it had before)."""
    key = c.sh(f"{SSH} -i /root/k admin@127.0.0.1 id -un </dev/null", check=False, timeout=60)
    if key.returncode == 0 and key.stdout.strip() == "admin":
        return True
    pw = password_login(c, "admin", "s3cret-pw")
    return pw.returncode == 0 and pw.stdout.strip() == "admin"


def test_attack_symlinked_authorized_keys_in_group_writable_dir_no_lockout(
        container: harness.Container, dist: Path) -> None:  # fmt: skip
    c = container
    password_admin_with_client_key(c)
    c.sh("install -d -m 0775 -o root -g adm /srv/keys && install -m 0600 -o admin -g admin /root/k.pub /srv/keys/admin")
    c.sh("install -d -m 0700 -o admin -g admin ~admin/.ssh && ln -s /srv/keys/admin ~admin/.ssh/authorized_keys")
    assert admin_can_log_in(c)  # by password before the install
    c.install_debs([deb(dist, PKG)])
    assert admin_can_log_in(c), c.sh(f"cat {DROPIN}; journalctl -u ssh --no-pager | tail -n 5").stdout


def test_attack_authorized_keys_file_of_an_earlier_dropin_no_lockout(
        container: harness.Container, dist: Path) -> None:  # fmt: skip
    c = container
    password_admin_with_client_key(c)
    c.sh(
        "install -d -m 0755 /etc/ssh/authorized_keys && "
        "echo 'AuthorizedKeysFile /etc/ssh/authorized_keys/%u' >/etc/ssh/sshd_config.d/05-local.conf"
    )
    # A stale copy in the home, which this sshd does not read.
    c.sh(
        "install -d -m 0700 -o admin -g admin ~admin/.ssh && "
        "install -m 0600 -o admin -g admin /root/k.pub ~admin/.ssh/authorized_keys"
    )
    c.sh("systemctl reload ssh")
    assert admin_can_log_in(c)
    c.install_debs([deb(dist, PKG)])
    assert admin_can_log_in(c), c.sh("sshd -T | grep -i -e authorizedkeysfile -e passwordauth").stdout


def test_attack_unusable_key_line_does_not_count(container: harness.Container, dist: Path) -> None:
    c = container
    password_admin_with_client_key(c)
    truncated = c.sh("cut -c1-40 /root/k.pub").stdout.strip()
    c.sh(
        f"install -d -m 0700 -o admin -g admin ~admin/.ssh && echo '{truncated}' >~admin/.ssh/authorized_keys "
        "&& chown admin: ~admin/.ssh/authorized_keys && chmod 0600 ~admin/.ssh/authorized_keys"
    )
    assert admin_can_log_in(c)  # by password before the install
    c.install_debs([deb(dist, PKG)])
    assert admin_can_log_in(c), c.sh(f"grep -e NOT -e PasswordAuth {DROPIN}", check=False).stdout


def test_attack_ufw_opens_the_ssh_socket_port(container: harness.Container, dist: Path) -> None:
    c = container
    password_admin_with_client_key(c)
    c.sh(
        "install -d -m 0700 -o admin -g admin ~admin/.ssh && "
        "install -m 0600 -o admin -g admin /root/k.pub ~admin/.ssh/authorized_keys"
    )
    c.sh(
        "mkdir -p /etc/systemd/system/ssh.socket.d && printf '[Socket]\\nListenStream=\\nListenStream=2222\\n' "
        ">/etc/systemd/system/ssh.socket.d/port.conf && systemctl daemon-reload && "
        "systemctl disable --now ssh.service && systemctl enable --now ssh.socket"
    )
    assert c.sh(f"{SSH} -p 2222 -i /root/k admin@127.0.0.1 id -un </dev/null", timeout=60).stdout.strip() == "admin"
    c.install_debs([deb(dist, PKG)])
    added = c.sh("ufw show added").stdout
    assert "limit 2222/tcp" in added, added


def test_attack_held_service_accounts_no_remote_forward_tun_or_tty(container: harness.Container, dist: Path) -> None:
    """Held: polymarket-ha with a bare key (no restrict in authorized_keys) gets no -R, no tun, no tty;
    polymarket-bot with a planted key gets nothing; an earlier drop-in's Match does not swallow ours."""
    c = container
    password_admin_with_client_key(c)
    c.sh(
        "install -d -m 0700 -o admin -g admin ~admin/.ssh && "
        "install -m 0600 -o admin -g admin /root/k.pub ~admin/.ssh/authorized_keys"
    )
    service_users(c)
    # As on a real host: without it sshd refuses polymarket-bot for its missing shell, DenyUsers or not.
    c.sh("test -x /usr/sbin/nologin || printf '#!/bin/sh\\necho not available\\nexit 1\\n' >/usr/sbin/nologin")
    c.sh("chmod 0755 /usr/sbin/nologin")
    ha = plant_key(c, "polymarket-ha", "ha_key")
    bot = plant_key(c, "polymarket-bot", "bot_key")
    c.sh("printf 'Match User alice\\n    PasswordAuthentication yes\\n' >/etc/ssh/sshd_config.d/05-local.conf")
    c.install_debs([deb(dist, PKG)])
    eff = c.sh("sshd -T -C user=admin,host=h,addr=10.1.1.1").stdout
    assert "passwordauthentication no" in eff and "allowusers admin" in eff
    r = c.sh(f"timeout 30 {SSH} -o ExitOnForwardFailure=yes -N -R 0:127.0.0.1:22 -i {ha} polymarket-ha@127.0.0.1 "
             "</dev/null", check=False, timeout=60)  # fmt: skip
    assert r.returncode == 255 and "forwarding failed" in r.stderr, r
    r = c.sh(f"timeout 30 {SSH} -o Tunnel=point-to-point -o ExitOnForwardFailure=yes -w any -i {ha} "
             "polymarket-ha@127.0.0.1 true </dev/null", check=False, timeout=60)  # fmt: skip
    assert r.returncode != 0 or "tunnel" in r.stderr.lower(), r
    r = c.sh(f"timeout 30 {SSH} -tt -i {ha} polymarket-ha@127.0.0.1 tty </dev/null", check=False, timeout=60)
    assert "/dev/pts" not in r.stdout, r
    for user in ("polymarket-bot", "POLYMARKET-BOT", "Polymarket-Bot"):
        r = c.sh(f"{SSH} -i {bot} -W 127.0.0.1:22 {user}@127.0.0.1 </dev/null", check=False, timeout=60)
        assert r.returncode == 255 and "SSH-2.0-" not in r.stdout, r


def test_attack_held_allow_users_injection_refused(container: harness.Container, dist: Path) -> None:
    """Held: every hostile allow_users entry is refused with one error line by apply --check-allow-users."""
    c = container
    c.install_debs([deb(dist, PKG)])
    for bad in ["*", "?dmin", "!admin", "%sudo", "-admin", ".admin", "a" * 33, "admïn", "admin,root",
                "admin@", "admin@10.0.0.1 root@!x", "admin@h\"x", "admin@h;id", "polymarket-bot", "polymarket-bot@*",
                "admin@a@b", "$(id)", "admin`id`"]:  # fmt: skip
        proc: subprocess.CompletedProcess[str] = subprocess.run(
            ["nsenter", "-t", str(c.leader), "-a", "/usr/lib/polymarket-hardening/apply", "--check-allow-users", bad],
            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert proc.returncode == 1 and proc.stderr.startswith("error:"), (bad, proc)


def test_attack_ufw_fallback_when_sshd_t_fails_keeps_the_running_port(container: harness.Container, dist: Path) -> None:
    c = container
    password_admin_with_client_key(c)
    c.sh(
        "install -d -m 0700 -o admin -g admin ~admin/.ssh && "
        "install -m 0600 -o admin -g admin /root/k.pub ~admin/.ssh/authorized_keys"
    )
    c.sh("printf 'Port 2222\\n' >/etc/ssh/sshd_config.d/05-port.conf && systemctl restart ssh")
    c.sh("printf 'PermitRootLogin prohibit_password\\n' >/etc/ssh/sshd_config.d/06-typo.conf")  # not reloaded
    c.install_debs([deb(dist, PKG)])
    assert "2222" in c.sh("ss -Hltn").stdout  # sshd still serves 2222
    status = c.sh("ufw status").stdout
    assert "Status: inactive" in status or "2222/tcp" in status, status


def test_attack_locally_edited_old_dropin_still_denies_the_bot(container: harness.Container, dist: Path) -> None:
    c = container
    password_admin_with_client_key(c)
    c.sh(
        "install -d -m 0700 -o admin -g admin ~admin/.ssh && "
        "install -m 0600 -o admin -g admin /root/k.pub ~admin/.ssh/authorized_keys"
    )
    service_users(c)
    # As on a real host (this rootfs lacks it, and sshd refuses a user whose shell is missing).
    c.sh("test -x /usr/sbin/nologin || printf '#!/bin/sh\\necho not available\\nexit 1\\n' >/usr/sbin/nologin")
    c.sh("chmod 0755 /usr/sbin/nologin")
    c.install_debs([deb(dist, PKG)])
    # The earlier version's drop-in (bot allowed, no DenyUsers, no Match), with a local edit of LogLevel.
    c.sh(
        f"sed -i -e '/^DenyUsers/d' -e '/^Match/,$d' -e 's/^AllowUsers .*/AllowUsers admin polymarket-bot/' {DROPIN}"
        f" && sed -i \"s|^[0-9a-f]*  {DROPIN}\\$|$(md5sum {DROPIN} | cut -d' ' -f1)  {DROPIN}|\" /var/lib/ucf/hashfile"
        f" && sed -i 's/^LogLevel .*/LogLevel INFO/' {DROPIN} && systemctl reload ssh"
    )
    bot = plant_key(c, "polymarket-bot", "bot_key")
    name = deb(dist, PKG).name
    c.sh(
        f"DEBIAN_FRONTEND=noninteractive timeout 180 apt-get install -y --reinstall -o Dpkg::Options::=--force-confold "
        f"/var/cache/polymarket-test/{name}",
        timeout=240,
    )
    r = c.sh(f"{SSH} -i {bot} -W 127.0.0.1:22 polymarket-bot@127.0.0.1 </dev/null", check=False, timeout=60)
    assert "SSH-2.0-" not in r.stdout and "Permission denied" in r.stderr, r
