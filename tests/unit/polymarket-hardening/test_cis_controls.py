"""Unit tests of polymarket-compliance's CIS and patch-policy controls and of its textfile metrics (issue 12
items 2 and 3, issue 10's contract). Real peers where this machine has them: apt-config reads the rendered
apt policy, perl evaluates the shipped needrestart file, the kernel's own rename replaces the metrics file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload

PAYLOAD = payload.PACKAGES / "polymarket-hardening"


@pytest.fixture
def mod() -> ModuleType:
    return payload.compliance()


def settings(**over: str) -> dict[str, str]:
    values = {"ALLOW_USERS": "admin", "ADMIN_NETWORK": "", "UPGRADE_WINDOW": "03:00", "AUTO_REBOOT": "true",
              "ROLE": "auto"}  # fmt: skip
    values.update(over)
    return values


# -- patch policy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "window", "reboot"), [
    ("standby", "03:00", "04:00"), ("lb", "03:00", "04:30"), ("primary", "03:00", "05:00"),
    ("primary", "23:30", "01:30"),  # past midnight
])  # fmt: skip
def test_reboots_are_staggered_by_role(mod: ModuleType, role: str, window: str, reboot: str) -> None:
    policy = mod.patch_policy(settings(ROLE=role, UPGRADE_WINDOW=window))
    assert (policy.role, policy.reboot_time) == (role, reboot)


def test_auto_role_comes_from_polymarket_ha(mod: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "polymarket-ha"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "get ROLE" ] && echo standby\n')
    fake.chmod(0o755)
    monkeypatch.setattr(mod, "POLYMARKET_HA", fake)
    policy = mod.patch_policy(settings())
    assert (policy.role, policy.role_source, policy.reboot_time) == ("standby", "polymarket-ha", "04:00")
    # polymarket-ha installed but not configured (get fails): the primary's time, never a crash.
    fake.write_text("#!/bin/sh\necho 'error: /etc/polymarket-ha/ha.conf is missing' >&2\nexit 1\n")
    assert mod.patch_policy(settings()).role == "primary"
    monkeypatch.setattr(mod, "POLYMARKET_HA", tmp_path / "absent")
    assert mod.patch_policy(settings()).role_source.startswith("default")


@pytest.mark.parametrize("bad", [{"UPGRADE_WINDOW": "3:00"}, {"UPGRADE_WINDOW": "24:00"}, {"UPGRADE_WINDOW": ""},
                                 {"AUTO_REBOOT": "yes"}, {"ROLE": "witness"}])  # fmt: skip
def test_a_bad_patch_setting_is_one_usage_error(mod: ModuleType, bad: dict[str, str]) -> None:
    with pytest.raises(mod.UsageError) as err:
        mod.patch_policy(settings(**bad))
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)


@pytest.fixture
def apt_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private apt configuration tree (APT_CONFIG) holding unattended-upgrades' own defaults, as Debian ships
    them: updates of every kind from Debian and the -updates suite."""
    if shutil.which("apt-config") is None:
        pytest.skip("apt-config missing")
    parts = tmp_path / "apt.conf.d"
    parts.mkdir()
    (parts / "20auto-upgrades").write_text('APT::Periodic::Update-Package-Lists "1";\n'
                                           'APT::Periodic::Unattended-Upgrade "1";\n')
    (parts / "50unattended-upgrades").write_text(
        'Unattended-Upgrade::Origins-Pattern {\n "origin=Debian,codename=${distro_codename},label=Debian";\n'
        ' "origin=Debian,codename=${distro_codename}-updates";\n};\n'
        'Unattended-Upgrade::Allowed-Origins { "Ubuntu:noble-updates"; };\n')
    main = tmp_path / "apt.conf"
    main.write_text(f'Dir::Etc "{tmp_path}/";\nDir::Etc::main "none";\nDir::Etc::Parts "apt.conf.d";\n')
    monkeypatch.setenv("APT_CONFIG", str(main))
    return parts


def test_the_rendered_apt_policy_leaves_security_updates_only(mod: ModuleType, apt_root: Path) -> None:
    """apt itself reads the file back: the distribution's other origins are cleared, ours remain."""
    policy = mod.patch_policy(settings(ROLE="standby"))
    assert mod.apt_config("Unattended-Upgrade::Origins-Pattern")  # the defaults are seen before
    (apt_root / mod.APT_POLICY.name).write_text(mod.render_apt_policy(policy))
    origins = mod.apt_config("Unattended-Upgrade::Origins-Pattern") + mod.apt_config(
        "Unattended-Upgrade::Allowed-Origins")
    assert sorted(origins) == sorted(mod.SECURITY_ORIGINS)
    assert all("-security" in o for o in origins)
    assert mod.apt_config("Unattended-Upgrade::Automatic-Reboot-Time") == ["04:00"]
    assert set(mod.apt_config("Unattended-Upgrade::Package-Blacklist")) == set(mod.HELD_BACK)


def test_the_audit_names_a_policy_that_lets_other_updates_in(mod: ModuleType, apt_root: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = mod.run

    def run(argv: list[str]) -> tuple[int, str]:
        if argv[0] in ("apt-config", "perl"):
            code, out = real_run(argv)
            return int(code), str(out)
        if argv[0] == "dpkg-query":
            return 0, "installed"
        return 0, "TimersCalendar={ OnCalendar=*-*-* 03:00:00 ; next_elapse=x }\nUnitFileState=enabled\n"

    monkeypatch.setattr(mod, "run", run)
    monkeypatch.setattr(mod, "NEEDRESTART_CONF", Path("/nonexistent"))
    policy = mod.patch_policy(settings(ROLE="lb"))
    (apt_root / mod.APT_POLICY.name).write_text(mod.render_apt_policy(policy))
    status = {c.id: c.status.value for c in mod.check_patch_policy(settings(ROLE="lb"))}
    assert set(status.values()) == {"pass"}, status
    # A local file after ours adds the -updates suite back: named.
    (apt_root / "60local").write_text('Unattended-Upgrade::Origins-Pattern { "origin=Debian,codename=trixie"; };\n')
    failing = [c for c in mod.check_patch_policy(settings(ROLE="lb")) if c.status.value == "fail"]
    assert [c.id for c in failing] == ["patch.security-only"]
    assert "codename=trixie" in failing[0].actual


def test_the_shipped_needrestart_file_never_restarts_the_failover_services(mod: ModuleType, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """perl evaluates it as needrestart does (needrestart.conf, then conf.d/*.conf)."""
    if shutil.which("perl") is None:
        pytest.skip("perl missing")
    confd = tmp_path / "conf.d"
    confd.mkdir()
    conf = tmp_path / "needrestart.conf"
    conf.write_text("$nrconf{override_rc} = { qr(^dbus) => 0, qr(^cron) => 1 };\n"
                    f"foreach my $fn (sort <{confd}/*.conf>) {{ eval do {{ local(@ARGV, $/) = $fn; <> }}; "
                    "die $@ if $@; }\n")  # fmt: skip
    monkeypatch.setattr(mod, "NEEDRESTART_CONF", conf)
    without = mod.needrestart_overrides(mod.NO_AUTO_RESTART)
    assert set(without.values()) == {""}, without
    (confd / "polymarket-hardening.conf").symlink_to(PAYLOAD / "needrestart.conf")
    overrides = mod.needrestart_overrides((*mod.NO_AUTO_RESTART, "cron.service", "polymarket-ha-lease.service"))
    assert overrides == {**dict.fromkeys(mod.NO_AUTO_RESTART, "0"), "cron.service": "1",
                         "polymarket-ha-lease.service": "0"}  # fmt: skip


# -- modprobe ------------------------------------------------------------------------------------------------

def test_the_shipped_modprobe_file_refuses_every_module(mod: ModuleType) -> None:
    installs = mod.module_installs((PAYLOAD / "modprobe.conf").read_text())
    for module in mod.BLOCKED_MODULES:
        assert installs[mod.norm_module(module)] == "/bin/false", module


def test_an_earlier_modprobe_file_wins_and_is_named(mod: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without kmod the files are read in kmod's order: by name, the first install line of a module wins."""
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (etc / "polymarket-hardening.conf").symlink_to(PAYLOAD / "modprobe.conf")
    (lib / "00-local.conf").write_text("install usb_storage /sbin/modprobe --ignore-install usb_storage\n")
    (lib / "polymarket-hardening.conf").write_text("# shadowed by /etc's file of the same name\n")
    monkeypatch.setattr(mod, "MODPROBE_DIRS", (etc, lib))
    monkeypatch.setattr(mod, "run", lambda argv: (127, "modprobe: not found"))
    controls = {c.id: c for c in mod.check_modules(container=True)}
    failing = {cid: c.actual for cid, c in controls.items() if c.status.value == "fail"}
    assert failing == {"modprobe.usb-storage": "install /sbin/modprobe --ignore-install usb_storage"}
    assert len(controls) == len(mod.BLOCKED_MODULES)


def test_a_loaded_module_is_named_outside_a_container(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod, "modprobe_config_text", lambda: (PAYLOAD / "modprobe.conf").read_text())
    monkeypatch.setattr(mod, "loaded_modules", lambda: {"sctp", "ext4"})
    failing = [(c.id, c.actual) for c in mod.check_modules(container=False) if c.status.value == "fail"]
    assert failing == [("modprobe.sctp", "install /bin/false, loaded now")]


# -- textfile metrics ----------------------------------------------------------------------------------------

def controls(mod: ModuleType) -> list[object]:
    c = mod.Control
    return [c("ssh.maxauthtries", "n", "3", "6", mod.Status.FAIL), c("ufw.status", "n", "active", "inactive",
            mod.Status.FAIL), c("a", "n", "1", "1", mod.Status.PASS), c("b", "n", "1", "1", mod.Status.PASS)]


def test_textfile_metrics_name_the_failing_controls(mod: ModuleType) -> None:
    text = mod.render_textfile(controls(mod), mod.Config(threshold=95, keep=3), 1700000000.4)
    lines = text.splitlines()
    assert "polymarket_compliance_score_percent 50" in lines
    assert "polymarket_compliance_compliant 0" in lines
    assert 'polymarket_compliance_control_failing{control="ssh.maxauthtries",critical="false"} 1' in lines
    assert 'polymarket_compliance_control_failing{control="ufw.status",critical="true"} 1' in lines
    assert "polymarket_compliance_last_run_timestamp_seconds 1700000000" in lines
    assert mod.label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_textfile_replaced_atomically_never_through_a_link(mod: ModuleType, tmp_path: Path) -> None:
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (directory / mod.TEXTFILE).symlink_to(victim)  # planted by whoever owns the directory
    assert mod.write_textfile("polymarket_compliance_score_percent 100\n", directory)
    assert victim.read_text() == "untouched\n"
    target = directory / mod.TEXTFILE
    assert not target.is_symlink() and target.read_text() == "polymarket_compliance_score_percent 100\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in directory.iterdir()) == [mod.TEXTFILE]  # no temporary file left


def test_textfile_without_a_node_exporter_and_a_linked_directory(mod: ModuleType, tmp_path: Path) -> None:
    assert mod.write_textfile("x 1\n", tmp_path / "absent") is False
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(mod.UsageError):
        mod.write_textfile("x 1\n", tmp_path / "linked")
    assert os.listdir(elsewhere) == []


# -- package versions (polymarket_package_info, read by polymarket-golive) -----------------------------------

DPKG_STATUS = "".join(
    f"Package: {name}\nStatus: {status}\nVersion: {version}\nArchitecture: all\nMaintainer: x <x@example.org>\n"
    "Description: x\n\n"
    for name, status, version in (
        ("polymarket-ha", "install ok installed", "1.0.3"),
        ("polymarket-backup", "deinstall ok config-files", "1.0.2"),  # removed, not purged: rc
        ("polymarket-bot", "install ok half-installed", "1.0.1"),
        ("polymarket-hardening", "hold ok installed", "1:1.0.3~rc1+b2"),
        ("prometheus-node-exporter", "install ok installed", "1.9.1-1"),
    ))  # fmt: skip


def test_package_info_lists_only_installed_polymarket_packages(mod: ModuleType, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The real dpkg-query, on a status database of our own: its format and the parser agree, and only the
    installed polymarket-* packages are named (not rc, not half-installed, not other packages)."""
    admin = tmp_path / "dpkg"
    (admin / "updates").mkdir(parents=True)
    (admin / "status").write_text(DPKG_STATUS)
    real_run = mod.run
    seen: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str]:
        seen.append(argv)
        answer: tuple[int, str] = real_run([argv[0], f"--admindir={admin}", *argv[1:]])
        return answer

    monkeypatch.setattr(mod, "run", run)
    assert mod.installed_packages() == [("polymarket-ha", "1.0.3"), ("polymarket-hardening", "1:1.0.3~rc1+b2")]
    assert seen[0][0] == "dpkg-query" and seen[0][-1] == "polymarket-*"
    (admin / "status").write_text("")  # none installed: dpkg-query's complaint on stderr is no package
    assert mod.installed_packages() == []


def test_package_info_is_written_escaped_with_the_compliance_metrics(mod: ModuleType, tmp_path: Path) -> None:
    packages = [("polymarket-ha", "1.0.3"), ("polymarket-bot", 'a"b\\c\nd')]
    text = mod.render_textfile(controls(mod), mod.Config(threshold=95, keep=3), 1700000000, packages)
    lines = text.splitlines()
    assert 'polymarket_package_info{package="polymarket-ha",version="1.0.3"} 1' in lines
    assert 'polymarket_package_info{package="polymarket-bot",version="a\\"b\\\\c\\nd"} 1' in lines
    assert "# TYPE polymarket_package_info gauge" in lines
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (directory / mod.TEXTFILE).symlink_to(victim)
    assert mod.write_textfile(text, directory)
    assert victim.read_text() == "untouched\n"
    assert (directory / mod.TEXTFILE).read_text() == text  # one file, the compliance and package metrics
    assert sorted(p.name for p in directory.iterdir()) == [mod.TEXTFILE]
