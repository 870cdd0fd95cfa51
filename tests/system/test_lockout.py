"""polymarket-hardening's "no lockout" guard and the service accounts, seen from an ssh client.

Every check is a real ssh connection to 127.0.0.1 inside a booted container:
a password-only admin must keep logging in, the bot's account must never log
in (even with a key planted in its writable home), and the replication
account must get no forwarding.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import DROPIN, PKG, add_admin, preseed, sshd_effective

pytestmark = pytest.mark.system

REPO = harness.REPO
SSH = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"


def service_users(c: harness.Container) -> None:
    """polymarket-bot and polymarket-ha as their packages create them (their sysusers.d files)."""
    c.copy_in(REPO / "packages/polymarket-bot/debian-overlay/polymarket-bot.sysusers", "/root/bot.conf")
    c.copy_in(REPO / "packages/polymarket-ha/sysusers.d/polymarket-ha.conf", "/root/ha.conf")
    c.sh("systemd-sysusers /root/bot.conf /root/ha.conf")
    c.sh("install -d -m 0750 -o polymarket-bot -g polymarket-bot /var/lib/polymarket")
    c.sh("install -d -m 0750 -o polymarket-ha -g polymarket-ha /var/lib/polymarket-ha")


def plant_key(c: harness.Container, user: str, name: str) -> str:
    """A fresh client key in /root/NAME, authorized for USER (written as USER, as a compromised bot would)."""
    c.sh(f"ssh-keygen -q -t ed25519 -N '' -f /root/{name}")
    home = c.sh(f"getent passwd {user} | cut -d: -f6").stdout.strip()
    pub = c.sh(f"cat /root/{name}.pub").stdout.strip()
    script = f"umask 077; mkdir -p {home}/.ssh; echo {shlex.quote(pub)} >{home}/.ssh/authorized_keys"
    c.sh(f"runuser -u {user} -- sh -c {shlex.quote(script)}")
    return f"/root/{name}"


def password_login(c: harness.Container, user: str, password: str) -> subprocess.CompletedProcess[str]:
    c.sh(f"printf '#!/bin/sh\\necho {password}\\n' >/root/askpass && chmod 0700 /root/askpass")
    return c.sh(
        "SSH_ASKPASS=/root/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none setsid -w "
        "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PubkeyAuthentication=no "
        f"-o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 {user}@127.0.0.1 id -un </dev/null",
        check=False, timeout=60)  # fmt: skip


def test_service_account_key_does_not_lock_a_password_admin_out(container: harness.Container, dist: Path) -> None:
    c = container
    c.sh("useradd -m -s /bin/bash admin && echo admin:s3cret-pw | chpasswd")
    service_users(c)
    plant_key(c, "polymarket-ha", "ha_key")  # its rrsync key: not a login for the admin
    preseed(c, allow_users="admin polymarket-ha")
    proc = c.install_debs([deb(dist, PKG)])
    assert "none of the allowed users" in proc.stdout + proc.stderr
    assert "NOT APPLIED" in c.sh(f"cat {DROPIN}").stdout
    assert sshd_effective(c)["passwordauthentication"] == ["yes"]
    login = password_login(c, "admin", "s3cret-pw")
    assert login.returncode == 0 and login.stdout.strip() == "admin", login.stderr


def test_bot_account_never_logs_in_and_ha_gets_no_forwarding(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    service_users(c)
    # As on a real host: this rootfs lacks /usr/sbin/nologin, and sshd refuses a user whose shell is
    # missing whatever its configuration says; with it, only DenyUsers keeps the bot out.
    c.sh("test -x /usr/sbin/nologin || printf '#!/bin/sh\\necho not available\\nexit 1\\n' >/usr/sbin/nologin")
    c.sh("chmod 0755 /usr/sbin/nologin")
    bot_key = plant_key(c, "polymarket-bot", "bot_key")  # the bot owns its home: it can do this
    ha_key = plant_key(c, "polymarket-ha", "ha_key")
    c.install_debs([deb(dist, PKG)])  # allow_users: the template's default
    eff = sshd_effective(c)
    assert eff["passwordauthentication"] == ["no"]
    assert sorted(eff["allowusers"]) == ["admin", "polymarket-ha"]
    assert "AllowUsers admin polymarket-ha" in c.sh(f"cat {DROPIN}").stdout

    bot = c.sh(f"{SSH} -i {bot_key} polymarket-bot@127.0.0.1 true </dev/null", check=False, timeout=60)
    assert bot.returncode == 255 and "Permission denied" in bot.stderr, bot
    bot = c.sh(f"{SSH} -i {bot_key} -W 127.0.0.1:22 polymarket-bot@127.0.0.1 </dev/null", check=False, timeout=60)
    assert "SSH-2.0-" not in bot.stdout and "Permission denied" in bot.stderr, bot

    # polymarket-ha logs in (replication needs it), but its key (here one without command=) only ever
    # runs rrsync into the replica directory (ForceCommand), never a shell; and it cannot forward: -W
    # to port 22 would print sshd's banner if it could.
    forced = c.sh("sshd -T -C user=polymarket-ha,host=h,addr=10.1.1.1 | grep ^forcecommand").stdout
    assert forced.strip() == "forcecommand /usr/bin/rrsync -wo /var/lib/polymarket-ha/replica", forced
    ha = c.sh(f"{SSH} -i {ha_key} polymarket-ha@127.0.0.1 id -un </dev/null", check=False, timeout=60)
    assert ha.returncode not in (0, 255) and "polymarket-ha" not in ha.stdout, ha
    fwd = c.sh(f"{SSH} -i {ha_key} -W 127.0.0.1:22 polymarket-ha@127.0.0.1 </dev/null", check=False, timeout=60)
    assert "SSH-2.0-" not in fwd.stdout and fwd.returncode != 0, fwd
    assert "prohibited" in fwd.stderr, fwd.stderr


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode not in (0, 124), proc  # refused, and did not hang (timeout's 124)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stdout + proc.stderr
    return errors[0]


def test_allow_users_with_a_comma_is_refused(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    # A fresh install answered "admin,evil": refused, nothing written.
    preseed(c, allow_users="admin,evil")
    name = deb(dist, PKG).name
    c.copy_in(deb(dist, PKG), f"/root/{name}")
    proc = c.sh(f"DEBIAN_FRONTEND=noninteractive timeout 120 dpkg -i /root/{name}", check=False, timeout=180)
    error = one_error(proc)
    assert "admin,evil" in error and "comma" in error
    assert c.sh(f"ls {DROPIN} /etc/polymarket-hardening/hardening.conf", check=False).stdout == ""
    assert "allowusers" not in sshd_effective(c)

    # Installed right, then the settings file edited by hand: neither
    # dpkg-reconfigure nor apply writes anything from it.
    preseed(c, allow_users="admin")
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg --configure -a && dpkg -i /root/{name}", timeout=180)
    dropin_before = c.sh(f"cat {DROPIN}").stdout
    c.sh("sed -i 's|^ALLOW_USERS=.*|ALLOW_USERS=\"admin,evil\"|' /etc/polymarket-hardening/hardening.conf")
    for command in (f"timeout 120 dpkg-reconfigure -f noninteractive {PKG}",
                    "timeout 120 /usr/lib/polymarket-hardening/apply"):  # fmt: skip
        error = one_error(c.sh(command, check=False, timeout=180))
        assert "admin,evil" in error and "comma" in error
        assert c.sh(f"cat {DROPIN}").stdout == dropin_before
        assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "polymarket-ha"]


def test_upgrade_drops_the_bot_from_an_old_allow_users(container: harness.Container, dist: Path) -> None:
    """Earlier versions defaulted to "admin polymarket-bot": a reconfigure drops the bot, it does not fail."""
    c = container
    add_admin(c)
    c.install_debs([deb(dist, PKG)])
    # The file as the old postinst wrote it (ucf's hash says: not edited locally).
    conf = "/etc/polymarket-hardening/hardening.conf"
    c.sh(f"sed -i 's|^ALLOW_USERS=.*|ALLOW_USERS=\"admin polymarket-bot\"|' {conf}")
    c.sh(f"sed -i \"s|^[0-9a-f]*  {conf}\\$|$(md5sum {conf} | cut -d' ' -f1)  {conf}|\" /var/lib/ucf/hashfile")
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {PKG}", timeout=180)
    assert "polymarket-bot removed from allow_users" in proc.stderr
    assert 'ALLOW_USERS="admin"' in c.sh("cat /etc/polymarket-hardening/hardening.conf").stdout
    assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "polymarket-ha"]
