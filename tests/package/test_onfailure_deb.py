"""OnFailure= in the built .debs: every service and timer unit of every polymarket package hands its failure to
polymarket-failure@.service, which polymarket-hardening ships (template and script) and which has no
OnFailure= of its own."""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from builder.packages import REGISTRY
from tests.package import debs

# Every package of the registry: a new one is checked without an edit here.
PACKAGES = sorted(p.name for p in REGISTRY)
LINE = "OnFailure=polymarket-failure@%n.service"
TEMPLATE = "/usr/lib/systemd/system/polymarket-failure@.service"
SCRIPT = "/usr/lib/polymarket-hardening/unit-failed"


def units(deb: Path) -> dict[str, str]:
    """Every systemd service and timer unit of ``deb`` (not drop-ins) by path, with its text."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/data.tar", "wb") as out:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, stdout=out)
        with tarfile.open(f"{tmp}/data.tar") as tar:
            found = {}
            for m in tar.getmembers():
                name = m.name.removeprefix(".")
                if m.isfile() and "/systemd/system/" in name and name.endswith((".service", ".timer")) \
                        and ".d/" not in name:
                    f = tar.extractfile(m)
                    assert f is not None
                    found[name] = f.read().decode()
            return found


def section(lines: list[str], name: str) -> list[str]:
    """The lines of section ``name`` (up to the next ``[...]`` header)."""
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("["):
            inside = line == name
        elif inside:
            out.append(line)
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_every_unit_has_onfailure(package: str) -> None:
    found = units(debs.built_deb(package))
    for path, text in found.items():
        lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
        unit = section(lines, "[Unit]")
        if path == TEMPLATE:
            assert not [x for x in lines if x.startswith("OnFailure=")], "the handler must not start itself again"
            continue
        assert unit.count(LINE) == 1, f"{package}: {path} lacks {LINE} in [Unit]"
    if package == "polymarket-monitoring":
        assert set(found) == {"/usr/lib/systemd/system/polymarket-journal-gate.service",
                              "/usr/lib/systemd/system/polymarket-journal-remote@.service"}, (
            "a polymarket unit here needs OnFailure= (and this test's list updated)")
    else:
        assert found, f"{package} has no service unit?"


def test_hardening_ships_the_handler() -> None:
    deb = debs.built_deb("polymarket-hardening")
    members = debs.data_members(deb)
    assert members[SCRIPT].mode == 0o755 and members[TEMPLATE].mode == 0o644
    text = units(deb)[TEMPLATE]
    assert f"ExecStart={SCRIPT} %i" in text and "[Install]" not in text
    with debs.control_dir(deb) as control:
        scripts = "".join(p.read_text() for p in control.iterdir() if p.name in ("postinst", "prerm", "postrm"))
    # a template started by systemd only: never enabled or started by the maintainer scripts
    named = [x for x in scripts.splitlines() if "polymarket-failure@" in x and not x.strip().startswith("#")]
    assert named == []
