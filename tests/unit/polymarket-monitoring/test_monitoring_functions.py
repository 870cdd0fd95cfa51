"""polymarket-monitoring's /usr/sbin/polymarket-monitoring (polymarket_monitoring.py, loaded by tests.payload): the
checks of every debconf answer, the rendered prometheus.yml and alertmanager.yml under the build host's promtool and
amtool, routing by severity, and the secrets. The .deb's content: tests/package/test_monitoring_deb.py."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests import payload

SCRIPT = payload.PACKAGES / "polymarket-monitoring" / "polymarket_monitoring.py"


def monitoring() -> ModuleType:
    return payload.load("polymarket-monitoring", "polymarket_monitoring.py")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: make test-deps (the Makefile's TEST_DEPS has prometheus and its "
                    "alertmanager)")
    return path


FULL = {
    "bot_targets": "primary=192.168.1.100 standby=192.168.1.101",
    "metrics_port": "9090",
    "node_targets": "primary=192.168.1.100 standby=192.168.1.101 lb=192.168.1.102",
    "node_exporter_port": "9100",
    "haproxy_target": "192.168.1.102:8405",
    "webhook_url": "https://hooks.example.invalid/alert",
    "smtp_smarthost": "smtp.example.invalid:587",
    "smtp_from": "alerts@example.invalid",
    "email_to": "ops@example.invalid oncall@example.invalid",
    "smtp_username": "alerts",
    "telegram_chat_id": "-1001234567",
}


def settings_text(mod: ModuleType, values: dict[str, str]) -> str:
    return "".join(f'{mod.QUESTIONS[q][0]}="{v}"\n' for q, v in values.items())


def amtool_version() -> tuple[int, int]:
    out = subprocess.run([tool("amtool"), "--version"], capture_output=True, text=True, check=False)
    text = out.stdout + out.stderr
    major, minor = text.split("version ", 1)[1].split(".")[:2]
    return int(major), int(minor)


def for_this_amtool(values: dict[str, str]) -> dict[str, str]:
    """``values`` without what this host's Alertmanager cannot read from a file (bot_token_file, url_file: 0.26;
    Debian 12 has 0.25): those are refused by render there (test_file_options_need_026)."""
    if amtool_version() >= (0, 26):
        return dict(values)
    return {**values, "telegram_chat_id": "", "webhook_url": ""}


def secret_mode(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mode & 0o777, st.st_uid, st.st_gid


def expected_secret_mode() -> tuple[int, int, int]:
    """A secret as root on a host with Alertmanager and the group prometheus: 0640 root:prometheus (read by the
    daemons, never writable by their user); otherwise 0600 of whoever wrote it."""
    import grp
    if os.geteuid() == 0 and shutil.which("prometheus-alertmanager"):
        try:
            return 0o640, 0, grp.getgrnam("prometheus").gr_gid
        except KeyError:
            pass
    return 0o600, os.geteuid(), os.getegid()


@pytest.mark.parametrize(("question", "value", "line"), [
    ("bot_targets", "primary=192.168.1.300", "bot_targets: '192.168.1.300' is not an IP address"),
    ("bot_targets", "192.168.1.100", "bot_targets: '192.168.1.100' is not NAME=ADDRESS"),
    ("bot_targets", "a=192.168.1.1 a=192.168.1.2", "bot_targets: the name 'a' is given twice"),
    ("node_targets", "Lb=192.168.1.102", "node_targets: 'Lb=192.168.1.102' is not NAME=ADDRESS"),
    ("metrics_port", "70000", "metrics_port: '70000' is not a port (1-65535)"),
    ("node_exporter_port", "0", "node_exporter_port: '0' is not a port (1-65535)"),
    ("haproxy_target", "192.168.1.102", "haproxy_target: '192.168.1.102' is not HOST:PORT"),
    ("haproxy_target", "bad_host:8405", "haproxy_target: 'bad_host' is not a host name or IPv4 address"),
    ("webhook_url", "ftp://x.invalid/", "webhook_url: not an http(s) URL (http://HOST/... or https://HOST/...)"),
    ("webhook_url", "https://x.invalid/t\x1bok", "webhook_url: a control character (\\x1b)"),
    # Every NAME=ADDRESS word: NAME a DNS label, ADDRESS an IP address (no %zone), no control character, no
    # name or address twice; the word is shown with a control character as \\xNN, never raw.
    ("node_targets", "a=192.168.1.1\nb=192.168.1.2",
     "node_targets: a control character (\\x0a) in 'a=192.168.1.1\\x0ab=192.168.1.2'"),
    ("node_targets", "a=192.168.1.1\tb=192.168.1.2", "node_targets: a control character (\\x09)"),
    ("node_targets", "a=192.168.1.1\x1fb=192.168.1.2", "node_targets: a control character (\\x1f)"),
    ("node_targets", "a\x1b[31m=192.168.1.1", "node_targets: a control character (\\x1b) in 'a\\x1b[31m=192.168.1.1'"),
    ("node_targets", "a=192.168.1.1\x01", "node_targets: a control character (\\x01)"),
    ("node_targets", "a=192.168.1.1\x7f", "node_targets: a control character (\\x7f)"),
    ("node_targets", "a=b=c", "node_targets: 'a=b=c' is not NAME=ADDRESS"),
    ("node_targets", "a=192.168.1.1=x", "node_targets: 'a=192.168.1.1=x' is not NAME=ADDRESS"),
    ("node_targets", "=192.168.1.1", "node_targets: '=192.168.1.1' is not NAME=ADDRESS"),
    ("node_targets", "a=", "node_targets: 'a=' is not NAME=ADDRESS"),
    ("node_targets", "a-=192.168.1.1", "node_targets: 'a-=192.168.1.1' is not NAME=ADDRESS"),
    ("node_targets", "a.b=192.168.1.1", "node_targets: 'a.b=192.168.1.1' is not NAME=ADDRESS"),
    ("node_targets", "a=fe80::1%eth0", "node_targets: 'fe80::1%eth0' is not an IP address (no %zone)"),
    ("node_targets", "a=192.168.1.1 b=192.168.1.1", "node_targets: the address '192.168.1.1' is given twice"),
    ("node_targets", "lb=192.168.1.1 lb=::1", "node_targets: the name 'lb' is given twice"),
    ("bot_targets", "a=192.168.1.1\nb=192.168.1.2", "bot_targets: a control character (\\x0a)"),
    ("bot_targets", "a=b=c", "bot_targets: 'a=b=c' is not NAME=ADDRESS"),
    ("smtp_smarthost", "smtp.example.invalid", "smtp_smarthost: 'smtp.example.invalid' is not HOST:PORT"),
    ("smtp_from", "a@b.c d@e.f", "smtp_from: one address only"),
    ("email_to", "ops", "email_to: 'ops' is not an e-mail address"),
    ("smtp_username", "a'b", "smtp_username: no spaces, quotes or backslashes"),
    ("telegram_chat_id", "@channel", "telegram_chat_id: '@channel' is not a numeric chat id"),
])
def test_bad_values_one_line(question: str, value: str, line: str) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "check-value", question, value], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {line}")
    # One line, nothing raw: a control character of the answer never reaches the operator's terminal.
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert all(c.isprintable() for c in proc.stderr[:-1]), repr(proc.stderr)
    if question == "webhook_url":
        assert "x.invalid" not in proc.stderr  # the URL is a secret: never shown


def test_good_values_accepted() -> None:
    mod = monitoring()
    for question, value in FULL.items():
        assert mod.check_value(question, value) == value
        assert mod.check_value(question, "") == ""
    assert mod.check_value("node_targets", "  a=192.168.1.1   b=fd00::2 ") == "a=192.168.1.1 b=fd00::2"
    assert mod.parse_targets("a=192.168.1.1 b=fd00::2", "node_targets") == [("a", "192.168.1.1"), ("b", "fd00::2")]


def test_render_cli_writes_nothing_on_a_bad_value(tmp_path: Path) -> None:
    mod = monitoring()
    out = tmp_path / "out"
    out.mkdir()
    for bad in ({**FULL, "metrics_port": "99999"}, {**FULL, "smtp_smarthost": ""}):
        settings = tmp_path / "monitoring.conf"
        settings.write_text(settings_text(mod, bad))
        proc = subprocess.run([sys.executable, str(SCRIPT), "render", "--settings", str(settings), "--out", str(out)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 1
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
        assert list(out.iterdir()) == []


def test_file_options_need_026() -> None:
    """bot_token_file and url_file came with Alertmanager 0.26: an older one refuses them, and the secret is never
    put into the YAML instead."""
    mod = monitoring()
    with pytest.raises(mod.Invalid, match=r"telegram_chat_id: .*\(0\.26 or later needed\)"):
        mod.render(FULL, (0, 25))
    with pytest.raises(mod.Invalid, match=r"webhook_url: Alertmanager 0\.25 reads no url_file \(0\.26 or later"):
        mod.render({**FULL, "telegram_chat_id": ""}, (0, 25))
    mod.render({**FULL, "telegram_chat_id": "", "webhook_url": ""}, (0, 25))
    rendered = yaml.safe_load(mod.render(FULL, (0, 26))["alertmanager.yml"])
    critical = next(r for r in rendered["receivers"] if r["name"] == "critical")
    assert critical["telegram_configs"][0]["bot_token_file"] == "/etc/polymarket-monitoring/secrets/telegram_bot_token"


def rendered_files(tmp_path: Path, values: dict[str, str]) -> Path:
    mod = monitoring()
    for name, text in mod.render(values, amtool_version(), tmp_path).items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_rendered_configs_pass_promtool_and_amtool(tmp_path: Path) -> None:
    etc = rendered_files(tmp_path, for_this_amtool(FULL))
    proc = subprocess.run([tool("promtool"), "check", "config", str(etc / "prometheus.yml")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(monitoring().ALERTS)} rules found" in proc.stdout + proc.stderr
    proc = subprocess.run([tool("amtool"), "check-config", str(etc / "alertmanager.yml")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prom = yaml.safe_load((etc / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["polymarket-bot"]["static_configs"] == [
        {"targets": ["192.168.1.100:9090"], "labels": {"node": "primary"}},
        {"targets": ["192.168.1.101:9090"], "labels": {"node": "standby"}}]
    assert [c["targets"] for c in jobs["node"]["static_configs"]] == [
        ["192.168.1.100:9100"], ["192.168.1.101:9100"], ["192.168.1.102:9100"]]
    assert jobs["haproxy"]["static_configs"][0]["targets"] == ["192.168.1.102:8405"]
    # Nothing configured at all is a valid pair of files too (the lb before dpkg-reconfigure).
    (tmp_path / "empty").mkdir()
    empty = rendered_files(tmp_path / "empty", {q: d for q, (_, d) in monitoring().QUESTIONS.items()})
    assert subprocess.run([tool("amtool"), "check-config", str(empty / "alertmanager.yml")],
                          capture_output=True, check=False).returncode == 0
    assert subprocess.run([tool("promtool"), "check", "config", str(empty / "prometheus.yml")],
                          capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=PolymarketBotDown"], "critical"),
    (["severity=warning", "alertname=PolymarketDiskFull"], "warning"),
    (["severity=none", "alertname=PolymarketDeadMansSwitch"], "deadmansswitch"),
])
def test_routes_by_severity(tmp_path: Path, labels: list[str], receiver: str) -> None:
    etc = rendered_files(tmp_path, {**for_this_amtool(FULL), "telegram_chat_id": ""})
    proc = subprocess.run([tool("amtool"), "config", "routes", "test", "--config.file", str(etc / "alertmanager.yml"),
                           *labels], capture_output=True, text=True, check=False)
    assert proc.stdout.strip() == receiver, proc.stdout + proc.stderr


def test_inhibition_two_active_over_flapping() -> None:
    rendered = yaml.safe_load(monitoring().render(FULL)["alertmanager.yml"])
    assert {"source_matchers": ['alertname="PolymarketTwoNodesTrading"'],
            "target_matchers": ['alertname="PolymarketLeaseFlapping"']} in rendered["inhibit_rules"]


def test_secret_set_0600_and_not_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = monitoring()
    secrets = tmp_path / "secrets"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cr3t-token-value\n"))
    assert mod.main(["secret", "set", "telegram_bot_token", "--dir", str(secrets)]) == 0
    path = secrets / "telegram_bot_token"
    assert path.read_text() == "s3cr3t-token-value"
    assert secret_mode(path) == expected_secret_mode()
    monkeypatch.setattr(sys, "stdin", io.StringIO("x\n"))
    assert mod.main(["secret", "set", "../../etc/passwd", "--dir", str(secrets)]) == 1
    assert sorted(p.name for p in secrets.iterdir()) == ["telegram_bot_token"]
    for text in mod.render(FULL, (0, 26), tmp_path).values():
        assert "s3cr3t" not in text


def test_get_takes_a_bad_hand_edit_back_as_it_is(tmp_path: Path) -> None:
    """The config script reads monitoring.conf with get: a bad hand edit comes back into debconf unchanged (to be
    asked again and refused there), while render refuses the same file."""
    mod = monitoring()
    settings = tmp_path / "monitoring.conf"
    settings.write_text(settings_text(mod, {**FULL, "metrics_port": "99999"}))
    proc = subprocess.run([sys.executable, str(SCRIPT), "get", "--settings", str(settings), "metrics_port"],
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, "99999\n")
    with pytest.raises(mod.Invalid, match="metrics_port: '99999' is not a port"):
        mod.read_settings(settings)


def test_bot_job_sends_the_metrics_token_once_it_is_set(tmp_path: Path) -> None:
    """The bots' METRICS_TOKEN_FILE hides the money series from anyone without it: Prometheus must send it
    (credentials_file, never the token itself in the rendered YAML), and only once the secret exists."""
    mod = monitoring()
    jobs = {j["job_name"]: j for j in mod.prometheus(FULL, tmp_path)["scrape_configs"]}
    assert "authorization" not in jobs["polymarket-bot"]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "bot_metrics_token").write_text("t" * 40)
    etc = rendered_files(tmp_path, for_this_amtool(FULL))
    text = (etc / "prometheus.yml").read_text()
    assert "t" * 40 not in text
    jobs = {j["job_name"]: j for j in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["polymarket-bot"]["authorization"] == {
        "type": "Bearer", "credentials_file": str(tmp_path / "secrets" / "bot_metrics_token")}
    assert "authorization" not in jobs["node"]
    proc = subprocess.run([tool("promtool"), "check", "config", str(etc / "prometheus.yml")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_webhook_url_is_a_file_never_in_the_yaml(tmp_path: Path) -> None:
    """The webhook URL usually carries a token: alertmanager.yml (0644, carried by the media) names a 0600 file by
    url_file; ``render --secrets`` writes that file (only when everything rendered) and removes it when the answer
    is emptied."""
    mod = monitoring()
    url = "https://hooks.example.invalid/alert?token=s3cr3t-hook-token"
    text = mod.render({**FULL, "webhook_url": url}, (0, 26), tmp_path)["alertmanager.yml"]
    assert "s3cr3t-hook-token" not in text and "hooks.example.invalid" not in text
    receivers = {r["name"]: r for r in yaml.safe_load(text)["receivers"]}
    for name in ("critical", "warning", "deadmansswitch"):
        assert receivers[name]["webhook_configs"] == [
            {"url_file": str(tmp_path / "secrets" / "webhook_url"), "send_resolved": True}]

    etc, out = tmp_path / "etc", tmp_path / "out"
    secrets = etc / "secrets"
    etc.mkdir()
    out.mkdir()
    settings = etc / "monitoring.conf"

    def render_cli(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
        settings.write_text(settings_text(mod, values))
        return subprocess.run([sys.executable, str(SCRIPT), "render", "--settings", str(settings), "--out", str(out),
                               "--secrets", str(secrets)], capture_output=True, text=True, check=False)

    values = {**FULL, "telegram_chat_id": "", "webhook_url": url}
    if amtool_version() < (0, 26):  # render asks the host's prometheus-alertmanager for its version
        proc = render_cli(values)
        assert proc.returncode == 1 and "reads no url_file" in proc.stderr
        assert not secrets.exists() and list(out.iterdir()) == []
        values["webhook_url"] = ""
    proc = render_cli(values)
    assert proc.returncode == 0, proc.stderr
    for name in ("prometheus.yml", "rules.yml", "alertmanager.yml"):
        assert "s3cr3t-hook-token" not in (out / name).read_text()
    if values["webhook_url"]:
        assert (secrets / "webhook_url").read_text() == url
        assert secret_mode(secrets / "webhook_url") == expected_secret_mode()
        assert str(secrets / "webhook_url") in (out / "alertmanager.yml").read_text()
        # A bad answer elsewhere: nothing rendered, the secret as it was.
        proc = render_cli({**values, "webhook_url": url.replace("s3cr3t", "other"), "metrics_port": "99999"})
        assert proc.returncode == 1
        assert (secrets / "webhook_url").read_text() == url
    # The answer emptied: no webhook receiver, no file left behind.
    proc = render_cli({**values, "webhook_url": ""})
    assert proc.returncode == 0, proc.stderr
    assert not (secrets / "webhook_url").exists()
    assert "webhook_configs" not in (out / "alertmanager.yml").read_text()


def test_prometheus_reaches_itself_and_alertmanager_on_the_loopback() -> None:
    """Both listen on 127.0.0.1 only (the drop-ins: tests/package/test_monitoring_deb.py); the rendered file must
    not name them by a name that may resolve elsewhere first (localhost: ::1)."""
    cfg = monitoring().prometheus(FULL)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9090"]
    assert cfg["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
