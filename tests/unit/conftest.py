"""Fixtures shared by the unit tests of the packages' payloads (tests/unit/<package>/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.payload import CANARY


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A file a planted link points at: its bytes and mode must never change (``tests.payload.unchanged``)."""
    path = tmp_path / "canary"
    path.write_text(CANARY)
    path.chmod(0o600)
    return path
