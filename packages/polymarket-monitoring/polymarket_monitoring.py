#!/usr/bin/python3
"""polymarket-monitoring: Prometheus and Alertmanager configuration for the Polymarket deployment.

Renders /etc/polymarket-monitoring/prometheus.yml, rules.yml and
alertmanager.yml from /etc/polymarket-monitoring/monitoring.conf (written by
the postinst from debconf). Every file is serialised from Python data
(``yaml.safe_dump``), never typed as template text. Secrets (the SMTP
password, the Telegram bot token, the webhook URL) are never in a rendered
file: they are 0600 files that Alertmanager reads through its ``*_file``
options, set on the host with ``polymarket-monitoring secret set NAME`` (the
webhook URL: written by ``render --secrets`` from the debconf answer).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ETC = Path("/etc/polymarket-monitoring")
SETTINGS = ETC / "monitoring.conf"
SECRETS = ETC / "secrets"
SECRET_NAMES = ("smtp_password", "telegram_bot_token", "bot_metrics_token")
RUNBOOK = "README.md, 'On a node, when something is wrong'"
RENDERED = ("prometheus.yml", "rules.yml", "alertmanager.yml")
# Alertmanager's Telegram receiver reads its token from a file (bot_token_file) from 0.26 on, and its webhook
# receiver its URL (url_file, which usually carries a token) from the same release (0.26.0's changelog: #3226,
# #3223). Debian 12 has 0.25, Ubuntu 24.04 0.26, Debian 13 0.28.
TELEGRAM_FILE_SINCE = (0, 26)
URL_FILE_SINCE = (0, 26)
# The webhook URL: the debconf answer, kept out of the rendered YAML in this file of the secrets directory.
WEBHOOK_SECRET = "webhook_url"

# The questions (debconf polymarket-monitoring/NAME) and their default, "" but where named here; each one's
# settings key is NAME in capitals (BOT_TARGETS). journal_address is polymarket-journal-remote's.
_DEFAULTS = {"metrics_port": "9090", "node_exporter_port": "9100"}
QUESTIONS: dict[str, tuple[str, str]] = {name: (name.upper(), _DEFAULTS.get(name, "")) for name in (
    "bot_targets", "metrics_port", "node_targets", "node_exporter_port", "haproxy_target", "webhook_url",
    "smtp_smarthost", "smtp_from", "email_to", "email_critical_to", "smtp_username", "telegram_chat_id",
    "journal_address")}

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$){LABEL}(\.{LABEL})*")
EMAIL = re.compile(r"[A-Za-z0-9.!#%&'*+/=?^_{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")
# What a value of monitoring.conf's KEY="value" lines cannot hold (its grammar, read_settings): refused in every
# answer by check_value, so that nothing it accepts is written and then refused by render.
UNQUOTABLE = '"\\$`'


class Invalid(ValueError):
    """A bad value: its message is the one line shown to the operator."""


def _show(value: str) -> str:
    """``value`` for a one-line message: a control or other unprintable character as \\xNN / \\uNNNN, never
    raw to the operator's terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                   for c in value)


def _normalize(value: str) -> str:
    """Runs of ASCII white space as one space, none at the ends: what the maintainer scripts' ``tr -s
    '[:space:]' ' '`` does. (str.split() would also take \\x1c-\\x1f and \\x85 for spaces.)"""
    return re.sub(r"[ \t\n\r\f\v]+", " ", value).strip(" ")


def _address(value: str, what: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise Invalid(f"{what}: '{_show(value)}' is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # fe80::1%eth0: the zone is free text (ipaddress takes any), and neither ufw nor a scrape target takes it.
        raise Invalid(f"{what}: '{_show(value)}' is not an IP address (no %zone)")
    if address.is_unspecified or address.is_multicast:
        raise Invalid(f"{what}: '{value}' is not a host's address")
    return str(address)


def _port(value: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= 65535:
        raise Invalid(f"{what}: '{value}' is not a port (1-65535)")
    return int(value)


def _hostport(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise Invalid(f"{what}: '{value}' is not HOST:PORT")
    _port(port, what)
    if host.startswith("[") and host.endswith("]"):
        _address(host[1:-1], what)
    elif not HOSTNAME.fullmatch(host):
        raise Invalid(f"{what}: '{host}' is not a host name or IPv4 address")
    return value


def parse_targets(value: str, what: str) -> list[tuple[str, str]]:
    """'NAME=ADDRESS ...' (separated by spaces) -> [(name, address)]: the node label (a DNS label) and the IP
    address of each host (an address, not a host name: polymarket-journal-remote opens ufw to it)."""
    found: list[tuple[str, str]] = []
    _no_control(value, what)
    for word in value.split(" "):
        if not word:
            continue
        name, sep, address = word.partition("=")
        if not sep or not NAME.fullmatch(name) or name.endswith("-") or not address or "=" in address:
            raise Invalid(f"{what}: '{_show(word)}' is not NAME=ADDRESS (NAME: lower-case letters, digits, '-'; "
                          "ADDRESS: an IPv4 or IPv6 address)")
        if name in {n for n, _ in found}:
            raise Invalid(f"{what}: the name '{name}' is given twice")
        address = _address(address, what)
        if address in {a for _, a in found}:
            raise Invalid(f"{what}: the address '{address}' is given twice")
        found.append((name, address))
    return found


def _no_control(value: str, what: str, *, secret: bool = False) -> None:
    bad = [c for c in value if not c.isprintable() and c != " "]
    if bad:
        raise Invalid(f"{what}: a control character ({_show(bad[0])})"
                      + ("" if secret else f" in '{_show(value)}'"))


def check_value(question: str, value: str) -> str:
    """The value with its outer spaces and runs of spaces made one, or Invalid with its one line. A control
    character (newline and tab included: the maintainer scripts make those spaces before they ask) is refused, and
    so is any character monitoring.conf cannot hold (UNQUOTABLE). Empty is always accepted (not configured)."""
    if question not in QUESTIONS:
        raise Invalid(f"no such question: {_show(question)}")
    _no_control(value, question, secret=question == "webhook_url")
    bad = [c for c in value if c in UNQUOTABLE]
    if bad:
        raise Invalid(f"{question}: the character {bad[0]} is not allowed (none of \" \\ $ `)"
                      + ("" if question == "webhook_url" else f" in '{_show(value)}'"))
    value = _normalize(value)
    if not value:
        return value
    if question in ("bot_targets", "node_targets"):
        parse_targets(value, question)
    elif question in ("metrics_port", "node_exporter_port"):
        _port(value, question)
    elif question in ("haproxy_target", "smtp_smarthost"):
        _hostport(value, question)
    elif question == "webhook_url":
        url = urllib.parse.urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname or " " in value:
            # The URL is a secret (it usually carries a token): not shown.
            raise Invalid("webhook_url: not an http(s) URL (http://HOST/... or https://HOST/...)")
    elif question in ("smtp_from", "email_to", "email_critical_to"):
        for address in value.split():
            if not EMAIL.fullmatch(address):
                raise Invalid(f"{question}: '{address}' is not an e-mail address")
        if question == "smtp_from" and " " in value:
            raise Invalid("smtp_from: one address only")
    elif question == "smtp_username":
        if not re.fullmatch(r"[^\s\"'\\]{1,256}", value):
            raise Invalid("smtp_username: no spaces, quotes or backslashes")
    elif question == "journal_address":
        _address(value, question)
    elif question == "telegram_chat_id" and not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise Invalid(f"telegram_chat_id: '{value}' is not a numeric chat id")
    return value


def read_settings(path: Path, *, check: bool = True) -> dict[str, str]:
    """KEY="value" lines of monitoring.conf -> {question: value}; every value checked unless ``check`` is False
    (the config script takes a hand edit back into debconf as it is, and asks again when it is bad)."""
    return _read_settings(path, check)[0]


def _read_settings(path: Path, check: bool) -> tuple[dict[str, str], set[str]]:
    """read_settings, and the questions whose KEY the file has (the others have their default)."""
    present: set[str] = set()
    keys = {key: q for q, (key, _) in QUESTIONS.items()}
    values = {q: default for q, (_, default) in QUESTIONS.items()}
    # split("\n"), not splitlines(): that one also splits at \x1c-\x1e and \x85, which check_value refuses.
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([A-Z_]+)="([^"\\$`]*)"', line)
        if not m or m.group(1) not in keys:
            raise Invalid(f'{path}:{number}: not KEY="value" with a known KEY')
        question = keys[m.group(1)]
        values[question] = check_value(question, m.group(2)) if check else _normalize(m.group(2))
        present.add(question)
    return values, present


# --- the alert rules -------------------------------------------------------------------------------------------------

def _rule(name: str, expr: str, for_: str, severity: str, summary: str, look: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ != "0s":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "runbook": f"{RUNBOOK}: {look}"}
    return rule


BOT = 'job="polymarket-bot"'
BOT_LOOK = "systemctl status polymarket-bot; journalctl -u polymarket-bot -e"
BACKUP_LOOK = "sudo polymarket-backup list; sudo polymarket-backup verify"
# Each alert: name, expression, for:, severity, summary, where to look first.
ALERTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # for: 45s, not 1m: with the 15 s scrape and evaluation intervals and Alertmanager's 10 s group_wait the
    # alert reaches the receivers at most 15 + 15 + 45 + 10 = 85 s after the bot stopped (issue 10: within
    # 90 s; 1m made it up to 100 s). A planned restart (seconds) still never fires it.
    ("PolymarketBotDown", f"up{{{BOT}}} == 0", "45s", "critical",
     "bot on {{ $labels.node }} does not answer its metrics port", BOT_LOOK),
    ("PolymarketNoPoll",
     f"polymarket_last_poll_age_seconds{{{BOT}}} > 60 and on(instance) polymarket_passive{{{BOT}}} == 0", "0s",
     "critical", "the trading bot on {{ $labels.node }} has had no successful poll for {{ $value }} s",
     "curl -s http://BIND_ADDRESS:8080/health"),
    ("PolymarketNoNodeTrading", f"(count(polymarket_passive{{{BOT}}} == 0) or vector(0)) == 0", "2m", "critical",
     "no node is trading (every bot passive or down)", "sudo polymarket-ha status"),
    ("PolymarketTwoNodesTrading", f"count(polymarket_passive{{{BOT}}} == 0) > 1", "0s", "critical",
     "{{ $value }} nodes are trading at once", "sudo polymarket-ha status on both nodes"),
    ("PolymarketLeaseFlapping", "changes(polymarket_ha_lease_holder[15m]) > 2", "0s", "warning",
     "the trading lease changed hands {{ $value }} times in 15 min on {{ $labels.node }}", "sudo polymarket-ha status"),
    ("PolymarketReplicationStale", "time() - polymarket_ha_last_replication_timestamp_seconds > 900", "0s",
     "critical", "the ledger's last replication on {{ $labels.node }} is older than 15 min (RPO)",
     "sudo polymarket-ha status; journalctl -u polymarket-ha-replicate -e"),
    ("PolymarketBackupStale", "time() - polymarket_backup_last_success_timestamp_seconds > 1800", "0s", "critical",
     "the last successful backup on {{ $labels.node }} is older than 30 min", BACKUP_LOOK),
    ("PolymarketBackupVerifyFailed", "polymarket_backup_last_verify_ok == 0", "0s", "critical",
     "the last backup verify on {{ $labels.node }} failed", "sudo polymarket-backup verify"),
    ("PolymarketOffsiteStale", "time() - polymarket_backup_last_offsite_timestamp_seconds > 93600", "0s", "warning",
     "the last off-site copy on {{ $labels.node }} is older than 26 h", BACKUP_LOOK),
    ("PolymarketComplianceLow", "polymarket_compliance_score_percent < 95", "0s", "warning",
     "compliance on {{ $labels.node }} is {{ $value }}% (under 95%)", "sudo polymarket-compliance audit"),
    ("PolymarketDiskFull",
     '(1 - node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|squashfs|overlay"}'
     ' / node_filesystem_size_bytes{fstype!~"tmpfs|ramfs|squashfs|overlay"}) * 100 > 85',
     "5m", "warning", "{{ $labels.mountpoint }} on {{ $labels.node }} is {{ $value }}% full",
     "systemctl --failed; df -h"),
    ("PolymarketClockUnsynchronised", "node_timex_sync_status == 0", "10m", "warning",
     "the clock of {{ $labels.node }} is not synchronised", "timedatectl timesync-status"),
    ("PolymarketCertificateExpiring", "polymarket_tls_cert_expiry_timestamp_seconds - time() < 14 * 86400", "0s",
     "warning", "{{ $labels.path }} on {{ $labels.node }} expires within 14 days", "openssl x509 -enddate"),
    ("PolymarketPositionDrift", f"increase(polymarket_position_drift{{{BOT}}}[15m]) > 0", "0s", "warning",
     "positions on {{ $labels.node }} were corrected to the exchange's figure", "journalctl -u polymarket-bot -e"),
    ("PolymarketDailyLossNearLimit",
     f"polymarket_daily_loss_usd{{{BOT}}} > 0.8 * polymarket_max_daily_loss_usd{{{BOT}}}"
     f" and polymarket_max_daily_loss_usd{{{BOT}}} > 0", "0s", "critical",
     "today's loss on {{ $labels.node }} is over 80% of MAX_DAILY_LOSS_USD", "curl -s http://BIND_ADDRESS:8080/health"),
    ("PolymarketCircuitBreakerOpen", f"polymarket_circuit_breaker_open{{{BOT}}} == 1", "0s", "critical",
     "the circuit breaker of {{ $labels.node }} holds orders", BOT_LOOK),
    # increase() misses a unit's first failure (its series is born at 1, with no earlier sample to
    # compare): the last-failure time catches that one. Both come from polymarket-failure@.service.
    ("PolymarketUnitFailed",
     "increase(polymarket_unit_failures_total[15m]) > 0"
     " or time() - polymarket_unit_last_failure_timestamp_seconds < 900", "0s", "warning",
     "{{ $labels.unit }} failed on {{ $labels.node }}",
     "systemctl --failed; journalctl -u 'polymarket-failure@*' -e"),
    ("PolymarketDeadMansSwitch", "vector(1)", "0s", "none",
     "always firing: its silence means the alerting pipeline is down", "sudo polymarket-monitoring status"),
)


def rules() -> dict[str, Any]:
    return {"groups": [{"name": "polymarket", "rules": [_rule(*a) for a in ALERTS]}]}


# --- prometheus.yml and alertmanager.yml ---------------------------------------------------------------------------

def _static(targets: list[tuple[str, str]], port: int) -> list[dict[str, Any]]:
    def hostport(address: str) -> str:
        return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return [{"targets": [hostport(address)], "labels": {"node": name}} for name, address in targets]


def prometheus(s: dict[str, str], etc: Path = ETC) -> dict[str, Any]:
    bot: dict[str, Any] = {
        "job_name": "polymarket-bot",
        "static_configs": _static(parse_targets(s["bot_targets"], "bot_targets"), int(s["metrics_port"] or 9090))}
    token = etc / "secrets" / "bot_metrics_token"  # the bots' METRICS_TOKEN_FILE: their money series need it
    if token.is_file():
        bot["authorization"] = {"type": "Bearer", "credentials_file": str(token)}
    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus",
         "static_configs": [{"targets": ["127.0.0.1:9090"], "labels": {"node": "monitoring"}}]},
        bot,
        {"job_name": "node",
         "static_configs": _static(parse_targets(s["node_targets"], "node_targets"),
                                   int(s["node_exporter_port"] or 9100))},
    ]
    if s["haproxy_target"]:
        jobs.append({"job_name": "haproxy", "static_configs": [{"targets": [s["haproxy_target"]],
                                                                "labels": {"node": "lb"}}]})
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s",
                   "external_labels": {"deployment": "polymarket"}},
        "rule_files": [str(etc / "rules.yml")],
        # Both listen on the loopback only (the drop-ins' --web.listen-address).
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
        "scrape_configs": jobs,
    }


def alertmanager(s: dict[str, str], version: tuple[int, int] = TELEGRAM_FILE_SINCE,
                 secrets: Path = SECRETS) -> dict[str, Any]:
    """Routes by severity: critical to every configured receiver, warning to webhook and e-mail, the dead-man's
    switch to the webhook every 5 min (the outside service alerts when it stops arriving)."""
    critical_to = s.get("email_critical_to", "")  # e-mailed the critical alerts only, besides email_to
    email = bool(s["email_to"] or critical_to)
    if email and not (s["smtp_smarthost"] and s["smtp_from"]):
        raise Invalid(f"{'email_to' if s['email_to'] else 'email_critical_to'} is set: smtp_smarthost and smtp_from"
                      " are needed too")
    if s["telegram_chat_id"] and version < TELEGRAM_FILE_SINCE:
        raise Invalid(f"telegram_chat_id: Alertmanager {version[0]}.{version[1]} reads no bot_token_file"
                      " (0.26 or later needed)")
    if s["webhook_url"] and version < URL_FILE_SINCE:
        # No fallback to the URL in the YAML: that one is 0644 and carried by the media.
        raise Invalid(f"webhook_url: Alertmanager {version[0]}.{version[1]} reads no url_file"
                      " (0.26 or later needed)")
    cfg: dict[str, Any] = {}
    if email:
        smtp: dict[str, Any] = {"smtp_smarthost": s["smtp_smarthost"], "smtp_from": s["smtp_from"],
                                "smtp_require_tls": True}
        if s["smtp_username"]:
            smtp["smtp_auth_username"] = s["smtp_username"]
            smtp["smtp_auth_password_file"] = str(secrets / "smtp_password")
        cfg["global"] = smtp

    def receiver(name: str, channels: tuple[str, ...]) -> dict[str, Any]:
        r: dict[str, Any] = {"name": name}
        if "webhook" in channels and s["webhook_url"]:
            r["webhook_configs"] = [{"url_file": str(secrets / WEBHOOK_SECRET), "send_resolved": True}]
        to = s["email_to"].split() + (critical_to.split() if name == "critical" else [])
        if "email" in channels and to:
            r["email_configs"] = [{"to": ", ".join(to), "send_resolved": True}]
        if "telegram" in channels and s["telegram_chat_id"]:
            r["telegram_configs"] = [{"chat_id": int(s["telegram_chat_id"]),
                                      "bot_token_file": str(secrets / "telegram_bot_token"),
                                      "send_resolved": True}]
        return r

    cfg["route"] = {
        "receiver": "warning",
        "group_by": ["alertname", "node"],
        "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h",
        "routes": [
            {"matchers": ['alertname="PolymarketDeadMansSwitch"'], "receiver": "deadmansswitch",
             "group_wait": "0s", "group_interval": "1m", "repeat_interval": "5m"},
            {"matchers": ['severity="critical"'], "receiver": "critical", "repeat_interval": "1h"},
        ],
    }
    cfg["inhibit_rules"] = [
        # Two nodes trading is the cause: the lease's flapping is its symptom.
        {"source_matchers": ['alertname="PolymarketTwoNodesTrading"'],
         "target_matchers": ['alertname="PolymarketLeaseFlapping"']},
        # A bot that is down does not poll either.
        {"source_matchers": ['alertname="PolymarketBotDown"'], "target_matchers": ['alertname="PolymarketNoPoll"'],
         "equal": ["node"]},
    ]
    cfg["receivers"] = [
        receiver("critical", ("webhook", "email", "telegram")),
        receiver("warning", ("webhook", "email")),
        receiver("deadmansswitch", ("webhook",)),
    ]
    return cfg


def _dump(data: dict[str, Any]) -> str:
    return "# Generated by polymarket-monitoring from monitoring.conf: edit that file, not this one.\n" + \
        yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def render(s: dict[str, str], version: tuple[int, int] = TELEGRAM_FILE_SINCE,
           etc: Path = ETC) -> dict[str, str]:
    """Every rendered file (paths inside them under ``etc``), or Invalid before any is written."""
    secrets = etc / "secrets"
    return {"prometheus.yml": _dump(prometheus(s, etc)), "rules.yml": _dump(rules()),
            "alertmanager.yml": _dump(alertmanager(s, version, secrets))}


def rendered_secrets(s: dict[str, str]) -> dict[str, str | None]:
    """The secrets that come from the answers: NAME -> its content, None to remove the file."""
    return {WEBHOOK_SECRET: s["webhook_url"] or None}


def write_secret(directory: Path, name: str, value: str) -> Path:
    """``directory/name`` replaced atomically (a new file renamed over it: a symlink there is replaced, never
    followed) by a file holding ``value``: 0640 root:prometheus when run as root on a host that has the group
    prometheus (Alertmanager and Prometheus read it; their user cannot rewrite it), 0600 otherwise."""
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0 and shutil.which("prometheus-alertmanager"):
            import grp
            try:
                os.fchown(fd, 0, grp.getgrnam("prometheus").gr_gid)
                os.fchmod(fd, 0o640)
            except KeyError:
                pass
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / name


def alertmanager_version() -> tuple[int, int]:
    try:
        out = subprocess.run(["prometheus-alertmanager", "--version"], capture_output=True, text=True,
                             check=False).stdout + ""
    except OSError:
        return TELEGRAM_FILE_SINCE
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else TELEGRAM_FILE_SINCE


# --- commands --------------------------------------------------------------------------------------------------------

def _stdin_value() -> str:
    """One value on standard input (a secret is never an argument: /proc/PID/cmdline is everyone's); one final
    newline taken off."""
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


def cmd_check_value(args: argparse.Namespace) -> int:
    print(check_value(args.question, _stdin_value() if args.value is None else args.value))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    values, present = _read_settings(Path(args.settings), False)
    if args.question == "webhook_url" and "webhook_url" not in present:
        # Not in monitoring.conf (a secret: the postinst keeps it out); its copy is the secret file (root only).
        try:
            print(_read_secret(SECRETS / WEBHOOK_SECRET))
        except FileNotFoundError:
            return 1  # none: debconf's answer stays as it is
        return 0
    print(values[args.question])
    return 0


def _read_secret(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as f:
        return f.read()


def cmd_render(args: argparse.Namespace) -> int:
    settings, present = _read_settings(Path(args.settings), True)
    secrets = Path(args.secrets) if args.secrets else SECRETS
    keep_webhook = False
    if args.webhook_url_stdin:
        # The postinst's answer (monitoring.conf has no WEBHOOK_URL: 0644).
        settings["webhook_url"] = check_value("webhook_url", _stdin_value())
    elif "webhook_url" not in present:
        # Neither given nor in the file (an older one had it): the one in the secrets directory stays.
        keep_webhook = (secrets / WEBHOOK_SECRET).is_file()
        settings["webhook_url"] = "kept" if keep_webhook else ""
    files = render(settings, alertmanager_version(), secrets.parent)
    out = Path(args.out)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    if args.secrets:
        # Only once everything is rendered (a bad value writes nothing): the files the YAML's *_file names.
        for name, value in rendered_secrets(settings).items():
            if name == WEBHOOK_SECRET and keep_webhook:
                continue
            if value is None:
                (Path(args.secrets) / name).unlink(missing_ok=True)
            else:
                write_secret(Path(args.secrets), name, value)
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    if args.name not in SECRET_NAMES:
        raise Invalid(f"secret: no such secret '{_show(args.name)}' (one of: {', '.join(SECRET_NAMES)})")
    value = sys.stdin.read().strip("\r\n")
    if not value or "\n" in value:
        raise Invalid("secret: give the secret as one non-empty line on standard input")
    directory = Path(args.dir)
    write_secret(directory, args.name, value)
    then = ("dpkg-reconfigure polymarket-monitoring (renders the bot job's authorization), then "
            "systemctl reload prometheus") if args.name == "bot_metrics_token" else \
        "systemctl reload prometheus-alertmanager"
    print(f"{directory / args.name} written; reload: {then}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    bad = 0
    for unit in ("prometheus.service", "prometheus-alertmanager.service"):
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True,
                               check=False).stdout.strip()
        print(f"{unit}: {state or 'unknown'}")
        bad |= state != "active"
    try:
        with urllib.request.urlopen("http://127.0.0.1:9090/api/v1/targets", timeout=5) as answer:
            data = json.load(answer)
        for t in data["data"]["activeTargets"]:
            print(f"target {t['labels'].get('job')} {t['labels'].get('node', '')} {t['scrapeUrl']}: {t['health']}"
                  + (f" ({t['lastError']})" if t.get("lastError") else ""))
            bad |= t["health"] != "up"
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        print(f"prometheus API: {exc}")
        bad = 1
    for name in (*SECRET_NAMES, WEBHOOK_SECRET):
        print(f"secret {name}: {'set' if (SECRETS / name).exists() else 'not set'}")
    return 1 if bad else 0


Arguments = tuple[tuple[str, dict[str, Any]], ...]


def command_line() -> argparse.ArgumentParser:
    """One row per command: its function (cmd_NAME is the command NAME), its help and its arguments."""
    settings: Arguments = (("--settings", {"default": str(SETTINGS)}),)
    commands: tuple[tuple[Callable[[argparse.Namespace], int], str, Arguments], ...] = (
        (cmd_check_value, "check one debconf answer (the value on standard input when not given)",
         (("question", {}), ("value", {"nargs": "?"}))),
        (cmd_get, "one answer from the settings file (the config script's reader)",
         (*settings, ("question", {"choices": sorted(QUESTIONS)}))),
        (cmd_render, "render prometheus.yml, rules.yml, alertmanager.yml into --out; with --secrets, also the "
         "webhook URL's file there",
         (*settings, ("--out", {"required": True}), ("--secrets", {}),
          ("--webhook-url-stdin", {"action": "store_true",
                                   "help": "the webhook URL on standard input (monitoring.conf has none)"}))),
        (cmd_secret, "set a secret from standard input: secret set NAME",
         (("action", {"choices": ["set"]}), ("name", {}), ("--dir", {"default": str(SECRETS)}))),
        (cmd_status, "the services, the scrape targets and the secrets", ()),
    )
    parser = argparse.ArgumentParser(prog="polymarket-monitoring")
    sub = parser.add_subparsers(dest="command", required=True)
    for fn, text, arguments in commands:
        p = sub.add_parser(fn.__name__.removeprefix("cmd_").replace("_", "-"), help=text)
        for name, options in arguments:
            p.add_argument(name, **options)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    try:
        return int(args.fn(args))
    except (Invalid, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
