"""Outside review of issue 7, items 5-7 in booted containers: debconf answers that
check-value wrongly accepts, frontends with nobody to ask, and sshd ports for ufw.

xfail(strict=True): defects found by the review (remove the marker with the fix).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_debconf_loops import GOOD, HA, HA_CONF, HARDENING_CONF, NONINTERACTIVE_DB, ha_preseed
from tests.system.test_hardening import DROPIN, PKG, add_admin

pytestmark = pytest.mark.system

RENDERED = ("/etc/polymarket-ha/keepalived.conf", "/etc/polymarket-ha/bot.env")


def configured_ha(c: harness.Container, dist: Path) -> str:
    c.sh("debconf-set-selections", input=NONINTERACTIVE_DB)
    ha_preseed(c, **GOOD)
    package = deb(dist, HA)
    c.copy_in(package, f"/root/{package.name}")
    c.sh(f"timeout 120 dpkg -i /root/{package.name} </dev/null", timeout=180)
    return c.sh(f"cat {HA_CONF} {' '.join(RENDERED)}").stdout


def test_attack_ha_role_dash_h_refused_nothing_written(container: harness.Container, dist: Path) -> None:
    c = container
    before = configured_ha(c, dist)
    c.sh(f"sed -i 's|^ROLE=.*|ROLE=\"-h\"|' {HA_CONF}")  # a hand edit (ha.conf is the master copy)
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {HA} </dev/null", check=False, timeout=180)
    after = c.sh(f"cat {' '.join(RENDERED)}").stdout
    assert proc.returncode not in (0, 124) and after in before, (proc, after)


def test_attack_ha_interface_option_like_refused(container: harness.Container, dist: Path) -> None:
    c = container
    configured_ha(c, dist)
    c.sh(f"sed -i 's|^INTERFACE=.*|INTERFACE=\"--help\"|' {HA_CONF}")
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {HA} </dev/null", check=False, timeout=180)
    keepalived = c.sh(f"cat {RENDERED[0]}").stdout
    assert proc.returncode not in (0, 124) and "--help" not in keepalived, (proc, keepalived)


def test_attack_held_hardening_readline_stdin_closed_bad_value(container: harness.Container, dist: Path) -> None:
    """Held: a bad preseeded answer with the readline frontend and stdin closed ends (no hang), changes nothing."""
    c = container
    add_admin(c)
    c.sh("debconf-set-selections", input=NONINTERACTIVE_DB)
    c.install_debs([deb(dist, PKG)])
    before = c.sh(f"cat {DROPIN} {HARDENING_CONF}; ufw show added").stdout
    c.sh(f"sed -i 's|^ALLOW_USERS=.*|ALLOW_USERS=\"admin,root\"|' {HARDENING_CONF}")  # the master copy
    before = c.sh(f"cat {DROPIN} {HARDENING_CONF}; ufw show added").stdout
    for frontend in ("readline", "teletype", "noninteractive"):
        proc = c.sh(f"timeout 120 dpkg-reconfigure -f {frontend} {PKG} </dev/null", check=False, timeout=180)
        assert proc.returncode not in (0, 124), (frontend, proc)
        assert c.sh(f"cat {DROPIN} {HARDENING_CONF}; ufw show added").stdout == before, frontend


def test_attack_held_ufw_limits_listen_address_ports(container: harness.Container, dist: Path) -> None:
    """Held: Port 22 plus ListenAddress 0.0.0.0:2200 and [::]:2201: ufw limits all three."""
    c = container
    add_admin(c)
    c.sh("printf 'Port 22\\nListenAddress 0.0.0.0:2200\\nListenAddress [::]:2201\\n' "
         ">/etc/ssh/sshd_config.d/05-ports.conf && systemctl restart ssh")  # fmt: skip
    c.install_debs([deb(dist, PKG)])
    added = c.sh("ufw show added").stdout
    for port in ("2200", "2201"):
        assert f"ufw limit {port}/tcp comment 'polymarket-hardening'" in added, added
