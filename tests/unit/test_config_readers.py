"""Issue 8: every config file has one parser, in Python, and the shell calls it.

ha.conf is read by polymarket_ha.py (`polymarket-ha get KEY`), hardening.conf by polymarket-compliance
(`polymarket-compliance get KEY`). These tests run both `get` commands as a process against files written the
way a hand edit leaves them, and fail when a maintainer script or shell helper reads either file with
sed/grep/awk or sources it with `.`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "packages/polymarket-ha/polymarket_ha.py"
COMPLIANCE = REPO / "packages/polymarket-hardening/polymarket-compliance"

# The shell that reads the files: maintainer scripts and the helpers shipped in the packages.
SHELL_READERS = {
    "ha.conf": ["debian/polymarket-ha.config", "debian/polymarket-ha.postinst", "debian/polymarket-ha.prerm",
                "debian/polymarket-ha.postrm", "packages/polymarket-ha/apply", "packages/polymarket-ha/firewall",
                "packages/polymarket-ha/polymarket-floating-ip", "packages/polymarket-ha/check-bot"],
    "hardening.conf": ["debian/polymarket-hardening.config", "debian/polymarket-hardening.postinst",
                       "debian/polymarket-hardening.prerm", "debian/polymarket-hardening.postrm",
                       "packages/polymarket-hardening/apply"],
}


def run(script: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, check=False)


def test_ha_get_reads_quoted_and_unquoted_values_alike(tmp_path: Path) -> None:
    conf = tmp_path / "ha.conf"
    conf.write_text('# hand edit\nROLE=standby\nOWN_ADDRESS= 10.0.0.2\nPEER_ADDRESS="10.0.0.1"\n'
                    "VIRTUAL_IP=10.0.0.10/24\nWITNESS_ADDRESS=10.0.0.3\n")  # fmt: skip
    got = {k: run(HA, "get", "--settings", str(conf), k) for k in
           ("ROLE", "OWN_ADDRESS", "PEER_ADDRESS", "VIRTUAL_IP", "INTERFACE", "ROUTER_ID", "BACKENDS",
            "WITNESS_ADDRESS")}  # fmt: skip
    assert {k: (p.returncode, p.stdout) for k, p in got.items()} == {
        "ROLE": (0, "standby\n"), "OWN_ADDRESS": (0, "10.0.0.2\n"), "PEER_ADDRESS": (0, "10.0.0.1\n"),
        "VIRTUAL_IP": (0, "10.0.0.10/24\n"), "INTERFACE": (0, "enp1s0\n"), "ROUTER_ID": (0, "51\n"),
        "BACKENDS": (0, "\n"), "WITNESS_ADDRESS": (0, "10.0.0.3\n")}  # fmt: skip


def test_ha_get_errors(tmp_path: Path) -> None:
    conf = tmp_path / "ha.conf"
    conf.write_text("ROLE=bogus\nOWN_ADDRESS=10.0.0.2\nVIRTUAL_IP=10.0.0.10\n")
    unknown = run(HA, "get", "--settings", str(conf), "NO_SUCH_KEY")
    assert unknown.returncode == 2 and unknown.stdout == "" and len(unknown.stderr.splitlines()) == 1
    bad = run(HA, "get", "--settings", str(conf), "OWN_ADDRESS")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.splitlines() == ["error: ROLE 'bogus' is not one of primary, standby, lb "
                                       "(hint: dpkg-reconfigure polymarket-ha)"]  # fmt: skip
    # --raw: the value as written, for debconf's config script to check and ask again.
    assert run(HA, "get", "--raw", "--settings", str(conf), "ROLE").stdout == "bogus\n"
    missing = run(HA, "get", "--settings", str(tmp_path / "none.conf"), "ROLE")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and len(missing.stderr.splitlines()) == 1
    conf.write_text("ROLE=primary\nthis is no pair\n")
    broken = run(HA, "get", "--raw", "--settings", str(conf), "ROLE")
    assert broken.returncode == 1 and len(broken.stderr.splitlines()) == 1 and ":2: not KEY=value" in broken.stderr


def test_compliance_get_reads_the_settings_as_the_audit_does(tmp_path: Path) -> None:
    conf = tmp_path / "hardening.conf"
    # Unquoted, as a hand edit leaves it: sourced by sh this ran "ops" and kept ALLOW_USERS=admin.
    conf.write_text("# hand edit\nALLOW_USERS=admin ops@10.0.0.0/8\nADMIN_NETWORK='10.1.0.0/16'\n")
    users = run(COMPLIANCE, "get", "--settings", str(conf), "ALLOW_USERS")
    assert (users.returncode, users.stdout) == (0, "admin ops@10.0.0.0/8\n")
    assert run(COMPLIANCE, "get", "--settings", str(conf), "ADMIN_NETWORK").stdout == "10.1.0.0/16\n"
    # A missing file: the defaults apply uses.
    assert run(COMPLIANCE, "get", "--settings", str(tmp_path / "none"), "ALLOW_USERS").stdout == "admin\n"
    unknown = run(COMPLIANCE, "get", "--settings", str(conf), "NO_SUCH_KEY")
    assert unknown.returncode == 2 and len(unknown.stderr.splitlines()) == 1
    conf.write_text("ALLOW_USERS=admin\nrm -rf /tmp/x\n")
    bad = run(COMPLIANCE, "get", "--settings", str(conf), "ALLOW_USERS")
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.splitlines() == [f"error: {conf}:2: not KEY=value"]


def reads(name: str) -> re.Pattern[str]:
    """sed/grep/awk/cut/head/tail/while-read given the file ($SETTINGS or its name), or `.`/`source` of it."""
    target = rf"(\$SETTINGS\b|\$\{{SETTINGS\}}|\S*{re.escape(name)})"
    tools = r"\b(sed|grep|egrep|awk|cut|head|tail|read)\b"
    return re.compile(rf"{tools}.*{target}|(^|[\s;&|])(\.|source)\s+[\"']?{target}")


@pytest.mark.parametrize("name", sorted(SHELL_READERS))
def test_no_shell_reads_the_settings_file(name: str) -> None:
    pattern = reads(name)
    found = []
    for rel in SHELL_READERS[name]:
        for number, line in enumerate((REPO / rel).read_text(encoding="utf-8").splitlines(), 1):
            if not line.lstrip().startswith("#") and pattern.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert found == [], "read the file with the package's `get KEY`:\n" + "\n".join(found)
