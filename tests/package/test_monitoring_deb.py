"""Package tests of polymarket-monitoring: the built .deb's files and modes, its Depends, its drop-ins (pointing
the archive's prometheus and alertmanager at our files, never shipping theirs) and its templates."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from tests.package.debs import PLAIN_ENV

PACKAGE = "polymarket-monitoring"

FILES = {
    "/usr/lib/polymarket-monitoring/polymarket_monitoring.py": 0o755,
    "/usr/lib/polymarket-monitoring/polymarket_golive.py": 0o755,
    "/usr/lib/systemd/system/prometheus.service.d/polymarket-monitoring.conf": 0o644,
    "/usr/lib/systemd/system/prometheus-alertmanager.service.d/polymarket-monitoring.conf": 0o644,
    "/usr/share/man/man8/polymarket-monitoring.8.gz": 0o644,
    "/usr/share/man/man8/polymarket-golive.8.gz": 0o644,
    "/usr/share/doc/polymarket-monitoring/README.md.gz": 0o644,
}


def test_files_and_modes(members: dict[str, tarfile.TarInfo]) -> None:
    for path, mode in FILES.items():
        assert path in members, path
        assert members[path].mode & 0o7777 == mode, path
        assert members[path].uname == "root", path
    link = members["/usr/sbin/polymarket-monitoring"].linkname
    assert link == "../lib/polymarket-monitoring/polymarket_monitoring.py"
    assert members["/usr/sbin/polymarket-golive"].linkname == "../lib/polymarket-monitoring/polymarket_golive.py"
    # Never another package's file: nothing under /etc/prometheus or /etc/default.
    assert not [p for p in members if p.startswith(("/etc/prometheus", "/etc/default"))]


def test_depends_on_the_archive_packages(deb: Path) -> None:
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True,
                             env=PLAIN_ENV).stdout
    names = {d.strip().split()[0] for d in depends.split(",")}
    assert {"prometheus", "prometheus-alertmanager", "python3-yaml", "ucf"} <= names


def test_drop_ins_point_at_our_files(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True, env=PLAIN_ENV)
    unit = tmp_path / "usr/lib/systemd/system"
    prom = (unit / "prometheus.service.d/polymarket-monitoring.conf").read_text()
    am = (unit / "prometheus-alertmanager.service.d/polymarket-monitoring.conf").read_text()
    start = "\nExecStart=\nExecStart=/usr/bin/prometheus --config.file=/etc/polymarket-monitoring/prometheus.yml "
    assert start in prom
    assert "--storage.tsdb.retention.time=30d" in prom and "--storage.tsdb.retention.size=4GB" in prom
    assert "\nExecStart=\nExecStart=/usr/bin/prometheus-alertmanager " \
           "--config.file=/etc/polymarket-monitoring/alertmanager.yml" in am


def test_daemons_listen_on_the_loopback_only(deb: Path, tmp_path: Path) -> None:
    """Prometheus (every scraped series, the bots' money among them) and Alertmanager (anyone could silence) have
    no authentication: --web.listen-address=127.0.0.1 in the one ExecStart= each runs (their defaults: every
    address). tests/system/test_monitoring.py sees the sockets."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True, env=PLAIN_ENV)
    unit = tmp_path / "usr/lib/systemd/system"
    for drop_in, port in (("prometheus.service.d", 9090), ("prometheus-alertmanager.service.d", 9093)):
        starts = [line for line in (unit / drop_in / "polymarket-monitoring.conf").read_text().splitlines()
                  if line.startswith("ExecStart=/")]
        assert len(starts) == 1, starts
        assert [w for w in starts[0].split() if w.startswith("--web.listen-address")] == [
            f"--web.listen-address=127.0.0.1:{port}"], starts


def test_templates_ask_no_secret(control: Path) -> None:
    templates = (control / "templates").read_text()
    assert "Template: polymarket-monitoring/bot_targets" in templates
    assert "Type: password" not in templates
