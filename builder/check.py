"""Validate every input without building anything."""

from __future__ import annotations

import logging
from pathlib import Path

from debian.deb822 import Deb822

from builder.errors import InputError
from builder.project import Project

log = logging.getLogger(__name__)


def check_maintainer_scripts(project: Project) -> None:
    for pkg in project.packages:
        for script in pkg.maintainer_scripts(project.root):
            lines = script.read_text(encoding="utf-8").splitlines()
            rel = script.relative_to(project.root)
            if not lines or lines[0] not in ("#!/bin/sh", "#!/bin/sh -e"):
                raise InputError(f"{rel}:1: a maintainer script must start with #!/bin/sh")
            if not any(line.strip() == "set -e" for line in lines) and lines[0] != "#!/bin/sh -e":
                raise InputError(f"{rel}: a maintainer script must 'set -e'")
            if "#DEBHELPER#" not in script.read_text(encoding="utf-8"):
                raise InputError(
                    f"{rel}: the #DEBHELPER# token is missing", hint="debhelper inserts its snippets there"
                )


def check_templates(project: Project) -> None:
    for pkg in project.packages:
        path = project.root / "debian" / f"{pkg.name}.templates"
        if not path.exists():
            continue
        for n, para in enumerate(Deb822.iter_paragraphs(path.read_text(encoding="utf-8")), 1):
            for field in ("Template", "Type"):
                if field not in para:
                    raise InputError(f"{path.relative_to(project.root)}: template #{n} has no {field} field")


def check_install_files(project: Project) -> None:
    """Every source path named in debian/<pkg>.install must exist."""
    for pkg in project.packages:
        path = project.root / "debian" / f"{pkg.name}.install"
        if not path.exists():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            sources = words[:-1] if len(words) > 1 else words
            for src in sources:
                if not any(project.root.glob(src)):
                    raise InputError(f"{path.relative_to(project.root)}:{lineno}: {src} does not exist")


def check(project: Project, extra: list[Path] | None = None) -> None:
    log.info("checking %s %s: %d packages", project.source, project.version, len(project.packages))
    check_maintainer_scripts(project)
    check_templates(project)
    check_install_files(project)
    from builder import autoinstall, packages

    packages.check(project)

    autoinstall.check(project, project.root / "autoinstall" / "inventory.yaml")
    log.info("all inputs valid")
