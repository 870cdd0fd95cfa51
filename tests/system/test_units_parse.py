"""Every unit and drop-in we ship is understood by the suite's systemd: 257 on trixie, 252 on bookworm
(POLYMARKET_TEST_SUITE=bookworm), on either side of noble's 255.

systemd ignores a directive it does not know with only a log line ("Unknown key ..., ignoring"), so
a sandboxing or credential setting newer than the host's systemd would silently not apply. Every
.deb is unpacked (no maintainer script runs) into a booted container and ``systemd-analyze verify``
reads our units and the archive's units our drop-ins extend; no line of its output may name one of
our files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from builder.packages import REGISTRY
from tests.system import harness
from tests.system.conftest import deb

# The archive's units our drop-ins extend (polymarket-ha, polymarket-monitoring).
EXTENDED = ("keepalived.service", "haproxy.service", "etcd.service", "prometheus.service",
            "prometheus-alertmanager.service")  # fmt: skip


def test_systemd_knows_every_directive_we_ship(container: harness.Container, dist: Path) -> None:
    c = container
    for pkg in REGISTRY:
        subprocess.run(["dpkg-deb", "-x", str(deb(dist, pkg.name)), str(c.root)], check=True)
    ours = sorted(p.name for p in c.path("/usr/lib/systemd/system").glob("polymarket*") if p.is_file())
    assert "polymarket-bot.service" in ours and "polymarket-compliance.timer" in ours, ours
    c.sh("systemctl daemon-reload")
    out = c.sh(f"cd /usr/lib/systemd/system && systemd-analyze verify --man=no {' '.join(ours + list(EXTENDED))} 2>&1",
               check=False).stdout  # fmt: skip
    # A dependency's program (e.g. systemd-journal-remote, which polymarket-monitoring Depends on) is not in this
    # rootfs: the .debs are only unpacked. A missing program that one of our packages ships still counts.
    missing = re.compile(r"Command (\S+) is not executable: No such file or directory")
    shipped = set()
    for pkg in REGISTRY:
        listing = subprocess.run(["dpkg-deb", "-c", str(deb(dist, pkg.name))], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
        shipped |= {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    findings = [line for line in out.splitlines() if "polymarket" in line
                and not ((m := missing.search(line)) and m.group(1) not in shipped)]
    version = c.sh("systemctl --version").stdout.splitlines()[0]
    assert findings == [], f"{version}:\n" + "\n".join(findings)
