"""Autoinstall media of the example inventory: golden files, validation of every
output, the CIDATA seed, the PXE tree, and nothing written on error.

Refresh the golden files after an intended change with
``POLYMARKET_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_autoinstall.py``
and review the diff.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder import autoinstall, autoinstall_config, autoinstall_validate, inventory
from builder.errors import BuilderError, CommandFailed, InputError
from builder.project import Project, load_project

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "autoinstall" / "inventory.yaml"
TEST_KEY = Path(__file__).resolve().parent / "data" / "inventories" / "test-archive-keyring.asc"
GOLDEN = Path(__file__).resolve().parent / "golden" / "autoinstall"
UPDATE = os.environ.get("POLYMARKET_UPDATE_GOLDEN") == "1"
HOSTS = ("primary", "standby", "lb")


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(REPO)


def example_inventory(directory: Path, edit: Callable[[str], str] = lambda t: t) -> Path:
    """The shipped inventory, as inventory.yaml in ``directory``, its key the test key."""
    text = EXAMPLE.read_text().replace("../dist/repo/polymarket-archive-keyring.asc", str(TEST_KEY))
    path = directory / "inventory.yaml"
    path.write_text(edit(text))
    return path


@pytest.fixture(scope="module")
def rendered(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("media")
    out = tmp / "autoinstall"
    autoinstall.render(project, example_inventory(tmp), out)
    return out


def _text_files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".iso"
    }


def _path_independent(files: dict[str, str], rendered: Path | None) -> dict[str, str]:
    """build-info's inventory-sha256 covers the test inventory, which names the test key by its
    absolute path (it differs with the checkout's location): checked against that file here,
    and left out of the golden comparison."""
    info = files.get(autoinstall.BUILD_INFO)
    if info is None:
        return files
    lines = info.splitlines(keepends=True)
    digest = [line for line in lines if line.startswith("inventory-sha256: ")]
    assert len(digest) == 1, info
    if rendered is not None:
        used = rendered.parent / "inventory.yaml"
        assert digest[0].split()[1] == hashlib.sha256(used.read_bytes()).hexdigest(), info
    kept = "".join(line for line in lines if not line.startswith("inventory-sha256: "))
    return {**files, autoinstall.BUILD_INFO: kept}


def test_golden_files(rendered: Path) -> None:
    got = _text_files(rendered)
    if UPDATE:
        for rel, text in got.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
        for stale in set(_text_files(GOLDEN)) - set(got):
            (GOLDEN / stale).unlink()
    want = _path_independent(_text_files(GOLDEN), None)
    got = _path_independent(got, rendered)
    assert sorted(got) == sorted(want), "set POLYMARKET_UPDATE_GOLDEN=1 to refresh after an intended change"
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs from its golden file (POLYMARKET_UPDATE_GOLDEN=1 refreshes)"


def test_layout(rendered: Path) -> None:
    for host in HOSTS:
        for name in ("user-data", "meta-data", "seed.iso"):
            assert (rendered / host / name).is_file()
        for name in ("user-data", "meta-data", "vendor-data"):
            assert (rendered / "pxe" / "http" / host / name).is_file()
        assert (rendered / "pxe" / "http" / host / "user-data").read_bytes() == (
            rendered / host / "user-data"
        ).read_bytes()
    for mac in ("52-54-00-a1-00-64", "52-54-00-a1-00-65", "52-54-00-a1-00-66"):
        assert (rendered / "pxe" / "pxelinux.cfg" / f"01-{mac}").is_file()
    assert (rendered / "pxe" / "grub" / "grub.cfg").is_file()
    assert (rendered / "pxe" / "dnsmasq.conf.example").is_file()
    assert not list(rendered.parent.glob(".autoinstall.*")), "no staging directory left behind"


@pytest.mark.parametrize("host", HOSTS)
def test_every_user_data_validates(rendered: Path, host: str) -> None:
    text = (rendered / host / "user-data").read_text()
    ai = autoinstall_validate.validate(f"{host}/user-data", text)
    assert text.startswith("#cloud-config\n")
    assert ai["version"] == 1 and ai["shutdown"] == "reboot"
    assert ai["ssh"] == {"install-server": True, "allow-pw": False}
    assert "identity" not in ai
    users = ai["user-data"]["users"]
    assert users[0]["name"] == "admin" and users[0]["lock_passwd"] is True and users[0]["ssh_authorized_keys"]
    assert "password" not in text.lower().replace("allow-pw", "")


def test_network_is_the_plans_static_config(rendered: Path) -> None:
    ai = yaml.safe_load((rendered / "standby" / "user-data").read_text())["autoinstall"]
    assert ai["network"]["ethernets"]["enp1s0"] == {
        "dhcp4": False,
        "dhcp6": False,
        "addresses": ["192.168.1.101/24"],
        "routes": [{"to": "default", "via": "192.168.1.1"}],
        "nameservers": {"addresses": ["8.8.8.8", "1.1.1.1"]},
    }


def test_storage_raid1_with_two_disks_lvm_with_one(rendered: Path) -> None:
    def actions(host: str) -> list[dict[str, Any]]:
        ai = yaml.safe_load((rendered / host / "user-data").read_text())["autoinstall"]
        config: list[dict[str, Any]] = ai["storage"]["config"]
        return config

    primary = actions("primary")
    raids = [a for a in primary if a["type"] == "raid"]
    assert [r["raidlevel"] for r in raids] == [1, 1]
    vg = next(a for a in primary if a["type"] == "lvm_volgroup")
    assert vg["devices"] == ["md-pv"]
    assert [a["path"] for a in primary if a["type"] == "disk"] == ["/dev/nvme0n1", "/dev/nvme1n1"]
    assert sum(1 for a in primary if a.get("grub_device") is True) == 2, "an ESP with GRUB on each disk"
    lb = actions("lb")
    assert not [a for a in lb if a["type"] == "raid"]
    assert next(a for a in lb if a["type"] == "lvm_volgroup")["devices"] == ["disk0-pv"]


def _late(rendered: Path, host: str) -> list[list[str]]:
    commands: list[list[str]] = yaml.safe_load((rendered / host / "user-data").read_text())["autoinstall"][
        "late-commands"
    ]
    return commands


def test_repository_is_added_signed_by_its_own_keyring(rendered: Path) -> None:
    add, update, install = _late(rendered, "lb")
    assert add[:2] == ["sh", "-c"] and add[3] == "add-polymarket-repository"
    dearmored = subprocess.run(["gpg", "--dearmor"], input=TEST_KEY.read_bytes(), capture_output=True, check=True)
    assert base64.b64decode(add[4]) == dearmored.stdout
    assert add[5] == (
        "Types: deb\nURIs: http://192.168.1.5/polymarket\nSuites: noble\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/polymarket-archive-keyring.gpg\n"
    )
    assert "> /target/etc/apt/keyrings/polymarket-archive-keyring.gpg;" in add[2]
    assert "> /target/etc/apt/sources.list.d/polymarket.sources;" in add[2]
    assert "trusted.gpg.d" not in (rendered / "lb" / "user-data").read_text()
    assert update == ["curtin", "in-target", "--", "apt-get", "update"]
    assert install[:8] == [
        "curtin",
        "in-target",
        "--",
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
    ]


def test_debconf_answers_and_packages(rendered: Path) -> None:
    primary = yaml.safe_load((rendered / "primary" / "user-data").read_text())["autoinstall"]
    assert primary["debconf-selections"].splitlines() == [
        "polymarket-hardening polymarket-hardening/allow_users string admin",
        "polymarket-hardening polymarket-hardening/admin_network string 192.168.1.0/24",
        "polymarket-ha polymarket-ha/role select primary",
        "polymarket-ha polymarket-ha/own_address string 192.168.1.100",
        "polymarket-ha polymarket-ha/peer_address string 192.168.1.101",
        "polymarket-ha polymarket-ha/virtual_ip string 192.168.1.10",
        "polymarket-ha polymarket-ha/interface string enp1s0",
        "polymarket-ha polymarket-ha/witness_address string 192.168.1.102",
    ]
    assert _late(rendered, "primary")[-1][8:] == [
        "polymarket-hardening", "polymarket-bot", "polymarket-backup", "polymarket-ha"]  # fmt: skip
    lb = yaml.safe_load((rendered / "lb" / "user-data").read_text())["autoinstall"]
    assert "allow_users string admin\n" in lb["debconf-selections"]
    assert "polymarket-ha polymarket-ha/role select lb\n" in lb["debconf-selections"]
    assert "polymarket-ha polymarket-ha/peer_address string\n" in lb["debconf-selections"]
    assert "polymarket-ha polymarket-ha/backends string 192.168.1.100 192.168.1.101\n" in lb["debconf-selections"]
    assert "witness_address" not in lb["debconf-selections"]  # on the lb its backends are the other members
    assert _late(rendered, "lb")[-1][8:] == ["polymarket-hardening", "polymarket-ha", "polymarket-monitoring"]
    assert ("polymarket-monitoring polymarket-monitoring/bot_targets string primary=192.168.1.100"
            " standby=192.168.1.101\n") in lb["debconf-selections"]
    assert ("polymarket-monitoring polymarket-monitoring/node_targets string primary=192.168.1.100"
            " standby=192.168.1.101 lb=192.168.1.102\n") in lb["debconf-selections"]
    # HAProxy's own exporter on the lb's loopback (polymarket-ha), scraped by the lb's Prometheus: no other
    # source allowed (a monitoring host of its own: test_inventory.py::test_a_monitoring_host_of_its_own)
    assert "polymarket-monitoring polymarket-monitoring/haproxy_target string 127.0.0.1:8405\n" in \
        lb["debconf-selections"]
    assert "polymarket-ha polymarket-ha/metrics_allow string\n" in lb["debconf-selections"]


def test_meta_data(rendered: Path) -> None:
    md = yaml.safe_load((rendered / "primary" / "meta-data").read_text())
    assert md["local-hostname"] == "primary" and md["instance-id"].startswith("polymarket-primary-")


def test_pxe_kernel_arguments(rendered: Path) -> None:
    grub = (rendered / "pxe" / "grub" / "grub.cfg").read_text()
    assert "autoinstall ds=nocloud-net\\;s=http://192.168.1.5/autoinstall/primary/" in grub
    assert 'if [ "${net_default_mac}" = "52:54:00:a1:00:65" ]; then set default="standby"; fi' in grub
    pxelinux = (rendered / "pxe" / "pxelinux.cfg" / "01-52-54-00-a1-00-66").read_text()
    assert "autoinstall ds=nocloud-net;s=http://192.168.1.5/autoinstall/lb/" in pxelinux
    assert "url=http://192.168.1.5/ubuntu-24.04.3-live-server-amd64.iso" in pxelinux
    dnsmasq = (rendered / "pxe" / "dnsmasq.conf.example").read_text()
    assert "dhcp-host=52:54:00:a1:00:64,primary,192.168.1.100,infinite" in dnsmasq
    assert "dhcp-range=192.168.1.0,static,255.255.255.0" in dnsmasq


def _iso_info(iso: Path, extract_to: Path) -> str:
    info = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=True
    ).stdout
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(extract_to)],
        capture_output=True,
        check=True,
    )
    return info


def test_seed_iso_is_cidata_with_the_host_files(rendered: Path, tmp_path: Path) -> None:
    info = _iso_info(rendered / "primary" / "seed.iso", tmp_path / "x")
    assert "Volume Id    : CIDATA" in info
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["meta-data", "user-data"]
    for name in ("meta-data", "user-data"):
        assert (tmp_path / "x" / name).read_bytes() == (rendered / "primary" / name).read_bytes()


def test_media_are_reproducible(project: Project, rendered: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    autoinstall.render(project, example_inventory(tmp_path), again)
    for path in sorted(rendered.rglob("*")):
        if path.is_file():
            assert (again / path.relative_to(rendered)).read_bytes() == path.read_bytes(), path


def test_rendering_replaces_the_previous_output(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "oldhost").mkdir(parents=True)
    (out / "oldhost" / "user-data").write_text("#cloud-config\n")
    (out / autoinstall.MARKER).write_text("# earlier media\noldhost/user-data\n")  # the builder wrote it
    autoinstall.render(project, example_inventory(tmp_path), out)
    assert not (out / "oldhost").exists() and (out / "primary" / "seed.iso").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "out"]


def test_nothing_written_when_an_output_is_invalid(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("previous media")
    (out / autoinstall.MARKER).write_text("earlier media")
    inv = example_inventory(tmp_path)
    real = autoinstall_config.storage

    def broken(host: inventory.Host) -> dict[str, Any]:
        data: dict[str, Any] = real(host)
        if host.name == "lb":  # the last host: the others rendered fine
            data["config"] = [a for a in data["config"] if a["type"] != "mount" or a["path"] != "/"]
        return data

    monkeypatch.setattr(autoinstall_config, "storage", broken)
    with pytest.raises(InputError, match=r"^lb/user-data: autoinstall.storage.config: nothing is mounted at /$"):
        autoinstall.render(project, inv, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "out"]
    assert sorted(p.name for p in out.iterdir()) == [autoinstall.MARKER, "keep"]


def test_missing_key_is_one_line_with_a_hint(project: Project, tmp_path: Path) -> None:
    inv = example_inventory(tmp_path, lambda t: t.replace(str(TEST_KEY), "nowhere/key.asc"))
    with pytest.raises(InputError) as exc:
        autoinstall.render(project, inv, tmp_path / "out")
    assert exc.value.message == f"{inv}: apt.key_file: {tmp_path}/nowhere/key.asc does not exist"
    assert exc.value.hint == "publish the repository first: python3 -m builder publish"
    assert not (tmp_path / "out").exists()


def test_not_a_key_is_refused(project: Project, tmp_path: Path) -> None:
    (tmp_path / "key.gpg").write_bytes(b"\x00binary")
    inv = example_inventory(tmp_path, lambda t: t.replace(str(TEST_KEY), "key.gpg"))
    with pytest.raises(InputError, match=r"key\.gpg is not an OpenPGP public key$"):
        autoinstall.render(project, inv, tmp_path / "out")


def test_damaged_armored_key_is_refused(project: Project, tmp_path: Path) -> None:
    text = TEST_KEY.read_text().splitlines()
    text[3] = text[3][:-4] + ("AAAA" if not text[3].endswith("AAAA") else "BBBB")
    (tmp_path / "key.asc").write_text("\n".join(text) + "\n")
    inv = example_inventory(tmp_path, lambda t: t.replace(str(TEST_KEY), "key.asc"))
    with pytest.raises(InputError, match="checksum is wrong"):
        autoinstall.render(project, inv, tmp_path / "out")


def test_binary_key_file_gives_the_same_media(project: Project, rendered: Path, tmp_path: Path) -> None:
    binary = subprocess.run(["gpg", "--dearmor"], input=TEST_KEY.read_bytes(), capture_output=True, check=True)
    (tmp_path / "key.gpg").write_bytes(binary.stdout)
    inv = example_inventory(tmp_path, lambda t: t.replace(str(TEST_KEY), "key.gpg"))
    autoinstall.render(project, inv, tmp_path / "out")
    assert (tmp_path / "out" / "lb" / "user-data").read_text() == (rendered / "lb" / "user-data").read_text()


def test_check_validates_without_writing(project: Project, tmp_path: Path) -> None:
    inv = autoinstall.check(project, example_inventory(tmp_path))
    assert [h.name for h in inv.hosts] == list(HOSTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml"]


# -- the validator refuses what the installer schema lets through -------------------


@pytest.fixture(scope="module")
def good(rendered: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((rendered / "primary" / "user-data").read_text())
    return data


def _mutate(good: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> str:
    data = copy.deepcopy(good)
    change(data["autoinstall"])
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False)


BAD_CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "schema": (lambda a: a.update(shutdown="halt"), r"autoinstall.shutdown: 'halt' is not one of"),
    "unknown-key": (lambda a: a.update(late_commands=[]), r"autoinstall: unknown key 'late_commands'"),
    "identity-password": (
        lambda a: a.update(identity={"username": "a", "hostname": "h"}),
        r"autoinstall.identity: 'password' is a required property",
    ),
    "storage-dangling-ref": (
        lambda a: a["storage"]["config"][-1].update(device="nope"),
        r"storage.config\[\d+\]: device 'nope' is not an earlier format",
    ),
    "storage-unknown-type": (
        lambda a: a["storage"]["config"].append({"type": "zfs", "id": "z"}),
        r"unknown action type 'zfs'",
    ),
    "storage-duplicate-id": (
        lambda a: a["storage"]["config"].append(dict(a["storage"]["config"][0])),
        r"id 'disk0' is used twice",
    ),
    "storage-layout": (lambda a: a.update(storage={"layout": {"name": "lvm"}}), r"storage.layout: unknown key"),
    "apt-global-key": (
        lambda a: a.update(
            apt={"sources": {"x": {"source": "deb [signed-by=/k.gpg] http://h/ noble main", "key": "K"}}}
        ),
        r"apt.sources.x.key: curtin would trust this key for every source",
    ),
    "apt-unscoped": (
        lambda a: a.update(apt={"sources": {"x": {"source": "deb http://h/ noble main"}}}),
        r"apt.sources.x.source: .* is not 'deb \[signed-by=/KEYRING\]",
    ),
    "repo-not-added": (lambda a: a["late-commands"].pop(0), r"late-commands: our repository is never added"),
    "repo-unscoped": (
        lambda a: a["late-commands"][0].__setitem__(5, a["late-commands"][0][5].replace("Signed-By", "X-Signed-By")),
        r"late-commands\[0\]: the source must be Signed-By the keyring it writes",
    ),
    "repo-bad-key": (
        lambda a: a["late-commands"][0].__setitem__(4, "AAAA"),
        r"late-commands\[0\]: the key is not an OpenPGP public key",
    ),
    "install-before-repo": (
        lambda a: a["late-commands"].reverse(),
        r"late-commands: one package install, after the repository is added",
    ),
    "late-command-string": (
        lambda a: a["late-commands"].append("echo hi"),
        r"late-commands\[3\]: must be an argument list",
    ),
    "debconf-line": (
        lambda a: a.update({"debconf-selections": "polymarket-ha/role select primary\n"}),
        r"debconf-selections line 1: .* is not 'owner question type value'",
    ),
    "debconf-wrong-type": (
        lambda a: a.update({"debconf-selections": a["debconf-selections"].replace("role select", "role string")}),
        r"line 3: polymarket-ha/role is answered as string, but its template says select "
        r"\(debian/polymarket-ha\.templates:\d+\)",
    ),
    "debconf-not-a-choice": (
        lambda a: a.update({"debconf-selections": a["debconf-selections"].replace("select primary", "select main")}),
        r"line 3: polymarket-ha/role 'main' is not one of its choices: primary, standby, lb",
    ),
    "debconf-unknown-question": (
        lambda a: a.update({"debconf-selections": a["debconf-selections"].replace("/virtual_ip ", "/vip ")}),
        r"line 6: polymarket-ha/vip is not a question of debian/polymarket-ha\.templates",
    ),
    "debconf-not-a-question": (
        lambda a: a.update(
            {"debconf-selections": a["debconf-selections"] + "polymarket-ha polymarket-ha/invalid note x\n"}
        ),
        r"line 9: polymarket-ha/invalid is answered as note, but its template says error",
    ),
    "debconf-not-installed": (
        lambda a: a["late-commands"][-1].__delitem__(slice(8, 9)),
        r"debconf-selections line 1: polymarket-hardening is not installed",
    ),
    "plain-password": (
        lambda a: a["user-data"]["users"][0].update(plain_text_passwd="secret"),
        r"user-data.users\[0\].plain_text_passwd: no password",
    ),
    "password-ssh": (lambda a: a["ssh"].update({"allow-pw": True}), r"autoinstall.ssh: must install the server"),
    "no-users": (lambda a: a["user-data"].pop("users"), r"user-data.users: must create the admin user"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHANGES))
def test_validator_refuses(good: dict[str, Any], case: str) -> None:
    change, pattern = BAD_CHANGES[case]
    with pytest.raises(InputError, match=pattern):
        autoinstall_validate.validate("x/user-data", _mutate(good, change))


def test_validator_accepts_the_unchanged_file(good: dict[str, Any]) -> None:
    autoinstall_validate.validate("x/user-data", _mutate(good, lambda a: None))


def test_top_level_must_be_only_autoinstall(good: dict[str, Any]) -> None:
    text = "#cloud-config\n" + yaml.safe_dump({**good, "runcmd": ["true"]})
    with pytest.raises(InputError, match="the top level must hold only 'autoinstall:'"):
        autoinstall_validate.validate("x/user-data", text)


# -- cloud-init on the build host ----------------------------------------------------


def test_cloud_init_is_skipped_with_a_log_line_when_absent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, rendered: Path
) -> None:
    monkeypatch.setattr(autoinstall_validate, "cloud_init_available", lambda: False)
    with caplog.at_level("INFO"):
        ran = autoinstall_validate.cloud_init_schema({"lb/user-data": (rendered / "lb" / "user-data").read_text()})
    assert ran is False
    assert "skipped 'cloud-init schema'" in caplog.text


def test_cloud_init_findings_become_one_input_error(monkeypatch: pytest.MonkeyPatch, rendered: Path) -> None:
    seen: list[str] = []

    def fake_run(argv: list[str | Path], **_: Any) -> None:
        text = Path(argv[-1]).read_text()
        seen.append(text)
        if len(seen) == 2:  # the inner cloud-config of the first file
            raise CommandFailed([str(a) for a in argv], 1, "Error: Cloud config schema errors:\nusers.0: bad")

    monkeypatch.setattr(autoinstall_validate, "cloud_init_available", lambda: True)
    monkeypatch.setattr(autoinstall_validate, "run", fake_run)
    files = {"lb/user-data": (rendered / "lb" / "user-data").read_text()}
    with pytest.raises(InputError) as exc:
        autoinstall_validate.cloud_init_schema(files)
    assert exc.value.message == (
        "lb/user-data (autoinstall.user-data): cloud-init schema: Error: Cloud config schema errors: users.0: bad"
    )
    assert seen[0] == files["lb/user-data"]
    assert seen[1].startswith("#cloud-config\n") and "ssh_authorized_keys" in seen[1]


def test_host_overrides_the_default_timezone(project: Project, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        return text.replace("    role: standby\n", "    role: standby\n    timezone: Europe/Berlin\n")

    autoinstall.render(project, example_inventory(tmp_path, edit), tmp_path / "out")
    zones = {
        h: yaml.safe_load((tmp_path / "out" / h / "user-data").read_text())["autoinstall"]["timezone"] for h in HOSTS
    }
    assert zones == {"primary": "UTC", "standby": "Europe/Berlin", "lb": "UTC"}


def test_check_seed_refuses_a_wrong_label(tmp_path: Path, rendered: Path) -> None:
    data = bytearray((rendered / "lb" / "seed.iso").read_bytes())
    data[16 * 2048 + 40 : 16 * 2048 + 46] = b"OTHER "
    (tmp_path / "seed.iso").write_bytes(bytes(data))
    autoinstall.check_seed(rendered / "lb" / "seed.iso")
    with pytest.raises(BuilderError, match="not an ISO 9660 volume labelled CIDATA"):
        autoinstall.check_seed(tmp_path / "seed.iso")


def test_a_role_naming_a_package_not_built_here_is_refused(tmp_path: Path) -> None:
    src = (REPO / "autoinstall" / "inventory.yaml").read_text()
    bad = tmp_path / "inventory.yaml"
    lb = "lb: [polymarket-hardening, polymarket-ha, polymarket-monitoring]"
    bad.write_text(src.replace(lb, "lb: [polymarket-hardening, polymarket-web]"))
    with pytest.raises(InputError, match=r"inventory.yaml:\d+: roles: lb: polymarket-web is not one of our packages"):
        inventory.load(bad)
