"""polymarket-hardening's CIS Ubuntu 24.04 Level 1 controls and patch policy (issue 12 items 2 and 3) in a
booted trixie container, seen from outside: sshd -T and a real ssh client, modprobe, apt-config and
unattended-upgrade reading our apt configuration, systemd's timer, the node exporter's textfile.

The shared rootfs lacks what the hardening only recommends (unattended-upgrades, needrestart,
systemd-timesyncd, apparmor, kmod); this module boots its own cached rootfs with them (the harness's
``extra``), as a host installed with recommends has them. The kernel-side controls (AppArmor, the time
daemon running, module loading) are the host's here: not applicable, said so; the VM tier has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import PKG, add_admin, by_id, compliance, preseed, sshd_effective
from tests.system.test_lockout import SSH, plant_key, service_users

pytestmark = pytest.mark.system

RECOMMENDS = ("unattended-upgrades", "needrestart", "systemd-timesyncd", "apparmor", "kmod")
CIPHERS = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr"
MACS = "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com"
KEX = ("sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,"
       "diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha256")
MODULES = ("cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "udf", "usb-storage", "dccp", "sctp", "rds", "tipc")
TEXTFILE = "/var/lib/prometheus/node-exporter/polymarket-hardening.prom"
APT_POLICY = "/etc/apt/apt.conf.d/52polymarket-hardening-upgrades"
TIMER_DROPIN = "/etc/systemd/system/apt-daily-upgrade.timer.d/polymarket-hardening.conf"


@pytest.fixture(scope="module")
def cis_rootfs() -> Path:
    missing = harness.missing_prerequisites()
    if missing:
        pytest.skip(f"system tests need: {', '.join(missing)}")
    return harness.rootfs_tarball(extra=RECOMMENDS)


@pytest.fixture
def c(cis_rootfs: Path) -> Iterator[harness.Container]:
    with harness.booted(cis_rootfs, name="pmcis") as container:
        yield container


def failing(report: dict) -> list[str]:  # type: ignore[type-arg]
    return [ctl["id"] for ctl in report["controls"] if ctl["status"] == "fail"]


def metrics(c: harness.Container) -> list[str]:
    return c.sh(f"cat {TEXTFILE}").stdout.splitlines()


def test_cis_controls_enforced_and_audited(c: harness.Container, dist: Path) -> None:
    add_admin(c)
    c.sh("ssh-keygen -q -t ed25519 -N '' -f /root/admin_key && cat /root/admin_key.pub >>~admin/.ssh/authorized_keys")
    service_users(c)
    ha_key = plant_key(c, "polymarket-ha", "ha_key")
    c.sh("install -d -m 0755 /var/lib/prometheus/node-exporter")  # as prometheus-node-exporter makes it
    c.install_debs([deb(dist, PKG)])

    # sshd: the effective values, and a real client still gets in with them (the lockout guard ran over them).
    eff = sshd_effective(c)
    for key, want in {"ciphers": CIPHERS, "macs": MACS, "kexalgorithms": KEX, "maxstartups": "10:30:60",
                      "logingracetime": "30", "clientaliveinterval": "300", "clientalivecountmax": "2",
                      "banner": "/etc/polymarket-hardening/ssh-banner", "passwordauthentication": "no"}.items():
        assert eff[key] == [want], key
    login = c.sh(f"{SSH} -i /root/admin_key admin@127.0.0.1 id -un </dev/null", check=False, timeout=60)
    assert login.stdout.strip() == "admin", login
    assert "Authorized access only" in login.stderr  # the banner, before authentication
    weak = c.sh(f"{SSH} -o Ciphers=aes128-cbc -i /root/admin_key admin@127.0.0.1 true </dev/null",
                check=False, timeout=60)  # fmt: skip
    assert weak.returncode == 255 and "no matching cipher" in weak.stderr, weak
    # A service account cannot forward: sshd -T -C says so, and a real attempt is refused.
    ha_eff = c.sh("sshd -T -C user=polymarket-ha,host=localhost,addr=127.0.0.1").stdout.splitlines()
    assert "disableforwarding yes" in ha_eff
    fwd = c.sh(f"{SSH} -i {ha_key} -W 127.0.0.1:22 polymarket-ha@127.0.0.1 </dev/null", check=False, timeout=60)
    assert "SSH-2.0-" not in fwd.stdout and "prohibited" in fwd.stderr, fwd

    # modprobe refuses every module of the list (kmod reads our file through the link).
    for module in MODULES:
        assert "install /bin/false" in c.sh(f"modprobe -n -v {module}", check=False).stdout, module

    for key, want in {"net.ipv4.conf.all.send_redirects": "0", "net.ipv4.conf.default.send_redirects": "0",
                      "net.ipv4.conf.all.log_martians": "1", "net.ipv4.conf.default.log_martians": "1"}.items():
        assert c.sh(f"sysctl -n {key}").stdout.strip() == want, key

    # Time sync: enabled; in a container systemd skips it (the clock is the host's), and the audit says so.
    assert c.sh("systemctl is-enabled systemd-timesyncd.service").stdout.strip() == "enabled"
    assert c.sh("systemctl show -P ConditionResult systemd-timesyncd.service").stdout.strip() == "no"

    # Patch policy: apt and unattended-upgrade themselves read security origins only, the window is the timer's.
    origins = c.sh("apt-config dump Unattended-Upgrade::Origins-Pattern Unattended-Upgrade::Allowed-Origins").stdout
    patterns = [line.split(" ", 1)[1] for line in origins.splitlines() if line.split(" ", 1)[0].endswith("::")]
    assert patterns and all("-security" in p for p in patterns), origins
    uu = c.sh("unattended-upgrade --dry-run --debug 2>&1 | grep -m1 'Allowed origins are'", check=False).stdout
    suite = harness.SUITE
    assert f"{suite}-security" in uu and f"codename={suite}," not in uu and "-updates" not in uu, uu
    assert "OnCalendar=*-*-* 03:00:00" in c.sh("systemctl show -P TimersCalendar apt-daily-upgrade.timer").stdout
    assert 'Automatic-Reboot-Time "05:00"' in c.sh("apt-config dump Unattended-Upgrade::Automatic-Reboot-Time").stdout
    assert "polymarket-hardening.conf" in c.sh("needrestart -v -b 2>&1", check=False).stdout

    code, report = compliance(c)
    assert (code, failing(report)) == (0, []), json.dumps(report, indent=1)
    controls = by_id(report)
    for cid in ("ssh.ciphers", "ssh.kexalgorithms", "ssh.macs", "ssh.maxstartups", "ssh.banner",
                "ssh.service-account.polymarket-ha", "modprobe.usb-storage", "timesync.enabled",
                "patch.unattended-upgrades", "patch.security-only", "patch.held-back", "patch.window",
                "patch.reboot", "patch.needrestart"):
        assert controls[cid]["status"] == "pass", controls[cid]
    assert controls["timesync.active"]["status"] == "not-applicable"
    assert "container" in controls["timesync.active"]["reason"]
    assert {controls[f"apparmor.{x}"]["status"] for x in ("enabled", "service", "profiles")} == {"not-applicable"}
    assert f"polymarket_compliance_score_percent {report['score']:g}" in metrics(c)
    assert not [m for m in metrics(c) if m.startswith("polymarket_compliance_control_failing{")]
    assert c.sh(f"stat -c '%a %U' {TEXTFILE}").stdout.split() == ["644", "root"]
    # The daily timer's sandboxed service sees the same controls and may write the metrics.
    c.sh(f"rm {TEXTFILE} && systemctl start polymarket-compliance.service")
    latest = json.loads(c.sh("cat /var/lib/polymarket-hardening/compliance/latest.json").stdout)
    assert (latest["score"], failing(latest)) == (report["score"], [])
    assert f"polymarket_compliance_score_percent {report['score']:g}" in metrics(c)

    # Break one control of each new kind by hand: the audit and the metrics name them.
    c.sh("echo 'install sctp /sbin/modprobe --ignore-install sctp' >/etc/modprobe.d/00-local.conf")
    c.sh("echo 'Unattended-Upgrade::Origins-Pattern { \"origin=Debian,codename=${distro_codename}-updates\"; };'"
         " >/etc/apt/apt.conf.d/60local")
    c.sh("echo '$nrconf{override_rc}{qr(^haproxy)} = 1;' >/etc/needrestart/conf.d/zz-local.conf")
    c.sh("systemctl disable systemd-timesyncd.service")
    code, report = compliance(c)
    assert failing(report) == ["modprobe.sctp", "timesync.enabled", "patch.security-only", "patch.needrestart"]
    assert "haproxy.service" in by_id(report)["patch.needrestart"]["actual"]
    for cid in failing(report):
        assert f'polymarket_compliance_control_failing{{control="{cid}",critical="false"}} 1' in metrics(c)


def test_patch_window_and_role_from_debconf(c: harness.Container, dist: Path) -> None:
    add_admin(c)
    preseed(c, upgrade_window="02:15")
    c.sh(f"echo '{PKG} {PKG}/role select standby' | debconf-set-selections")
    c.install_debs([deb(dist, PKG)])
    assert "OnCalendar=*-*-* 02:15:00" in c.sh("systemctl show -P TimersCalendar apt-daily-upgrade.timer").stdout
    assert 'Automatic-Reboot-Time "03:15"' in c.sh(f"cat {APT_POLICY}").stdout
    assert by_id(compliance(c)[1])["patch.reboot"]["status"] == "pass"

    # polymarket-ha's role wins with "auto": its own reader is asked (a stand-in for the package's CLI).
    c.sh("printf '#!/bin/sh\\n[ \"$1 $2\" = \"get ROLE\" ] && echo lb\\n' >/usr/sbin/polymarket-ha "
         "&& chmod 0755 /usr/sbin/polymarket-ha")
    c.sh(f"echo '{PKG} {PKG}/role select auto' | debconf-set-selections")
    c.sh("sed -i 's/^ROLE=.*/ROLE=\"auto\"/' /etc/polymarket-hardening/hardening.conf")
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg-reconfigure {PKG}")
    assert 'Automatic-Reboot-Time "03:45"' in c.sh(f"cat {APT_POLICY}").stdout
    assert "(lb, from polymarket-ha)" in c.sh(f"cat {APT_POLICY}").stdout

    # A bad window (hand edit): one error line, nothing changed.
    before = c.sh(f"cat {APT_POLICY} {TIMER_DROPIN}").stdout
    c.sh("sed -i 's/^UPGRADE_WINDOW=.*/UPGRADE_WINDOW=\"25:00\"/' /etc/polymarket-hardening/hardening.conf")
    bad = c.sh("/usr/lib/polymarket-hardening/apply", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1] == (
        'error: polymarket-hardening: upgrade_window "25:00" is not a time HH:MM (00:00-23:59)'), bad.stderr
    assert c.sh(f"cat {APT_POLICY} {TIMER_DROPIN}").stdout == before

    # After a boot ufw.service applies its own sysctl file (log_martians = 0) after systemd-sysctl: our
    # ufw.service drop-in applies the net.ipv4 keys of sysctl.d again right after it.
    c.sh("sed -i 's/^UPGRADE_WINDOW=.*/UPGRADE_WINDOW=\"02:15\"/' /etc/polymarket-hardening/hardening.conf")
    c.reboot()
    assert c.sh("systemctl is-active ufw.service").stdout.strip() == "active"
    assert c.sh("grep -c '^net/ipv4/conf/all/log_martians=0' /etc/ufw/sysctl.conf").stdout.strip() == "1"
    for key in ("net.ipv4.conf.all.log_martians", "net.ipv4.conf.default.log_martians"):
        assert c.sh(f"sysctl -n {key}").stdout.strip() == "1", key

    # remove: the policy files, the timer drop-in and the modprobe link go; the timer is apt's again.
    c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y {PKG}")
    for path in (APT_POLICY, TIMER_DROPIN, "/etc/modprobe.d/polymarket-hardening.conf",
                 "/etc/needrestart/conf.d/polymarket-hardening.conf"):
        assert c.sh(f"test -e {path}", check=False).returncode != 0, path
    assert "02:15" not in c.sh("systemctl show -P TimersCalendar apt-daily-upgrade.timer").stdout
    assert "install /bin/false" not in c.sh("modprobe -n -v sctp", check=False).stdout
