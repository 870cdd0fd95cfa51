"""The inventory: the shipped example loads, and every bad inventory of the corpus
fails with its one expected line, exit code 2 and nothing written."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from builder import inventory
from builder.cli import main
from builder.errors import InputError
from builder.inventory import Role

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "autoinstall" / "inventory.yaml"
CORPUS = Path(__file__).resolve().parent / "data" / "inventories"
BAD = sorted(CORPUS.glob("*.yaml"))


def test_example_is_the_plans_deployment() -> None:
    inv = inventory.load(EXAMPLE)
    hosts = {h.name: h for h in inv.hosts}
    assert inv.network.cidr == ipaddress.IPv4Network("192.168.1.0/24")
    assert str(inv.network.gateway) == "192.168.1.1"
    assert [str(a) for a in inv.network.dns] == ["8.8.8.8", "1.1.1.1"]
    assert inv.network.interface == "enp1s0"
    assert str(inv.network.virtual_ip) == "192.168.1.10"
    assert str(hosts["primary"].address) == "192.168.1.100" and hosts["primary"].role is Role.PRIMARY
    assert str(hosts["standby"].address) == "192.168.1.101" and hosts["standby"].role is Role.STANDBY
    assert hosts["lb"].role is Role.LB
    assert len(hosts["primary"].disks) == 2 and len(hosts["standby"].disks) == 2 and len(hosts["lb"].disks) == 1
    node = ("polymarket-hardening", "polymarket-bot", "polymarket-backup", "polymarket-ha")
    assert inv.packages(hosts["primary"]) == node
    assert inv.packages(hosts["standby"]) == node
    assert inv.packages(hosts["lb"]) == ("polymarket-hardening", "polymarket-ha")
    assert inv.peer(hosts["primary"]) == hosts["standby"] and inv.peer(hosts["standby"]) == hosts["primary"]
    assert inv.peer(hosts["lb"]) is None
    assert inv.allow_users(hosts["primary"]) == ("admin", "polymarket-ha")
    assert inv.allow_users(hosts["lb"]) == ("admin",)
    assert all(h.timezone == "UTC" for h in inv.hosts)
    assert inv.apt.key_file == REPO / "dist" / "repo" / "polymarket-archive-keyring.asc"


def test_example_ssh_keys_are_valid_for_ssh_keygen(tmp_path: Path) -> None:
    for i, key in enumerate(inventory.load(EXAMPLE).admin.ssh_keys):
        assert inventory.ssh_key_problem(key) is None
        (tmp_path / f"{i}.pub").write_text(key + "\n")
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / f"{i}.pub")], capture_output=True, text=True)
        assert out.returncode == 0 and "(ED25519)" in out.stdout, out.stderr


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("ssh-ed25519", "is not 'TYPE BASE64 [COMMENT]'"),
        ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 x", "the key data is truncated"),
        ("ssh-ed25519 AAAA!x", "the key is not valid base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAQA=", "the key data is not a valid ssh-ed25519 key"),
    ],
)
def test_ssh_key_problems(line: str, problem: str) -> None:
    assert inventory.ssh_key_problem(line) == problem


def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "k")], check=True)
    line = (tmp_path / "k.pub").read_text()
    assert inventory.ssh_key_problem(line) == "RSA key of 2048 bits is too short (at least 3072)"


def _expected(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: error: "), f"{path.name}: the first line must be '# expect: error: ...'"
    return first.removeprefix("# expect: ")


def test_corpus_is_not_empty() -> None:
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_inventory_fails_with_its_line(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(CORPUS)
    out = tmp_path / "out"
    code = main(["autoinstall", "--inventory", path.name, "--output", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    lines = [line for line in err if line.startswith(("error:", "hint:", "Traceback"))]
    assert lines[0] == _expected(path)
    assert [line for line in lines if not line.startswith("hint:")] == lines[:1], "one error line, no traceback"
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", BAD[:3], ids=[p.stem for p in BAD[:3]])
def test_bad_inventory_raises_input_error(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    with pytest.raises(InputError) as exc:
        inventory.load(Path(path.name))
    assert "error: " + exc.value.message == _expected(path)
