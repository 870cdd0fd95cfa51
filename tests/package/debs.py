"""Shared helpers of the package tests: find (or build) a .deb and open it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAIN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def need(tool: str) -> None:
    """Skip, naming the tool, when it is not installed."""
    if shutil.which(tool, path=PLAIN_ENV["PATH"]) is None:
        pytest.skip(f"{tool} is not installed")


def built_deb(package: str) -> Path:
    """dist/PACKAGE_*.deb, built by the builder when missing."""
    found = sorted((REPO / "dist").glob(f"{package}_*_all.deb"))
    if not found:
        need("dpkg-buildpackage")
        subprocess.run(["/usr/bin/python3", "-m", "builder", "build", package], cwd=REPO, env=PLAIN_ENV, check=True)
        found = sorted((REPO / "dist").glob(f"{package}_*_all.deb"))
    assert found, f"the builder did not produce {package}"
    return found[-1]


@contextlib.contextmanager
def control_dir(deb: Path) -> Iterator[Path]:
    """The control members (DEBIAN/) of ``deb``, extracted to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-e", str(deb), tmp], check=True)
        yield Path(tmp)


def data_members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """Every file of ``deb``'s data.tar by absolute path, with its mode and owner."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/data.tar", "wb") as out:
            subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, stdout=out)
        with tarfile.open(f"{tmp}/data.tar") as tar:
            return {m.name.removeprefix("."): m for m in tar.getmembers()}
