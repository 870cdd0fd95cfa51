"""VM tests are system tests: root, a cached rootfs, qemu (see harness.py)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.path):
            item.add_marker(pytest.mark.system)
