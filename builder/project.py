"""Load the project's inputs once into typed objects.

Package metadata lives in ``debian/`` (one place per fact); the payload of a
binary package lives in ``packages/<name>/``.  This module is the one owner
of the facts the other stages share: the version, distribution, author and
date of the newest ``debian/changelog`` entry (read here only), the
Maintainer of ``debian/control``, the suite (``SUITE``), the service
accounts our packages create, and SOURCE_DATE_EPOCH (``source_date_epoch``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path

from debian.changelog import Changelog, ChangelogParseError
from debian.deb822 import Deb822

from builder.errors import InputError

PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
MAINTAINER_SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")
# The Ubuntu release the packages are for: the distribution of a new
# debian/changelog entry and the suite of the apt repository.
SUITE = "noble"


class BuildSystem(StrEnum):
    """How a binary package is produced."""

    DEBHELPER = "debhelper"  # a binary of the top-level debian/ source
    STDEB = "stdeb"  # a Python distribution turned into a source by stdeb


@dataclass(frozen=True)
class BinaryPackage:
    name: str
    architecture: str
    build_system: BuildSystem
    payload: Path

    def maintainer_scripts(self, root: Path) -> list[Path]:
        """The maintainer scripts of this package found under ``root``/debian."""
        found = []
        for script in MAINTAINER_SCRIPTS:
            path = root / "debian" / f"{self.name}.{script}"
            if path.exists():
                found.append(path)
        return found


@dataclass(frozen=True)
class Project:
    root: Path
    source: str
    version: str
    distribution: str
    packages: tuple[BinaryPackage, ...]
    # The system accounts our packages create (sysusers.d), each with its package.
    service_users: Mapping[str, str] = field(default_factory=dict)
    maintainer: str = ""  # debian/control's Maintainer
    author: str = ""  # of the newest debian/changelog entry
    date: str = ""  # of the newest debian/changelog entry (RFC 2822)

    @property
    def changelog(self) -> Path:
        """debian/changelog, the one place the version lives (``release`` adds its entries)."""
        return self.root / "debian" / "changelog"

    @property
    def timestamp(self) -> int:
        """The newest debian/changelog entry's date, in seconds since the epoch (0 without one)."""
        return int(parsedate_to_datetime(self.date).timestamp()) if self.date else 0

    def source_date_epoch(self) -> int:
        """What the build's timestamps are: $SOURCE_DATE_EPOCH when set, else the newest changelog entry's date."""
        return source_date_epoch_env() or self.timestamp

    def package(self, name: str) -> BinaryPackage:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        known = ", ".join(p.name for p in self.packages)
        raise InputError(f"unknown package {name!r}", hint=f"known packages: {known}")

    def select(self, names: list[str]) -> tuple[BinaryPackage, ...]:
        if not names:
            return self.packages
        return tuple(self.package(n) for n in names)


def find_root(start: Path | None = None) -> Path:
    """The repository root: the nearest directory holding debian/control."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "debian" / "control").is_file() and (candidate / "builder").is_dir():
            return candidate
    raise InputError(
        "not inside the polymarket-deploy repository (no debian/control found)",
        hint="run python3 -m builder from the repository's top directory",
    )


# The last second of year 9999: time.strftime and debian/changelog dates stop there.
MAX_EPOCH = 253402300799


def source_date_epoch_env() -> int | None:
    """$SOURCE_DATE_EPOCH when it is set to a number of seconds (the one reader of that variable); unset or
    empty: None; anything else (not ASCII digits, after year 9999): InputError."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= len(str(MAX_EPOCH)) and int(value) <= MAX_EPOCH):
        shown = repr(value) if len(value) <= 40 else f"{value[:37]!r}..."
        raise InputError(
            f"SOURCE_DATE_EPOCH={shown} is not a number of seconds since 1970 (up to year 9999)",
            hint="unset it, or set it to e.g. $(date +%s)",
        )
    return int(value)


def read_changelog(path: Path) -> Changelog:
    """debian/changelog, parsed strictly; InputError when it cannot be read or has no entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        changelog = Changelog(text, strict=True)
    except ChangelogParseError as exc:
        raise InputError(f"{path}: {exc}", hint="fix the entry or use 'python3 -m builder release'") from exc
    if not changelog.package or changelog.version is None:
        raise InputError(f"{path}: no entry found")
    if changelog.date:
        try:
            parsedate_to_datetime(changelog.date)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: the newest entry's date {changelog.date!r} is not an RFC 2822 date") from exc
    return changelog


def service_users(root: Path) -> dict[str, str]:
    """The accounts our packages create, from their sysusers.d files (``u NAME ...``): name -> package."""
    found: dict[str, str] = {}
    sources = [(p, p.parent.parent.name) for p in root.glob("packages/*/sysusers.d/*.conf")]
    sources += [(p, p.stem) for p in root.glob("packages/*/debian-overlay/*.sysusers")]
    sources += [(p, p.stem) for p in root.glob("debian/*.sysusers")]
    for path, package in sorted(sources):
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) > 1 and words[0] in ("u", "u!"):
                found[words[1]] = package
    return found


def _stdeb_packages(root: Path) -> list[BinaryPackage]:
    """Python distributions under packages/ that stdeb turns into sources."""
    found = []
    for setup in sorted((root / "packages").glob("*/setup.py")):
        name = setup.parent.name
        if (setup.parent / "debian-overlay").is_dir():
            found.append(BinaryPackage(name, "all", BuildSystem.STDEB, setup.parent))
    return found


def load_project(root: Path) -> Project:
    control = root / "debian" / "control"
    try:
        paragraphs = list(Deb822.iter_paragraphs(control.read_text(encoding="utf-8")))
    except OSError as exc:
        raise InputError(f"{control}: cannot read: {exc.strerror}") from exc
    if not paragraphs or "Source" not in paragraphs[0]:
        raise InputError(f"{control}: the first paragraph must have a Source field")
    source_name = paragraphs[0]["Source"]
    maintainer = paragraphs[0].get("Maintainer", "")
    if not maintainer:
        raise InputError(f"{control}: the source paragraph has no Maintainer field")
    packages: list[BinaryPackage] = []
    for para in paragraphs[1:]:
        name = para.get("Package")
        if not name:
            raise InputError(f"{control}: a binary paragraph has no Package field")
        if not PACKAGE_NAME.fullmatch(name):
            raise InputError(f"{control}: invalid package name {name!r}")
        arch = para.get("Architecture", "")
        if arch != "all":
            raise InputError(f"{control}: {name}: Architecture must be 'all', not {arch!r}")
        payload = root / "packages" / name
        if not payload.is_dir():
            raise InputError(f"{control}: {name}: its payload directory packages/{name}/ is missing")
        packages.append(BinaryPackage(name, arch, BuildSystem.DEBHELPER, payload))
    changelog = read_changelog(root / "debian" / "changelog")
    if changelog.package != source_name:
        raise InputError(f"debian/changelog names source {changelog.package!r}, debian/control {source_name!r}")
    packages.extend(_stdeb_packages(root))
    names = [p.name for p in packages]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(f"package defined twice: {', '.join(sorted(dupes))}")
    return Project(
        root,
        source_name,
        str(changelog.version),
        changelog.distributions or SUITE,
        tuple(packages),
        service_users(root),
        maintainer=str(maintainer),
        author=changelog.author or "",
        date=changelog.date or "",
    )
