"""The one loader of our packages' Python scripts as modules, for unit tests of their functions.

The scripts are installed without a ``.py`` suffix (``polymarket-backup``,
``polymarket-compliance``) or as a plain file (``polymarket_ha.py``); each is
loaded from ``packages/<package>/`` as it is shipped, under a module name of
its own, and registered in ``sys.modules`` (dataclasses look their module up).
Each call loads the file afresh, so a test's monkeypatching never leaks into
the next test.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PACKAGES = REPO / "packages"


def load(package: str, script: str, name: str | None = None) -> ModuleType:
    """``packages/<package>/<script>`` as the module ``name`` (default: the script's name in snake case)."""
    path = PACKAGES / package / script
    name = name or Path(script).name.removesuffix(".py").replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None, path
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def ha() -> ModuleType:
    """polymarket-ha's polymarket_ha.py (/usr/lib/polymarket-ha/, /usr/sbin/polymarket-ha)."""
    return load("polymarket-ha", "polymarket_ha.py")


def backup() -> ModuleType:
    """polymarket-backup's /usr/sbin/polymarket-backup."""
    return load("polymarket-backup", "polymarket-backup")


def compliance() -> ModuleType:
    """polymarket-hardening's /usr/sbin/polymarket-compliance."""
    return load("polymarket-hardening", "polymarket-compliance")


CANARY = "canary: never to change\n"


def unchanged(canary: Path) -> bool:
    """Whether the canary file (tests/unit/conftest.py's fixture) still has its bytes and mode 0600."""
    return canary.read_text() == CANARY and canary.stat().st_mode & 0o777 == 0o600
