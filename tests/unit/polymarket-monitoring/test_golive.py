"""polymarket-golive check (packages/polymarket-monitoring/polymarket_golive.py) against an in-process stand-in
for Prometheus's and Alertmanager's HTTP APIs on 127.0.0.1: the answers are those of a healthy three-host cluster,
and each test breaks one fact the way Prometheus would show it; the table, --json and the exit status name the
failing item and host. The real daemons: tests/system/test_monitoring_cluster.py."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload

BOTS = ("primary", "standby")
HOSTS = ("primary", "standby", "lb")


def golive() -> ModuleType:
    return payload.load("polymarket-monitoring", "polymarket_golive.py")


class Cluster:
    """What Prometheus and Alertmanager answer: metric name -> {node: value}, the targets, the alert counters."""

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
        }
        self.failing: dict[str, str] = {}
        self.down: set[tuple[str, str]] = set()
        self.targets = [("polymarket-bot", h) for h in BOTS] + [("node", h) for h in HOSTS] + [("haproxy", "lb")]
        self.sent = 3.0
        self.failed = 0.0
        self.deliver = "ok"  # ok | fail | none
        self.alerts: list[dict[str, Any]] = []
        self.received: list[str] = []

    def query(self, expr: str) -> list[dict[str, Any]]:
        now = time.time()
        if expr.startswith("polymarket_compliance_control_failing"):
            return [{"metric": {"node": n, "control": c}, "value": [now, "1"]} for n, c in self.failing.items()]
        age = expr.startswith("time() - ")
        name = expr.removeprefix("time() - ").split("{", 1)[0]
        values = self.metrics.get(name, {})
        return [{"metric": {"__name__": name, "node": n, "job": "node"}, "value": [now, str(now - v if age else v)]}
                for n, v in values.items()]

    def alert_posted(self, alerts: list[dict[str, Any]]) -> None:
        self.alerts += alerts
        if alerts[0]["labels"].get("alertname") == "PolymarketGoLiveTest" and len(self.alerts) == 1:
            if self.deliver in ("ok", "sent-elsewhere"):
                self.sent += 1
            if self.deliver == "ok":
                self.received.append(json.dumps(alerts))
            elif self.deliver == "fail":
                self.failed += 1


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
                text = (f'alertmanager_notifications_total{{integration="webhook"}} {cluster.sent}\n'
                        f'alertmanager_notifications_total{{integration="email"}} 0\n'
                        f'alertmanager_notifications_failed_total{{integration="webhook",reason="other"}} '
                        f"{cluster.failed}\n")
                self.answer(text.encode(), "text/plain")
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


def check(cluster: Cluster, settings: Path, *extra: str) -> tuple[int, str, str]:
    g = golive()
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
    (lambda c: setattr(c, "deliver", "fail"), [("alert delivery", "monitoring")]),
    (lambda c: setattr(c, "deliver", "none"), [("alert delivery", "monitoring")]),
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
