"""Attack review of harness.require_version (22c3e7a): a skip is for a suite whose package is too old for ours,
never for a tree that lacks the package: the rootfs list (harness.ROOTFS_PACKAGES) installs restic and
prometheus-alertmanager in every suite, so a tree without one is broken, and on trixie a skip there would hide
every test of polymarket-backup (and test_autoinstall_chroot's role would drop polymarket-backup silently).
No container: a tree of one dpkg status file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system import harness

STATUS = """Package: restic
Status: {status}
Version: {version}
Description: backup
 continuation: line

"""


def tree(tmp_path: Path, status: str) -> Path:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(status)
    return tmp_path


def test_a_new_enough_package_returns_its_version(tmp_path: Path) -> None:
    where = tree(tmp_path, STATUS.format(status="install ok installed", version="0.18.0-1"))
    assert harness.require_version(where, "restic", "0.16", "why") == "0.18.0-1"


def test_an_older_package_skips_naming_both_versions(tmp_path: Path) -> None:
    where = tree(tmp_path, STATUS.format(status="install ok installed", version="0.14.0-1+b5"))
    with pytest.raises(pytest.skip.Exception, match=r"restic >= 0\.16.*0\.14\.0-1\+b5"):
        harness.require_version(where, "restic", "0.16", "why")


@pytest.mark.parametrize("status", ["", STATUS.format(status="deinstall ok config-files", version="0.18.0-1"),
                                    STATUS.format(status="install ok half-installed", version="0.18.0-1")])
def test_a_tree_without_the_package_fails_rather_than_skips(tmp_path: Path, status: str) -> None:
    where = tree(tmp_path, status)
    try:
        harness.require_version(where, "restic", "0.16", "why")
    except pytest.fail.Exception as exc:
        assert "restic" in str(exc)
    except pytest.skip.Exception as exc:
        raise AssertionError(f"skipped where the tree lacks restic: {exc}") from None
    else:
        raise AssertionError("returned where the tree lacks restic")
