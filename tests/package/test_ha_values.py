"""polymarket-ha check-value: each debconf answer is accepted as typed or refused, never repaired.

The maintainer scripts call the CLI; these run it the same way (a subprocess of
the shipped script's source) so the exit code and the one error line are what
the postinst sees.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.package.debs import REPO

SCRIPT = REPO / "packages" / "polymarket-ha" / "polymarket_ha.py"


def check(question: str, value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "check-value", question, value],
                          capture_output=True, text=True, check=False)  # fmt: skip


GOOD = [
    ("role", "primary"), ("role", "lb"),
    ("own_address", "192.168.1.100"), ("own_address", "2001:db8::10"),
    ("peer_address", ""), ("peer_address", "10.0.0.2"),
    ("virtual_ip", "192.168.1.10"), ("virtual_ip", "192.168.1.10/24"), ("virtual_ip", "2001:db8::10/64"),
    ("interface", "enp1s0"), ("interface", "eth0.100"), ("interface", "br-lan_1"), ("interface", "a" * 15),
    ("router_id", "1"), ("router_id", "255"),
    ("backends", ""), ("backends", "10.0.0.1 10.0.0.2"),
]  # fmt: skip

BAD = [
    ("role", "master"), ("role", ""),
    ("own_address", "192.168.1.1OO"),  # the old postinst made this 192.168.1.1
    ("own_address", ""), ("own_address", "192.168.1.256"), ("own_address", "192.168.001.1"),
    ("own_address", '10.0.0.1" evil="1'),
    ("peer_address", "10.0.0.2x"),
    ("virtual_ip", "10.0.0.10/33"), ("virtual_ip", "10.0.0.10/0"), ("virtual_ip", "10.0.0.10/"),
    ("virtual_ip", "10.0.0.10/2x4"), ("virtual_ip", "2001:db8::1/129"),
    ("interface", "enp1s0:1"),  # the old postinst made this enp1s01
    ("interface", ""), ("interface", "a" * 16), ("interface", "eth/0"), ("interface", "."), ("interface", ".."),
    ("interface", "eth 0"), ("interface", "eth\t0"), ("interface", 'eth"0'), ("interface", "éth0"),
    ("router_id", "0"), ("router_id", "256"), ("router_id", "5l"), ("router_id", "-1"), ("router_id", "٣"),
    ("backends", "10.0.0.1 10.0.0.2O"), ("backends", "10.0.0.1,10.0.0.2"),
]  # fmt: skip


@pytest.mark.parametrize(("question", "value"), GOOD)
def test_good_value_accepted(question: str, value: str) -> None:
    proc = check(question, value)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc


@pytest.mark.parametrize(("question", "value"), BAD)
def test_bad_value_refused_with_one_line(question: str, value: str) -> None:
    proc = check(question, value)
    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and question in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_question_is_a_usage_error() -> None:
    assert check("ownaddress", "10.0.0.1").returncode == 2
