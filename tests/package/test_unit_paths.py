"""Every package's systemd units in /usr/lib/systemd/system, enabled and started as before.

Trixie's lintian reports every file under /lib (an alias of /usr/lib on usr-merged systems,
noble's and trixie's) as ``aliased-location``. debhelper 13.11 at compat 13 finds units only
under lib/systemd/system, so debian/usr-units.mk moves them after dh_installsystemd: the
maintainer scripts must still enable and start exactly the units they did before the move.
"""

from __future__ import annotations

import re

import pytest

from builder.packages import REGISTRY, installed_units
from tests.package import debs
from tests.package.debs import REPO

UNITS = "/usr/lib/systemd/system/"

# package -> (units enabled at install, units started at install): what they were before the move (1.0.0);
# a package that deliberately enables or starts another unit adds it here (and to debian/rules).
ACTIVATION = {
    "polymarket-bot": ({"polymarket-bot.service", "polymarket-bot-prune.timer"},
                       {"polymarket-bot.service", "polymarket-bot-prune.timer"}),
    "polymarket-hardening": ({"polymarket-compliance.timer", "polymarket-hardening-firstboot.service",
                              "polymarket-hardening-sysctl-before.service"},
                             {"polymarket-compliance.timer"}),
    "polymarket-backup": ({f"polymarket-backup{s}.timer" for s in ("", "-verify", "-prune", "-offsite")},
                          {f"polymarket-backup{s}.timer" for s in ("", "-verify", "-prune", "-offsite")}),
    "polymarket-ha": ({"polymarket-ha-firewall.service", "polymarket-ha-lease.service",
                       "polymarket-ha-heartbeat.timer", "polymarket-ha-replicate.timer",
                       "polymarket-ha-replicate-full.timer"},
                      {"polymarket-ha-heartbeat.timer", "polymarket-ha-replicate.timer",
                       "polymarket-ha-replicate-full.timer"}),
    # The journal gate (issue 10): its condition keeps it down until polymarket-journal-remote init ran.
    "polymarket-monitoring": ({"polymarket-journal-gate.service"}, {"polymarket-journal-gate.service"}),
}  # fmt: skip

# Every package of the registry, so a new one is checked too (README "Adding a package", step 10).
PACKAGES = sorted(p.name for p in REGISTRY)


def test_every_registered_package_has_its_activation_here() -> None:
    missing = [p for p in PACKAGES if p not in ACTIVATION]
    assert not missing, f"add {missing} to ACTIVATION in tests/package/test_unit_paths.py"


# The bot's units come from stdeb's debian/ (packages/polymarket-bot/debian-overlay/), not from a .install.
BOT_UNITS = {"polymarket-bot.service", "polymarket-bot-prune.service", "polymarket-bot-prune.timer",
             "polymarket-bot-secrets.service"}  # fmt: skip


def shipped_units(package: str) -> set[str]:
    return BOT_UNITS if package == "polymarket-bot" else installed_units(REPO, package)


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_under_lib(package: str) -> None:
    """No file, link or directory below /lib: trixie's lintian calls each an aliased-location."""
    members = debs.data_members(debs.built_deb(package))
    under_lib = sorted(p for p in members if p == "/lib" or p.startswith("/lib/"))
    assert under_lib == []


@pytest.mark.parametrize("package", PACKAGES)
def test_units_in_usr_lib(package: str) -> None:
    members = debs.data_members(debs.built_deb(package))
    shipped = {p.removeprefix(UNITS) for p, m in members.items() if p.startswith(UNITS) and m.isfile()}
    in_units_dir = {p for p in shipped if "/" not in p}
    assert in_units_dir == shipped_units(package)
    for name in in_units_dir:
        m = members[UNITS + name]
        assert (m.mode, m.uname, m.gname) == (0o644, "root", "root"), name


@pytest.mark.parametrize("package", PACKAGES)
def test_units_enabled_and_started_as_before(package: str) -> None:
    """The maintainer scripts name the same units as when they lay in /lib/systemd/system."""
    with debs.control_dir(debs.built_deb(package)) as control:
        postinst = (control / "postinst").read_text() if (control / "postinst").exists() else ""
    enabled = set(re.findall(r"deb-systemd-helper (?:enable|debian-installed) '([^']+)'", postinst))
    started = {u for line in re.findall(r"deb-systemd-invoke \$_dh_action (.*) >", postinst)
               for u in re.findall(r"'([^']+)'", line)}  # fmt: skip
    assert (enabled, started) == ACTIVATION[package]
