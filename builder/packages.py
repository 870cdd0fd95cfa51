"""The package registry: what the builder, the media and the inventory know about each binary package.

One ``Package`` per binary package of the project (``debian/control``'s and
the stdeb distributions under ``packages/``), and nothing about a package
outside it except what Debian's own files say:

- ``roles``: the inventory roles whose hosts may install it (``inventory.py``
  refuses a role listing it otherwise, and a package the registry lacks);
- ``units_start_at_install``: True when dh_installsystemd's default (enable
  and start every unit at install) is right; False when ``debian/rules``
  names each of its units in its own ``dh_installsystemd -p<package>`` lines,
  which means it is one of the generic call's ``-N`` packages;
- ``answers``: what the autoinstall media answer its debconf questions, from
  the inventory; the questions themselves (name, type, choices) are declared
  once, in ``debian/<package>.templates`` (``questions``, via ``debconf.py``).

``check`` ties the registry to the tree: every package of ``debian/control``
has an entry and the reverse, every debhelper package has its
``debian/<package>.install``, ``debian/rules``' ``-N`` list is exactly the
packages whose units do not all start at install, and each of their installed
units is named in a ``-p`` line.  README.md "Adding a package" lists the steps.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from builder import debconf
from builder.errors import InputError

if TYPE_CHECKING:
    from builder.inventory import Host, Inventory
    from builder.project import Project

REGISTRY_FILE = "builder/packages.py"
ADDING = 'README.md "Adding a package"'


class Role(StrEnum):
    """What a host is in the deployment; also the answer to polymarket-ha/role."""

    PRIMARY = "primary"  # trades while it holds the virtual IP
    STANDBY = "standby"  # takes the virtual IP over when the primary fails
    LB = "lb"  # the load balancer (HAProxy) in front of both
    MONITORING = "monitoring"  # a host of its own for polymarket-monitoring (by default the lb runs it)


ALL_ROLES = frozenset(Role)
PAIR = frozenset({Role.PRIMARY, Role.STANDBY})
HA_ROLES = frozenset({Role.PRIMARY, Role.STANDBY, Role.LB})  # polymarket-ha/role's choices

Answers = Callable[["Inventory", "Host"], dict[str, str]]


def no_answers(inv: Inventory, host: Host) -> dict[str, str]:
    """A package whose questions (if any) the media leave at their defaults."""
    return {}


@dataclass(frozen=True)
class Package:
    name: str
    roles: frozenset[Role]  # the roles whose hosts may install it
    units_start_at_install: bool  # False: debian/rules names each unit (an -N package of the generic call)
    answers: Answers = no_answers  # question -> value, what the media preseed on a host that installs it

    def questions(self, root: Path) -> dict[str, debconf.Question]:
        """Its debconf questions, declared in debian/<name>.templates."""
        return {n: q for n, q in debconf.load(root).items() if q.package == self.name}


def hardening_answers(inv: Inventory, host: Host) -> dict[str, str]:
    # Only the admin: polymarket-hardening adds polymarket-ha (ledger replication) itself and never
    # lets the bot's user in.
    return {
        "polymarket-hardening/allow_users": inv.admin.user,
        "polymarket-hardening/admin_network": str(inv.network.admin_network),
    }


def ha_answers(inv: Inventory, host: Host) -> dict[str, str]:
    peer = inv.peer(host)
    values = {
        "polymarket-ha/role": str(host.role),
        "polymarket-ha/own_address": str(host.address),
        "polymarket-ha/peer_address": str(peer.address) if peer else "",
        "polymarket-ha/virtual_ip": str(inv.network.virtual_ip),
        "polymarket-ha/interface": inv.network.interface,
    }
    if host.role is Role.LB:
        # HAProxy checks the primary first, the standby as its backup.
        pair = [h for role in (Role.PRIMARY, Role.STANDBY) for h in inv.hosts if h.role is role]
        values["polymarket-ha/backends"] = " ".join(str(h.address) for h in pair)
        # HAProxy's exporter: the loopback only, and the monitoring host's address when it is a host of its own.
        monitor = monitoring_host(inv)
        values["polymarket-ha/metrics_allow"] = str(monitor.address) if monitor and monitor != host else ""
    else:
        # The lb is the third voter of the trading lease (etcd); without one the pair runs on VRRP alone,
        # where a cut between the two nodes makes both trade.
        witness = [h for h in inv.hosts if h.role is Role.LB and "polymarket-ha" in inv.packages(h)]
        values["polymarket-ha/witness_address"] = str(witness[0].address) if witness else ""
    return values


HAPROXY_METRICS_PORT = 8405  # polymarket-ha's HAProxy exporter (polymarket_ha.HAPROXY_METRICS_PORT)


def monitoring_host(inv: Inventory) -> Host | None:
    """The host that installs polymarket-monitoring (the inventory allows one at most)."""
    return next((h for h in inv.hosts if "polymarket-monitoring" in inv.packages(h)), None)


def haproxy_target(inv: Inventory, host: Host) -> str:
    """HAProxy's exporter as the monitoring host ``host`` reaches it: 127.0.0.1:8405 on the lb itself; from a
    host of its own, LB_ADDRESS:8405 (polymarket-ha's metrics_allow lists that host); empty without an lb."""
    lb = next((h for h in inv.hosts if h.role is Role.LB and "polymarket-ha" in inv.packages(h)), None)
    if lb is None:
        return ""
    if lb == host:
        return f"127.0.0.1:{HAPROXY_METRICS_PORT}"
    return f"{lb.address}:{HAPROXY_METRICS_PORT}"  # an IPv4 address (the inventory's hosts)


def monitoring_answers(inv: Inventory, host: Host) -> dict[str, str]:
    # Scrape targets from the hosts: the bots (hosts whose role installs polymarket-bot), the node exporter of
    # every host; NAME=ADDRESS, NAME the "node" label. The receivers come from the inventory's alerts section
    # (inventory.alert_answers; never a secret). HAProxy's exporter: see haproxy_target.
    from builder.inventory import alert_answers

    bots = [h for h in inv.hosts if "polymarket-bot" in inv.packages(h)]
    return {
        "polymarket-monitoring/bot_targets": " ".join(f"{h.name}={h.address}" for h in bots),
        "polymarket-monitoring/node_targets": " ".join(f"{h.name}={h.address}" for h in inv.hosts),
        "polymarket-monitoring/haproxy_target": haproxy_target(inv, host),
        # systemd-journal-remote listens on the monitoring host's own address only.
        "polymarket-monitoring/journal_address": str(host.address),
        **{f"polymarket-monitoring/{q}": v for q, v in alert_answers(inv).items()},
    }


# One entry per binary package; README.md's "Package registry" table shows this (a unit test compares them).
REGISTRY: tuple[Package, ...] = (
    Package("polymarket-hardening", ALL_ROLES, units_start_at_install=False, answers=hardening_answers),
    Package("polymarket-bot", PAIR, units_start_at_install=True),
    Package("polymarket-backup", PAIR, units_start_at_install=False),
    Package("polymarket-ha", HA_ROLES, units_start_at_install=False, answers=ha_answers),
    Package(
        "polymarket-monitoring",
        frozenset({Role.LB, Role.MONITORING}),
        units_start_at_install=True,
        answers=monitoring_answers,
    ),
)


def get(name: str, registry: tuple[Package, ...] = REGISTRY) -> Package | None:
    return next((p for p in registry if p.name == name), None)


def answers(inv: Inventory, host: Host, registry: tuple[Package, ...] = REGISTRY) -> dict[str, tuple[str, str]]:
    """What the media answer on ``host``: question -> (package, value), only for packages its role installs."""
    found: dict[str, tuple[str, str]] = {}
    for name in inv.packages(host):
        pkg = get(name, registry)
        if pkg is None:
            raise InputError(f"package {name} is not in the package registry ({REGISTRY_FILE})", hint=f"see {ADDING}")
        for question, value in pkg.answers(inv, host).items():
            if not question.startswith(f"{pkg.name}/"):
                raise InputError(f"{REGISTRY_FILE}: {pkg.name} answers {question}, a question of another package")
            found[question] = (pkg.name, value)
    return found


UNIT = re.compile(r"[^/\s]+\.(service|timer|socket|path|mount)")


def installed_units(root: Path, package: str) -> set[str]:
    """The unit files debian/<package>.install puts into lib/systemd/system (drop-in directories aside)."""
    path = root / "debian" / f"{package}.install"
    units: set[str] = set()
    if not path.exists():
        return units
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[-1].strip("/").endswith("systemd/system"):
            units.update(Path(w).name for w in words[:-1] if UNIT.fullmatch(Path(w).name))
    return units


@dataclass(frozen=True)
class SystemdRules:
    """What debian/rules' override_dh_installsystemd says."""

    excluded: frozenset[str]  # the -N packages of the generic call
    named: Mapping[str, frozenset[str]]  # package -> the units its -p lines name


def systemd_rules(root: Path) -> SystemdRules:
    text = (root / "debian" / "rules").read_text(encoding="utf-8").replace("\\\n", " ")
    excluded: set[str] = set()
    named: dict[str, set[str]] = {}
    for line in text.splitlines():
        words = shlex.split(line.split("#", 1)[0]) if line.startswith("\t") else []
        if not words or words[0] != "dh_installsystemd":
            continue
        packages = [w[2:] for w in words if w.startswith("-p")]
        if packages:
            for pkg in packages:
                named.setdefault(pkg, set()).update(w for w in words[1:] if not w.startswith("-"))
        else:
            excluded.update(w[2:] for w in words if w.startswith("-N"))
    return SystemdRules(frozenset(excluded), {k: frozenset(v) for k, v in named.items()})


def check(project: Project, registry: tuple[Package, ...] = REGISTRY) -> None:
    """The registry against the tree: one named error for each step of "Adding a package" left out."""
    from builder.project import BuildSystem

    root = project.root
    built = {p.name: p for p in project.packages}
    registered = {p.name for p in registry}
    for name in built:
        if name not in registered:
            raise InputError(
                f"package {name} (debian/control or packages/{name}/) is not in the package registry ({REGISTRY_FILE})",
                hint=f"add a Package entry to REGISTRY; see {ADDING}",
            )
    for name in sorted(registered - set(built)):
        raise InputError(
            f"{REGISTRY_FILE}: {name} is registered, but debian/control has no such package",
            hint=f"add its stanza to debian/control and its payload to packages/{name}/; see {ADDING}",
        )
    for name, question in debconf.load(root).items():
        if question.package not in registered:
            raise InputError(f"{question.where}: {name}: package {question.package} is not in the registry")
    rules = systemd_rules(root)
    for pkg in registry:
        if built[pkg.name].build_system is not BuildSystem.DEBHELPER:
            continue
        if not (root / "debian" / f"{pkg.name}.install").is_file():
            hint = f"list the files of packages/{pkg.name}/ it installs"
            raise InputError(f"debian/{pkg.name}.install is missing", hint=hint)
        excluded = pkg.name in rules.excluded
        if pkg.units_start_at_install and (excluded or pkg.name in rules.named):
            raise InputError(
                f"debian/rules: {pkg.name} has its own dh_installsystemd lines, but the registry says its units "
                "start at install",
                hint=f"set units_start_at_install=False in {REGISTRY_FILE}, or drop its -N/-p lines",
            )
        if not pkg.units_start_at_install:
            if not excluded:
                raise InputError(
                    f"debian/rules: {pkg.name} is not among the -N packages of the generic dh_installsystemd call, "
                    "but the registry says not all its units start at install",
                    hint=f"add -N{pkg.name} there and one -p{pkg.name} line per kind of unit",
                )
            missing = sorted(installed_units(root, pkg.name) - rules.named.get(pkg.name, frozenset()))
            if missing:
                raise InputError(
                    f"debian/rules: {pkg.name}'s {', '.join(missing)} named in no dh_installsystemd -p{pkg.name} line "
                    "(never enabled)",
                    hint="name it with --no-start, --no-enable or neither",
                )
    for name in sorted(rules.excluded - registered):
        raise InputError(f"debian/rules: -N{name} names a package the registry lacks")
    check_potfiles(root)
    check_readme(root, registry)


def check_potfiles(root: Path) -> None:
    """Every debian/*.templates is in debian/po/POTFILES.in (else its questions are never translated)."""
    potfiles = root / "debian" / "po" / "POTFILES.in"
    listed = potfiles.read_text(encoding="utf-8").split() if potfiles.exists() else []
    for path in sorted((root / "debian").glob("*.templates")):
        if path.name not in listed:
            raise InputError(f"debian/po/POTFILES.in does not list {path.name}", hint="add it and run debconf-updatepo")


README_ROW = re.compile(r"^\| `([a-z0-9][a-z0-9+.-]+)` \| ([^|]*) \| (yes|no) \| ([^|]*) \|$", re.M)


def readme_rows(registry: tuple[Package, ...], root: Path) -> dict[str, tuple[str, str, str]]:
    """README.md's package table as it must be: package -> (roles, units start at install, templates)."""
    rows = {}
    for pkg in registry:
        templates = root / "debian" / f"{pkg.name}.templates"
        rows[pkg.name] = (
            ", ".join(r for r in Role if r in pkg.roles),
            "yes" if pkg.units_start_at_install else "no",
            f"`debian/{templates.name}`" if templates.exists() else "none",
        )
    return rows


def check_readme(root: Path, registry: tuple[Package, ...] = REGISTRY) -> None:
    """README.md's table under "The packages" is the registry, row for row.  A tree without README.md (a copy
    made to build a release, as tests/system/test_repo_upgrade.py makes) has no table to check."""
    readme = root / "README.md"
    if not readme.exists():
        return
    text = readme.read_text(encoding="utf-8")
    section = re.search(r"^## The packages\n(.*?)^### ", text, re.M | re.S)
    if not section:
        raise InputError('README.md: no "## The packages" section with the package table', hint=f"see {ADDING}")
    found = {m[0]: (m[1].strip(), m[2], m[3].strip()) for m in README_ROW.findall(section.group(1))}
    want = readme_rows(registry, root)
    for name, row in want.items():
        if name not in found:
            raise InputError(f'README.md: the table under "The packages" has no row for {name}', hint=f"see {ADDING}")
        if found[name] != row:
            shown = " | ".join((f"`{name}`", *row))
            raise InputError(
                f'README.md: the row of {name} under "The packages" differs from {REGISTRY_FILE}: '
                f"it should be | {shown} |"
            )
    for name in sorted(set(found) - set(want)):
        raise InputError(f'README.md: the table under "The packages" has a row for {name}, which the registry lacks')
    for name in want:
        if not re.search(rf"^### {re.escape(name)}\n", text, re.M):
            raise InputError(f'README.md: "The packages" has no "### {name}" section', hint=f"see {ADDING}")
