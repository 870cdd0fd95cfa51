"""The built packages: reproducible, lintian clean, shell scripts shellcheck clean."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from builder import build, lint
from builder.project import BuildSystem, Project, load_project

REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project() -> Project:
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage missing (apt-get install dpkg-dev debhelper)")
    return load_project(REPO)


def test_same_inputs_give_the_same_bytes(project: Project, tmp_path: Path) -> None:
    names = [p.name for p in project.packages if p.build_system is BuildSystem.DEBHELPER]
    first = build.build(project, names, tmp_path / "one")
    second = build.build(project, names, tmp_path / "two")
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert _sha(a) == _sha(b), f"{a.name} differs between two builds"


def test_every_built_package_is_lintian_clean(project: Project, tmp_path: Path) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("lintian missing (apt-get install lintian)")
    debs = build.build(project, [], tmp_path)
    findings = lint.run_lintian(debs)
    assert findings == [], "\n".join(f.text for f in findings)


def test_every_shell_script_is_shellcheck_clean(project: Project) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck missing (apt-get install shellcheck)")
    scripts = lint.shell_scripts(project)
    assert scripts, "no maintainer scripts found"
    findings = lint.run_shellcheck(project)
    assert findings == [], "\n".join(f.text for f in findings)


def test_deb_metadata_names_version_from_changelog(project: Project, tmp_path: Path) -> None:
    debs = build.build(project, [project.packages[0].name], tmp_path)
    info = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version", "Architecture"], capture_output=True, text=True)
    assert f"Version: {project.version}" in info.stdout
    assert "Architecture: all" in info.stdout
