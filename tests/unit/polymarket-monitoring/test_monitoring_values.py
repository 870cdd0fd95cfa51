"""polymarket-monitoring: what an answer may hold (nothing monitoring.conf cannot carry: the postinst's
write_settings and write_generated, run with a fake debconf, write nothing for such an answer), the webhook URL
kept out of monitoring.conf and off every command line, and the secrets' owner and mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests import payload

REPO = Path(__file__).resolve().parents[3]
SCRIPT = payload.PACKAGES / "polymarket-monitoring" / "polymarket_monitoring.py"
# Characters the KEY="value" grammar of monitoring.conf cannot hold.
UNQUOTABLE = ('"', "\\", "$", "`")
URL = "https://hooks.example.invalid/alert?token=s3cr3t-hook"
GOOD = {"bot_targets": "primary=192.168.1.100", "node_targets": "primary=192.168.1.100", "webhook_url": URL}
# A value of each question with one character put in (the others' values still good).
EXAMPLES = {
    "bot_targets": "primary=192.168.1.100{}", "metrics_port": "90{}90", "node_targets": "primary=192.168.1.100{}",
    "node_exporter_port": "91{}00", "haproxy_target": "lb{}:8405", "webhook_url": "https://h/x?a={}b",
    "smtp_smarthost": "smtp{}.example:587", "smtp_from": "a{}b@example.invalid", "email_to": "a{}b@example.invalid",
    "email_critical_to": "a{}b@example.invalid", "smtp_username": "al{}erts", "telegram_chat_id": "-10{}01",
    "journal_address": "192.168.1.{}5"}


def monitoring() -> ModuleType:
    return payload.load("polymarket-monitoring", "polymarket_monitoring.py")


FAKE_CONFMODULE = r"""# A fake /usr/share/debconf/confmodule: answers in $FAKE_DEBCONF (QUESTION=VALUE, the last wins).
db_get() { RET=$(sed -n "s|^$1=||p" "$FAKE_DEBCONF" | tail -n 1); }
db_set() { printf '%s=%s\n' "$1" "$2" >>"$FAKE_DEBCONF"; }
"""


class Postinst:
    """debian/polymarket-monitoring.postinst's write_settings and write_generated (what configure does before the
    journal and the daemons), with $ETC under tmp_path, a fake debconf, ucf as a copy, and every command line of
    polymarket-monitoring recorded."""

    def __init__(self, tmp_path: Path) -> None:
        self.etc = tmp_path / "etc"
        self.db = tmp_path / "debconf"
        self.argv = tmp_path / "argv"
        bin_ = tmp_path / "bin"
        bin_.mkdir()
        for name, body in (("polymarket-monitoring", f'printf "%s\\n" "$*" >>{self.argv}\n'
                                                     f'exec {sys.executable} {SCRIPT} "$@"\n'),
                           ("ucf", 'cp "$2" "$3"\n'), ("ucfr", ":\n"),
                           # render asks for the version (url_file: 0.26); the build host may have 0.25.
                           ("prometheus-alertmanager", 'echo "alertmanager, version 0.28.1"\n')):
            (bin_ / name).write_text(f"#!/bin/sh\n{body}")
            (bin_ / name).chmod(0o755)
        (tmp_path / "confmodule").write_text(FAKE_CONFMODULE)
        script = (REPO / "debian" / "polymarket-monitoring.postinst").read_text()
        for old_text, new_text in (("/usr/share/debconf/confmodule", str(tmp_path / "confmodule")),
                                   ("ETC=/etc/polymarket-monitoring\n", f"ETC={self.etc}\n")):
            assert script.count(old_text) == 1, old_text
            script = script.replace(old_text, new_text)
        script = script.split('\ncase "$1" in', 1)[0] + '\nmkdir -p "$ETC/secrets"\nwrite_settings\nwrite_generated\n'
        self.script = tmp_path / "postinst"
        self.script.write_text(script)
        self.env = {"PATH": f"{bin_}:{os.environ['PATH']}", "FAKE_DEBCONF": str(self.db), "LC_ALL": "C.UTF-8"}

    def run(self, answers: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.db.write_text("".join(f"polymarket-monitoring/{q}={v}\n" for q, v in answers.items()))
        return subprocess.run(["sh", str(self.script)], capture_output=True, text=True, env=self.env, check=False)

    def files(self) -> dict[str, str]:
        return {str(p.relative_to(self.etc)): p.read_text() for p in sorted(self.etc.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("question", sorted(EXAMPLES))
@pytest.mark.parametrize("char", UNQUOTABLE)
def test_an_answer_monitoring_conf_cannot_hold_is_refused(question: str, char: str) -> None:
    """check-value (the value on stdin, as the maintainer scripts give it) refuses it with one error line, shown
    escaped; the good value of the same example passes (so the character is what is refused)."""
    mod = monitoring()
    value = EXAMPLES[question].format(char)
    assert mod.check_value(question, EXAMPLES[question].format("")) is not None
    proc = subprocess.run([sys.executable, str(SCRIPT), "check-value", "--", question], input=value,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1, (value, proc.stdout)
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {question}: the character {char} is not allowed"), proc.stderr
    assert all(c.isprintable() for c in proc.stderr[:-1])
    if question == "webhook_url":
        assert "h/x" not in proc.stderr  # the URL is a secret: never shown


@pytest.mark.parametrize("question", sorted(EXAMPLES))
def test_the_postinst_writes_nothing_for_such_an_answer(tmp_path: Path, question: str) -> None:
    """Before: check-value said yes, monitoring.conf was installed with it and render refused it (half-applied,
    and the config script could not read the file back). Now: exit 1, one error line, no file written."""
    postinst = Postinst(tmp_path)
    for char in UNQUOTABLE:
        proc = postinst.run({**GOOD, question: EXAMPLES[question].format(char)})
        assert proc.returncode == 1, (char, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {question}: the character {char}"), proc.stderr
        assert postinst.files() == {}, char


def test_the_webhook_url_is_in_no_settings_file_and_no_command_line(tmp_path: Path) -> None:
    postinst = Postinst(tmp_path)
    proc = postinst.run(GOOD)
    assert proc.returncode == 0, proc.stderr
    files = postinst.files()
    assert sorted(files) == ["alertmanager.yml", "monitoring.conf", "prometheus.yml", "rules.yml",
                             "secrets/webhook_url"]
    assert files["secrets/webhook_url"] == URL
    assert "s3cr3t" not in "".join(v for k, v in files.items() if k != "secrets/webhook_url")
    assert "WEBHOOK_URL" not in files["monitoring.conf"]
    assert "webhook_configs" in files["alertmanager.yml"]
    argv = postinst.argv.read_text()
    assert "check-value -- webhook_url\n" in argv and "s3cr3t" not in argv and "hooks.example" not in argv
    # render without the answer on stdin (by hand): the secret file stays, the receiver too.
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), "render", "--settings", str(postinst.etc / "monitoring.conf"),
                           "--out", str(out), "--secrets", str(postinst.etc / "secrets")],
                          capture_output=True, text=True, env=postinst.env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (postinst.etc / "secrets/webhook_url").read_text() == URL
    assert "webhook_configs" in (out / "alertmanager.yml").read_text()
    # The answer emptied: the file goes, and the receiver.
    proc = postinst.run({**GOOD, "webhook_url": ""})
    assert proc.returncode == 0, proc.stderr
    assert "secrets/webhook_url" not in postinst.files()
    assert "webhook_configs" not in postinst.files()["alertmanager.yml"]


def test_get_webhook_url_reads_the_secret_file_or_leaves_debconf(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The config script takes monitoring.conf back into debconf with get: with no WEBHOOK_URL there, get must not
    answer "" (that would empty the answer): the secret file's URL, or exit 1 (debconf's answer stays)."""
    mod = monitoring()
    settings = tmp_path / "monitoring.conf"
    settings.write_text('METRICS_PORT="9090"\n')
    monkeypatch.setattr(mod, "SECRETS", tmp_path / "secrets")
    assert mod.main(["get", "--settings", str(settings), "webhook_url"]) == 1
    assert capsys.readouterr().out == ""
    mod.write_secret(tmp_path / "secrets", "webhook_url", URL)
    assert mod.main(["get", "--settings", str(settings), "webhook_url"]) == 0
    assert capsys.readouterr().out == URL + "\n"
    # An older monitoring.conf that has it: that one.
    settings.write_text('WEBHOOK_URL="https://old.example.invalid/"\n')
    assert mod.main(["get", "--settings", str(settings), "webhook_url"]) == 0
    assert capsys.readouterr().out == "https://old.example.invalid/\n"


def test_secret_set_shows_an_unknown_name_escaped(tmp_path: Path) -> None:
    name = "x\nerror: fake\x1b[2J"
    proc = subprocess.run([sys.executable, str(SCRIPT), "secret", "set", name, "--dir", str(tmp_path / "s")],
                          input="v\n", capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("error: secret: no such secret 'x\\x0aerror: fake\\x1b[2J' (one of: smtp_password, "
                           "telegram_bot_token, bot_metrics_token)\n")
    assert not (tmp_path / "s").exists() or list((tmp_path / "s").iterdir()) == []
