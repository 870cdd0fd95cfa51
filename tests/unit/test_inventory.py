"""The inventory: the shipped example loads, and every bad inventory of the corpus
fails with its one expected line, exit code 2 and nothing written."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from builder import inventory, project, text
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
    assert inv.packages(hosts["lb"]) == ("polymarket-hardening", "polymarket-ha", "polymarket-monitoring")
    assert inv.peer(hosts["primary"]) == hosts["standby"] and inv.peer(hosts["standby"]) == hosts["primary"]
    assert inv.peer(hosts["lb"]) is None
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
    line = (tmp_path / "k.pub").read_text().strip()
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


@pytest.mark.parametrize(
    ("pattern", "good"),
    [
        (inventory.MAC, "52:54:00:12:34:56"),
        (inventory.INTERFACE, "enp1s0"),
        (inventory.DISK, "/dev/sda"),
        (inventory.KEYBOARD, "us"),
        (inventory.LOCALE, "en_US.UTF-8"),
        (inventory.USERNAME, "admin"),
        (inventory.PACKAGE, "polymarket-ha"),
        (inventory.HOSTNAME, "lb"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_patterns_match_the_whole_value(pattern: re.Pattern[str], good: str) -> None:
    """A `$`-anchored re.match accepted 'enp1s0\\n'; the patterns hold even without the loader's control check."""
    reader = inventory._Reader("inventory.yaml", {"f": good, "g": good + "\n"}, "network", ("network",), {})
    assert reader.string("f", pattern) == good
    with pytest.raises(InputError, match="is not valid"):
        reader.string("g", pattern)


def test_urls_match_the_whole_value() -> None:
    assert text.http_url("http://192.168.1.5/polymarket/") == "http://192.168.1.5/polymarket"
    for bad in ("http://192.168.1.5/polymarket\n", "http://x/ Trusted=yes", "ftp://x/", "http://x/\r"):
        with pytest.raises(ValueError):
            text.http_url(bad)


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\0", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e"])
def test_control_characters_are_named(char: str) -> None:
    problem = text.control_problem(f"ab{char}c")
    assert problem is not None and f"U+{ord(char):04X}" in problem and "at position 3" in problem
    assert text.control_problem("ssh-ed25519 AAAA admin@example (laptop, é)") is None


def test_service_users_are_read_from_the_packages_sysusers() -> None:
    assert project.service_users(REPO) == {"polymarket-bot": "polymarket-bot", "polymarket-ha": "polymarket-ha"}


def test_readme_inventory_error_example_is_what_the_builder_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's example error, produced by the one change it describes on the shipped inventory."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"`(error: inventory\.yaml:\d+: host (\S+): address (\S+) is outside network \S+)`", readme)
    assert example, "README's inventory error example is gone"
    line, host, address = example.groups()
    shipped = inventory.load(EXAMPLE)
    old = next(str(h.address) for h in shipped.hosts if h.name == host)
    text_ = EXAMPLE.read_text(encoding="utf-8")
    assert text_.count(f"address: {old}\n") == 1
    (tmp_path / "inventory.yaml").write_text(text_.replace(f"address: {old}\n", f"address: {address}\n"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as exc:
        inventory.load(Path("inventory.yaml"))
    assert "error: " + exc.value.message == line


def test_example_has_the_plans_contacts_and_alert_routes() -> None:
    """The plan's emergency-contacts table is the inventory's contacts; the routes render into the receivers."""
    inv = inventory.load(EXAMPLE)
    assert [(c.role, c.person, c.phone, c.email) for c in inv.contacts] == [
        ("Primary On-Call", "System Administrator", "+1-555-123-4567", "admin@company.com"),
        ("DevOps Lead", "DevOps Engineer", "+1-555-123-4568", "devops@company.com"),
        ("Application Owner", "Product Manager", "+1-555-123-4569", "product@company.com"),
        ("Security Officer", "Security Team", "+1-555-123-4570", "security@company.com"),
    ]
    assert inventory.alert_answers(inv) == {
        "smtp_smarthost": "smtp.company.com:587",
        "smtp_from": "polymarket-alerts@company.com",
        "smtp_username": "polymarket-alerts",
        "email_to": "admin@company.com devops@company.com",
        "email_critical_to": "product@company.com security@company.com",
    }


def _amtool_route(config: Path, *labels: str) -> str:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed: make test-deps")
    out = subprocess.run(
        [amtool, "config", "routes", "test", "--config.file", str(config), *labels],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


def test_routes_reach_alertmanager_by_severity(tmp_path: Path) -> None:
    """The answers the media preseed, rendered by polymarket-monitoring itself: a warning e-mails the contacts
    under warning only, a critical alert those and the ones under critical; amtool takes the file."""
    from tests import payload

    mod = payload.load("polymarket-monitoring", "polymarket_monitoring.py")
    inv = inventory.load(EXAMPLE)
    settings = {q: d for q, (_, d) in mod.QUESTIONS.items()} | inventory.alert_answers(inv)
    text_ = mod.render(settings, (0, 26), tmp_path)["alertmanager.yml"]
    (tmp_path / "alertmanager.yml").write_text(text_)
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool is not installed: make test-deps"
    check = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(text_)["receivers"]}
    assert receivers["critical"]["email_configs"][0]["to"] == (
        "admin@company.com, devops@company.com, product@company.com, security@company.com"
    )
    assert receivers["warning"]["email_configs"][0]["to"] == "admin@company.com, devops@company.com"
    config = tmp_path / "alertmanager.yml"
    assert _amtool_route(config, "severity=critical", "alertname=PolymarketBotDown") == "critical"
    assert _amtool_route(config, "severity=warning", "alertname=PolymarketDiskFull") == "warning"
    assert "smtp_auth_password:" not in text_ and "smtp_auth_password_file:" in text_  # the 0600 file, never the secret


def test_a_monitoring_host_of_its_own(tmp_path: Path) -> None:
    """roles: monitoring moves polymarket-monitoring and its answers off the lb; polymarket-ha stays off it."""
    from builder import autoinstall_config, debconf

    text_ = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (
        (
            "  lb: [polymarket-hardening, polymarket-ha, polymarket-monitoring]\n",
            "  lb: [polymarket-hardening, polymarket-ha]\n",
        ),
        (
            "  # monitoring: [polymarket-hardening, polymarket-monitoring]\n",
            "  monitoring: [polymarket-hardening, polymarket-monitoring]\n",
        ),
        (
            "    disks: [/dev/sda]\n",
            "    disks: [/dev/sda]\n  mon:\n    role: monitoring\n    address: 192.168.1.103\n"
            '    mac: "52:54:00:a1:00:67"\n    disks: [/dev/sda]\n',
        ),
    ):
        assert text_.count(old) == 1
        text_ = text_.replace(old, new)
    (tmp_path / "inventory.yaml").write_text(text_)
    inv = inventory.load(tmp_path / "inventory.yaml")
    hosts = {h.name: h for h in inv.hosts}
    assert hosts["mon"].role is Role.MONITORING
    questions = debconf.load(REPO)
    lines = {
        n: {a.question: a.value for a in autoinstall_config.debconf_answers(inv, hosts[n], questions)} for n in hosts
    }
    assert not any(q.startswith("polymarket-monitoring/") for q in lines["lb"])
    assert not any(q.startswith("polymarket-ha/") for q in lines["mon"])
    mon = lines["mon"]
    assert mon["polymarket-monitoring/node_targets"] == (
        "primary=192.168.1.100 standby=192.168.1.101 lb=192.168.1.102 mon=192.168.1.103"
    )
    # HAProxy's exporter: on the lb's own address for the monitoring host only (polymarket-ha/metrics_allow)
    assert mon["polymarket-monitoring/haproxy_target"] == "192.168.1.102:8405"
    assert lines["lb"]["polymarket-ha/metrics_allow"] == "192.168.1.103"
    assert not any("polymarket-ha/metrics_allow" in lines[n] for n in ("primary", "standby"))
    assert mon["polymarket-monitoring/email_critical_to"] == "product@company.com security@company.com"
    assert mon["polymarket-hardening/allow_users"] == "admin"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("    email: admin@company.com\n", "    email: a$(id)@company.com\n", "email"),
        ("    from: polymarket-alerts@company.com\n", "    from: al`id`@company.com\n", "from"),
        ("    username: polymarket-alerts ", "    username: al$HOME ", "username"),
        ("alerts:\n", "alerts:\n  webhook_url: https://hooks.example/x?a=$b\n", "webhook_url"),
    ],
)
def test_alert_answers_polymarket_monitoring_would_refuse_fail_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, field: str
) -> None:
    """polymarket-monitoring's check-value refuses " \\ $ ` in every answer (its monitoring.conf cannot hold them):
    the inventory refuses them too, at build time with its line, not at install on the monitoring host."""
    text_ = EXAMPLE.read_text(encoding="utf-8")
    assert old in text_
    (tmp_path / "inventory.yaml").write_text(text_.replace(old, new, 1))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as exc:
        inventory.load(Path("inventory.yaml"))
    assert field in exc.value.message and "\n" not in exc.value.message
