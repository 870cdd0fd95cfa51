"""``builder release``: the version check and the new debian/changelog entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from debian.changelog import Changelog

from builder import release
from builder.errors import InputError
from builder.project import Project

CHANGELOG = """\
polymarket-deploy (1.0.0) noble; urgency=medium

  * First release.

 -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Wed, 25 Nov 2026 12:00:00 +0000
"""
CONTROL = "Source: polymarket-deploy\nMaintainer: Polymarket Deploy Team <ops@polymarket-deploy.invalid>\n"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "debian" / "source").mkdir(parents=True)
    (tmp_path / "debian" / "changelog").write_text(CHANGELOG)
    (tmp_path / "debian" / "control").write_text(CONTROL)
    (tmp_path / "debian" / "source" / "format").write_text("3.0 (native)\n")
    return Project(tmp_path, "polymarket-deploy", "1.0.0", "noble", ())


@pytest.mark.parametrize("new", ["1.0.1", "1.1", "2.0.0~rc1", "1.0.0+hotfix1", "1:0.1", "1.0.0.1"])
def test_valid_higher_versions(new: str) -> None:
    assert str(release.check_version(new, "1.0.0", native=True)) == new


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("1.0.0", "not higher than the current 1.0.0"),
        ("0.9", "not higher than the current 1.0.0"),
        ("1.0.0~rc1", "not higher than the current 1.0.0"),  # ~ sorts before the release
        ("v1.0.1", "not a valid Debian version"),
        ("1.0 1", "not a valid Debian version"),
        ("", "not a valid Debian version"),
        ("1.0.1_2", "not a valid Debian version"),
        ("a:1.0", "not a valid Debian version"),
        ("1.0.1-1", "source format is 3.0 (native)"),
    ],
)
def test_bad_versions_are_one_line_errors(new: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        release.check_version(new, "1.0.0", native=True)
    assert "\n" not in exc.value.message


def test_revision_allowed_for_non_native() -> None:
    assert str(release.check_version("1.0.1-1", "1.0.0-1", native=False)) == "1.0.1-1"
    assert str(release.check_version("1.1-2-1", "1.0.0-1", native=False)) == "1.1-2-1"


def test_release_adds_an_entry(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    path = release.release(project, "1.1.0", ["Faster order matching.", "Fix the audit report."])
    text = path.read_text()
    changelog = Changelog(text, strict=True)
    assert str(changelog.version) == "1.1.0"
    assert changelog.distributions == "noble"
    assert changelog.urgency == "medium"
    assert changelog.author == "Polymarket Deploy Team <ops@polymarket-deploy.invalid>"
    assert changelog.date == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert [str(v) for v in changelog.versions] == ["1.1.0", "1.0.0"]
    assert text.startswith(
        "polymarket-deploy (1.1.0) noble; urgency=medium\n\n"
        "  * Faster order matching.\n  * Fix the audit report.\n\n"
        " -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Fri, 15 Jan 2027 08:00:00 +0000\n\n"
        "polymarket-deploy (1.0.0) noble;"
    )
    assert text.endswith(CHANGELOG)


def test_release_without_message_and_refusal_leaves_changelog(project: Project) -> None:
    release.release(project, "1.0.1", [])
    changelog = project.root / "debian" / "changelog"
    assert "  * New release 1.0.1." in changelog.read_text()
    before = changelog.read_text()
    # the project object still says 1.0.0 but the check is against what it was loaded with;
    # a lower version than that is refused and nothing is written.
    with pytest.raises(InputError):
        release.release(project, "0.9", [])
    assert changelog.read_text() == before
