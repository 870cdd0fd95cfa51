"""Attack review of 839e0ae (the postinst checks the settings file ucf left, `apply --check-settings`):
a settings file the check accepts must not make apply shut out a user debconf says may log in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_hardening import DROPIN, PKG, add_admin, preseed, sshd_effective

pytestmark = pytest.mark.system


def test_a_deleted_settings_file_is_not_read_as_the_defaults(container: harness.Container, dist: Path) -> None:
    """The admin deletes hardening.conf; ucf respects that (its last hash is the file it would write again),
    so the postinst leaves no file, and apply read 'no file' as the defaults: AllowUsers admin, while debconf
    still says 'admin ops'. Either the answers are applied or the reconfigure stops with the drop-in as it was."""
    c = container
    add_admin(c)
    c.sh("useradd -m -s /bin/sh ops")
    preseed(c, allow_users="admin ops")
    c.install_debs([deb(dist, PKG)])
    assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "ops", "polymarket-ha"]
    before = c.sh(f"cat {DROPIN}").stdout
    c.sh("rm /etc/polymarket-hardening/hardening.conf")
    proc = c.sh(f"timeout 120 dpkg-reconfigure -f noninteractive {PKG}", check=False, timeout=180)
    if proc.returncode == 0:
        assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "ops", "polymarket-ha"], proc.stderr
    else:
        assert c.sh(f"cat {DROPIN}").stdout == before
        assert [x for x in proc.stderr.splitlines() if x.startswith("error:")], proc.stderr
    # The way back the error line names: the file again from debconf, and the answers applied.
    c.sh(f"UCF_FORCE_CONFFMISS=1 timeout 120 dpkg-reconfigure -f noninteractive {PKG}", timeout=180)
    assert c.sh("polymarket-compliance get ALLOW_USERS").stdout == "admin ops\n"
    assert sorted(sshd_effective(c)["allowusers"]) == ["admin", "ops", "polymarket-ha"]
