"""/health, the dashboard pages behind the token, and the Prometheus endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Harness
from polymarket_bot.server import start_servers


def get(url: str, token: str | None = None, accept: str = "application/json") -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Accept": accept})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if "json" in r.headers["Content-Type"] else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_health_dashboard_and_metrics(h: Harness, tmp_path: Path) -> None:
    report = tmp_path / "compliance.json"
    e = h.engine(COMPLIANCE_REPORT=str(report))
    dash, met = start_servers(e, 0, 0)
    try:
        base = f"http://127.0.0.1:{dash.server_address[1]}"
        status, body = get(base + "/health")
        assert status == 503 and body["status"] == "unhealthy"  # never polled yet
        h.trade()
        e.poll_once()
        status, body = get(base + "/health")
        assert status == 200
        assert body["database"] == "ok" and body["mode"] == "live" and body["role"] == "active"
        assert body["exchange"] == "reachable" and body["last_poll_age_seconds"] < 5
        (h.tmp / "passive").touch()
        e.poll_once()
        status, body = get(base + "/health")
        assert status == 200 and body["role"] == "passive" and body["passive"] is True
        for page in ("/system", "/metrics", "/ha", "/compliance"):
            assert get(base + page)[0] == 401
            assert get(base + page, "wrong")[0] == 401
            status, _data = get(base + page, "s3cret-token")
            assert status == 200, page
        assert get(base + "/compliance", "s3cret-token")[1]["report"] is None
        report.write_text('{"score": 97}')
        assert get(base + "/compliance", "s3cret-token")[1] == {"score": 97}
        status, html = get(base + "/ha", "s3cret-token", accept="text/html")
        assert status == 200 and "passive" in html
        dump = json.dumps(get(base + "/system", "s3cret-token")[1]) + json.dumps(get(base + "/metrics",
                                                                                       "s3cret-token")[1])
        assert "4c0883a69102937d" not in dump
        status, text = get(f"http://127.0.0.1:{met.server_address[1]}/metrics", accept="text/plain")
        assert status == 200
        for name in ("polymarket_trades_seen_total 1", "polymarket_trades_copied_total 1",
                     "polymarket_order_latency_seconds_count 1", "polymarket_last_poll_age_seconds",
                     "polymarket_errors_total", "polymarket_passive 1"):
            assert name in text, name
    finally:
        for s in (dash, met):
            s.shutdown()
            s.server_close()


def test_ha_page_shows_the_heartbeat_status(h: Harness, tmp_path: Path) -> None:
    status_file = tmp_path / "ha-status.json"
    e = h.engine(HA_STATUS_FILE=str(status_file))
    dash, met = start_servers(e, 0, 0)
    try:
        base = f"http://127.0.0.1:{dash.server_address[1]}"
        status, body = get(base + "/ha", "s3cret-token")
        assert status == 200 and body["cluster"] is None and "not present" in body["detail"]
        status_file.write_text('{"vrrp_state": "MASTER", "peer": {"health": 200}}')
        status, body = get(base + "/ha", "s3cret-token")
        assert body["cluster"] == {"vrrp_state": "MASTER", "peer": {"health": 200}}
        assert body["role"] == "active"
    finally:
        for s in (dash, met):
            s.shutdown()
            s.server_close()


def test_dashboard_refused_without_configured_token(h: Harness) -> None:
    e = h.engine(API_SECRET_KEY="your_api_secret_here")
    dash, met = start_servers(e, 0, 0)
    try:
        base = f"http://127.0.0.1:{dash.server_address[1]}"
        assert get(base + "/system", "your_api_secret_here")[0] == 401
    finally:
        for s in (dash, met):
            s.shutdown()
            s.server_close()


def test_bearer_scheme_is_case_insensitive(h: Harness) -> None:
    """RFC 7235: the auth scheme is case-insensitive; the token itself is not."""
    e = h.engine()
    dash, met = start_servers(e, 0, 0)
    try:
        url = f"http://127.0.0.1:{dash.server_address[1]}/system"

        def status(authorization: str) -> int:
            req = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       "Authorization": authorization})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        for good in ("Bearer s3cret-token", "bearer s3cret-token", "BEARER s3cret-token", "bEaReR s3cret-token",
                     "Bearer  s3cret-token"):
            assert status(good) == 200, good
        for bad in ("Bearer S3CRET-TOKEN", "bearer wrong", "Basic s3cret-token", "Bearers3cret-token",
                    "s3cret-token", "Bearer", "bearer s3cret-token extra", "Bearer s3cret-tokenX"):
            assert status(bad) == 401, bad
    finally:
        for s in (dash, met):
            s.shutdown()
            s.server_close()
