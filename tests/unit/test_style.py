"""Linters run as tests: ruff and mypy on all the project's Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} missing from the test venv (make venv installs it)")
    return str(path)


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_the_builder_and_tests() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_is_clean_on_the_bot() -> None:
    bot = REPO / "packages" / "polymarket-bot"
    proc = subprocess.run([_tool("mypy"), "polymarket_bot"], cwd=bot, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
