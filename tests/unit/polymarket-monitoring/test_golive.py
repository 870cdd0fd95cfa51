"""polymarket-golive check (packages/polymarket-monitoring/polymarket_golive.py) against an in-process stand-in
for Prometheus's and Alertmanager's HTTP APIs on 127.0.0.1: the answers are those of a healthy three-host cluster,
and each test breaks one fact the way Prometheus would show it; the table, --json and the exit status name the
failing item and host. The real daemons: tests/system/test_monitoring_cluster.py."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload

BOTS = ("primary", "standby")
HOSTS = ("primary", "standby", "lb")
VERSION = "1.0.3"
TEXTFILES = "/var/lib/prometheus/node-exporter"
INTEGRATIONS = ("email", "webhook", "telegram")
MATCHER = re.compile(r'(\w+)(=~|!=|=)"((?:[^"\\]|\\.)*)"')


def golive() -> ModuleType:
    return payload.load("polymarket-monitoring", "polymarket_golive.py")


class Cluster:
    """What Prometheus and Alertmanager answer: metric name -> {node: value}, the textfiles' mtimes, the package
    versions, the targets, and Alertmanager's notification counters per integration, as Alertmanager counts
    them (notify.go's RetryStage): notifications_total when a notification's first attempt starts,
    notification_requests_total and _failed_total for each attempt, notifications_failed_total only when the
    retries give up (a dead webhook: minutes later, after the test's wait)."""

    def __init__(self) -> None:
        now = time.time()
        self.metrics: dict[str, dict[str, float]] = {
            "polymarket_ha_last_replication_timestamp_seconds": {h: now - 60 for h in BOTS},
            "polymarket_backup_last_success_timestamp_seconds": {h: now - 300 for h in BOTS},
            "polymarket_backup_last_verify_timestamp_seconds": {h: now - 3600 for h in BOTS},
            "polymarket_backup_last_verify_ok": {h: 1 for h in BOTS},
            "polymarket_compliance_score_percent": {h: 100 for h in HOSTS},
            "polymarket_compliance_threshold_percent": {h: 95 for h in HOSTS},
            "polymarket_compliance_compliant": {h: 1 for h in HOSTS},
            "polymarket_ha_lease_holder": {"primary": 1, "standby": 0},
            "polymarket_ha_vrrp_master": {"primary": 1, "standby": 0},
            "polymarket_compliance_last_run_timestamp_seconds": {h: now - 7200 for h in HOSTS},
        }
        self.mtimes: dict[tuple[str, str], float] = {
            **{(h, f"{TEXTFILES}/polymarket-ha.prom"): now - 20 for h in BOTS},
            **{(h, f"{TEXTFILES}/polymarket-hardening.prom"): now - 7200 for h in HOSTS}}  # fmt: skip
        packages = {"primary": ("bot", "ha", "backup", "hardening"), "standby": ("bot", "ha", "backup", "hardening"),
                    "lb": ("ha", "hardening", "monitoring")}  # fmt: skip
        self.versions = {h: {f"polymarket-{p}": VERSION for p in ps} for h, ps in packages.items()}
        self.failing: dict[str, str] = {}
        self.down: set[tuple[str, str]] = set()
        self.targets = [("polymarket-bot", h) for h in BOTS] + [("node", h) for h in HOSTS] + [("haproxy", "lb")]
        # integration -> [notifications_total, notifications_failed_total, requests_total, requests_failed_total]
        self.counters = {i: [0.0, 0.0, 0.0, 0.0] for i in INTEGRATIONS}
        self.counters["webhook"] = [3.0, 0.0, 3.0, 0.0]  # the dead-man's switch, delivered before
        self.deliver = "ok"  # ok | dead (retried, never answers) | refused (4xx: not retried) | none | sent-elsewhere
        self.retrying = False
        self.alerts: list[dict[str, Any]] = []
        self.received: list[str] = []

    def series(self, name: str) -> list[tuple[dict[str, str], float]]:
        if name == "node_textfile_mtime_seconds":
            return [({"node": n, "file": f}, v) for (n, f), v in self.mtimes.items()]
        if name == "polymarket_package_info":
            return [({"node": n, "package": p, "version": v}, 1) for n, ps in self.versions.items()
                    for p, v in ps.items()]
        if name == "polymarket_compliance_control_failing":
            return [({"node": n, "control": c}, 1) for n, c in self.failing.items()]
        return [({"node": n}, v) for n, v in self.metrics.get(name, {}).items()]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """``[time() - ]NAME{MATCHERS}[ == 1]``, label matchers applied as Prometheus does (=~ anchored)."""
        now = time.time()
        age = expr.startswith("time() - ")
        expr = expr.removeprefix("time() - ")
        equal_one = expr.endswith(" == 1")
        name, _, selector = expr.removesuffix(" == 1").partition("{")
        matchers = [(k, op, re.sub(r"\\(.)", r"\1", v)) for k, op, v in MATCHER.findall(selector)]
        found = []
        for labels, value in self.series(name):
            labels = {"__name__": name, "job": "node", **labels}
            if all((re.fullmatch(v, labels.get(k, "")) is not None) if op == "=~" else
                   (labels.get(k, "") == v) == (op == "=") for k, op, v in matchers) and \
                    (not equal_one or value == 1):
                found.append({"metric": labels, "value": [now, str(now - value if age else value)]})
        return found

    def alert_posted(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts += alerts
        if alerts[0]["labels"].get("alertname") != "PolymarketGoLiveTest" or len(self.alerts) != 1:
            return
        webhook = self.counters["webhook"]
        if self.deliver == "none":
            return
        webhook[0] += 1  # a notification begins: counted before any attempt
        if self.deliver in ("ok", "sent-elsewhere"):
            webhook[2] += 1
        if self.deliver == "ok":
            self.received.append(json.dumps(alerts))
        elif self.deliver == "dead":  # connection refused, retried with back-off for as long as the group lives
            webhook[2] += 1
            webhook[3] += 1
            self.retrying = True
        elif self.deliver == "refused":  # an unrecoverable answer: not retried, the notification fails at once
            webhook[2] += 1
            webhook[3] += 1
            webhook[1] += 1

    def metrics_text(self) -> str:
        if self.retrying:  # the next attempt of the back-off, failed again
            self.counters["webhook"][2] += 1
            self.counters["webhook"][3] += 1
        lines = []
        for n, name in enumerate(("notifications_total", "notifications_failed_total", "notification_requests_total",
                                  "notification_requests_failed_total")):
            lines += [f"# HELP alertmanager_{name} ...", f"# TYPE alertmanager_{name} counter"]
            for integration, values in self.counters.items():
                reason = ',reason="other"' if name == "notifications_failed_total" else ""
                lines.append(f'alertmanager_{name}{{integration="{integration}"{reason}}} {values[n]:g}')
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def serve(cluster: Cluster) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/api/v1/query":
                expr = urllib.parse.parse_qs(url.query)["query"][0]
                self.answer(json.dumps({"status": "success", "data": {"result": cluster.query(expr)}}).encode())
            elif url.path == "/api/v1/targets":
                active = [{"labels": {"job": j, "node": n}, "scrapeUrl": f"http://{n}/metrics",
                           "health": "down" if (j, n) in cluster.down else "up",
                           "lastError": "connection refused" if (j, n) in cluster.down else ""}
                          for j, n in cluster.targets]
                self.answer(json.dumps({"data": {"activeTargets": active}}).encode())
            elif url.path == "/metrics":
                self.answer(cluster.metrics_text().encode(), "text/plain")
            elif url.path == "/received":
                self.answer("\n".join(cluster.received).encode(), "text/plain")
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/api/v2/alerts":
                cluster.alert_posted(json.loads(body))
                self.answer(b"")
            else:
                self.send_error(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "monitoring.conf"
    path.write_text('# test\nBOT_TARGETS="primary=10.0.0.1 standby=10.0.0.2"\nMETRICS_PORT="9090"\n'
                    'NODE_TARGETS="primary=10.0.0.1 standby=10.0.0.2 lb=10.0.0.3"\n'
                    'HAPROXY_TARGET="127.0.0.1:8405"\n')
    return path


def check(cluster: Cluster, settings: Path, *extra: str, version: str | None = VERSION) -> tuple[int, str, str]:
    """``polymarket-golive check``, with ``version`` as this host's polymarket-monitoring (None: not installed)."""
    g = golive()
    g.__dict__["installed_version"] = lambda package: version if package == "polymarket-monitoring" else None
    out, err = io.StringIO(), io.StringIO()
    with serve(cluster) as url, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        argv = ["check", "--settings", str(settings), "--prometheus", url, "--alertmanager", url,
                "--timeout", "3", *[a.replace("URL", url) for a in extra]]
        code = g.main(argv)
    return code, out.getvalue(), err.getvalue()


def failing(out: str) -> list[tuple[str, str]]:
    return [(i["item"], i["host"]) for i in json.loads(out)["items"] if not i["ok"]]


def test_healthy_cluster_passes(settings: Path) -> None:
    cluster = Cluster()
    code, out, _ = check(cluster, settings, "--receipt-url", "URL/received")
    assert code == 0, out
    assert out.rstrip().endswith(": ready to go live"), out
    assert " FAIL " not in out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("backup", "standby", "pass") in rows and ("compliance", "lb", "pass") in rows
    # The test alert was resolved afterwards (its second post ends now).
    assert [a["labels"]["alertname"] for a in cluster.alerts] == ["PolymarketGoLiveTest"] * 2


@pytest.mark.parametrize(("breakage", "named"), [
    (lambda c: c.metrics["polymarket_backup_last_success_timestamp_seconds"].update(primary=time.time() - 3600),
     [("backup", "primary")]),
    (lambda c: c.metrics["polymarket_backup_last_verify_ok"].update(standby=0), [("backup verify", "standby")]),
    (lambda c: c.metrics["polymarket_ha_last_replication_timestamp_seconds"].update(standby=0),
     [("replication", "standby")]),
    (lambda c: c.metrics["polymarket_ha_lease_holder"].update(standby=1), [("lease holder", "all")]),
    (lambda c: c.metrics["polymarket_ha_lease_holder"].update(primary=0), [("lease holder", "all")]),
    (lambda c: c.metrics["polymarket_ha_vrrp_master"].update(primary=0, standby=1), [("lease holder", "all")]),
    (lambda c: (c.metrics["polymarket_compliance_score_percent"].update(lb=90),
                c.metrics["polymarket_compliance_compliant"].update(lb=0), c.failing.update(lb="ssh-root-login")),
     [("compliance", "lb")]),
    (lambda c: c.down.add(("haproxy", "lb")), [("service haproxy", "lb")]),
    (lambda c: c.down.add(("polymarket-bot", "standby")), [("service bot", "standby")]),
    (lambda c: c.targets.remove(("node", "lb")), [("service node exporter", "lb")]),
    (lambda c: c.metrics["polymarket_compliance_score_percent"].pop("standby"),
     [("package polymarket-hardening", "standby"), ("compliance", "standby")]),
    (lambda c: setattr(c, "deliver", "dead"), [("alert delivery", "monitoring")]),
    (lambda c: setattr(c, "deliver", "refused"), [("alert delivery", "monitoring")]),
    (lambda c: setattr(c, "deliver", "none"), [("alert delivery", "monitoring")]),
    # A timestamp ahead of Prometheus's clock is no fresh result.
    (lambda c: c.metrics["polymarket_ha_last_replication_timestamp_seconds"].update(primary=time.time() + 3600),
     [("replication", "primary")]),
    (lambda c: c.metrics["polymarket_backup_last_success_timestamp_seconds"].update(standby=time.time() + 120),
     [("backup", "standby")]),
    # polymarket-ha.prom no longer rewritten: its lease and VRRP gauges do not count.
    (lambda c: c.mtimes.update({("standby", f"{TEXTFILES}/polymarket-ha.prom"): time.time() - 600}),
     [("ha metrics", "standby"), ("lease holder", "all")]),
    (lambda c: c.mtimes.pop(("primary", f"{TEXTFILES}/polymarket-ha.prom")),
     [("ha metrics", "primary"), ("lease holder", "all")]),
    (lambda c: c.versions["standby"].update({"polymarket-ha": "1.0.2"}), [("package versions", "standby")]),
    (lambda c: c.versions.pop("lb"), [("package versions", "lb")]),
])  # fmt: skip
def test_one_broken_item_is_named(settings: Path, breakage: Any, named: list[tuple[str, str]]) -> None:
    cluster = Cluster()
    breakage(cluster)
    code, out, _ = check(cluster, settings, "--json")
    assert code == 1
    assert failing(out) == named
    assert json.loads(out)["pass"] is False


def test_table_names_the_failing_item_and_its_detail(settings: Path) -> None:
    cluster = Cluster()
    cluster.failing["lb"] = "ufw-enabled"
    cluster.metrics["polymarket_compliance_compliant"]["lb"] = 0
    code, out, _ = check(cluster, settings)
    assert code == 1
    [row] = [line for line in out.splitlines() if " FAIL " in line]
    assert row.split()[:3] == ["compliance", "lb", "FAIL"] and "failing: ufw-enabled" in row
    assert out.rstrip().endswith("NOT ready to go live")


def test_receipt_url_must_show_the_test_alert(settings: Path) -> None:
    cluster = Cluster()
    cluster.received.append("something else")
    cluster.deliver = "sent-elsewhere"
    code, out, _ = check(cluster, settings, "--json", "--receipt-url", "URL/received")
    assert code == 1 and failing(out) == [("alert delivery", "monitoring")]


def test_unreachable_prometheus_and_bad_input_are_one_line(settings: Path, tmp_path: Path) -> None:
    g = golive()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = g.main(["check", "--settings", str(settings), "--prometheus", "http://127.0.0.1:9/",
                       "--alertmanager", "http://127.0.0.1:9/"])
    assert code == 1 and err.getvalue().startswith("error: http://127.0.0.1:9/api/v1/targets")
    assert len(err.getvalue().splitlines()) == 1
    for argv, want in ((["check", "--prometheus", "file:///etc/passwd"], "not an http(s) URL"),
                       (["check", "--settings", str(tmp_path / "none")], "No such file"),
                       (["check", "--timeout", "0"], "--timeout")):  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = g.main(argv)
        assert code in (1, 2) and err.getvalue().startswith("error: ") and want in err.getvalue(), err.getvalue()
        assert len(err.getvalue().splitlines()) == 1


def test_each_test_alert_is_a_group_of_its_own(settings: Path) -> None:
    """Alertmanager groups by alertname and node: a second run's test alert in the first run's group would wait
    for the group_interval (1 min) instead of group_wait (10 s). Each run's has a node label of its own."""
    nodes = []
    for _ in range(2):
        cluster = Cluster()
        assert check(cluster, settings)[0] == 0
        nodes.append(cluster.alerts[0]["labels"]["node"])
    assert nodes[0] != nodes[1] and all(n.startswith("golive-") for n in nodes)


def test_table_never_prints_a_control_character_from_a_host() -> None:
    """A scrape error or a label is the host's text: an ESC there must not reach the operator's terminal."""
    mod = golive()
    out = mod.table([mod.Item("target", "primary\x1b[2J", False, "HTTP 500 \x1b[32mall targets up\x07")])
    assert "\x1b" not in out and "\x07" not in out
    assert "primary\\x1b[2J" in out and "\\x1b[32mall targets up\\x07" in out


def test_a_dead_webhook_fails_though_alertmanager_counts_a_notification(settings: Path) -> None:
    """Alertmanager counts alertmanager_notifications_total when it starts a notification, and its _failed_total
    only when the retries give up, minutes later: those two passed a dead webhook. Each failed request counts at
    once in alertmanager_notification_requests_failed_total: the row fails, naming the count and the journal."""
    cluster = Cluster()
    cluster.deliver = "dead"
    notified0, gave_up0 = cluster.counters["webhook"][:2]
    code, out, _ = check(cluster, settings)
    assert code == 1
    [row] = [line for line in out.splitlines() if " FAIL " in line]
    assert row.split()[:3] == ["alert", "delivery", "monitoring"]
    failed = cluster.counters["webhook"][3]  # each attempt so far failed (none before the test)
    assert f" {failed:g} notification request(s) failed" in row and "journalctl -u prometheus-alertmanager" in row
    # What the old check read: a notification counted, none failed (yet).
    assert cluster.counters["webhook"][0] == notified0 + 1 and cluster.counters["webhook"][1] == gave_up0
    assert cluster.counters["webhook"][3] >= 1 and not cluster.received


def test_lease_of_a_stale_ha_textfile_is_not_counted(settings: Path) -> None:
    """The old lease holder's polymarket-ha.prom still says 1 after its writer stopped; the standby took the lease.
    Counted, that is two holders; the stale file is named instead, and its gauge left out."""
    cluster = Cluster()
    cluster.mtimes[("primary", f"{TEXTFILES}/polymarket-ha.prom")] = time.time() - 400
    code, out, _ = check(cluster, settings, "--no-alert")
    assert code == 1
    rows = {tuple(line.split()[:3]): line for line in out.splitlines()}
    assert ("ha", "metrics", "primary") in {r[:3] for r in rows}
    [stale] = [line for line in out.splitlines() if line.startswith("ha metrics") and "primary" in line]
    assert " FAIL " in stale and "polymarket-ha.prom last written" in stale and "at most 300 s" in stale
    [lease] = [line for line in out.splitlines() if line.startswith("lease holder")]
    assert " FAIL " in lease and "primary is stale" in lease
    # A fresh file passes, whether the node exporter labels it with its full path or its bare name.
    cluster.mtimes[("primary", f"{TEXTFILES}/polymarket-ha.prom")] = time.time() - 250
    cluster.mtimes[("standby", "polymarket-ha.prom")] = cluster.mtimes.pop(("standby",
                                                                            f"{TEXTFILES}/polymarket-ha.prom"))
    assert check(cluster, settings, "--no-alert")[0] == 0


def test_a_host_one_version_behind_is_named_with_found_and_expected(settings: Path) -> None:
    cluster = Cluster()
    code, out, _ = check(cluster, settings, "--no-alert")
    assert code == 0, out
    [lb] = [line for line in out.splitlines() if line.startswith("package versions") and " lb " in line]
    assert "polymarket-monitoring 1.0.3" in lb and "polymarket-hardening 1.0.3" in lb and "audit 2.0 h ago" in lb
    cluster.versions["standby"]["polymarket-ha"] = "1.0.2"
    code, out, _ = check(cluster, settings, "--json", "--no-alert")
    assert code == 1 and failing(out) == [("package versions", "standby")]
    [item] = [i for i in json.loads(out)["items"] if not i["ok"]]
    assert item["detail"].startswith("polymarket-ha 1.0.2, expected 1.0.3 (polymarket-monitoring here)")
    # The monitoring host's own polymarket-monitoring is the reference, even when every host agrees.
    cluster.versions["standby"]["polymarket-ha"] = VERSION
    code, out, _ = check(cluster, settings, "--json", "--no-alert", version="1.0.4")
    assert code == 1 and failing(out) == [("package versions", h) for h in HOSTS]


def test_without_polymarket_monitoring_installed_hosts_must_agree(settings: Path) -> None:
    """Run from a source tree (no polymarket-monitoring here): every host at the newest version found."""
    cluster = Cluster()
    assert check(cluster, settings, "--no-alert", version=None)[0] == 0
    cluster.versions["primary"]["polymarket-bot"] = "1.0.3~rc1"
    cluster.versions["lb"]["polymarket-monitoring"] = "1:0.9"  # an epoch outranks any upstream version
    code, out, _ = check(cluster, settings, "--json", "--no-alert", version=None)
    assert code == 1 and failing(out) == [("package versions", h) for h in HOSTS]
    details = {i["host"]: i["detail"] for i in json.loads(out)["items"] if not i["ok"]}
    assert details["primary"].startswith("polymarket-backup 1.0.3, expected 1:0.9; ")
    assert "(the newest of the hosts)" in details["primary"]
    assert "polymarket-bot 1.0.3~rc1, expected 1:0.9" in details["primary"]
    assert "polymarket-monitoring" not in details["lb"]


def test_debian_version_order() -> None:
    compare = golive().compare_versions
    ordered = ["1.0~rc1", "1.0", "1.0-1", "1.0-1+b1", "1.0a", "1.0.1", "1.10", "2:0.1"]  # a letter before a dot
    for n, low in enumerate(ordered):
        for high in ordered[n + 1:]:
            assert (compare(low, high), compare(high, low)) == (-1, 1), (low, high)
    assert compare("0:1.0-1", "1.0-1") == 0


def test_installed_version_asks_dpkg() -> None:
    """The real dpkg-query of this machine: dpkg is installed (its version, as dpkg itself prints it), an unknown
    package is None (golive then compares the hosts with each other)."""
    g = golive()
    version = g.installed_version("dpkg")
    assert version and version.split("-")[0].split(":")[-1] in subprocess.run(
        ["dpkg", "--version"], capture_output=True, text=True, check=True).stdout
    assert g.installed_version("polymarket-no-such-package") is None


def test_the_ha_textfile_selector_under_promql(tmp_path: Path) -> None:
    """Prometheus's own engine (promtool test rules) on golive's selector of polymarket-ha.prom's mtime: the node
    exporter's file label is the full path (1.5 to 1.9 join the directory and the name); a bare name matches too;
    polymarket-hardening.prom and a look-alike (the dot is escaped) do not. The selector of polymarket-hardening.prom
    picks that file alone."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: make test-deps (the Makefile's TEST_DEPS has prometheus)")
    series = {("primary", f"{TEXTFILES}/polymarket-ha.prom"): 100, ("standby", "polymarket-ha.prom"): 200,
              ("primary", f"{TEXTFILES}/polymarket-hardening.prom"): 300,
              ("lb", f"{TEXTFILES}/polymarket-haXprom"): 400}

    def name(node: str, file: str) -> str:
        return f'node_textfile_mtime_seconds{{file="{file}",job="node",node="{node}"}}'

    test = {"rule_files": [], "tests": [{"interval": "1m", "input_series": [
        {"series": name(*k), "values": str(v)} for k, v in series.items()],
        "promql_expr_test": [{"expr": golive().HA_MTIME, "eval_time": "0m", "exp_samples": [
            {"labels": name(*k), "value": v} for k, v in list(series.items())[:2]]},
            {"expr": golive().AUDIT_MTIME, "eval_time": "0m", "exp_samples": [  # the audit's second witness
                {"labels": name(*k), "value": v} for k, v in list(series.items())[2:3]]}]}]}  # fmt: skip
    (tmp_path / "test.yml").write_text(json.dumps(test))
    proc = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("run_age", "mtime_age", "shown"), [
    (30 * 86400, 30 * 86400, "audit 720.0 h old (at most 26.0 h"),  # the timer stopped a month ago
    (27 * 3600, 27 * 3600, "audit 27.0 h old (at most 26.0 h"),  # one daily run missed
    (-10 * 86400, 7200, "audit 240.0 h in the future (clock of lb"),  # the host's clock ten days ahead
    (7200, -600, "audit 600 s in the future (clock of lb"),  # the file's mtime ahead: its clock jumped
    (7200, 30 * 86400, "audit 720.0 h old"),  # a month-old file stamped with a fresh time (copied in)
])  # fmt: skip
def test_an_old_or_future_audit_fails_compliance_and_versions(settings: Path, run_age: float, mtime_age: float,
                                                               shown: str) -> None:
    """polymarket-compliance audit runs daily (06:00, at most 5 min late): its score and package versions are the
    host's only as of that run. A month-old audit (or one stamped ahead of Prometheus's clock) passed both rows
    ("ready to go live"); now both fail for that host alone, naming the audit's age and the command."""
    cluster = Cluster()
    cluster.metrics["polymarket_compliance_last_run_timestamp_seconds"]["lb"] = time.time() - run_age
    cluster.mtimes[("lb", f"{TEXTFILES}/polymarket-hardening.prom")] = time.time() - mtime_age
    code, out, _ = check(cluster, settings, "--json", "--no-alert")
    assert code == 1 and json.loads(out)["pass"] is False
    assert failing(out) == [("package versions", "lb"), ("compliance", "lb")]
    for item in (i for i in json.loads(out)["items"] if not i["ok"]):
        assert shown in item["detail"] and "polymarket-compliance audit" in item["detail"], item
    code, out, _ = check(cluster, settings, "--no-alert")
    assert code == 1 and out.rstrip().endswith(": NOT ready to go live")


def test_an_audit_of_yesterday_passes_and_a_missing_audit_time_fails(settings: Path) -> None:
    """25 h: yesterday's 06:00 run (up to 5 min late) with today's not yet scraped still passes. No audit time at
    all (a hand-written textfile) fails both rows."""
    cluster = Cluster()
    cluster.metrics["polymarket_compliance_last_run_timestamp_seconds"]["primary"] = time.time() - 25 * 3600
    cluster.mtimes[("primary", f"{TEXTFILES}/polymarket-hardening.prom")] = time.time() - 25 * 3600
    code, out, _ = check(cluster, settings, "--no-alert")
    assert code == 0, out
    [row] = [line for line in out.splitlines() if line.startswith("package versions") and " primary " in line]
    assert "audit 25.0 h ago" in row
    cluster.metrics["polymarket_compliance_last_run_timestamp_seconds"].pop("standby")
    code, out, _ = check(cluster, settings, "--json", "--no-alert")
    assert code == 1 and failing(out) == [("package versions", "standby"), ("compliance", "standby")]


@pytest.mark.parametrize("extra", [
    ("--prometheus", "http://[::1"),  # urlsplit: ValueError
    ("--prometheus", "http://a b/"),  # http.client.InvalidURL when asked
    ("--alertmanager", "http://127.0.0.1:99999/"),  # port out of range
    ("--alertmanager", "http:///api"),  # no host
    ("--prometheus", ""),
    ("--receipt-url", "URL/rec eived"),  # InvalidURL: once raised after the test alert was posted
    ("--receipt-url", "URL/rec\neived"),
    ("--receipt-url", "URL/r\u00e9ception"),  # UnicodeEncodeError when sent
])  # fmt: skip
def test_a_bad_url_is_one_error_line_and_exit_2_before_any_alert(settings: Path, extra: tuple[str, str]) -> None:
    cluster = Cluster()
    code, out, err = check(cluster, settings, *extra)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {extra[0]} ") and len(err.splitlines()) == 1, err
    assert cluster.alerts == []  # checked before anything is posted


def test_a_receipt_url_answering_no_http_still_resolves_the_test_alert(settings: Path) -> None:
    """A receipt URL that passes the checks but answers garbage (http.client.BadStatusLine, no OSError): the row
    fails naming the URL, one table, no traceback, and the test alert is resolved."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def garbage() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    receipt = f"http://127.0.0.1:{listener.getsockname()[1]}/received"
    try:
        cluster = Cluster()
        code, out, err = check(cluster, settings, "--json", "--receipt-url", receipt)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert code == 1 and err == "" and failing(out) == [("alert delivery", "monitoring")]
    [item] = [i for i in json.loads(out)["items"] if not i["ok"]]
    assert item["detail"].startswith(receipt + ": "), item
    assert [a["labels"]["alertname"] for a in cluster.alerts] == ["PolymarketGoLiveTest"] * 2
    assert datetime.fromisoformat(cluster.alerts[1]["endsAt"]) <= datetime.now(UTC)
