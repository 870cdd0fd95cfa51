"""The package registry (builder/packages.py) against the tree, and README's "Adding a package" proven by a
package made in a copy of the tree: with every step it is built into the media with no other edit, and each
step left out is a named error of ``python3 -m builder check``."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from builder import debconf, packages
from builder.errors import InputError
from builder.project import BuildSystem, load_project

REPO = Path(__file__).resolve().parents[2]
TEST_KEY = REPO / "tests" / "unit" / "data" / "inventories" / "test-archive-keyring.asc"
NAME = "polymarket-demo"


def test_the_registry_is_the_tree() -> None:
    project = load_project(REPO)
    assert {p.name for p in packages.REGISTRY} == {p.name for p in project.packages}
    packages.check(project)  # debian/rules, POTFILES.in, README's table


def test_debian_rules_N_list_is_the_packages_whose_units_do_not_all_start() -> None:
    project = load_project(REPO)
    debhelper = {p.name for p in project.packages if p.build_system is BuildSystem.DEBHELPER}
    rules = packages.systemd_rules(REPO)
    assert rules.excluded == {p.name for p in packages.REGISTRY if not p.units_start_at_install} & debhelper
    for pkg in rules.excluded:
        assert packages.installed_units(REPO, pkg) <= rules.named[pkg], pkg


def test_every_runtime_dependency_is_in_the_system_tests_root_filesystem() -> None:
    """The containers have no network: what a package Depends on must be preinstalled (Adding a package, 10)."""
    from tests.system import harness

    control = (REPO / "debian" / "control").read_text(encoding="utf-8")
    depends: dict[str, set[str]] = {}
    for stanza in control.split("\n\n")[1:]:
        name = re.search(r"^Package: (\S+)", stanza, re.M)
        field = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", stanza, re.M)
        if name and field:
            words = (re.split(r"[\s(|]", d.strip())[0] for d in field.group(1).split(","))
            depends[name.group(1)] = {w for w in words if w and not w.startswith("${")}
    bot = REPO / "packages" / "polymarket-bot" / "DEPENDS"
    depends["polymarket-bot"] = set(bot.read_text(encoding="utf-8").split())
    assert set(depends) == {p.name for p in packages.REGISTRY}
    ours = {p.name for p in packages.REGISTRY}
    missing = {n: sorted(d - set(harness.ROOTFS_PACKAGES) - ours) for n, d in depends.items()}
    assert {n: m for n, m in missing.items() if m} == {}, "add them to ROOTFS_PACKAGES in tests/system/harness.py"


def test_questions_of_a_package_are_its_templates() -> None:
    ha = packages.get("polymarket-ha")
    assert ha is not None
    assert "polymarket-ha/role" in ha.questions(REPO)
    assert all(q.package == "polymarket-ha" for q in ha.questions(REPO).values())
    assert set(debconf.load(REPO)) == {q for p in packages.REGISTRY for q in p.questions(REPO)}


def test_readme_table_differing_from_the_registry_is_named(tmp_path: Path) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    row = "| `polymarket-bot` | primary, standby | yes | none |"
    assert row in text
    (tmp_path / "debian").mkdir()
    for templates in (REPO / "debian").glob("*.templates"):
        shutil.copy2(templates, tmp_path / "debian")
    (tmp_path / "README.md").write_text(text.replace(row, "| `polymarket-bot` | primary, standby, lb | yes | none |"))
    with pytest.raises(InputError, match=r"the row of polymarket-bot under \"The packages\" differs"):
        packages.check_readme(tmp_path)


def test_inventory_refuses_a_package_on_a_role_the_registry_does_not_give_it(tmp_path: Path) -> None:
    from builder import inventory

    text = (REPO / "autoinstall" / "inventory.yaml").read_text(encoding="utf-8")
    lb = re.search(r"^  lb: \[(.*)\]$", text, re.M)
    assert lb is not None
    for listed, error in (
        ("polymarket-bot", r"inventory.yaml:\d+: roles: lb: polymarket-bot is not installed on role lb"),
        ("polymarket-web", r"inventory.yaml:\d+: roles: lb: polymarket-web is not one of our packages"),
    ):
        path = tmp_path / "inventory.yaml"
        path.write_text(text.replace(lb.group(0), f"  lb: [{lb.group(1)}, {listed}]"))
        with pytest.raises(InputError, match=error):
            inventory.load(path)


# --- a sixth package, made by following README.md "Adding a package" in a copy of the tree ---

CONTROL = f"""
Package: {NAME}
Architecture: all
Depends: ${{misc:Depends}}
Description: a package made by a test of the builder
 It proves README.md "Adding a package".
"""
TEMPLATES = f"""Template: {NAME}/site
Type: string
Default:
_Description: Site of this host:
 Where the host is.
"""
ANSWERS = f'answers=lambda inv, host: {{"{NAME}/site": host.name}}'
ENTRY = f'    Package("{NAME}", PAIR, units_start_at_install=True, {ANSWERS}),\n'
ROW = f"| `{NAME}` | primary, standby | yes | `debian/{NAME}.templates` |\n"


def _adding_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Adding a package\n(.*?)^## ", text, re.M | re.S)
    assert section, 'README.md has no "## Adding a package" section'
    return section.group(1)


def _copy_tree(tmp: Path) -> Path:
    root = tmp / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
    for part in ("builder", "debian", "autoinstall"):
        shutil.copytree(REPO / part, root / part, ignore=ignore)
    shutil.copy2(REPO / "README.md", root / "README.md")
    (root / "packages").mkdir()
    for payload in (REPO / "packages").iterdir():
        (root / "packages" / payload.name).symlink_to(payload)
    inv = root / "autoinstall" / "inventory.yaml"
    inv.write_text(inv.read_text().replace("../dist/repo/polymarket-archive-keyring.asc", str(TEST_KEY)))
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


def _add_package(root: Path, skip: str = "") -> None:
    """Every step of README.md "Adding a package" (but ``skip``) for the package NAME."""
    if skip != "control":  # 1
        with open(root / "debian" / "control", "a", encoding="utf-8") as f:
            f.write(CONTROL)
    if skip != "payload":  # 2
        payload = root / "packages" / NAME
        (payload / "systemd").mkdir(parents=True)
        (payload / "demo").write_text("#!/bin/sh\necho demo\n")
        (payload / "systemd" / f"{NAME}.service").write_text("[Service]\nExecStart=/usr/lib/polymarket-demo/demo\n")
    if skip != "install":  # 3
        (root / "debian" / f"{NAME}.install").write_text(
            f"packages/{NAME}/demo usr/lib/{NAME}/\npackages/{NAME}/systemd/{NAME}.service lib/systemd/system/\n"
        )
    (root / "debian" / f"{NAME}.templates").write_text(TEMPLATES)  # 5
    if skip != "potfiles":
        with open(root / "debian" / "po" / "POTFILES.in", "a", encoding="utf-8") as f:
            f.write(f"[type: gettext/rfc822deb] {NAME}.templates\n")
    if skip != "registry":  # 6
        _edit(
            root / "builder" / "packages.py",
            "REGISTRY: tuple[Package, ...] = (\n",
            "REGISTRY: tuple[Package, ...] = (\n" + ENTRY,
        )
    inv = root / "autoinstall" / "inventory.yaml"  # 8
    for role in ("primary", "standby"):
        text = inv.read_text()
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {role}: ["))
        _edit(inv, line, line.replace("]", f", {NAME}]"))
    if skip != "readme":  # 9
        _edit(
            root / "README.md",
            "| `polymarket-ha` | primary, standby, lb |",
            ROW + "| `polymarket-ha` | primary, standby, lb |",
        )
    if skip != "readme section":
        _edit(root / "README.md", "### polymarket-ha\n", f"### {NAME}\n\nWhat it does.\n\n### polymarket-ha\n")


def _builder(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/bin/python3", "-m", "builder", *args], cwd=root, capture_output=True, text=True)


def test_a_package_added_as_the_readme_says_is_in_the_media_with_no_other_edit(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    _add_package(root)
    proc = _builder(root, "list")
    assert f"{NAME}\t" in proc.stdout, proc.stderr
    proc = _builder(root, "check")
    assert proc.returncode == 0, proc.stderr
    proc = _builder(root, "autoinstall", "--output", str(tmp_path / "media"))
    assert proc.returncode == 0, proc.stderr
    for host in ("primary", "standby", "lb"):
        ai = yaml.safe_load((tmp_path / "media" / host / "user-data").read_text())["autoinstall"]
        installed = ai["late-commands"][-1][8:]
        answer = f"{NAME} {NAME}/site string {host}"
        if host == "lb":
            assert NAME not in installed and answer not in ai["debconf-selections"]
        else:
            assert installed[-1] == NAME and answer in ai["debconf-selections"].splitlines()


def test_a_copy_made_to_build_without_the_readme_passes_the_check(tmp_path: Path) -> None:
    """What tests/system/test_repo_upgrade.py builds from: the tree's directories, no README.md."""
    root = _copy_tree(tmp_path)
    (root / "README.md").unlink()
    proc = _builder(root, "check")
    assert proc.returncode == 0, proc.stderr


def _units_not_started(root: Path) -> None:
    _edit(
        root / "builder" / "packages.py",
        ENTRY,
        ENTRY.replace("units_start_at_install=True", "units_start_at_install=False"),
    )
    _edit(root / "README.md", ROW, ROW.replace("| yes |", "| no |"))


def _units_excluded_but_not_named(root: Path) -> None:
    _units_not_started(root)
    _edit(root / "debian" / "rules", "-Npolymarket-ha\n", f"-Npolymarket-ha -N{NAME}\n")


def _on_lb(root: Path) -> None:
    _edit(
        root / "autoinstall" / "inventory.yaml",
        "lb: [polymarket-hardening, polymarket-ha, polymarket-monitoring]",
        f"lb: [polymarket-hardening, polymarket-ha, polymarket-monitoring, {NAME}]",
    )


def _answer_undeclared(root: Path) -> None:
    _edit(root / "builder" / "packages.py", f'"{NAME}/site"', f'"{NAME}/city"')


def _no_set_e(root: Path) -> None:
    (root / "debian" / f"{NAME}.postinst").write_text("#!/bin/sh\n#DEBHELPER#\n")


LEFT_OUT: dict[str, tuple[str, Callable[[Path], None] | None, str]] = {
    "control": ("control", None, f"builder/packages.py: {NAME} is registered, but debian/control has no such package"),
    "payload": ("payload", None, f"its payload directory packages/{NAME}/ is missing"),
    "install": ("install", None, f"debian/{NAME}.install is missing"),
    "script": ("", _no_set_e, f"debian/{NAME}.postinst: a maintainer script must 'set -e'"),
    "potfiles": ("potfiles", None, f"debian/po/POTFILES.in does not list {NAME}.templates"),
    "registry": (
        "registry",
        None,
        f"package {NAME} (debian/control or packages/{NAME}/) is not in the package registry",
    ),
    "rules -N": ("", _units_not_started, f"debian/rules: {NAME} is not among the -N packages"),
    "rules -p": ("", _units_excluded_but_not_named, f"{NAME}.service named in no dh_installsystemd -p{NAME} line"),
    "role": ("", _on_lb, f"roles: lb: {NAME} is not installed on role lb"),
    "readme": ("readme", None, f'README.md: the table under "The packages" has no row for {NAME}'),
    "readme section": ("readme section", None, f'README.md: "The packages" has no "### {NAME}" section'),
    "answer": ("", _answer_undeclared, f"the media answer {NAME}/city, but no debian/*.templates declares it"),
}


@pytest.mark.parametrize("case", LEFT_OUT)
def test_each_step_left_out_is_a_named_error(tmp_path: Path, case: str) -> None:
    skip, change, error = LEFT_OUT[case]
    root = _copy_tree(tmp_path)
    _add_package(root, skip)
    if change:
        change(root)
    proc = _builder(root, "check")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and error in errors[0], proc.stderr


def test_the_readme_names_each_error_of_a_step_left_out() -> None:
    section = _adding_section().replace("NAME", NAME)
    for case, (_, _, error) in LEFT_OUT.items():
        assert error[-30:] in section, case
