"""Fixtures of the package tests: a module sets PACKAGE and gets its .deb opened."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.package import debs


@pytest.fixture(scope="module")
def deb(request: pytest.FixtureRequest) -> Path:
    """dist/PACKAGE_*.deb of the requesting module's PACKAGE (built when missing)."""
    return debs.built_deb(request.module.PACKAGE)


@pytest.fixture(scope="module")
def control(deb: Path) -> Iterator[Path]:
    with debs.control_dir(deb) as path:
        yield path


@pytest.fixture(scope="module")
def members(deb: Path) -> dict[str, tarfile.TarInfo]:
    return debs.data_members(deb)
