"""Fixtures for system tests: the cached rootfs, booted containers, built debs."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import harness

_names = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every system test; on a suite other than trixie, leave out the modules that choose their
    suites themselves (``SUITE_INDEPENDENT = True``, e.g. test_minimal_host.py builds on both already)."""
    kept, left_out = [], []
    for item in items:
        if "tests/system/" in str(item.path):
            item.add_marker(pytest.mark.system)
            if harness.SUITE != "trixie" and getattr(getattr(item, "module", None), "SUITE_INDEPENDENT", False):
                left_out.append(item)
                continue
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(scope="session")
def rootfs() -> Path:
    missing = harness.missing_prerequisites()
    if missing:
        pytest.skip(f"system tests need: {', '.join(missing)}")
    return harness.rootfs_tarball()


@pytest.fixture(scope="session")
def dist() -> Path:
    """dist/ with the built .debs of the current version (built when missing)."""
    d = harness.REPO / "dist"
    if not list(d.glob("*.deb")):
        subprocess.run(["make", "-C", str(harness.REPO), "build"], check=True)
    return d


def deb(dist: Path, package: str) -> Path:
    found = sorted(dist.glob(f"{package}_*_all.deb"))
    if not found:
        raise harness.HarnessError(f"{package} is not built in {dist}")
    return found[-1]


@pytest.fixture
def container(rootfs: Path) -> Iterator[harness.Container]:
    """A freshly booted trixie container with a private network."""
    with harness.booted(rootfs, name=f"pmtest{next(_names)}") as c:
        yield c


@pytest.fixture
def tree(rootfs: Path) -> Iterator[Path]:
    """An extracted, not booted, trixie tree (for plain-chroot installs)."""
    with harness.fresh_tree(rootfs) as root:
        yield root
