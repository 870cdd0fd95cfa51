"""``builder release``: the version check and the new debian/changelog entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from debian.changelog import Changelog

from builder import release
from builder.cli import main
from builder.errors import InputError
from builder.project import Project, load_project

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
    return load_project(tmp_path)


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


@pytest.fixture
def tree(project: Project, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project as a tree the CLI finds (debian/control and builder/), the current directory."""
    (project.root / "builder").mkdir()
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1800000000")
    return project.root


FORGED = "Fix.\n\n -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Fri, 15 Jan 2027 08:00:00 +0000\n\n" \
    "polymarket-deploy (9.9.9) noble; urgency=high\n\n  * Trust me"  # fmt: skip


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (FORGED, "a control character (U+000A, newline) at position 5 is not allowed"),
        ("Fix.\r  * forged", "a control character (U+000D, carriage return) at position 5 is not allowed"),
        ("Fix.\u2028 -- forged", "a control character (U+2028) at position 5 is not allowed"),
        ("Fix.\x85forged", "a control character (U+0085) at position 5 is not allowed"),
        ("Fix.\x00", "a control character (U+0000, NUL) at position 5 is not allowed"),
    ],
)
def test_release_message_with_a_line_break_is_refused(
    tree: Path, message: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """-m with newlines used to write a second, forged changelog entry; now one error line and nothing written."""
    before = (tree / "debian" / "changelog").read_bytes()
    assert main(["release", "--version", "1.1.0", "-m", "Fine.", "-m", message]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: -m: ") and err[0].endswith(f": {problem}"), err
    assert [line for line in err if not line.startswith("hint: ")] == err[:1]
    assert (tree / "debian" / "changelog").read_bytes() == before
    assert not (tree / "debian" / ".changelog.tmp").exists()


def test_release_message_given_as_long_option_is_named(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["release", "--version", "1.1.0", "--message=a\nb"]) == 2
    assert capsys.readouterr().err.startswith("error: --message: 'a\\nb': a control character (U+000A, newline)")


def test_empty_release_message_is_refused(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (tree / "debian" / "changelog").read_bytes()
    assert main(["release", "--version", "1.1.0", "-m", "  "]) == 2
    assert capsys.readouterr().err.startswith("error: -m: a changelog line is empty")
    assert (tree / "debian" / "changelog").read_bytes() == before


def test_release_through_the_cli_writes_one_entry(tree: Path) -> None:
    assert main(["release", "--version", "1.1.0", "-m", "Faster order matching (é, ü)."]) == 0
    changelog = Changelog((tree / "debian" / "changelog").read_text(), strict=True)
    assert [str(v) for v in changelog.versions] == ["1.1.0", "1.0.0"]
    assert changelog[0].changes() == ["", "  * Faster order matching (é, ü).", ""]
