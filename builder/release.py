"""Start a new version: one new debian/changelog entry, the one place the version lives.

``python3 -m builder release --version X [-m TEXT]...`` checks that X is a
valid Debian version, higher than the current one, and adds an entry for
distribution ``noble`` signed by the Maintainer of debian/control.  ``make``
then builds X and publishes it beside the earlier versions.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from debian.debian_support import Version

from builder.errors import InputError
from builder.project import SUITE, Project, read_changelog, source_date_epoch_env

log = logging.getLogger(__name__)

URGENCY = "medium"

# Debian Policy 5.6.12: [epoch:]upstream[-revision]; upstream starts with a
# digit and may hold a hyphen only when a revision follows.
_EPOCH = r"(?:[0-9]+:)?"
_WITH_REVISION = re.compile(_EPOCH + r"[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+")
_NATIVE = re.compile(_EPOCH + r"[0-9][A-Za-z0-9.+~]*")


def check_version(new: str, current: str, *, native: bool) -> Version:
    """``new`` as a Version, or InputError when it is malformed or not above ``current``."""
    if not (_NATIVE.fullmatch(new) or _WITH_REVISION.fullmatch(new)):
        raise InputError(
            f"{new!r} is not a valid Debian version",
            hint="[epoch:]upstream[-revision], upstream starting with a digit, e.g. 1.2.0",
        )
    if native and not _NATIVE.fullmatch(new):
        raise InputError(
            f"{new!r} has a Debian revision, but the source format is 3.0 (native)",
            hint="use a version without '-', e.g. 1.2.0",
        )
    version = Version(new)
    if not version > Version(current):
        raise InputError(
            f"version {new} is not higher than the current {current}",
            hint=f"pick a version that dpkg sorts after {current} (check: dpkg --compare-versions NEW gt {current})",
        )
    return version


def release(project: Project, version: str, messages: list[str]) -> Path:
    """Add the debian/changelog entry for ``version``; return the changelog's path."""
    format_file = project.root / "debian" / "source" / "format"
    native = format_file.exists() and "native" in format_file.read_text(encoding="utf-8")
    check_version(version, project.version, native=native)
    path = project.changelog
    changelog = read_changelog(path)
    lines = [m.strip() for m in messages] or [f"New release {version}."]
    if not all(lines):
        raise InputError("-m: a changelog line is empty", hint='say what changed: -m "Faster order matching."')
    changelog.new_block(
        package=project.source,
        version=version,
        distributions=SUITE,
        urgency=URGENCY,
        author=project.maintainer,
        date=time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(source_date_epoch_env() or time.time())),
        changes=["", *[f"  * {m}" for m in lines], ""],
    )
    try:
        data = str(changelog).encode("utf-8")
    except UnicodeEncodeError:  # a byte that was not UTF-8 in an argument (check_arguments refuses it first)
        raise InputError("-m: a changelog line is not UTF-8", hint="give the message as UTF-8 text") from None
    tmp = path.with_name(".changelog.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("debian/changelog: %s %s (%s)", project.source, version, SUITE)
    log.info("next: make (builds %s and publishes it into dist/repo beside the earlier versions)", version)
    return path
