"""Session-wide: the slowest test files are handed out first.

make test runs pytest with parallel workers, one file per worker (--dist loadfile), in collection order. A
slow file collected last (tests/vm/ sorts after everything) would start when the others are done and
lengthen the run by its own duration, so these files, measured slowest with --durations, go to the front.
pytest-xdist's default (--loadscope-reorder) then hands out the files with most tests first, keeping this
order among files of equal size. Handing out exactly this order (--no-loadscope-reorder) was tried on a
fresh clone and was worse: the VM tier and the cluster files at once on two cores left the rest for the
end and two bookworm tests errored, so make test keeps the default.
The order of the tests inside a file is unchanged.
"""

from __future__ import annotations

import pytest

SLOWEST_FIRST = (
    "tests/vm/test_hardening_vm.py",
    "tests/system/test_monitoring_cluster.py",
    "tests/system/test_ha_failover.py",
    "tests/system/test_ha_faults.py",
    "tests/system/test_ha_lease.py",
    "tests/system/test_ha.py",
    "tests/system/test_attack_root_links.py",
    "tests/system/test_hardening.py",
    "tests/system/test_minimal_host.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
