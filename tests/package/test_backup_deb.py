"""Package tests of polymarket-backup: contents, modes, conffiles, scripts, units, lintian, CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.package import debs
from tests.package.debs import PLAIN_ENV, REPO

PAYLOAD = REPO / "packages" / "polymarket-backup"
TIMERS = ("polymarket-backup", "polymarket-backup-verify", "polymarket-backup-prune", "polymarket-backup-offsite")


PACKAGE = "polymarket-backup"
_need = debs.need


FILES = {
    "/usr/sbin/polymarket-backup": 0o755,
    "/etc/polymarket-backup/backup.conf": 0o644,
    "/usr/share/polymarket-backup/offsite.conf.example": 0o644,
    "/usr/share/man/man8/polymarket-backup.8.gz": 0o644,
    **{f"/usr/lib/systemd/system/{t}.{kind}": 0o644 for t in TIMERS for kind in ("service", "timer")},
}


def test_files_and_modes(members: dict[str, tarfile.TarInfo]) -> None:
    for path, mode in FILES.items():
        assert path in members, f"{path} missing from the package"
        m = members[path]
        assert m.isfile() and m.mode == mode, f"{path}: mode {m.mode:o}"
        assert (m.uname, m.gname) == ("root", "root")


def test_no_secret_or_data_is_shipped(members: dict[str, tarfile.TarInfo]) -> None:
    """The password and the offsite credentials are made at install, never shipped."""
    assert "/etc/polymarket-backup/repository-password" not in members
    assert "/etc/polymarket-backup/offsite.conf" not in members
    assert not any(p.startswith("/var/") for p in members)


def test_the_backup_directory_is_ours_alone(deb: Path, control: Path) -> None:
    """/var/backups/polymarket is polymarket-backup's (root 0700): made by its tmpfiles and postinst, and
    polymarket-bot neither makes, owns nor deletes it (issue 7, item 2; the booted test purges the bot)."""
    tmpfiles = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(tmpfiles)) as tar:
        member = tar.extractfile("./usr/lib/tmpfiles.d/polymarket-backup.conf")
        assert member is not None
        lines = [ln.split() for ln in member.read().decode().splitlines() if ln and not ln.startswith("#")]
    assert ["d", "/var/backups/polymarket", "0700", "root", "root", "-"] in lines
    assert "install -d -m 0700 -o root -g root /var/backups/polymarket" in (control / "postinst").read_text()
    overlay = REPO / "packages" / "polymarket-bot" / "debian-overlay"
    for name in ("polymarket-bot.postrm", "polymarket-bot.tmpfiles", "polymarket-bot.postinst"):
        if (overlay / name).exists():
            code = "\n".join(ln for ln in (overlay / name).read_text().splitlines() if not ln.lstrip().startswith("#"))
            assert "/var/backups" not in code, name
    postrm = "\n".join(ln for ln in (overlay / "polymarket-bot.postrm").read_text().splitlines()
                       if not ln.lstrip().startswith("#"))
    assert "rm -rf /run/polymarket" not in postrm and "/run/polymarket/passive" not in postrm


def test_conffiles(control: Path) -> None:
    assert (control / "conffiles").read_text().split() == ["/etc/polymarket-backup/backup.conf"]


def test_depends(deb: Path) -> None:
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    for pkg in ("restic", "python3", "sqlite3"):
        assert re.search(rf"\b{pkg}\b", depends), pkg
    arch = subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture"], capture_output=True, text=True).stdout
    assert arch.strip() == "all"


def test_restic_is_at_least_noble_s(deb: Path) -> None:
    """Every restic call passes --retry-lock (restic 0.16+): bookworm's 0.14 exits "unknown flag: --retry-lock"
    on each one, so apt must refuse the package there rather than install backups that never run. Noble has 0.16.4."""
    assert '"--retry-lock"' in (PAYLOAD / "polymarket-backup").read_text()
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert re.search(r"\brestic \(>= 0\.16\)", depends), depends


@pytest.mark.parametrize("script", ["postinst", "prerm", "postrm"])
def test_maintainer_scripts_shellcheck_clean(control: Path, script: str) -> None:
    path = control / script
    if not path.exists():
        pytest.skip(f"no {script}")
    _need("shellcheck")
    text = path.read_text()
    assert text.startswith("#!/bin/sh") and "set -e" in text
    proc = subprocess.run(["shellcheck", "-s", "sh", "-S", "warning", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_only_the_timers_are_started(control: Path) -> None:
    postinst = (control / "postinst").read_text()
    starts = re.findall(r"deb-systemd-invoke \$_dh_action (.*) >", postinst)
    assert len(starts) == 1
    assert sorted(re.findall(r"'([^']+)'", starts[0])) == sorted(f"{t}.timer" for t in TIMERS)


def test_password_is_random_and_kept(control: Path) -> None:
    postinst = (control / "postinst").read_text()
    assert "/dev/urandom" in postinst and 'if [ ! -s "$PASSWORD" ]' in postinst
    assert "chmod 0600" in postinst
    postrm = (control / "postrm").read_text()
    purge = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    assert "/var/backups" not in purge.replace("REPOSITORY=/var/backups/polymarket/restic", "")
    assert 'if [ -e "$REPOSITORY/config" ]' in postrm


def test_lintian_clean(deb: Path) -> None:
    _need("lintian")
    proc = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)], capture_output=True, text=True,
                          env=PLAIN_ENV)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not re.search(r"^[EW]: ", proc.stdout, re.M), proc.stdout


def test_timers_meet_the_plan() -> None:
    """RPO 15 minutes; verify daily at 02:00 (plan 4.1); all catch up after downtime."""
    sysd = PAYLOAD / "systemd"
    assert "OnCalendar=*:0/15" in (sysd / "polymarket-backup.timer").read_text()
    assert "OnCalendar=*-*-* 02:00:00" in (sysd / "polymarket-backup-verify.timer").read_text()
    for t in TIMERS:
        timer = (sysd / f"{t}.timer").read_text()
        assert "Persistent=true" in timer and "WantedBy=timers.target" in timer
        service = (sysd / f"{t}.service").read_text()
        assert f"ExecStart=/usr/sbin/polymarket-backup {t.removeprefix('polymarket-backup').lstrip('-') or 'backup'}" \
            in service  # fmt: skip
        for word in ("ProtectSystem=strict", "ReadWritePaths=/var/backups/polymarket", "PrivateTmp=yes",
                     "NoNewPrivileges=yes", "ProtectHome=yes", "Type=oneshot"):  # fmt: skip
            assert word in service, (t, word)
        assert ("PrivateNetwork=yes" in service) == (t != "polymarket-backup-offsite"), t


def test_systemd_analyze_verify() -> None:
    _need("systemd-analyze")
    units = [str(PAYLOAD / "systemd" / f"{t}.{k}") for t in TIMERS for k in ("service", "timer")]
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    # The command itself is not installed here; any unknown or invalid setting is a failure.
    problems = [line for line in proc.stderr.splitlines()
                if re.search(r"Unknown (key|section)|[Ii]nvalid|[Ff]ailed to parse", line)]  # fmt: skip
    assert problems == [], proc.stderr


def test_cli_is_mypy_strict_clean(tmp_path: Path) -> None:
    mypy = Path(sys.executable).parent / "mypy"
    if not mypy.exists():
        pytest.skip("mypy missing from the test venv")
    module = tmp_path / "polymarket_backup.py"
    shutil.copy(PAYLOAD / "polymarket-backup", module)
    proc = subprocess.run([str(mypy), "--strict", "--python-version", "3.11", str(module)], capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help_and_exit_codes() -> None:
    tool = str(PAYLOAD / "polymarket-backup")
    proc = subprocess.run(["/usr/bin/python3", tool, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Exit status" in proc.stdout
    for word in ("backup", "verify", "list", "restore", "prune", "offsite"):
        assert word in proc.stdout
    restore = subprocess.run(["/usr/bin/python3", tool, "restore", "--help"], capture_output=True, text=True)
    assert "--snapshot" in restore.stdout and "--time" in restore.stdout
    assert subprocess.run(["/usr/bin/python3", tool, "bogus"], capture_output=True).returncode == 2
    if os.geteuid() != 0:
        proc = subprocess.run(["/usr/bin/python3", tool, "list"], capture_output=True, text=True)
        assert proc.returncode == 3 and proc.stderr == "error: must be run as root\n"


def test_the_metrics_textfile_is_writable_from_the_sandboxed_units(deb: Path) -> None:
    """polymarket-backup.prom (issue 10): tmpfiles makes the node exporter's textfile directory when absent
    (leaving an existing one's owner and mode), and the units that write it may (ProtectSystem=strict)."""
    import io

    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(fsys)) as tar:
        def text(path: str) -> str:
            member = tar.extractfile(path)
            assert member is not None, path
            return member.read().decode()

        tmpfiles = [ln.split() for ln in text("./usr/lib/tmpfiles.d/polymarket-backup.conf").splitlines()
                    if ln and not ln.startswith("#")]  # fmt: skip
        assert ["d", "/var/lib/prometheus/node-exporter", "-", "-", "-", "-"] in tmpfiles
        for unit in ("polymarket-backup", "polymarket-backup-verify", "polymarket-backup-offsite"):
            assert "ReadWritePaths=-/var/lib/prometheus/node-exporter" in text(
                f"./usr/lib/systemd/system/{unit}.service"), unit  # fmt: skip
