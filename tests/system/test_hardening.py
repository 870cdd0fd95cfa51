"""System tests of polymarket-hardening in booted Debian trixie containers.

Nothing here touches this machine's own kernel settings: every install runs
inside a systemd-nspawn container with a private network, or in a plain
chroot fenced by the harness (and then this machine's /proc/sys is read
before and after to prove it was left alone).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb

pytestmark = pytest.mark.system

PKG = "polymarket-hardening"
DROPIN = "/etc/ssh/sshd_config.d/10-polymarket.conf"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxqHhM4S0PeXsCIxBwKlK9lDqXMS0eAq3Tk0oBn2Z0c admin@test"

NET_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.all.secure_redirects": "0",
    "net.ipv4.conf.all.accept_source_route": "0",
    "net.ipv4.conf.all.rp_filter": "1",
    "net.ipv4.icmp_echo_ignore_broadcasts": "1",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv6.conf.all.disable_ipv6": "1",
}
# This machine's global (not per-namespace) kernel values that a wrongly
# applied drop-in would change, plus the net ones of the initial namespace.
HOST_SYSCTLS = [
    "kernel.sysrq", "kernel.panic", "kernel.panic_on_oops", "kernel.dmesg_restrict", "kernel.kptr_restrict",
    "fs.suid_dumpable", "vm.mmap_min_addr", *NET_SYSCTLS,
]  # fmt: skip


def add_admin(c: harness.Container, key: bool = True) -> None:
    c.sh("useradd -m -s /bin/sh admin")
    if key:
        add_key(c)


def add_key(c: harness.Container) -> None:
    c.sh(f"install -d -m 0700 -o admin -g admin ~admin/.ssh && echo {shlex.quote(KEY)} >~admin/.ssh/authorized_keys")


def preseed(c: harness.Container, **answers: str) -> None:
    lines = "".join(f"{PKG} {PKG}/{k} string {v}\n" for k, v in answers.items())
    c.sh("debconf-set-selections", input=lines)


def sshd_effective(c: harness.Container) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in c.sh("sshd -T").stdout.splitlines():
        k, _, v = line.partition(" ")
        out.setdefault(k, []).append(v)
    return out


def compliance(c: harness.Container) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = c.sh("polymarket-compliance audit --json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_id(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {ctl["id"]: ctl for ctl in report["controls"]}


def sshd_pid(c: harness.Container) -> str:
    return c.sh("systemctl show -P MainPID ssh.service").stdout.strip()


def test_hardening_in_a_booted_container(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    preseed(c, admin_network="10.20.0.0/24")
    c.install_debs([deb(dist, PKG)])

    eff = sshd_effective(c)
    for key, want in {
        "permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
        "maxauthtries": "3", "maxsessions": "5", "pubkeyauthentication": "yes", "logingracetime": "30",
        "clientaliveinterval": "300", "clientalivecountmax": "2", "usedns": "no", "loglevel": "VERBOSE",
        "permituserenvironment": "no", "hostbasedauthentication": "no", "ignorerhosts": "yes",
    }.items():  # fmt: skip
        assert eff[key] == [want], key
    assert sorted(eff["allowusers"]) == ["admin", "polymarket-ha"]
    assert c.sh("systemctl is-active ssh").stdout.strip() == "active"

    ufw = c.sh("ufw status verbose").stdout
    assert "Status: active" in ufw
    assert "Default: deny (incoming), allow (outgoing)" in ufw
    rules = [" ".join(line.split()) for line in ufw.splitlines()]
    assert "22/tcp LIMIT IN Anywhere # polymarket-hardening" in rules
    assert "80/tcp ALLOW IN Anywhere # polymarket-hardening" in rules
    assert "443/tcp ALLOW IN Anywhere # polymarket-hardening" in rules
    assert "8080/tcp ALLOW IN 10.20.0.0/24 # polymarket-hardening" in rules
    assert "9090/tcp ALLOW IN 10.20.0.0/24 # polymarket-hardening" in rules
    assert "9100/tcp ALLOW IN 10.20.0.0/24 # polymarket-hardening" in rules  # the node exporter, scraped
    assert not any(r.startswith(("8080/tcp ALLOW IN Anywhere", "9090/tcp ALLOW IN Anywhere")) for r in rules)

    for key, want in NET_SYSCTLS.items():
        assert c.sh(f"sysctl -n {key}").stdout.strip() == want, key

    # augenrules merged our rules (loading them needs the host's kernel).
    merged = c.sh("cat /etc/audit/audit.rules").stdout
    assert "-w /etc/polymarket/ -p rwxa -k polymarket_config" in merged
    assert "-a always,exit -F arch=b64 -S execve -k execute" in merged

    # Log rotation works without the bot (no user, no service).
    c.sh("mkdir -p /var/log/polymarket && echo line > /var/log/polymarket/bot.log")
    c.sh("logrotate -f /etc/logrotate.d/polymarket && test -e /var/log/polymarket/bot.log.1")

    code, report = compliance(c)
    assert code == 0 and report["score"] >= 95, json.dumps(report, indent=1)
    controls = by_id(report)
    assert controls["sysctl.kernel.sysrq"]["status"] == "not-applicable"  # the host's kernel
    assert controls["ufw.8080-admin"]["status"] == "pass"

    # Another admin network: the old rules go, the new ones come, nothing else moves.
    c.sh("sed -i 's|^ADMIN_NETWORK=.*|ADMIN_NETWORK=\"10.30.0.0/16\"|' /etc/polymarket-hardening/hardening.conf")
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg-reconfigure {PKG}")
    added = c.sh("ufw show added").stdout
    assert "10.20.0.0/24" not in added
    assert added.count("allow from 10.30.0.0/16 to any port") == 3  # 8080, 9090, 9100
    assert added.count("comment 'polymarket-hardening'") == 6

    # The timer's service writes the reports.
    c.sh("systemctl start polymarket-compliance.service")
    latest = json.loads(c.sh("cat /var/lib/polymarket-hardening/compliance/latest.json").stdout)
    assert latest["score"] == report["score"]
    assert c.sh("systemctl is-enabled polymarket-compliance.timer").stdout.strip() == "enabled"

    # Break one setting by hand: the audit names it and the score drops.
    c.sh("printf 'MaxAuthTries 6\\n' > /etc/ssh/sshd_config.d/05-local.conf")
    code, broken = compliance(c)
    assert broken["score"] < report["score"]
    # Exactly one more failing control: this rootfs lacks packages the hardening only recommends
    # (unattended-upgrades, a time daemon: their controls fail here already; test_hardening_cis.py has them).
    failing_before = {ctl["id"] for ctl in report["controls"] if ctl["status"] == "fail"}
    failing = [ctl for ctl in broken["controls"] if ctl["status"] == "fail" and ctl["id"] not in failing_before]
    assert [(f["id"], f["expected"], f["actual"]) for f in failing] == [("ssh.maxauthtries", "3", "6")]
    # A critical one (password logins back on) also makes it exit non-zero.
    c.sh("printf 'PasswordAuthentication yes\\n' > /etc/ssh/sshd_config.d/05-local.conf")
    code, broken = compliance(c)
    assert code == 1 and broken["score"] < report["score"] and not broken["compliant"]
    assert broken["critical_failures"] == ["ssh.passwordauthentication"]
    text = c.sh("polymarket-compliance audit", check=False).stdout
    assert "failing controls: ssh.passwordauthentication" in text and "NOT COMPLIANT" in text
    c.sh("rm /etc/ssh/sshd_config.d/05-local.conf")


def test_no_authorized_key_never_locks_the_admin_out(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c, key=False)
    proc = c.install_debs([deb(dist, PKG)])
    assert 'ADMIN_NETWORK=""' in c.sh("cat /etc/polymarket-hardening/hardening.conf").stdout
    assert "8080" not in c.sh("ufw show added").stdout
    assert "none of the allowed users" in proc.stdout + proc.stderr  # apt passes dpkg's stderr on stdout
    eff = sshd_effective(c)
    assert eff["passwordauthentication"] == ["yes"]  # Debian's default, untouched
    assert "allowusers" not in eff
    assert eff["maxauthtries"] == ["3"]  # the safe settings are applied
    code, report = compliance(c)
    lockout = by_id(report)["ssh.lockout-directives"]
    assert lockout["status"] == "fail" and "authorized key" in lockout["reason"]
    assert code == 1

    # Once a key is there, applying again puts the restrictions in place.
    add_key(c)
    c.sh("/usr/lib/polymarket-hardening/apply")
    assert sshd_effective(c)["passwordauthentication"] == ["no"]
    assert by_id(compliance(c)[1])["ssh.lockout-directives"]["status"] == "pass"


def test_broken_sshd_setting_fails_safe(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    c.install_debs([deb(dist, PKG)])
    before = c.sh(f"cat {DROPIN}").stdout
    pid = sshd_pid(c)

    # An AllowUsers value sshd rejects (a /99 netmask), through the settings
    # file and dpkg-reconfigure.
    c.sh("sed -i 's|^ALLOW_USERS=.*|ALLOW_USERS=\"admin@10.0.0.0/99\"|' /etc/polymarket-hardening/hardening.conf")
    proc = c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg-reconfigure {PKG}")
    assert "sshd -t rejects" in proc.stderr and "keeps running with its old configuration" in proc.stderr
    assert c.sh(f"cat {DROPIN}").stdout == before
    assert c.sh("systemctl is-active ssh").stdout.strip() == "active"
    assert sshd_pid(c) == pid
    assert c.sh("sshd -t", check=False).returncode == 0
    assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "polymarket-ha"]
    report = compliance(c)[1]
    assert by_id(report)["ssh.dropin"]["status"] == "fail"

    # A conflicting local drop-in on a fresh install: nothing of ours goes in.
    c.sh(f"dpkg --purge {PKG}")
    c.sh("printf 'MaxAuthTries lots\\n' > /etc/ssh/sshd_config.d/05-local.conf")
    proc = c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/polymarket-test/{deb(dist, PKG).name}")
    assert "sshd -t rejects" in proc.stderr
    assert c.sh(f"test -e {DROPIN}", check=False).returncode != 0
    assert c.sh("systemctl is-active ssh").stdout.strip() == "active"

    # An invalid value preseeded through debconf on a fresh install: the same.
    c.sh(f"dpkg --purge {PKG} && rm /etc/ssh/sshd_config.d/05-local.conf")
    preseed(c, allow_users="admin@10.0.0.0/99")
    proc = c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/polymarket-test/{deb(dist, PKG).name}")
    assert "sshd -t rejects" in proc.stderr and "no drop-in was installed" in proc.stderr
    assert c.sh(f"test -e {DROPIN}", check=False).returncode != 0
    assert sshd_pid(c) == pid and c.sh("sshd -t", check=False).returncode == 0


def test_a_hand_edit_without_quotes_is_read_the_same_by_apply_config_and_audit(container: harness.Container,
                                                                               dist: Path) -> None:
    """Issue 8: hardening.conf has one reader (polymarket-compliance get): apply and the config script no longer
    source it, so `ALLOW_USERS=admin admin@10.0.0.0/8` unquoted (sourced: a command run, the reconfigure failed)
    means both entries, and a line the reader rejects stops apply with one line before it changes anything."""
    c = container
    add_admin(c)
    c.install_debs([deb(dist, PKG)])
    conf = "/etc/polymarket-hardening/hardening.conf"
    c.sh(f"sed -i 's|^ALLOW_USERS=.*|ALLOW_USERS=admin admin@10.0.0.0/8|; "
         f"s|^ADMIN_NETWORK=.*|ADMIN_NETWORK=10.30.0.0/16|' {conf}")  # fmt: skip
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg-reconfigure {PKG}")
    assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "admin@10.0.0.0/8", "polymarket-ha"]
    assert c.sh("polymarket-compliance get ALLOW_USERS").stdout == "admin admin@10.0.0.0/8\n"
    assert "polymarket-hardening/allow_users: admin admin@10.0.0.0/8" in c.sh(f"debconf-show {PKG}").stdout
    assert c.sh("ufw show added").stdout.count("allow from 10.30.0.0/16 to any port") == 3  # 8080, 9090, 9100
    before = c.sh(f"cat {DROPIN}").stdout
    c.sh(f"echo 'ALLOW_USERS=admin' >>{conf} && echo 'not a pair' >>{conf}")
    bad = c.sh("/usr/lib/polymarket-hardening/apply", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].endswith(": not KEY=value"), bad.stderr
    assert c.sh(f"cat {DROPIN}").stdout == before
    assert c.sh("polymarket-compliance get NO_SUCH_KEY", check=False).returncode == 2


def test_chroot_install_defers_to_first_boot(tree: Path, dist: Path) -> None:
    host_before = harness.host_sysctls(HOST_SYSCTLS)
    pkg = deb(dist, PKG)
    (tree / "root" / pkg.name).write_bytes(pkg.read_bytes())
    # As in autoinstall: the admin exists, its key arrives later (cloud-init).
    proc = harness.chroot_sh(tree, f"useradd -m admin && DEBIAN_FRONTEND=noninteractive dpkg -i /root/{pkg.name}")
    assert "deferred to polymarket-hardening-firstboot.service" in proc.stderr
    assert harness.host_sysctls(HOST_SYSCTLS) == host_before
    state = tree / "var/lib/polymarket-hardening"
    assert (state / "firstboot-pending").exists()
    assert not (state / "sysctl.before").exists()  # sysctl never ran
    assert "ENABLED=no" in (tree / "etc/ufw/ufw.conf").read_text()  # ufw never ran
    assert "NOT APPLIED" in (tree / DROPIN.lstrip("/")).read_text()  # files are fine in a chroot, no key yet
    assert (tree / "etc/systemd/system/multi-user.target.wants/polymarket-hardening-firstboot.service").is_symlink()

    keys = tree / "home/admin/.ssh/authorized_keys"
    keys.parent.mkdir(mode=0o700)
    keys.write_text(KEY + "\n")
    # Owned by admin before the boot, as cloud-init writes it: sshd reads the file as admin, and with a
    # root-owned 0700 ~/.ssh admin cannot log in with it (the guard no longer counts such a key).
    harness.chroot_sh(tree, "chown -R admin:admin /home/admin/.ssh")
    c = harness.Container(tree, "pmfirstboot")
    try:
        c.start()
        assert c.sh("systemctl show -P Result polymarket-hardening-firstboot.service").stdout.strip() == "success"
        assert c.sh("test -e /var/lib/polymarket-hardening/firstboot-pending", check=False).returncode != 0
        assert "Status: active" in c.sh("ufw status").stdout
        for key, want in NET_SYSCTLS.items():
            assert c.sh(f"sysctl -n {key}").stdout.strip() == want, key
        assert sshd_effective(c)["passwordauthentication"] == ["no"]
        code, report = compliance(c)
        assert code == 0 and report["score"] >= 95
    finally:
        c.stop()
    assert harness.host_sysctls(HOST_SYSCTLS) == host_before


@pytest.fixture(scope="module")
def next_version(dist: Path) -> Iterator[Path]:
    """The package rebuilt as a higher version (changelog bumped in a temp copy)."""
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage missing")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "polymarket-deploy"
        for part in ("debian", "packages"):
            shutil.copytree(harness.REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        changelog = src / "debian/changelog"
        old = changelog.read_text()
        version = re.match(r"\S+ \(([^)]+)\)", old).group(1)  # type: ignore[union-attr]
        entry = (
            f"polymarket-deploy ({version}+test1) noble; urgency=medium\n\n  * Upgrade test build.\n\n"
            " -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Wed, 25 Nov 2026 13:00:00 +0000\n\n"
        )
        changelog.write_text(entry + old)
        subprocess.run(["dpkg-buildpackage", "--build=all", "-us", "-uc"], cwd=src, check=True, capture_output=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"})  # fmt: skip
        yield next(Path(tmp).glob(f"{PKG}_*+test1_all.deb"))


def test_upgrade_keeps_local_conffile_without_prompt(container: harness.Container, dist: Path,
                                                     next_version: Path) -> None:  # fmt: skip
    c = container
    add_admin(c)
    c.install_debs([deb(dist, PKG)])
    c.sh("sed -i 's/^threshold = 95/threshold = 90/' /etc/polymarket-hardening/compliance.conf")
    c.sh("echo '# local note' >> /etc/polymarket-hardening/sysctl.conf")
    c.sh(f"echo '# local note' >> {DROPIN}")
    c.copy_in(next_version, f"/root/{next_version.name}")
    # No --force-conf* option and no terminal: any prompt would fail the upgrade.
    proc = c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg -i /root/{next_version.name} </dev/null")
    assert "Configuration file" not in proc.stdout
    assert c.sh(f"dpkg-query -W -f '${{Version}}' {PKG}").stdout.endswith("+test1")
    assert "threshold = 90" in c.sh("cat /etc/polymarket-hardening/compliance.conf").stdout
    assert "# local note" in c.sh("cat /etc/polymarket-hardening/sysctl.conf").stdout
    assert "# local note" in c.sh(f"cat {DROPIN}").stdout
    assert compliance(c)[1]["threshold"] == 90


# What the piuparts-style comparison ignores, and why:
#   /proc /sys /dev /run /tmp   virtual or volatile, not the package's files
#   /var/log /var/cache         logs and apt's cache (our test copies of the .deb live there)
#   /var/lib/apt                apt's lists and extended_states
#   /var/lib/dpkg               dpkg's own database; checked separately: no info file of ours is left
#   /var/lib/systemd            timer stamps, random seed, catalog, written by systemd at run time
#   /var/lib/ucf/*.N            ucf's rotating backups of its registry; the registry itself is compared
#   *-old                       debconf and dpkg database backups
IGNORED = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/log", "/var/cache", "/var/lib/apt", "/var/lib/dpkg",
           "/var/lib/systemd")  # fmt: skip


def file_list(c: harness.Container) -> set[str]:
    prune = " -o ".join(f"-path {p}" for p in IGNORED)
    out = c.sh(f"find / -xdev \\( {prune} \\) -prune -o -print").stdout.splitlines()
    return {p for p in out if not p.endswith("-old") and not re.fullmatch(r"/var/lib/ucf/.*\.\d+", p)}


def test_remove_then_purge_restores_the_system(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    c.sh("ufw default allow outgoing && ufw default reject incoming")  # not the distribution's
    ufw_defaults = c.sh("grep ^DEFAULT_ /etc/default/ufw").stdout
    before = file_list(c)
    ucf_before = c.sh("cat /var/lib/ucf/registry /var/lib/ucf/hashfile").stdout
    ipv6_before = c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout
    c.install_debs([deb(dist, PKG)])
    c.sh("systemctl start polymarket-compliance.service")
    assert c.sh("ls /var/lib/polymarket-hardening/compliance/latest.json", check=False).returncode == 0

    c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y {PKG}")
    assert c.sh(f"test -e {DROPIN}", check=False).returncode != 0
    assert "allowusers" not in sshd_effective(c)
    assert c.sh("systemctl is-active ssh").stdout.strip() == "active"
    assert "Status: inactive" in c.sh("ufw status").stdout  # it was inactive before
    assert c.sh("grep ^DEFAULT_ /etc/default/ufw").stdout == ufw_defaults
    assert "polymarket-hardening" not in c.sh("cat /etc/ufw/user.rules /etc/ufw/user6.rules").stdout
    assert c.sh("sysctl -n net.ipv6.conf.all.disable_ipv6").stdout == ipv6_before
    assert c.sh("test -e /etc/sysctl.d/99-polymarket-hardening.conf", check=False).returncode != 0

    # Installed again from the config-files state, it is whole again.
    c.sh(f"DEBIAN_FRONTEND=noninteractive dpkg -i /var/cache/polymarket-test/{deb(dist, PKG).name} </dev/null")
    assert sshd_effective(c)["passwordauthentication"] == ["no"]
    assert "Status: active" in c.sh("ufw status").stdout
    c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get remove -y {PKG}")

    c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get purge -y {PKG}")
    after = file_list(c)
    assert sorted(after - before) == [] and sorted(before - after) == []
    assert c.sh("cat /var/lib/ucf/registry /var/lib/ucf/hashfile").stdout == ucf_before
    assert c.sh(f"ls /var/lib/dpkg/info/ | grep {PKG}", check=False).stdout == ""
    assert c.sh(f"debconf-show {PKG}", check=False).stdout.strip() == ""
