"""polymarket-hardening keeps the admin's way in: sshd's own ports in ufw, IPv6 while it carries a session.

Booted containers only (ufw and net.* sysctls act on the container's own
network namespace, never on this machine's).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import PKG, add_admin

pytestmark = pytest.mark.system

KEEP_IPV6 = "/etc/sysctl.d/99-polymarket-keep-ipv6.conf"
SSH = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"


def ufw_rules(c: harness.Container) -> list[str]:
    return [" ".join(line.split()) for line in c.sh("ufw status").stdout.splitlines()]


def test_sshd_on_another_port_stays_reachable(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    c.sh("printf 'Port 2222\\n' >/etc/ssh/sshd_config.d/05-port.conf && systemctl restart ssh")
    c.install_debs([deb(dist, PKG)])
    rules = ufw_rules(c)
    assert "2222/tcp LIMIT Anywhere # polymarket-hardening" in rules, rules
    assert "2222/tcp (v6) LIMIT Anywhere (v6) # polymarket-hardening" in rules, rules
    assert not any(r.startswith("22/tcp ") for r in rules), rules  # sshd does not listen there
    # A real connection to the port sshd listens on, after the hardening.
    c.sh("ssh-keygen -q -t ed25519 -N '' -f /root/k && cat /root/k.pub >~admin/.ssh/authorized_keys")
    out = c.sh(f"{SSH} -p 2222 -i /root/k admin@127.0.0.1 id -un </dev/null", timeout=60).stdout
    assert out.strip() == "admin"

    # Back to port 22: the 2222 rule goes, 22 comes.
    c.sh("rm /etc/ssh/sshd_config.d/05-port.conf && systemctl restart ssh && /usr/lib/polymarket-hardening/apply")
    rules = ufw_rules(c)
    assert "22/tcp LIMIT Anywhere # polymarket-hardening" in rules and not any("2222" in r for r in rules), rules


def test_ipv6_stays_on_while_an_admin_uses_it(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    c.sh("ssh-keygen -q -t ed25519 -N '' -f /root/k && cat /root/k.pub >~admin/.ssh/authorized_keys")
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "0"
    # The admin's session over IPv6 (sudo would have reset its SSH_CONNECTION: seen through ss).
    session = subprocess.Popen(
        ["nsenter", "-t", str(c.leader), "-a", "env", "-i", *harness.GUEST_ENV, "/bin/sh", "-c",
         f"echo $$ >/root/session.pid; exec {SSH} -i /root/k admin@::1 sleep 300 </dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        c.sh("for i in $(seq 50); do ss -Htn6 state established '( sport = :22 )' | grep -q . && exit 0; "
             "sleep 0.2; done; exit 1")  # fmt: skip
        proc = c.install_debs([deb(dist, PKG)])
        assert "connected over IPv6" in proc.stdout + proc.stderr
        assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "0"
        assert session.poll() is None  # the session is still there
        out = c.sh(f"{SSH} -i /root/k admin@::1 id -un </dev/null", timeout=60).stdout
        assert out.strip() == "admin"  # and a new one gets in
    finally:
        c.sh("kill $(cat /root/session.pid)", check=False)
        session.wait(30)

    # Kept until the admin deletes the file; then IPv6 goes off as planned.
    c.sh("for i in $(seq 50); do ss -Htn6 state established '( sport = :22 )' | grep -q . || exit 0; "
         "sleep 0.2; done; exit 1")  # fmt: skip
    c.sh("/usr/lib/polymarket-hardening/apply")
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "0"
    c.sh(f"rm {KEEP_IPV6} && /usr/lib/polymarket-hardening/apply")
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "1"

    # The configuring session itself over IPv6 (SSH_CONNECTION, as dpkg passes it on).
    c.sh("sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0")
    c.sh("SSH_CONNECTION='2001:db8::5 50000 2001:db8::1 22' /usr/lib/polymarket-hardening/apply")
    assert c.sh(f"cat {KEEP_IPV6}").stdout.count("disable_ipv6 = 0") == 2
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "0"
    # An IPv4 session (also as ::ffff:a.b.c.d) does not keep it.
    c.sh(f"rm {KEEP_IPV6} && SSH_CONNECTION='::ffff:10.0.0.5 50000 ::ffff:10.0.0.1 22' "
         "/usr/lib/polymarket-hardening/apply")  # fmt: skip
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout.strip() == "1"

    # remove: the keep file goes with the rest.
    c.sh("SSH_CONNECTION='2001:db8::5 50000 2001:db8::1 22' /usr/lib/polymarket-hardening/apply")
    c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y {PKG}")
    assert c.sh(f"test -e {KEEP_IPV6}", check=False).returncode != 0
