"""Upgrading from a .deb with its units in /lib/systemd/system (every package up to 1.0.0 built before
debian/usr-units.mk) to one with them in /usr/lib/systemd/system, on a usr-merged system.

/lib is a link to usr/lib there, so the old and the new path are one file: dpkg must not remove the
"obsolete" /lib path after unpacking the new one (that would delete the unit it just installed), and
the timers must stay enabled and running. The old .deb is the current one repacked with its units
moved back to lib/systemd/system and an older version: the maintainer scripts are the same bytes
(tests/package/test_unit_paths.py), so only the paths differ.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.package.test_unit_paths import ACTIVATION
from tests.system import harness
from tests.system.conftest import deb

PACKAGE = "polymarket-bot"  # a service and a timer enabled and started; installs on bookworm too (not backup: restic)


def repack_with_units_in_lib(new: Path, out: Path) -> Path:
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(new), str(tree)], check=True)
    (tree / "lib" / "systemd").mkdir(parents=True)
    (tree / "usr/lib/systemd/system").rename(tree / "lib/systemd/system")
    (tree / "usr/lib/systemd").rmdir()
    md5sums = tree / "DEBIAN" / "md5sums"
    md5sums.write_text(md5sums.read_text().replace("  usr/lib/systemd/system/", "  lib/systemd/system/"))
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Version: "))
    control.write_text(text.replace(f"Version: {version}\n", f"Version: {version}~lib\n"))
    old = out / f"{PACKAGE}_{version}~lib_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(old)], check=True, capture_output=True)
    return old


def test_upgrade_from_units_in_lib_keeps_every_unit_enabled(
    container: harness.Container, dist: Path, tmp_path: Path
) -> None:
    new = deb(dist, PACKAGE)
    old = repack_with_units_in_lib(new, tmp_path)
    c = container
    assert c.sh("readlink /lib").stdout.strip() == "usr/lib", "the test tree is not usr-merged"
    c.install_debs([old])
    enabled = sorted(ACTIVATION[PACKAGE][0])
    assert c.sh(f"dpkg -S /lib/systemd/system/{enabled[0]}").stdout.startswith(f"{PACKAGE}: ")

    c.install_debs([new])  # the upgrade: ~lib sorts before the version it was made from
    units = c.sh(f"dpkg -L {PACKAGE} | grep '^/usr/lib/systemd/system/.'").stdout.split()
    assert len(units) == 4, units
    for path in units:
        assert c.path(path).is_file(), f"{path} lost in the upgrade"
    assert "/lib/systemd/system/" not in c.sh(f"dpkg -L {PACKAGE} | grep -v '^/usr/'").stdout
    c.sh("systemctl daemon-reload")
    for unit in enabled:
        assert c.sh(f"systemctl is-enabled {unit}", check=False).stdout.strip() == "enabled", unit
    timer = "polymarket-bot-prune.timer"
    assert c.sh(f"systemctl is-active {timer}", check=False).stdout.strip() == "active", timer
