"""Linters run as tests: ruff and mypy on all the project's Python."""

from __future__ import annotations

from pathlib import Path

from builder import lint

REPO = Path(__file__).resolve().parents[2]


def test_ruff_and_mypy_are_clean_over_every_python_file() -> None:
    """The gate of ``python3 -m builder lint --python``, the same function: ruff and mypy over every Python
    file of the tree, the extensionless scripts (found by shebang) included, each under its configuration."""
    findings = lint.run_python_lint(REPO)
    assert findings == [], "\n".join(f.text for f in findings)


def test_the_bot_tests_are_checked_with_conftest_resolved(tmp_path: Path) -> None:
    """The bot's tests import ``conftest`` top-level, as pytest does; mypy must resolve it, or every Harness
    is Any and nothing in the tests is checked (ignore_missing_imports hides the miss)."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mypy]\nstrict = true\nignore_missing_imports = true\nfiles = ["tests/__init__.py"]\n'
    )
    bot = tmp_path / "packages" / "polymarket-bot"
    (bot / "polymarket_bot").mkdir(parents=True)
    (bot / "bench").mkdir()
    (bot / "polymarket_bot" / "__init__.py").write_text("")
    (bot / "bench" / "bench.py").write_text("")
    (bot / "setup.py").write_text("")
    (bot / "pyproject.toml").write_text((tmp_path / "pyproject.toml").read_text())
    (tmp_path / "tests" / "bot").mkdir(parents=True)
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "bot" / "conftest.py").write_text("class Harness:\n    x: int = 1\n")
    (tmp_path / "tests" / "bot" / "test_x.py").write_text(
        "from conftest import Harness\n\n\ndef test_x(h: Harness) -> None:\n    h.missing()\n"
    )
    findings = lint.run_python_lint(tmp_path)
    assert [f.where for f in findings if f.tool == "mypy"] == ["tests/bot/test_x.py"], findings
    assert '"Harness" has no attribute "missing"' in findings[0].text


def test_python_files_are_found_by_suffix_and_by_shebang(tmp_path: Path) -> None:
    found = {str(p.relative_to(REPO)) for p in lint.python_files(REPO)}
    assert {
        "packages/polymarket-backup/polymarket-backup",
        "packages/polymarket-hardening/polymarket-compliance",
        "packages/polymarket-ha/polymarket_ha.py",
        "builder/lint.py",
        "tests/bot/conftest.py",
    } <= found
    assert not [f for f in found if f.startswith((".venv/", "build/", "dist/", ".cache/"))]
    (tmp_path / "pkg" / ".venv").mkdir(parents=True)
    (tmp_path / "pkg" / "tool").write_text("#!/usr/bin/env python3\nprint(1)\n")
    (tmp_path / "pkg" / "apply").write_text("#!/bin/sh\nset -e\n")
    (tmp_path / "pkg" / "notes").write_text("python, but no shebang\n")
    (tmp_path / "pkg" / ".venv" / "x.py").write_text("")
    (tmp_path / "pkg" / "link.py").symlink_to(tmp_path / "pkg" / "tool")
    assert lint.python_files(tmp_path) == [tmp_path / "pkg" / "tool"]


def test_every_python_file_is_in_a_mypy_run() -> None:
    files = lint.python_files(REPO)
    runs = lint.mypy_runs(REPO, files)
    scripts = runs[-1]
    assert scripts.args[0] == "--scripts-are-modules"
    assert {"packages/polymarket-backup/polymarket-backup", "packages/polymarket-ha/polymarket_ha.py"} <= set(
        scripts.args
    )
    assert [f for f in files if not any(f == c or c in f.parents for r in runs for c in r.covers)] == []


def test_the_slowest_first_list_names_existing_test_files() -> None:
    """tests/conftest.py hands these files out first to the parallel workers; a renamed one would quietly
    fall back to the end of the run."""
    from tests.conftest import SLOWEST_FIRST

    missing = [p for p in SLOWEST_FIRST if not (REPO / p).is_file()]
    assert not missing, f"tests/conftest.py SLOWEST_FIRST names files that do not exist: {missing}"
