"""Bad debconf answers with nobody to ask: refused with one line, never looped on, never repaired.

polymarket-hardening and polymarket-ha in booted containers. Every command
runs under timeout(1): before the fix the .config loops spun forever when a
hand-edited or preseeded value was bad and the question was not shown
(they tested $DEBIAN_FRONTEND, which debconf does not export), and the HA
postinst stripped characters (192.168.1.1OO became 192.168.1.1).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import DROPIN, add_admin
from tests.system.test_hardening import PKG as HARDENING

pytestmark = pytest.mark.system

HA = "polymarket-ha"
HA_CONF = "/etc/polymarket-ha/ha.conf"
HARDENING_CONF = "/etc/polymarket-hardening/hardening.conf"
# The debconf database says Noninteractive; DEBIAN_FRONTEND is not in the environment.
NONINTERACTIVE_DB = "debconf debconf/frontend select Noninteractive\n"


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 124, "timed out: the config loop did not end"
    assert proc.returncode != 0, proc
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stdout + proc.stderr
    return errors[0]


def dpkg_i(c: harness.Container, package: Path) -> subprocess.CompletedProcess[str]:
    c.copy_in(package, f"/root/{package.name}")
    return c.sh(f"timeout 120 dpkg -i /root/{package.name} </dev/null", check=False, timeout=180)


def snapshot(c: harness.Container, *paths: str) -> str:
    return c.sh(f"cat {' '.join(paths)}").stdout


def test_hardening_bad_value_not_shown_fails_once(container: harness.Container, dist: Path) -> None:
    c = container
    add_admin(c)
    c.sh("debconf-set-selections", input=NONINTERACTIVE_DB)
    # Preseeded on a fresh install: refused, nothing written, nothing applied.
    c.sh("debconf-set-selections", input=f"{HARDENING} {HARDENING}/admin_network string 10.0.0.300/24\n")
    error = one_error(dpkg_i(c, deb(dist, HARDENING)))
    assert "10.0.0.300/24" in error
    assert c.sh(f"ls {DROPIN} {HARDENING_CONF}", check=False).stdout == ""
    assert "Status: inactive" in c.sh("ufw status").stdout

    # Installed right, then a hand edit and dpkg-reconfigure -f noninteractive.
    c.sh("debconf-set-selections", input=f"{HARDENING} {HARDENING}/admin_network string 10.20.0.0/24\n")
    c.sh("timeout 120 dpkg --configure -a", timeout=180)
    rules = c.sh("ufw show added").stdout
    dropin = snapshot(c, DROPIN)
    c.sh(f"sed -i 's|^ADMIN_NETWORK=.*|ADMIN_NETWORK=\"10.20.0.0/24 10.30.0.0/\"|' {HARDENING_CONF}")
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {HARDENING}", check=False, timeout=180)
    assert "10.30.0.0/" in one_error(proc)
    assert c.sh("ufw show added").stdout == rules and snapshot(c, DROPIN) == dropin


def ha_preseed(c: harness.Container, **answers: str) -> None:
    lines = "".join(f"{HA} {HA}/{k} {'select' if k == 'role' else 'string'} {v}\n" for k, v in answers.items())
    c.sh("debconf-set-selections", input=lines)


GOOD = {"role": "primary", "own_address": "127.0.0.1", "peer_address": "127.0.0.2",
        "virtual_ip": "127.0.0.10/8", "interface": "lo", "router_id": "51"}  # fmt: skip


@pytest.mark.parametrize(("question", "bad"), [("own_address", "192.168.1.1OO"), ("interface", "enp1s0:1")])
def test_ha_bad_value_refused_not_repaired(container: harness.Container, dist: Path, question: str,
                                          bad: str) -> None:  # fmt: skip
    c = container
    c.sh("debconf-set-selections", input=NONINTERACTIVE_DB)
    # A fresh install with the typo preseeded: refused, no ha.conf, nothing rendered.
    ha_preseed(c, **{**GOOD, question: bad})
    error = one_error(dpkg_i(c, deb(dist, HA)))
    assert question in error and bad in error
    assert c.sh(f"ls {HA_CONF} /etc/polymarket-ha/keepalived.conf /etc/polymarket-ha/bot.env",
                check=False).stdout == ""  # fmt: skip

    # Configured right; then the same typo by hand and dpkg-reconfigure: refused, the files stay.
    ha_preseed(c, **GOOD)
    c.sh("timeout 120 dpkg --configure -a", timeout=180)
    rendered = ("/etc/polymarket-ha/keepalived.conf", "/etc/polymarket-ha/bot.env")
    before = snapshot(c, *rendered)
    assert "interface lo" in before and "127.0.0.1" in before
    key = question.upper()
    c.sh(f"sed -i 's|^{key}=.*|{key}=\"{bad}\"|' {HA_CONF}")
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {HA}", check=False, timeout=180)
    error = one_error(proc)
    assert question in error and bad in error
    assert snapshot(c, *rendered) == before
