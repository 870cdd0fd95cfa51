"""The builder's input loading, error reporting and command running."""

from __future__ import annotations

import re
import shlex
import shutil
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from builder import check, cli
from builder.errors import CommandFailed, InputError, ToolMissing
from builder.project import SUITE, BuildSystem, find_root, load_project
from builder.run import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository's inputs that a test may break."""
    dst = tmp_path / "repo"
    for part in ("debian", "packages", "builder"):
        shutil.copytree(REPO / part, dst / part, ignore=shutil.ignore_patterns("__pycache__", "build", "dist"))
    return dst


def test_the_real_project_loads_with_every_package_from_debian_control() -> None:
    project = load_project(REPO)
    assert project.source == "polymarket-deploy"
    names = [p.name for p in project.packages]
    assert "polymarket-hardening" in names
    assert all(p.architecture == "all" for p in project.packages)
    hardening = project.package("polymarket-hardening")
    assert hardening.build_system is BuildSystem.DEBHELPER
    assert hardening.payload == REPO / "packages" / "polymarket-hardening"


def test_unknown_package_names_the_known_ones() -> None:
    project = load_project(REPO)
    with pytest.raises(InputError) as err:
        project.select(["polymarket-nope"])
    assert "polymarket-nope" in err.value.message
    assert err.value.hint is not None and "polymarket-hardening" in err.value.hint


def test_missing_payload_directory_is_reported(repo_copy: Path) -> None:
    shutil.rmtree(repo_copy / "packages" / "polymarket-hardening")
    with pytest.raises(InputError, match=r"packages/polymarket-hardening/ is missing"):
        load_project(repo_copy)


def test_arch_dependent_package_is_refused(repo_copy: Path) -> None:
    control = repo_copy / "debian" / "control"
    control.write_text(control.read_text().replace("Architecture: all", "Architecture: amd64", 1))
    with pytest.raises(InputError, match="Architecture must be 'all'"):
        load_project(repo_copy)


def test_changelog_naming_another_source_is_refused(repo_copy: Path) -> None:
    cl = repo_copy / "debian" / "changelog"
    cl.write_text(cl.read_text().replace("polymarket-deploy (", "other-source (", 1))
    with pytest.raises(InputError, match="names source 'other-source'"):
        load_project(repo_copy)


def test_broken_changelog_is_one_line_with_hint(repo_copy: Path) -> None:
    (repo_copy / "debian" / "changelog").write_text("this is not a changelog\n")
    with pytest.raises(InputError) as err:
        load_project(repo_copy)
    assert "\n" not in err.value.message


def test_find_root_outside_the_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not inside the polymarket-deploy repository"):
        find_root(tmp_path)


def test_maintainer_script_without_set_e_is_refused(repo_copy: Path) -> None:
    project = load_project(repo_copy)
    script = next(iter(project.package("polymarket-hardening").maintainer_scripts(repo_copy)))
    script.write_text("#!/bin/sh\n#DEBHELPER#\nexit 0\n")
    with pytest.raises(InputError, match="must 'set -e'"):
        check.check(load_project(repo_copy))


def test_maintainer_script_without_debhelper_token_is_refused(repo_copy: Path) -> None:
    project = load_project(repo_copy)
    script = next(iter(project.package("polymarket-hardening").maintainer_scripts(repo_copy)))
    script.write_text("#!/bin/sh\nset -e\nexit 0\n")
    with pytest.raises(InputError, match="#DEBHELPER#"):
        check.check(load_project(repo_copy))


def test_install_file_naming_a_missing_source_is_refused(repo_copy: Path) -> None:
    install = repo_copy / "debian" / "polymarket-hardening.install"
    install.write_text(install.read_text() + "packages/polymarket-hardening/no-such-file usr/share/x/\n")
    with pytest.raises(InputError, match="no-such-file does not exist"):
        check.check(load_project(repo_copy))


def test_run_names_the_package_of_a_missing_tool() -> None:
    with pytest.raises(ToolMissing) as err:
        run(["xorriso-does-not-exist"])
    assert err.value.hint == "apt-get install xorriso-does-not-exist"


def test_run_failure_carries_exit_code_and_stderr_tail() -> None:
    with pytest.raises(CommandFailed) as err:
        run(["sh", "-c", "echo first >&2; echo last-line >&2; exit 7"])
    assert err.value.returncode == 7
    assert err.value.stderr_tail.splitlines()[-1] == "last-line"
    assert "\n" not in err.value.message


def test_run_closes_stdin_and_uses_c_utf8() -> None:
    out = run(["sh", "-c", 'read x || echo "eof $LC_ALL"'])
    assert out.stdout.strip() == "eof C.UTF-8"


def test_cli_bad_package_is_one_error_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert cli.main(["build", "polymarket-nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: unknown package 'polymarket-nope'"
    assert err[1].startswith("hint: known packages: ")
    assert not any("Traceback" in line for line in err)


def test_cli_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for sub in ("check", "build", "lint", "publish", "release", "autoinstall"):
        assert sub in out


def test_cli_check_passes_on_the_real_repository(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert cli.main(["check"]) == 0
    assert "all inputs valid" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--dist", "{dist}", "build", "polymarket-bot\n"],
            "error: argument 4: 'polymarket-bot\\n': a control character",
        ),
        (
            ["--dist", "{dist}", "autoinstall", "--inventory", "i\x00.yaml"],
            "error: --inventory: 'i\\x00.yaml': a control",
        ),
        (["--dist={dist}\u2029x", "list"], "error: --dist: '"),
    ],
)
def test_every_argument_is_one_printable_line(
    argv: list[str], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check runs on the raw argv before any command: exit 2, one line, nothing built or written."""
    assert cli.main([a.replace("{dist}", str(tmp_path / "dist")) for a in argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(error), err
    assert "a control character (U+" in err[0]
    assert not (tmp_path / "dist").exists()


def test_the_changelog_and_control_facts_are_parsed_once_into_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    from debian.changelog import Changelog

    root = find_root(Path(__file__))
    newest = next(iter(Changelog((root / "debian" / "changelog").read_text())))
    project = load_project(root)
    assert project.version == str(newest.version) and project.distribution == newest.distributions == SUITE
    assert project.author == newest.author and project.date == newest.date
    assert project.maintainer == "Polymarket Deploy Team <ops@polymarket-deploy.invalid>"
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert project.source_date_epoch() == project.timestamp == int(parsedate_to_datetime(newest.date).timestamp())
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert project.source_date_epoch() == 1700000000


def test_shared_facts_have_one_owner() -> None:
    """The suite, the Maintainer, debian/changelog and $SOURCE_DATE_EPOCH are read in project.py only."""
    owner_only = [
        re.compile(r'"noble"'),
        re.compile(r'"Maintainer"'),
        re.compile(r'"debian" / "changelog"'),
        re.compile(r'environ(\.get\(|\[)"SOURCE_DATE_EPOCH"'),
        re.compile(r"Changelog\(\(?[a-z_.]*(root|path)"),
    ]
    root = find_root(Path(__file__))
    found = [
        f"{path.name}: {pattern.pattern}"
        for path in sorted((root / "builder").glob("*.py"))
        if path.name != "project.py"
        for pattern in owner_only
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_control_without_maintainer_is_refused(repo_copy: Path) -> None:
    control = repo_copy / "debian" / "control"
    control.write_text(control.read_text().replace("Maintainer: ", "X-Maintainer: ", 1))
    with pytest.raises(InputError, match="the source paragraph has no Maintainer field"):
        load_project(repo_copy)


def test_every_builder_command_in_the_readme_parses() -> None:
    """The README's `python3 -m builder ...` lines are commands the CLI accepts (options in [] included)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"python3 -m builder((?: [^`#\n]+?)?)\s*(?:`|#|\n)", readme)
    assert len(commands) >= 8
    parser = cli._parser()
    project = load_project(REPO)
    for command in commands:
        # "[-m ...]" (a repetition) is left out, "[--output DIR]" is given
        words = shlex.split(re.sub(r"\[[^\]]*\.\.\.\]", "", command).replace("[", "").replace("]", ""))
        if words in ([], ["--help"]):
            continue
        args = parser.parse_args(words)  # argparse exits on an unknown command or option
        if args.command in ("build", "lint"):
            project.select(args.packages)  # a package the README names exists
