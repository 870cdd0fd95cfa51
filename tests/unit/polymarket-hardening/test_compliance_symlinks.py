"""polymarket-compliance's reports never go through a link in their directory or the old one (issue 7,
item 11); canary: tests/unit/conftest.py; in a booted container: tests/system/test_symlinks.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import payload
from tests.payload import unchanged

compliance_module = payload.compliance


def test_compliance_report_dir_is_not_the_bots() -> None:
    mod = compliance_module()
    assert Path("/var/lib/polymarket-hardening/compliance") == mod.REPORT_DIR
    assert not str(mod.REPORT_DIR).startswith("/var/lib/polymarket/")


def test_compliance_migrates_old_reports_without_following_links(tmp_path: Path, canary: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    mod = compliance_module()
    monkeypatch.setattr(mod, "REPORT_DIR", tmp_path / "hardening" / "compliance")
    old = tmp_path / "bot" / "compliance"
    old.mkdir(parents=True)
    monkeypatch.setattr(mod, "OLD_REPORT_DIR", old)
    (old / "compliance-20250101T060000Z.txt").write_text("old report\n")
    (old / "compliance-20250102T060000Z.txt").symlink_to(canary)
    (old / ".latest.txt.tmp").symlink_to(canary)
    controls = [mod.Control("a", "a", "1", "1", mod.Status.PASS)]
    mod.write_reports(controls, mod.Config(threshold=95, keep=30), "now", "20260101T060000Z")
    new = tmp_path / "hardening" / "compliance"
    assert unchanged(canary)
    assert (new / "compliance-20250101T060000Z.txt").read_text() == "old report\n"
    assert not (new / "compliance-20250102T060000Z.txt").exists()
    assert not old.exists()
    assert new.stat().st_mode & 0o777 == 0o750
    assert all(p.stat().st_mode & 0o777 == 0o640 for p in new.iterdir())
    # The old path a link to a directory: only the link goes.
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("keep")
    old.symlink_to(other)
    mod.write_reports(controls, mod.Config(threshold=95, keep=30), "now", "20260102T060000Z")
    assert not os.path.lexists(old) and (other / "f").read_text() == "keep" and os.listdir(other) == ["f"]


def test_compliance_refuses_a_linked_report_dir(tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = compliance_module()
    (tmp_path / "hardening").mkdir(mode=0o755)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "hardening" / "compliance").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(mod, "REPORT_DIR", tmp_path / "hardening" / "compliance")
    monkeypatch.setattr(mod, "OLD_REPORT_DIR", tmp_path / "none")
    with pytest.raises(mod.UsageError, match="is not a directory"):
        mod.write_reports([], mod.Config(threshold=95, keep=3), "now", "20260101T060000Z")
    assert os.listdir(tmp_path / "elsewhere") == []
