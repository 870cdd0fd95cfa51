"""Build the binary packages with dpkg-buildpackage, reproducibly.

The top-level ``debian/`` source is copied, with only what the build needs,
into ``build/`` so the work tree is never written to; the resulting .debs are
collected in ``dist/``.  SOURCE_DATE_EPOCH comes from debian/changelog (set by
dpkg-buildpackage), so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from builder import stdeb
from builder.errors import BuilderError, CommandFailed
from builder.project import BinaryPackage, BuildSystem, Project
from builder.run import run

log = logging.getLogger(__name__)

# What of the work tree the top-level source package needs.
SOURCE_PARTS = ("debian", "packages")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", "*.egg-info", "build", "dist")


def _stage_source(project: Project, workdir: Path) -> Path:
    srcdir = workdir / f"{project.source}-{project.version}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for part in SOURCE_PARTS:
        shutil.copytree(project.root / part, srcdir / part, ignore=IGNORE, symlinks=True)
    return srcdir


def _deb_name(pkg: str, version: str) -> str:
    return f"{pkg}_{version}_all.deb"


def build_debhelper(project: Project, packages: tuple[BinaryPackage, ...], dist: Path) -> list[Path]:
    """Build the top-level source and copy the requested .debs into ``dist``."""
    workdir = project.root / "build" / project.source
    srcdir = _stage_source(project, workdir)
    log.info("building %s %s (%s)", project.source, project.version, ", ".join(p.name for p in packages))
    logfile = project.root / "build" / f"{project.source}.build.log"
    proc = run(["dpkg-buildpackage", "--build=all", "-us", "-uc"], cwd=srcdir, check=False)
    logfile.write_text((proc.stdout or "") + (proc.stderr or ""), encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise CommandFailed(["dpkg-buildpackage"], proc.returncode, tail, hint=f"the full log is {logfile}")
    out = []
    for pkg in packages:
        deb = workdir / _deb_name(pkg.name, project.version)
        if not deb.exists():
            raise BuilderError(f"dpkg-buildpackage did not produce {deb.name}", hint=f"see {logfile}")
        target = dist / deb.name
        shutil.copy2(deb, target)
        log.info("built %s", target.relative_to(project.root) if target.is_relative_to(project.root) else target)
        out.append(target)
    return out


def build(project: Project, names: list[str], dist: Path) -> list[Path]:
    """Build the named packages (all when ``names`` is empty) into ``dist``."""
    selected = project.select(names)
    dist.mkdir(parents=True, exist_ok=True)
    built: list[Path] = []
    debhelper = tuple(p for p in selected if p.build_system is BuildSystem.DEBHELPER)
    if debhelper:
        built += build_debhelper(project, debhelper, dist)
    for pkg in selected:
        if pkg.build_system is BuildSystem.STDEB:
            built.append(stdeb.build(project, pkg, dist))
    return built
