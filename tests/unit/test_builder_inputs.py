"""Fixes of the outside review of the builder's inputs (issue 7 item 10), beyond its attack samples:
what --output may replace and keeps, build-info, the one interface rule shared with polymarket-ha,
SSH key blobs, bounded error messages, URLs, and one-line errors instead of tracebacks."""

from __future__ import annotations

import base64
import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from builder import autoinstall, inventory, text
from builder.cli import main
from builder.errors import InputError
from builder.project import Project, load_project
from tests import payload

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "autoinstall" / "inventory.yaml"
TEST_KEY = Path(__file__).resolve().parent / "data" / "inventories" / "test-archive-keyring.asc"


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project(REPO)


def _inventory(directory: Path, drop_lb: bool = False) -> Path:
    text_ = EXAMPLE.read_text().replace("../dist/repo/polymarket-archive-keyring.asc", str(TEST_KEY))
    if drop_lb:  # the host lb and its indented block
        head, sep, rest = text_.partition("\n  lb:\n")
        assert sep, "the example inventory has a host lb"
        lines = rest.splitlines(keepends=True)
        while lines and (lines[0].startswith("    ") or not lines[0].strip()):
            lines.pop(0)
        text_ = head + "\n" + "".join(lines)
        # alerts: needs the host that installs polymarket-monitoring (the lb): it goes with it
        text_ = text_.partition("\nalerts:\n")[0] + "\n"
    path = directory / "inventory.yaml"
    path.write_text(text_)
    return path


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error:", "Traceback"))]


# --- --output: only ever the builder's own files are replaced ---------------------------------------


@pytest.mark.parametrize("what", ["home", "dist"])
def test_output_holding_other_files_is_refused_in_one_line_and_left_alone(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / what
    (out / "sub").mkdir(parents=True)
    (out / ".bashrc").write_text("mine")
    (out / "sub" / "a.deb").write_bytes(b"deb")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(["-q", "autoinstall", "--inventory", str(_inventory(tmp_path)), "--output", str(out)])
    lines = _err(capsys)
    assert code == 2 and len(lines) == 1 and "did not write" in lines[0], lines
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / ".bashrc").read_text() == "mine" and (out / "sub" / "a.deb").read_bytes() == b"deb"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["inventory.yaml", what])  # no staging left


def test_output_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "media"
    out.write_text("a file")
    code = main(["-q", "autoinstall", "--inventory", str(_inventory(tmp_path)), "--output", str(out)])
    assert code == 2 and "not a directory" in _err(capsys)[0] and out.read_text() == "a file"


def test_rerender_keeps_the_operators_files_and_drops_only_its_own(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "media"
    autoinstall.render(project, _inventory(tmp_path), out)
    assert (out / "lb" / "seed.iso").is_file() and (out / autoinstall.MARKER).is_file()
    # What the dnsmasq example tells the operator to put into pxe/, and anything else of theirs.
    (out / "pxe" / "vmlinuz").write_bytes(b"kernel")
    (out / "pxe" / "tftp").mkdir()
    (out / "pxe" / "tftp" / "pxelinux.0").write_bytes(b"loader")
    (out / "lb" / "notes.txt").write_text("lb's disk is slow")
    (out / "README.local").write_text("ours")
    (out / "pxe" / "latest").symlink_to("vmlinuz")
    autoinstall.render(project, _inventory(tmp_path, drop_lb=True), out)
    assert (out / "pxe" / "vmlinuz").read_bytes() == b"kernel"
    assert (out / "pxe" / "tftp" / "pxelinux.0").read_bytes() == b"loader"
    assert (out / "lb" / "notes.txt").read_text() == "lb's disk is slow"
    assert (out / "README.local").read_text() == "ours"
    assert (out / "pxe" / "latest").is_symlink() and str((out / "pxe" / "latest").readlink()) == "vmlinuz"
    # lb is gone from the inventory: its media are gone, the rest re-rendered.
    assert not (out / "lb" / "seed.iso").exists() and not (out / "lb" / "user-data").exists()
    assert not (out / "pxe" / "http" / "lb").exists()
    assert (out / "primary" / "seed.iso").is_file() and (out / "standby" / "seed.iso").is_file()
    assert "lb/seed.iso" not in (out / autoinstall.MARKER).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "media"]


def test_an_operator_file_where_the_media_write_is_refused(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "media"
    autoinstall.render(project, _inventory(tmp_path, drop_lb=True), out)
    (out / "lb").mkdir()
    (out / "lb" / "user-data").write_text("hand-written")  # not the builder's: lb was never rendered here
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code = main(["-q", "autoinstall", "--inventory", str(_inventory(tmp_path)), "--output", str(out)])
    lines = _err(capsys)
    assert code == 2 and len(lines) == 1 and "lb/user-data was not written by the builder" in lines[0], lines
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.yaml", "media"]


def test_media_of_an_earlier_builder_without_marker_are_replaced(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "media"
    autoinstall.render(project, _inventory(tmp_path), out)
    (out / autoinstall.MARKER).unlink()
    (out / "build-info").unlink()
    (out / "pxe" / "vmlinuz").write_bytes(b"kernel")
    (out / "primary" / "user-data").write_text("stale")
    autoinstall.render(project, _inventory(tmp_path), out)
    assert (out / "primary" / "user-data").read_text().startswith("#cloud-config")
    assert (out / "pxe" / "vmlinuz").read_bytes() == b"kernel" and (out / autoinstall.MARKER).is_file()


def test_build_info_names_the_inventory_and_its_sha256(project: Project, tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    out = tmp_path / "media"
    autoinstall.render(project, inv, out)
    info = (out / "build-info").read_text().splitlines()
    assert "inventory: inventory.yaml" in info
    assert f"inventory-sha256: {hashlib.sha256(inv.read_bytes()).hexdigest()}" in info


# --- one interface rule, shared with polymarket-ha check-value ------------------------------------

INTERFACE_SAMPLES = [
    "enp1s0", "eth0", "bond0.100", "br-lan", "wg_0", "veth@1", "a", "x" * 15,  # taken
    "enp1s0:1", "..", ".", "", "x" * 16, "en p1", "en/p1", "enp1s0\n", "é", "en+1", "en,1", "en=1",  # refused
]  # fmt: skip


def test_builder_and_polymarket_ha_agree_on_interface_names() -> None:
    ha = payload.ha()
    for name in INTERFACE_SAMPLES:
        try:
            ha.check_interface(name)
            ha_ok = True
        except ha.HAError:
            ha_ok = False
        try:
            inventory.check_interface(name)
            builder_ok = True
        except ValueError:
            builder_ok = False
        assert builder_ok == ha_ok, name
    assert inventory.INTERFACE.fullmatch("enp1s0") and not inventory.INTERFACE.fullmatch("enp1s0:1")


# --- SSH key blobs ---------------------------------------------------------------------------------


def _blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


POINT = {256: b"\x04" + b"\x11" * 64, 384: b"\x04" + b"\x22" * 96, 521: b"\x04" + b"\x33" * 132}
COMPRESSED = b"\x02" + POINT[256][1:]
SK_P256 = b"sk-ecdsa-sha2-nistp256@openssh.com"


@pytest.mark.parametrize(
    "key",
    [
        f"ecdsa-sha2-nistp256 {_blob(b'ecdsa-sha2-nistp256', b'nistp256', POINT[256])} a",
        f"ecdsa-sha2-nistp384 {_blob(b'ecdsa-sha2-nistp384', b'nistp384', POINT[384])} a",
        f"ecdsa-sha2-nistp521 {_blob(b'ecdsa-sha2-nistp521', b'nistp521', POINT[521])} a",
        f"sk-ssh-ed25519@openssh.com {_blob(b'sk-ssh-ed25519@openssh.com', b'k' * 32, b'ssh:')} a",
        f"sk-ecdsa-sha2-nistp256@openssh.com {_blob(SK_P256, b'nistp256', POINT[256], b'ssh:')}",
    ],
    ids=["p256", "p384", "p521", "sk-ed25519", "sk-p256"],
)
def test_well_formed_ecdsa_and_sk_keys_are_taken(key: str) -> None:
    assert inventory.ssh_key_problem(key) is None


@pytest.mark.parametrize(
    "key",
    [
        f"ecdsa-sha2-nistp256 {_blob(b'ecdsa-sha2-nistp256', b'nistp384', POINT[256])}",  # another curve
        f"ecdsa-sha2-nistp256 {_blob(b'ecdsa-sha2-nistp256', b'nistp256', POINT[384])}",  # point of another length
        f"ecdsa-sha2-nistp256 {_blob(b'ecdsa-sha2-nistp256', b'nistp256', COMPRESSED)}",  # not 0x04
        f"ecdsa-sha2-nistp384 {_blob(b'ecdsa-sha2-nistp384', b'nistp384')}",  # no point
        f"ecdsa-sha2-nistp256 {_blob(b'ecdsa-sha2-nistp256', b'nistp256', POINT[256], b'x')}",  # a field too many
        f"sk-ssh-ed25519@openssh.com {_blob(b'sk-ssh-ed25519@openssh.com', b'k' * 32)}",  # no application
        f"sk-ssh-ed25519@openssh.com {_blob(b'sk-ssh-ed25519@openssh.com', b'k' * 31, b'ssh:')}",  # short key
        f"sk-ecdsa-sha2-nistp256@openssh.com {_blob(SK_P256, b'nistp256', POINT[256])}",
        f"ecdsa-sha2-nistp256 {_blob(b'ssh-ed25519', b'k' * 32)}",  # inner type differs
    ],
)
def test_malformed_ecdsa_and_sk_keys_are_refused(key: str) -> None:
    assert inventory.ssh_key_problem(key) is not None


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) is not installed")
@pytest.mark.parametrize("kind", ["ecdsa-256", "ecdsa-384", "ecdsa-521", "ed25519"])
def test_keys_ssh_keygen_makes_are_taken(kind: str, tmp_path: Path) -> None:
    algo, _, bits = kind.partition("-")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", algo, *(["-b", bits] if bits else []), "-N", "", "-f", str(tmp_path / "k")],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert inventory.ssh_key_problem((tmp_path / "k.pub").read_text().strip()) is None


# --- admin names, host names, disks -----------------------------------------------------------------


def _load_with(tmp_path: Path, old: str, new: str) -> inventory.Inventory:
    inv = _inventory(tmp_path)
    source = inv.read_text()
    assert source.count(old) == 1, old
    inv.write_text(source.replace(old, new))
    return inventory.load(inv)


@pytest.mark.parametrize("name", ["operator", "sudo", "adm", "staff", "users", "dhcpcd", "systemd-network",
                                  "systemd-resolve", "systemd-timesync", "messagebus", "syslog", "_apt", "tss",
                                  "uuidd", "tcpdump", "landscape", "fwupd-refresh", "usbmux", "sshd", "pollinate",
                                  "polkitd", "dnsmasq", "lxd", "plugdev", "dip"])  # fmt: skip
def test_admin_may_not_be_a_system_account_or_group(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"admin: user: '{name}' is (reserved|the name of a group)"):
        _load_with(tmp_path, "user: admin", f"user: {name}")


@pytest.mark.parametrize("name", ["admin", "ops", "deploy"])
def test_the_suggested_admin_names_are_free(name: str, tmp_path: Path) -> None:
    assert _load_with(tmp_path, "user: admin", f"user: {name}").admin.user == name


@pytest.mark.parametrize("name", ["pxe", "local", "ignore", "infinite", "45m", "3600", "7d", "0"])
def test_reserved_host_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"host {name}: the host name '{name}' is reserved"):
        _load_with(tmp_path, "\n  lb:\n", f'\n  "{name}":\n')


@pytest.mark.parametrize("name", ["lb1", "m45", "db-2", "pxe1"])
def test_ordinary_host_names_are_not_reserved(name: str, tmp_path: Path) -> None:
    assert name in [h.name for h in _load_with(tmp_path, "\n  lb:\n", f"\n  {name}:\n").hosts]


@pytest.mark.parametrize("disk", ["/dev/./sda", "/dev/../etc/passwd", "/dev//sda", "/dev/sda/", "/dev/disk/../sda"])
def test_disk_paths_must_be_plain(disk: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a plain device path"):
        _load_with(tmp_path, "disks: [/dev/sda]", f"disks: [/dev/sda, {disk}]")


def test_plain_disk_paths_are_taken(tmp_path: Path) -> None:
    inv = _load_with(tmp_path, "disks: [/dev/sda]", "disks: [/dev/disk/by-id/nvme-a_1, /dev/sdb]")
    assert [h.disks for h in inv.hosts if h.name == "lb"] == [("/dev/disk/by-id/nvme-a_1", "/dev/sdb")]


# --- bounded error messages, URLs ---------------------------------------------------------------------


def test_shown_is_bounded_whatever_the_value() -> None:
    bomb: list[object] = [1] * 10
    for _ in range(9):
        bomb = [bomb] * 10  # 10^10 leaves
    for value in (bomb, "x" * 10**6, 10**4000, {"k": bomb}, ["x" * 10**6]):
        assert len(text.shown(value)) <= text.SHOWN_LIMIT + 5  # 77 characters, quotes and '...'
    assert text.shown("enp1s0:1") == "'enp1s0:1'"


@pytest.mark.parametrize(
    "url",
    ["http://192.168.1.5/polymarket", "https://repo.example.com:8443/a/b", "http://[fd00::5]:8080/x", "http://h"],
)
def test_http_url_takes_plain_urls(url: str) -> None:
    assert text.http_url(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://u@h/x", "http://h/x?a=1", "http://h/x#f", "http://h:0/x", "http://1.2.3/x", "http://a..b/x",
     "http://[1.2.3.4]/x", "http://h x/", "http://h:8a/x", "file:///etc/passwd", "http:/h/x", "http://h/\u00e9"],
)  # fmt: skip
def test_http_url_refuses_what_is_no_plain_url(url: str) -> None:
    with pytest.raises(ValueError):
        text.http_url(url)


# --- one line, not a traceback ------------------------------------------------------------------------


def test_release_with_a_non_utf8_message_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "debian" / "source").mkdir(parents=True)
    (tmp_path / "builder").mkdir()
    changelog = (
        "polymarket-deploy (1.0.0) noble; urgency=medium\n\n  * First release.\n\n"
        " -- Polymarket Deploy Team <ops@polymarket-deploy.invalid>  Wed, 25 Nov 2026 12:00:00 +0000\n"
    )
    (tmp_path / "debian" / "changelog").write_text(changelog)
    (tmp_path / "debian" / "control").write_text(
        "Source: polymarket-deploy\nMaintainer: Polymarket Deploy Team <ops@polymarket-deploy.invalid>\n"
    )
    (tmp_path / "debian" / "source" / "format").write_text("3.0 (native)\n")
    monkeypatch.chdir(tmp_path)
    code = main(["-q", "release", "--version", "1.1.0", "-m", "caf\udcff"])
    lines = _err(capsys)
    assert code == 2 and len(lines) == 1 and "not UTF-8" in lines[0], lines
    assert sorted(p.name for p in (tmp_path / "debian").iterdir()) == ["changelog", "control", "source"]
    assert (tmp_path / "debian" / "changelog").read_text() == changelog


@pytest.mark.parametrize("value", ["\u00b2", "99999999999999999", "-1", "1e9", " 1"])
def test_a_bad_source_date_epoch_is_one_line(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", value)
    code = main(["-q", "autoinstall", "--inventory", str(_inventory(tmp_path)), "--output", str(tmp_path / "o")])
    lines = _err(capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: SOURCE_DATE_EPOCH="), lines
    assert not (tmp_path / "o").exists()


def test_a_non_string_host_name_1_000_has_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inventory(tmp_path)
    source = inv.read_text()
    assert "\n  primary:\n" in source
    inv.write_text(source.replace("\n  primary:\n", "\n  1_000:\n"))
    line = inv.read_text().splitlines().index("  1_000:") + 1
    code = main(["-q", "autoinstall", "--inventory", str(inv), "--output", str(tmp_path / "o")])
    lines = _err(capsys)
    assert code == 2 and lines == [f"error: {inv}:{line}: hosts: the host name 1000 is a number, not a lower-case "
                                   "DNS label (a-z, 0-9, -)"], lines  # fmt: skip


def test_invalid_utf8_inventory_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inventory(tmp_path)
    data = inv.read_bytes().replace(b"user: admin", b"user: adm\xe9n")
    inv.write_bytes(data)
    line = data[: data.index(b"\xe9")].count(b"\n") + 1
    code = main(["-q", "autoinstall", "--inventory", str(inv), "--output", str(tmp_path / "o")])
    assert code == 2 and _err(capsys) == [f"error: {inv}:{line}: byte 0xE9 is not UTF-8"]


def test_huge_number_is_refused_with_its_line(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    inv.write_text(inv.read_text().replace("virtual_ip: 192.168.1.10", "virtual_ip: " + "9" * 5001))
    with pytest.raises(InputError, match=r":[0-9]+: network: virtual_ip: a number of 5001 characters is too long"):
        inventory.load(inv)
