"""Turn a Python distribution under packages/ into a .deb through stdeb.

stdeb generates the Debian source (dh + pybuild) from the distribution; the
files in ``packages/<name>/debian-overlay/`` (systemd unit, maintainer
scripts, conffiles...) are laid over the generated ``debian/`` before
dpkg-buildpackage runs.  The version is the top-level debian/changelog's, so a
release bumps every package in one place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from builder.errors import BuilderError, CommandFailed
from builder.project import BinaryPackage, Project
from builder.run import run

log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", "deb_dist", "debian-overlay")


def build(project: Project, pkg: BinaryPackage, dist: Path) -> Path:
    workdir = project.root / "build" / pkg.name
    if workdir.exists():
        shutil.rmtree(workdir)
    src = workdir / "src"
    shutil.copytree(pkg.payload, src, ignore=IGNORE)
    log.info("generating the Debian source of %s with stdeb", pkg.name)
    run(
        [
            SYSTEM_PYTHON,
            "setup.py",
            "--command-packages=stdeb.command",
            "sdist_dsc",
            "--package3",
            pkg.name,
            "--forced-upstream-version",
            project.version.split("-")[0],
            "--maintainer",
            "Polymarket Deploy Team <ops@polymarket-deploy.invalid>",
            "--suite",
            project.distribution or "noble",
            "--with-python3",
            "True",
            "--no-python2-scripts",
            "True",
            "--dist-dir",
            str(workdir / "deb_dist"),
        ],
        cwd=src,
    )
    trees = [p for p in (workdir / "deb_dist").iterdir() if p.is_dir()]
    if len(trees) != 1:
        raise BuilderError(f"stdeb produced {len(trees)} source trees for {pkg.name}, expected one")
    tree = trees[0]
    overlay = pkg.payload / "debian-overlay"
    shutil.copytree(overlay, tree / "debian", dirs_exist_ok=True)
    log.info("building %s", pkg.name)
    proc = run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=tree, check=False)
    logfile = project.root / "build" / f"{pkg.name}.build.log"
    logfile.write_text((proc.stdout or "") + (proc.stderr or ""), encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise CommandFailed(["dpkg-buildpackage"], proc.returncode, tail, hint=f"the full log is {logfile}")
    debs = sorted((workdir / "deb_dist").glob(f"{pkg.name}_*_all.deb"))
    if not debs:
        raise BuilderError(f"dpkg-buildpackage did not produce a .deb for {pkg.name}", hint=f"see {logfile}")
    target = dist / debs[-1].name
    shutil.copy2(debs[-1], target)
    log.info("built %s", target)
    return target
