"""Package tests of polymarket-hardening: contents, modes, conffiles, scripts, lintian."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import payload
from tests.package import debs
from tests.package.debs import PLAIN_ENV, REPO

PAYLOAD = REPO / "packages" / "polymarket-hardening"


PACKAGE = "polymarket-hardening"
_need = debs.need


compliance_module = payload.compliance


FILES = {
    "/usr/lib/polymarket-hardening/apply": 0o755,
    "/usr/sbin/polymarket-compliance": 0o755,
    "/etc/polymarket-hardening/sysctl.conf": 0o644,
    "/etc/polymarket-hardening/audit.rules": 0o644,
    "/etc/polymarket-hardening/compliance.conf": 0o644,
    "/etc/polymarket-hardening/modprobe.conf": 0o644,
    "/etc/polymarket-hardening/needrestart.conf": 0o644,
    "/etc/polymarket-hardening/ssh-banner": 0o644,
    "/etc/logrotate.d/polymarket": 0o644,
    "/usr/lib/systemd/system/polymarket-compliance.service": 0o644,
    "/usr/lib/systemd/system/polymarket-compliance.timer": 0o644,
    "/usr/lib/systemd/system/polymarket-hardening-firstboot.service": 0o644,
    "/usr/share/man/man8/polymarket-compliance.8.gz": 0o644,
    # re-applies sysctl.d's net.ipv4 keys after ufw's own sysctl.conf (log_martians = 0)
    "/usr/lib/systemd/system/ufw.service.d/polymarket-hardening.conf": 0o644,
}

LINKS = {
    "/etc/sysctl.d/99-polymarket-hardening.conf": "../polymarket-hardening/sysctl.conf",
    "/etc/audit/rules.d/polymarket.rules": "../../polymarket-hardening/audit.rules",
    "/etc/modprobe.d/polymarket-hardening.conf": "../polymarket-hardening/modprobe.conf",
    "/etc/needrestart/conf.d/polymarket-hardening.conf": "../../polymarket-hardening/needrestart.conf",
}


def test_files_and_modes(members: dict[str, tarfile.TarInfo]) -> None:
    for path, mode in FILES.items():
        assert path in members, f"{path} missing from the package"
        m = members[path]
        assert m.isfile() and m.mode == mode, f"{path}: mode {m.mode:o}"
        assert (m.uname, m.gname) == ("root", "root")


def test_activation_links(members: dict[str, tarfile.TarInfo]) -> None:
    """sysctl.d and audit rules.d entries are links, so that remove deactivates them."""
    for path, target in LINKS.items():
        assert members[path].issym() and members[path].linkname == target


def test_no_generated_file_is_shipped(members: dict[str, tarfile.TarInfo]) -> None:
    """The sshd drop-in and the settings are written by postinst (ucf), not shipped."""
    assert "/etc/ssh/sshd_config.d/10-polymarket.conf" not in members
    assert "/etc/polymarket-hardening/hardening.conf" not in members
    assert not any(p.startswith("/var/") for p in members)


def test_conffiles(control: Path) -> None:
    assert sorted((control / "conffiles").read_text().split()) == [
        "/etc/logrotate.d/polymarket",
        "/etc/polymarket-hardening/audit.rules",
        "/etc/polymarket-hardening/compliance.conf",
        "/etc/polymarket-hardening/modprobe.conf",
        "/etc/polymarket-hardening/needrestart.conf",
        "/etc/polymarket-hardening/ssh-banner",
        "/etc/polymarket-hardening/sysctl.conf",
    ]


def test_depends(deb: Path) -> None:
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    for pkg in ("openssh-server", "ufw", "auditd", "logrotate", "procps", "python3", "ucf", "debconf"):
        assert re.search(rf"\b{pkg}\b", depends), pkg


def test_recommends_not_depends(deb: Path) -> None:
    """The patch policy's and the CIS controls' daemons are recommended: a host without them is audited
    (their controls fail), never refused the package; the time daemon is whichever the archive gives."""
    fields = {f: subprocess.run(["dpkg-deb", "-f", str(deb), f], capture_output=True, text=True,
                                check=True).stdout.strip() for f in ("Depends", "Recommends")}  # fmt: skip
    recommends = [r.strip() for r in fields["Recommends"].split(",")]
    for rec in ("apparmor", "needrestart", "systemd-timesyncd | time-daemon", "unattended-upgrades"):
        assert rec in recommends, rec
    for pkg in ("apparmor", "needrestart", "unattended-upgrades", "systemd-timesyncd", "chrony"):
        assert not re.search(rf"\b{pkg}\b", fields["Depends"]), pkg


def test_debconf_templates(control: Path) -> None:
    templates = (control / "templates").read_text()
    assert "Template: polymarket-hardening/allow_users" in templates
    allow_users = templates.split("Template: polymarket-hardening/allow_users\n")[1].split("\n\n")[0]
    assert "\nDefault: admin\n" in allow_users  # never polymarket-bot (issue 7, item 4)
    assert "Template: polymarket-hardening/admin_network" in templates
    for question, kind, default in (("upgrade_window", "string", "03:00"), ("auto_reboot", "boolean", "true"),
                                    ("role", "select", "auto")):  # fmt: skip
        block = templates.split(f"Template: polymarket-hardening/{question}\n")[1].split("\n\n")[0]
        assert f"Type: {kind}\n" in block and f"\nDefault: {default}" in block, block
    assert (control / "config").exists()


@pytest.mark.parametrize("script", ["config", "preinst", "postinst", "prerm", "postrm"])
def test_maintainer_scripts_shellcheck_clean(control: Path, script: str) -> None:
    """The scripts as shipped (with debhelper's snippets), at warning level.

    Info-level notes only appear in debhelper's own generated snippets
    (SC1091 on confmodule, SC2119 on db_purge); our sources are clean at
    every level (the builder's lint checks them).
    """
    path = control / script
    if not path.exists():
        pytest.skip(f"no {script}")
    _need("shellcheck")
    assert path.read_text().startswith("#!/bin/sh")
    proc = subprocess.run(["shellcheck", "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_apply_script_shellcheck_clean() -> None:
    _need("shellcheck")
    proc = subprocess.run(["shellcheck", "-s", "sh", str(PAYLOAD / "apply")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_only_the_timer_is_started(control: Path) -> None:
    postinst = (control / "postinst").read_text()
    starts = re.findall(r"deb-systemd-invoke \$_dh_action (.*) >", postinst)
    assert starts == ["'polymarket-compliance.timer'"]
    assert "deb-systemd-helper enable 'polymarket-hardening-firstboot.service'" in postinst


def test_lintian_clean(deb: Path) -> None:
    _need("lintian")
    proc = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)], capture_output=True, text=True,
                          env=PLAIN_ENV)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not re.search(r"^[EW]: ", proc.stdout, re.M), proc.stdout


def test_sysctl_conffile_matches_the_audit_baseline() -> None:
    """One baseline: the shipped sysctl values are exactly what the audit expects."""
    shipped = {}
    for line in (PAYLOAD / "sysctl.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.lstrip("-").partition("=")
            shipped[key.strip()] = value.strip()
    assert shipped == compliance_module().SYSCTL_BASELINE


def test_timer_runs_daily_at_six_and_catches_up() -> None:
    timer = (PAYLOAD / "systemd" / "polymarket-compliance.timer").read_text()
    assert "OnCalendar=*-*-* 06:00:00" in timer and "Persistent=true" in timer
    service = (PAYLOAD / "systemd" / "polymarket-compliance.service").read_text()
    assert "ExecStart=/usr/sbin/polymarket-compliance report" in service
    assert "ProtectSystem=strict" in service and "NoNewPrivileges=yes" in service


def test_firstboot_unit_runs_only_when_flagged() -> None:
    unit = (PAYLOAD / "systemd" / "polymarket-hardening-firstboot.service").read_text()
    assert "ConditionPathExists=/var/lib/polymarket-hardening/firstboot-pending" in unit
    assert "ExecStart=/usr/lib/polymarket-hardening/apply --firstboot" in unit


def test_audit_rules_are_plan_5_1() -> None:
    rules = (PAYLOAD / "audit.rules").read_text()
    for key in compliance_module().AUDIT_KEYS:
        assert f"-k {key}" in rules
    assert "-F arch=b64 -S execve" in rules


def test_logrotate_is_plan_5_3() -> None:
    conf = (PAYLOAD / "logrotate.d" / "polymarket").read_text()
    assert conf.startswith("#") and "/var/log/polymarket/*.log {" in conf
    for word in ("daily", "rotate 30", "compress", "delaycompress", "missingok", "notifempty"):
        assert f"    {word}\n" in conf
    assert "|| true" in conf


def test_compliance_help_and_exit_codes() -> None:
    tool = str(PAYLOAD / "polymarket-compliance")
    proc = subprocess.run(["/usr/bin/python3", tool, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "audit" in proc.stdout and "report" in proc.stdout
    assert "Exit status" in proc.stdout
    assert subprocess.run(["/usr/bin/python3", tool, "bogus"], capture_output=True).returncode == 2
    if os.geteuid() != 0:
        assert subprocess.run(["/usr/bin/python3", tool, "audit"], capture_output=True).returncode == 3
