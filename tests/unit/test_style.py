"""Linters run as tests: ruff and mypy on all the project's Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder import lint

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} missing from the test venv (make venv installs it)")
    return str(path)


def test_ruff_is_clean() -> None:
    """Every Python file of the tree, the extensionless scripts (found by shebang) included."""
    files = [str(p.relative_to(REPO)) for p in lint.python_files(REPO)]
    proc = subprocess.run(
        [_tool("ruff"), "check", "--output-format", "concise", ".", *files], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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


def test_mypy_is_clean_on_the_builder_and_tests() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_the_bot() -> None:
    bot = REPO / "packages" / "polymarket-bot"
    proc = subprocess.run([_tool("mypy"), "polymarket_bot"], cwd=bot, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
