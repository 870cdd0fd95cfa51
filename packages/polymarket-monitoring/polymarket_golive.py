#!/usr/bin/python3
"""polymarket-golive: the go-live checklist items a machine can check, on the monitoring host.

For every host of polymarket-monitoring's targets (monitoring.conf: bot_targets, node_targets,
haproxy_target) it asks Prometheus's HTTP API (no ssh) whether the services answer, whether each
role's packages report their metrics, each host's polymarket-* versions (equal to this host's
polymarket-monitoring), the compliance score, the age of the last replication, of the last backup and
verify, that exactly one node holds the trading lease (from a fresh polymarket-ha.prom only); then it
sends a test alert through Alertmanager's API and waits until Alertmanager delivered it (and, with
--receipt-url, until it shows at the operator's webhook). Prints a pass/fail table (or --json); exit 0
only when every item passes.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import subprocess
import sys
import time
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
FUTURE_SLACK = 60  # a timestamp further ahead than this is a wrong clock, not a fresh result
# polymarket-ha.prom is rewritten by every heartbeat (polymarket-ha-heartbeat.timer, each minute), VRRP change
# and replication: older than 5 min (five heartbeats missed), its lease and VRRP gauges are no longer the truth.
HA_TEXTFILE = "polymarket-ha.prom"
HA_TEXTFILE_MAX_AGE = 300
# The node exporter's file label is the full path (1.5 to 1.9: filepath.Join(dir, name)); a bare name also matches.
HA_MTIME = r'node_textfile_mtime_seconds{job="node",file=~"(.*/)?polymarket-ha\\.prom"}'
# polymarket-compliance audit runs daily (polymarket-compliance.timer: OnCalendar 06:00, RandomizedDelaySec=5min,
# Persistent=true): two runs are at most 24 h 5 min apart. 26 h leaves about 2 h for the audit's own run, the
# scrape and a run caught up at boot; an older audit's score and package versions are no longer the host's.
# Its time is polymarket_compliance_last_run_timestamp_seconds, and the file's mtime a second witness (the older
# of the two counts; either ahead of Prometheus's clock by more than FUTURE_SLACK fails).
AUDIT_MAX_AGE = 26 * 3600
AUDIT_RUN = 'polymarket_compliance_last_run_timestamp_seconds{job="node"}'
AUDIT_MTIME = r'node_textfile_mtime_seconds{job="node",file=~"(.*/)?polymarket-hardening\\.prom"}'
TEST_ALERT = "PolymarketGoLiveTest"
# What a role's packages export (their metrics are how the check sees them installed and running).
BOT_PACKAGES = {"polymarket-ha": "polymarket_ha_last_replication_timestamp_seconds",
                "polymarket-backup": "polymarket_backup_last_success_timestamp_seconds"}  # fmt: skip
HOST_PACKAGES = {"polymarket-hardening": "polymarket_compliance_score_percent"}


class Failed(Exception):
    """An error that stops the check: one line for the operator."""


def url_error(value: str) -> str | None:
    """Why ``value`` is no URL golive can ask (None: it is one). Checked before anything is asked or posted:
    urlopen refuses a space or a control character only when it sends the request (http.client.InvalidURL),
    urlsplit raises on an unclosed [ or a bad port."""
    if any(not c.isascii() or not c.isprintable() or c.isspace() for c in value):
        return "a space, a control or a non-ASCII character (percent-encode it)"
    try:
        url = urllib.parse.urlsplit(value)
        _ = url.port  # ValueError: a port that is no number from 0 to 65535
    except ValueError as exc:
        return str(exc)
    if url.scheme not in ("http", "https"):
        return "not an http(s) URL"
    if not url.hostname:
        return "no host"
    return None


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
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Failed(f"{url}: {getattr(exc, 'reason', None) or exc}") from None

    def series(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each series's labels and value."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            data = json.loads(self.get(url))
            return [(dict(r["metric"]), float(r["value"][1])) for r in data["data"]["result"]]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise Failed(f"{url}: not a Prometheus answer") from None

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: {node label: value} (several series of one node: the highest value)."""
        found: dict[str, float] = {}
        for labels, value in self.series(expr):
            node = labels.get("node", "")
            found[node] = max(found.get(node, float("-inf")), value)
        return found

    def targets(self) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/targets?state=active"
        try:
            active: list[dict[str, Any]] = json.loads(self.get(url))["data"]["activeTargets"]
        except (ValueError, KeyError, TypeError):
            raise Failed(f"{url}: not a Prometheus answer") from None
        return active

    def notifications(self) -> tuple[float, float] | None:
        """Alertmanager's per-request counters over every integration: requests made and requests failed
        (None: it exports neither). Not alertmanager_notifications_total: that counts a notification when its
        first attempt starts, and its _failed_total only when the retries give up, minutes later."""
        requests = failed = 0.0
        seen = False
        for line in self.get(f"{self.alertmanager}/metrics").decode(errors="replace").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name not in ("alertmanager_notification_requests_total",
                            "alertmanager_notification_requests_failed_total"):
                continue
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                raise Failed(f"{self.alertmanager}/metrics: not a Prometheus text line: {line[:80]!r}") from None
            seen = True
            if name == "alertmanager_notification_requests_total":
                requests += value
            else:
                failed += value
        return (requests, failed) if seen else None

    def post_alert(self, labels: dict[str, str], ends: datetime) -> None:
        body = json.dumps([{"labels": labels, "endsAt": ends.isoformat(),
                            "annotations": {"summary": "polymarket-golive check: a test alert, no action"}}])
        request = urllib.request.Request(f"{self.alertmanager}/api/v2/alerts", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                pass
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise Failed(f"{self.alertmanager}/api/v2/alerts: {getattr(exc, 'reason', None) or exc}") from None


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


def _order(c: str) -> int:
    return -1 if c == "~" else ord(c) if c.isalpha() else ord(c) + 256


def _run(text: str, digits: bool) -> str:
    """The leading run of digits (or of non-digits) of ``text``."""
    n = 0
    while n < len(text) and (text[n] in "0123456789") == digits:
        n += 1
    return text[:n]


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: non-digit runs by character (~ first, then the end, letters, the rest), digits by value."""
    while a or b:
        na, nb = _run(a, False), _run(b, False)
        for i in range(max(len(na), len(nb))):
            ca = _order(na[i]) if i < len(na) else 0
            cb = _order(nb[i]) if i < len(nb) else 0
            if ca != cb:
                return -1 if ca < cb else 1
        a, b = a[len(na):], b[len(nb):]
        da, db = _run(a, True), _run(b, True)
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def compare_versions(a: str, b: str) -> int:
    """Debian version order (epoch, upstream, revision): -1, 0 or 1."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch) if epoch.isdigit() else 0, upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def installed_version(package: str) -> str | None:
    """This host's version of ``package`` when dpkg has it installed, else None."""
    try:
        answer = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", package],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                                env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version, _, status = answer.stdout.strip().partition(" ")
    return version if answer.returncode == 0 and version and status[1:2] == "i" else None


def audit_state(api: Api, t: Targets) -> tuple[dict[str, float], dict[str, str]]:
    """Each host's last polymarket-compliance audit: its age (polymarket_compliance_last_run_timestamp_seconds),
    and for each host whose audit does not count (absent, older than AUDIT_MAX_AGE, ahead of Prometheus's clock;
    polymarket-hardening.prom's mtime a second witness) why, naming the fix."""
    ages = api.query(f"time() - {AUDIT_RUN}")
    mtimes = api.query(f"time() - {AUDIT_MTIME}")
    problems = {}
    for host in t.hosts:
        if host not in ages:
            problems[host] = ("no polymarket_compliance_last_run_timestamp_seconds: no audit time "
                              "(polymarket-compliance audit)")
            continue
        witnesses = [ages[host]] + ([mtimes[host]] if host in mtimes else [])
        if min(witnesses) < -FUTURE_SLACK:
            problems[host] = (f"audit {age(-min(witnesses))} in the future (clock of {host} or of Prometheus wrong? "
                              "timedatectl), then polymarket-compliance audit")
        elif max(witnesses) > AUDIT_MAX_AGE:
            problems[host] = (f"audit {age(max(witnesses))} old (at most {age(AUDIT_MAX_AGE)}, daily at 06:00): "
                              "polymarket-compliance audit; systemctl status polymarket-compliance.timer")
    return ages, problems


def check_versions(api: Api, t: Targets, expected: str | None) -> list[Item]:
    """Each host's installed polymarket-* packages (polymarket_package_info, written by every polymarket-compliance
    audit) at ``expected`` (this host's polymarket-monitoring), or without it all at the newest version found."""
    found: dict[str, dict[str, str]] = {}
    for labels, value in api.series('polymarket_package_info{job="node"} == 1'):
        if value == 1 and labels.get("package", "").startswith("polymarket-"):
            found.setdefault(labels.get("node", ""), {})[labels["package"]] = labels.get("version", "")
    audited, stale = audit_state(api, t)
    source = "polymarket-monitoring here"
    if expected is None:
        every = {v for host in t.hosts for v in found.get(host, {}).values()}
        expected = max(every, key=functools.cmp_to_key(compare_versions)) if every else None
        source = "the newest of the hosts"
    items = []
    for host in t.hosts:
        packages = found.get(host)
        if not packages:
            items.append(Item("package versions", host, False, "no polymarket_package_info: polymarket-hardening "
                              "too old, or no audit since it was installed (polymarket-compliance audit)"))
            continue
        shown_versions = ", ".join(f"{p} {v}" for p, v in sorted(packages.items()))
        if host in stale:
            items.append(Item("package versions", host, False, f"{stale[host]} (its versions: {shown_versions})"))
            continue
        when = f" (audit {age(max(audited[host], 0))} ago)"
        wrong = [f"{p} {v}, expected {expected}" for p, v in sorted(packages.items()) if v != expected]
        if wrong:
            items.append(Item("package versions", host, False,
                              "; ".join(wrong) + f" ({source}){when}: upgrade, then polymarket-compliance audit"))
        else:
            items.append(Item("package versions", host, True, shown_versions + when))
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
    _, stale = audit_state(api, t)
    items = []
    for host in t.hosts:
        if host not in score:
            items.append(Item("compliance", host, False, "no compliance score (polymarket-compliance audit)"))
            continue
        if host in stale:
            items.append(Item("compliance", host, False, f"{stale[host]} (its score: {score[host]:g}%)"))
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
            if ages[host] < -FUTURE_SLACK:
                items.append(Item(item, host, False, f"{age(-ages[host])} in the future (clock of {host} or of "
                                  "Prometheus wrong? timedatectl)"))
                continue
            ok = ages[host] <= limit
            detail = f"{age(ages[host])} ago (at most {age(limit)})"
            if item == "backup verify":
                ok = ok and verify_ok.get(host) == 1
                detail += ", passed" if verify_ok.get(host) == 1 else ", FAILED"
            items.append(Item(item, host, ok, detail))
    return items


def check_ha_fresh(api: Api, t: Targets) -> tuple[list[Item], set[str]]:
    """polymarket-ha.prom of each bot node was rewritten within HA_TEXTFILE_MAX_AGE (the node exporter's mtime of
    it): a stopped writer leaves its last lease and VRRP gauges behind. The items, and the nodes whose file is
    fresh."""
    ages = api.query(f"time() - {HA_MTIME}")
    items, fresh = [], set()
    for host in t.bots:
        if host not in ages:
            items.append(Item("ha metrics", host, False, f"no {HA_TEXTFILE} in the node exporter's textfile "
                              "directory: polymarket-ha not installed or never ran"))
        elif ages[host] < -FUTURE_SLACK:
            items.append(Item("ha metrics", host, False, f"{HA_TEXTFILE} written {age(-ages[host])} in the future "
                              f"(clock of {host} wrong? timedatectl)"))
        elif ages[host] > HA_TEXTFILE_MAX_AGE:
            items.append(Item("ha metrics", host, False, f"{HA_TEXTFILE} last written {age(ages[host])} ago (at most "
                              f"{age(HA_TEXTFILE_MAX_AGE)}): systemctl status polymarket-ha-heartbeat.timer"))
        else:
            fresh.add(host)
            items.append(Item("ha metrics", host, True, f"{HA_TEXTFILE} written {age(max(ages[host], 0))} ago"))
    return items, fresh


def check_lease(api: Api, t: Targets, fresh: set[str] | None = None) -> list[Item]:
    """Exactly one node holds the trading lease, and it is the one VRRP made master (as told by a fresh
    polymarket-ha.prom only, when ``fresh`` names those nodes)."""
    holders = api.query('polymarket_ha_lease_holder{job="node"}')
    masters = api.query('polymarket_ha_vrrp_master{job="node"}')
    if fresh is not None:
        stale = sorted(h for h in t.bots if h in holders and h not in fresh)
        if stale:
            return [Item("lease holder", "all", False, f"the lease metric of {', '.join(stale)} is stale "
                         f"({HA_TEXTFILE} older than {age(HA_TEXTFILE_MAX_AGE)}): not counted")]
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
    """A test alert through Alertmanager: delivered (Alertmanager's successful notification requests rise and
    none fails meanwhile: its word, which the dead-man's switch's own notifications can also raise), and with
    ``receipt_url`` seen there (its id in the answer of a GET: the proof of receipt)."""
    mark = uuid.uuid4().hex
    # A group of its own (the route groups by alertname and node): sent after group_wait (10 s), not at the
    # group_interval (1 min) of an earlier run's group.
    labels = {"alertname": TEST_ALERT, "severity": "critical", "node": f"golive-{mark[:12]}", "golive": mark}
    before = api.notifications()
    if before is None:
        return [Item("alert delivery", "monitoring", False, "Alertmanager exports no "
                     "alertmanager_notification_requests_total (older than 0.22?): delivery not checked")]
    requests0, failed0 = before
    start = time.monotonic()
    api.post_alert(labels, datetime.now(UTC) + timedelta(minutes=5))
    detail = ""
    ok = False
    try:
        while time.monotonic() - start < timeout:
            time.sleep(1)
            requests, failed = api.notifications() or (requests0, failed0)
            if failed > failed0:
                detail = f"{failed - failed0:g} notification request(s) failed (Alertmanager retries them): " \
                         "journalctl -u prometheus-alertmanager -e"
                break
            if requests - failed <= requests0 - failed0:
                detail = f"no notification delivered within {timeout:g} s"
                continue
            if not receipt_url:
                ok, detail = True, f"delivered by Alertmanager in {time.monotonic() - start:.0f} s (its word; " \
                                   "--receipt-url shows it received)"
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


def run(api: Api, t: Targets, receipt_url: str = "", timeout: float = 60, alert: bool = True,
        expected_version: str | None = None) -> list[Item]:
    items = check_services(api, t) + check_packages(api, t) + check_versions(api, t, expected_version) + \
        check_compliance(api, t) + check_ages(api, t)
    if t.bots:
        fresh_items, fresh = check_ha_fresh(api, t)
        items += fresh_items + check_lease(api, t, fresh)
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
    for option, value in (("--prometheus", args.prometheus), ("--alertmanager", args.alertmanager),
                          ("--receipt-url", args.receipt_url)):
        why = url_error(value) if value or option != "--receipt-url" else None
        if why:
            print(f"error: {option} {shown(repr(value))}: {why}", file=sys.stderr)
            return 2
    if not 0 < args.timeout <= 3600:
        print("error: --timeout: between 0 and 3600 seconds", file=sys.stderr)
        return 2
    try:
        targets = read_targets(Path(args.settings))
        items = run(Api(args.prometheus, args.alertmanager), targets, args.receipt_url, args.timeout,
                    not args.no_alert, installed_version("polymarket-monitoring"))
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
