#!/usr/bin/python3
"""polymarket-golive: the go-live checklist items a machine can check, on the monitoring host.

For every host of polymarket-monitoring's targets (monitoring.conf: bot_targets, node_targets,
haproxy_target) it asks Prometheus's HTTP API (no ssh) whether the services answer, whether each
role's packages report their metrics, the compliance score, the age of the last replication, of the
last backup and verify, that exactly one node holds the trading lease; then it sends a test alert
through Alertmanager's API and waits until Alertmanager delivered it (and, with --receipt-url, until
it shows at the operator's webhook). Prints a pass/fail table (or --json); exit 0 only when every
item passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SETTINGS = Path("/etc/polymarket-monitoring/monitoring.conf")
PROMETHEUS = "http://localhost:9090"
ALERTMANAGER = "http://localhost:9093"
# The plan's limits, the same as the alert rules' (polymarket_monitoring.ALERTS).
REPLICATION_MAX_AGE = 900  # RPO, 15 min
BACKUP_MAX_AGE = 1800  # 30 min
VERIFY_MAX_AGE = 26 * 3600  # daily verify, with slack
TEST_ALERT = "PolymarketGoLiveTest"
# What a role's packages export (their metrics are how the check sees them installed and running).
BOT_PACKAGES = {"polymarket-ha": "polymarket_ha_last_replication_timestamp_seconds",
                "polymarket-backup": "polymarket_backup_last_success_timestamp_seconds"}  # fmt: skip
HOST_PACKAGES = {"polymarket-hardening": "polymarket_compliance_score_percent"}


class Failed(Exception):
    """An error that stops the check: one line for the operator."""


@dataclass(frozen=True)
class Item:
    item: str
    host: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Targets:
    bots: tuple[str, ...]
    hosts: tuple[str, ...]
    haproxy: bool


def read_targets(path: Path) -> Targets:
    """The host names of monitoring.conf (the ``node`` label of their series)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Failed(f"{path}: {exc.strerror}") from None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key] = value.strip().strip('"')

    def names(key: str) -> tuple[str, ...]:
        return tuple(word.partition("=")[0] for word in values.get(key, "").split())

    targets = Targets(names("BOT_TARGETS"), names("NODE_TARGETS"), bool(values.get("HAPROXY_TARGET")))
    if not targets.bots and not targets.hosts:
        raise Failed(f"{path}: no BOT_TARGETS and no NODE_TARGETS: nothing to check "
                     "(dpkg-reconfigure polymarket-monitoring)")
    return targets


class Api:
    def __init__(self, prometheus: str, alertmanager: str, timeout: float = 10) -> None:
        self.prometheus = prometheus.rstrip("/")
        self.alertmanager = alertmanager.rstrip("/")
        self.timeout = timeout

    def get(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:
                body: bytes = answer.read()
                return body
        except (OSError, urllib.error.URLError) as exc:
            raise Failed(f"{url}: {getattr(exc, 'reason', exc)}") from None

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: {node label: value} (several series of one node: the highest value)."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            data = json.loads(self.get(url))
            result = data["data"]["result"]
        except (ValueError, KeyError, TypeError):
            raise Failed(f"{url}: not a Prometheus answer") from None
        found: dict[str, float] = {}
        for r in result:
            node = r["metric"].get("node", "")
            found[node] = max(found.get(node, float("-inf")), float(r["value"][1]))
        return found

    def targets(self) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/targets?state=active"
        try:
            active: list[dict[str, Any]] = json.loads(self.get(url))["data"]["activeTargets"]
        except (ValueError, KeyError, TypeError):
            raise Failed(f"{url}: not a Prometheus answer") from None
        return active

    def notifications(self) -> tuple[float, float]:
        """Alertmanager's own counters: notifications sent and failed, over every integration."""
        sent = failed = 0.0
        for line in self.get(f"{self.alertmanager}/metrics").decode(errors="replace").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == "alertmanager_notifications_total":
                sent += float(line.rsplit(" ", 1)[1])
            elif name == "alertmanager_notifications_failed_total":
                failed += float(line.rsplit(" ", 1)[1])
        return sent, failed

    def post_alert(self, labels: dict[str, str], ends: datetime) -> None:
        body = json.dumps([{"labels": labels, "endsAt": ends.isoformat(),
                            "annotations": {"summary": "polymarket-golive check: a test alert, no action"}}])
        request = urllib.request.Request(f"{self.alertmanager}/api/v2/alerts", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                pass
        except (OSError, urllib.error.URLError) as exc:
            raise Failed(f"{self.alertmanager}/api/v2/alerts: {getattr(exc, 'reason', exc)}") from None


def age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def check_services(api: Api, t: Targets) -> list[Item]:
    """Every configured scrape target is listed by Prometheus and answers."""
    by_job: dict[tuple[str, str], dict[str, Any]] = {}
    for active in api.targets():
        labels = active.get("labels", {})
        by_job[(labels.get("job", ""), labels.get("node", ""))] = active
    wanted = [("polymarket-bot", h, "bot") for h in t.bots] + [("node", h, "node exporter") for h in t.hosts]
    if t.haproxy:
        wanted += [("haproxy", node, "haproxy") for (job, node) in by_job if job == "haproxy"] or \
            [("haproxy", "lb", "haproxy")]
    items = []
    for job, host, what in wanted:
        target = by_job.get((job, host))
        if target is None:
            items.append(Item(f"service {what}", host, False, f"no {job} target of node {host} in Prometheus"))
            continue
        up = target.get("health") == "up"
        detail = target.get("scrapeUrl", "") + ("" if up else f": {target.get('lastError') or target.get('health')}")
        items.append(Item(f"service {what}", host, up, detail))
    return items


def check_packages(api: Api, t: Targets) -> list[Item]:
    """Each role's packages report their metrics (installed, and their timers or services ran)."""
    items = []
    for packages, hosts in ((BOT_PACKAGES, t.bots), (HOST_PACKAGES, t.hosts)):
        for package, metric in packages.items():
            seen = api.query(f'{metric}{{job="node"}}')
            for host in hosts:
                ok = host in seen
                items.append(Item(f"package {package}", host, ok,
                                  f"{metric} reported" if ok else f"no {metric}: {package} not installed or not run"))
    return items


def check_compliance(api: Api, t: Targets) -> list[Item]:
    score = api.query('polymarket_compliance_score_percent{job="node"}')
    threshold = api.query('polymarket_compliance_threshold_percent{job="node"}')
    compliant = api.query('polymarket_compliance_compliant{job="node"}')
    failing: dict[str, list[str]] = {}
    url = f"{api.prometheus}/api/v1/query?" + urllib.parse.urlencode(
        {"query": 'polymarket_compliance_control_failing{job="node"} == 1'})
    for r in json.loads(api.get(url)).get("data", {}).get("result", []):
        failing.setdefault(r["metric"].get("node", ""), []).append(r["metric"].get("control", "?"))
    items = []
    for host in t.hosts:
        if host not in score:
            items.append(Item("compliance", host, False, "no compliance score (polymarket-compliance audit)"))
            continue
        limit = threshold.get(host, 95.0)
        ok = score[host] >= limit and compliant.get(host, 0) == 1
        detail = f"{score[host]:g}% (needs {limit:g}%)"
        if failing.get(host):
            detail += "; failing: " + ", ".join(sorted(failing[host]))
        items.append(Item("compliance", host, ok, detail))
    return items


def check_ages(api: Api, t: Targets) -> list[Item]:
    """Replication, backup and verify on each bot node, against the plan's limits."""
    items = []
    for item, metric, limit in (("replication", "polymarket_ha_last_replication_timestamp_seconds",
                                 REPLICATION_MAX_AGE),
                                ("backup", "polymarket_backup_last_success_timestamp_seconds", BACKUP_MAX_AGE),
                                ("backup verify", "polymarket_backup_last_verify_timestamp_seconds",
                                 VERIFY_MAX_AGE)):  # fmt: skip
        ages = api.query(f'time() - {metric}{{job="node"}}')
        stamps = api.query(f'{metric}{{job="node"}}')
        verify_ok = api.query('polymarket_backup_last_verify_ok{job="node"}') if item == "backup verify" else {}
        for host in t.bots:
            if host not in ages or stamps.get(host, 0) <= 0:
                items.append(Item(item, host, False, f"never ({metric} absent or 0)"))
                continue
            ok = ages[host] <= limit
            detail = f"{age(ages[host])} ago (at most {age(limit)})"
            if item == "backup verify":
                ok = ok and verify_ok.get(host) == 1
                detail += ", passed" if verify_ok.get(host) == 1 else ", FAILED"
            items.append(Item(item, host, ok, detail))
    return items


def check_lease(api: Api, t: Targets) -> list[Item]:
    """Exactly one node holds the trading lease, and it is the one VRRP made master."""
    holders = api.query('polymarket_ha_lease_holder{job="node"}')
    masters = api.query('polymarket_ha_vrrp_master{job="node"}')
    held = sorted(h for h, v in holders.items() if v == 1)
    missing = [h for h in t.bots if h not in holders]
    if missing:
        return [Item("lease holder", "all", False, f"no lease metric from {', '.join(missing)} (no witness?)")]
    if len(held) != 1:
        return [Item("lease holder", "all", False, f"{len(held)} holders ({', '.join(held) or 'none'}): needs one")]
    vip = sorted(h for h, v in masters.items() if v == 1)
    ok = vip == held
    return [Item("lease holder", "all", ok, f"{held[0]}; VIP on {', '.join(vip) or 'none'}"
                 + ("" if ok else ": the lease holder must hold the VIP, alone"))]


def check_alert_delivery(api: Api, receipt_url: str, timeout: float) -> list[Item]:
    """A test alert through Alertmanager: delivered (its notification counter rises, no failure), and with
    ``receipt_url`` seen there (its id in the answer of a GET)."""
    mark = uuid.uuid4().hex
    # A group of its own (the route groups by alertname and node): sent after group_wait (10 s), not at the
    # group_interval (1 min) of an earlier run's group.
    labels = {"alertname": TEST_ALERT, "severity": "critical", "node": f"golive-{mark[:12]}", "golive": mark}
    sent0, failed0 = api.notifications()
    start = time.monotonic()
    api.post_alert(labels, datetime.now(UTC) + timedelta(minutes=5))
    detail = ""
    ok = False
    try:
        while time.monotonic() - start < timeout:
            time.sleep(1)
            sent, failed = api.notifications()
            if failed > failed0:
                detail = f"Alertmanager failed {failed - failed0:g} notification(s): journalctl -u " \
                         "prometheus-alertmanager -e"
                break
            if sent <= sent0:
                detail = f"no notification sent within {timeout:g} s"
                continue
            if not receipt_url:
                ok, detail = True, f"sent by Alertmanager in {time.monotonic() - start:.0f} s"
                break
            try:
                seen = mark in api.get(receipt_url).decode(errors="replace")
            except Failed as exc:
                detail = str(exc)
                continue
            if seen:
                ok, detail = True, f"received at {receipt_url} in {time.monotonic() - start:.0f} s"
                break
            detail = f"not received at {receipt_url} within {timeout:g} s"
    finally:
        api.post_alert(labels, datetime.now(UTC))  # resolved: the test alert goes away
    return [Item("alert delivery", "monitoring", ok, detail)]


def run(api: Api, t: Targets, receipt_url: str = "", timeout: float = 60, alert: bool = True) -> list[Item]:
    items = check_services(api, t) + check_packages(api, t) + check_compliance(api, t) + check_ages(api, t)
    if t.bots:
        items += check_lease(api, t)
    if alert:
        items += check_alert_delivery(api, receipt_url, timeout)
    return items


def shown(text: str) -> str:
    """Label values and scrape errors come from the hosts: never a raw control character to the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def table(items: list[Item]) -> str:
    rows = [("ITEM", "HOST", "RESULT", "DETAIL")] + [
        (shown(i.item), shown(i.host), "pass" if i.ok else "FAIL", shown(i.detail)) for i in items]
    widths = [max(len(r[n]) for r in rows) for n in range(3)]
    lines = ["  ".join(r[n].ljust(widths[n]) for n in range(3)) + "  " + r[3] for r in rows]
    failed = [i for i in items if not i.ok]
    lines.append(f"{len(items) - len(failed)} of {len(items)} pass" +
                 (": NOT ready to go live" if failed else ": ready to go live"))
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="polymarket-golive", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check every item; exit 0 only when all pass")
    c.add_argument("--json", action="store_true", help="one JSON object: the items and whether all pass")
    c.add_argument("--settings", default=str(SETTINGS), help=f"monitoring.conf (default {SETTINGS})")
    c.add_argument("--prometheus", default=PROMETHEUS, help=f"Prometheus's URL (default {PROMETHEUS})")
    c.add_argument("--alertmanager", default=ALERTMANAGER, help=f"Alertmanager's URL (default {ALERTMANAGER})")
    c.add_argument("--receipt-url", default="", help="a URL whose GET answer shows what the webhook received: the "
                   "test alert passes only when its id appears there")
    c.add_argument("--timeout", type=float, default=90, help="seconds to wait for the test alert (default 90)")
    c.add_argument("--no-alert", action="store_true", help="send no test alert (the item is then not checked: "
                   "the exit status says nothing about delivery)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for value in (args.prometheus, args.alertmanager, args.receipt_url):
        if value and urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            print(f"error: '{value}' is not an http(s) URL", file=sys.stderr)
            return 2
    if not 0 < args.timeout <= 3600:
        print("error: --timeout: between 0 and 3600 seconds", file=sys.stderr)
        return 2
    try:
        targets = read_targets(Path(args.settings))
        items = run(Api(args.prometheus, args.alertmanager), targets, args.receipt_url, args.timeout,
                    not args.no_alert)
    except Failed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    passed = all(i.ok for i in items)
    if args.json:
        print(json.dumps({"pass": passed, "items": [asdict(i) for i in items]}, indent=1))
    else:
        sys.stdout.write(table(items))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
