"""HTTP endpoints: /health and the token-protected dashboard pages, and Prometheus metrics."""

from __future__ import annotations

import hmac
import html
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import Config
from .engine import Engine

log = logging.getLogger(__name__)


def health(engine: Engine) -> tuple[int, dict[str, Any]]:
    cfg = engine.cfg
    db_ok = engine.ledger.ping()
    age = engine.poll_age()
    max_age = max(10.0, 10 * cfg.poll_interval)
    poll_ok = age <= max_age
    body = {
        "status": "ok" if db_ok and poll_ok else "unhealthy",
        "database": "ok" if db_ok else "error",
        "exchange": "reachable" if engine.exchange_ok else "unreachable",
        "last_poll_age_seconds": None if age == float("inf") else round(age, 3),
        "mode": str(engine.mode),
        "role": "passive" if engine.passive else "active",
        "passive": engine.passive,
        "leaders": len(cfg.leaders),
        # orders whose outcome the exchange could not be asked about yet: trading goes on, the
        # decision stays open (liveness for HA is the status code; this is for the operator)
        "open_decisions": engine.open_decisions,
    }
    return (200 if db_ok and poll_ok else 503), body


def _page(title: str, data: Any) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><pre>{html.escape(json.dumps(data, indent=2, default=str))}"
            "</pre></body></html>").encode()


def _rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Handler(BaseHTTPRequestHandler):
    """What both listeners share: keep-alive, no Nagle delay, access log at debug level."""

    server: DashboardServer
    protocol_version = "HTTP/1.1"
    log_prefix = "http"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(self.log_prefix + ": " + format, *args)


class DashboardHandler(_Handler):

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="polymarket-bot"')
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        cfg: Config = self.server.engine.cfg
        if not cfg.dashboard_token_set:
            return False
        got = self.headers.get("Authorization", "")
        want = "Bearer " + cfg.api_secret_key.reveal()
        return hmac.compare_digest(got.encode(), want.encode())

    def do_GET(self) -> None:  # noqa: N802
        engine = self.server.engine
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, body = health(engine)
            self._send(status, json.dumps(body).encode())
            return
        pages = {"/system": self._system, "/metrics": self._metrics, "/ha": self._ha,
                 "/compliance": self._compliance}
        if path not in pages:
            self._send(404, b'{"error": "not found"}')
            return
        if not self._authorised():
            self._send(401, b'{"error": "a valid Authorization: Bearer token is required"}')
            return
        title, data = pages[path]()
        if "application/json" in self.headers.get("Accept", ""):
            self._send(200, json.dumps(data, default=str).encode())
        else:
            self._send(200, _page(title, data), "text/html; charset=utf-8")

    def _system(self) -> tuple[str, Any]:
        la = os.getloadavg()
        return "System", {"pid": os.getpid(), "rss_kb": _rss_kb(), "load": la,
                          "uptime_seconds": round(time.time() - self.server.started, 1),
                          "health": health(self.server.engine)[1]}

    def _metrics(self) -> tuple[str, Any]:
        e = self.server.engine
        return "Application metrics", {"decisions": e.ledger.counts(), "recent": e.ledger.decisions(25),
                                       "positions": [p.__dict__ for p in e.ledger.positions(str(e.mode))],
                                       "prometheus": e.metrics.render().splitlines()}

    def _ha(self) -> tuple[str, Any]:
        e = self.server.engine
        status: dict[str, Any] = {"role": "passive" if e.passive else "active", "passive_file": str(e.cfg.passive_file),
                                  "hostname": os.uname().nodename, "mode": str(e.mode)}
        # polymarket-ha's heartbeat writes the pair's view (VRRP state, peer health, replication).
        path = e.cfg.ha_status_file
        try:
            status["cluster"] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            status["cluster"] = None
            status["detail"] = f"{path} not present (polymarket-ha not installed or not running)"
        except (OSError, ValueError) as exc:
            status["cluster"] = None
            status["detail"] = f"{path} unreadable: {exc.__class__.__name__}"
        return "HA status", status

    def _compliance(self) -> tuple[str, Any]:
        path = self.server.engine.cfg.compliance_report
        try:
            return "Compliance", json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "Compliance", {"report": None, "detail": f"{path} not present"}
        except (OSError, ValueError) as exc:
            return "Compliance", {"report": None, "detail": f"{path} unreadable: {exc.__class__.__name__}"}


class MetricsHandler(_Handler):
    log_prefix = "metrics"

    def do_GET(self) -> None:  # noqa: N802
        body = self.server.engine.metrics.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], engine: Engine) -> None:
        self.engine = engine
        self.started = time.time()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def start(self) -> DashboardServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="http", daemon=True).start()
        return self


def start_servers(engine: Engine, dashboard_port: int | None = None,
                  metrics_port: int | None = None) -> tuple[DashboardServer, DashboardServer]:
    cfg = engine.cfg
    engine.metrics.gauge("polymarket_last_poll_age_seconds", "Seconds since the last successful poll",
                         lambda: min(engine.poll_age(), 1e9))
    engine.metrics.gauge("polymarket_passive", "1 while the passive file exists", lambda: float(engine.passive))
    engine.metrics.gauge("polymarket_exchange_reachable", "1 when the CLOB answered recently",
                         lambda: float(engine.exchange_ok))
    engine.metrics.gauge("polymarket_resident_memory_bytes", "Resident set size", lambda: _rss_kb() * 1024.0)
    dash = DashboardServer((cfg.bind_address, cfg.dashboard_port if dashboard_port is None else dashboard_port),
                           DashboardHandler, engine).start()
    met = DashboardServer((cfg.bind_address, cfg.metrics_port if metrics_port is None else metrics_port),
                          MetricsHandler, engine).start()
    return dash, met
