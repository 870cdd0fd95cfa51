"""Turn a Python distribution under packages/ into a .deb through stdeb.

stdeb (``setup.py --command-packages=stdeb.command sdist_dsc``) generates the
Debian source: ``debian/rules`` with dh + pybuild, the Python dependencies
(``${python3:Depends}``) and the description from the distribution's
metadata.  Its skeleton predates current Debian practice, so the builder then
normalises it, from data, never by hand:

- the version and date come from the top-level ``debian/changelog`` (one
  place for every package's version; the date makes the build reproducible),
  and the source is native like the top-level one;
- ``debhelper-compat (= 13)``, the current Standards-Version, no
  ``Homepage: None``, no ``debian/compat``, no ``debian/watch``;
- the runtime dependencies listed in ``packages/<name>/DEPENDS`` (Ubuntu
  archive packages only) are added to ``Depends``;
- ``debian-overlay/control.in`` fields win over the generated binary
  paragraph, ``debian-overlay/rules.append`` is appended to the generated
  ``debian/rules``;
- the other files in ``packages/<name>/debian-overlay/`` (systemd units,
  maintainer scripts, tmpfiles, lintian overrides, man page...) are laid over
  the generated ``debian/``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from debian.changelog import Changelog
from debian.deb822 import Deb822

from builder.errors import BuilderError, CommandFailed, InputError
from builder.project import BinaryPackage, Project
from builder.run import run

log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
STANDARDS_VERSION = "4.6.2"
BUILD_DEPENDS = (
    "debhelper-compat (= 13), dh-python, dh-sequence-installsysusers, python3-all, python3-setuptools,"
    " pybuild-plugin-pyproject"
)
IGNORE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "deb_dist", "debian-overlay", "bench", ".mypy_cache"
)


def runtime_depends(pkg: BinaryPackage) -> list[str]:
    path = pkg.payload / "DEPENDS"
    if not path.exists():
        return []
    deps = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [d for d in deps if d]


def _set_python_version(pyproject: Path, version: str) -> None:
    """The distribution carries the release's version too (one place: debian/changelog)."""
    upstream = version.split("-")[0].split("~")[0]
    lines = pyproject.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("version = "):
            lines[i] = f'version = "{upstream}"\n'
            break
    else:
        raise InputError(f"{pyproject}: no 'version = ' line to set")
    pyproject.write_text("".join(lines), encoding="utf-8")


def _normalise(project: Project, pkg: BinaryPackage, tree: Path) -> None:
    deb = tree / "debian"
    for stale in ("compat", "watch"):
        (deb / stale).unlink(missing_ok=True)
    (deb / "source" / "format").write_text("3.0 (native)\n", encoding="utf-8")
    shutil.copy2(project.root / "debian" / "copyright", deb / "copyright")

    paragraphs = list(Deb822.iter_paragraphs((deb / "control").read_text(encoding="utf-8")))
    if len(paragraphs) != 2:
        raise BuilderError(f"stdeb generated {len(paragraphs)} control paragraphs for {pkg.name}, expected 2")
    src, binary = paragraphs
    src["Build-Depends"] = BUILD_DEPENDS
    src["Standards-Version"] = STANDARDS_VERSION
    src["Rules-Requires-Root"] = "no"
    src["Section"] = "net"
    for stale in ("Homepage", "X-Python3-Version"):
        if stale in src:
            del src[stale]
    depends = ["${misc:Depends}", "${python3:Depends}", *runtime_depends(pkg)]
    binary["Depends"] = ", ".join(depends)
    binary["Section"] = "net"
    overlay_control = pkg.payload / "debian-overlay" / "control.in"
    if overlay_control.exists():
        # Fields the package states itself (Description, Recommends...) win.
        for key, value in Deb822(overlay_control.read_text(encoding="utf-8")).items():
            binary[key] = value
    (deb / "control").write_text(f"{src.dump()}\n{binary.dump()}", encoding="utf-8")

    entry = Changelog()
    entry.new_block(
        package=pkg.name,
        version=project.version,
        distributions=project.distribution,
        urgency="medium",
        author=project.author,
        date=project.date,
    )
    entry.add_change("")
    entry.add_change(f"  * Built by stdeb from packages/{pkg.name}; see the polymarket-deploy {project.version}")
    entry.add_change("    changelog for what changed.")
    entry.add_change("")
    (deb / "changelog").write_text(str(entry), encoding="utf-8")

    # The package's own additions to stdeb's debian/rules (overrides).
    extra = pkg.payload / "debian-overlay" / "rules.append"
    if extra.exists():
        with open(deb / "rules", "a", encoding="utf-8") as rules:
            rules.write(extra.read_text(encoding="utf-8"))
    # Units in /usr/lib/systemd/system, as in the other packages (debian/usr-units.mk says why).
    with open(deb / "rules", "a", encoding="utf-8") as rules:
        rules.write("\n" + (project.root / "debian" / "usr-units.mk").read_text(encoding="utf-8"))


def build(project: Project, pkg: BinaryPackage, dist: Path) -> Path:
    workdir = project.root / "build" / pkg.name
    if workdir.exists():
        shutil.rmtree(workdir)
    src = workdir / "src"
    shutil.copytree(pkg.payload, src, ignore=IGNORE)
    _set_python_version(src / "pyproject.toml", project.version)
    log.info("generating the Debian source of %s with stdeb", pkg.name)
    run(
        [
            SYSTEM_PYTHON, "setup.py", "--command-packages=stdeb.command", "sdist_dsc",
            "--package3", pkg.name,
            "--forced-upstream-version", project.version.split("-")[0],
            "--maintainer", project.maintainer,
            "--suite", project.distribution,
            "--compat", "13",
            "--with-python3", "True", "--no-python2-scripts", "True",
            "--dist-dir", str(workdir / "deb_dist"),
        ],
        cwd=src,
    )  # fmt: skip
    trees = [p for p in (workdir / "deb_dist").iterdir() if p.is_dir()]
    if len(trees) != 1:
        raise BuilderError(f"stdeb produced {len(trees)} source trees for {pkg.name}, expected one")
    tree = trees[0]
    overlay = pkg.payload / "debian-overlay"
    if not overlay.is_dir():
        raise InputError(f"packages/{pkg.name}/debian-overlay/ is missing")
    _normalise(project, pkg, tree)
    shutil.copytree(
        overlay, tree / "debian", dirs_exist_ok=True, ignore=shutil.ignore_patterns("control.in", "rules.append")
    )
    log.info("building %s %s", pkg.name, project.version)
    proc = run(["dpkg-buildpackage", "-b", "-us", "-uc"], cwd=tree, check=False)
    logfile = project.root / "build" / f"{pkg.name}.build.log"
    logfile.write_text((proc.stdout or "") + (proc.stderr or ""), encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise CommandFailed(["dpkg-buildpackage"], proc.returncode, tail, hint=f"the full log is {logfile}")
    deb = workdir / "deb_dist" / f"{pkg.name}_{project.version}_all.deb"
    if not deb.exists():
        raise BuilderError(f"dpkg-buildpackage did not produce {deb.name}", hint=f"see {logfile}")
    target = dist / deb.name
    shutil.copy2(deb, target)
    log.info("built %s", target)
    return target
