"""HTTP endpoints: /health and the token-protected dashboard pages, and Prometheus metrics.

Each listener is one event-loop thread that accepts connections and reads request heads
without a thread per connection, plus a few worker threads that answer complete requests.
An idle or slow client costs one file descriptor and is bounded three ways: a deadline for
its whole request head (``HEADER_TIMEOUT``, counted from the accept or the end of the
previous response, so a client sending a byte a second is cut too), a bound on the
connections held (``connection_bound()``, sized from RLIMIT_NOFILE; at the bound the
connection idle the longest is closed, so a new client such as the HAProxy /health check
still gets in), and a send deadline (``WRITE_TIMEOUT``). ``accept`` failing for want of a
descriptor (EMFILE) closes the oldest idle connection or pauses accepting; it never spins.
"""

from __future__ import annotations

import collections
import errno
import hmac
import html
import io
import json
import logging
import os
import queue
import resource
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .config import Config
from .engine import Engine

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256   # per listener; the unit's LimitNOFILE=1024 leaves room for both and the rest
FD_RESERVE = 64         # descriptors kept for the ledger, the log file and the exchange connections
HEADER_TIMEOUT = 10.0   # seconds for a complete request head, from the accept or the previous response
WRITE_TIMEOUT = 10.0    # seconds a response may wait for the client to take it
MAX_HEAD = 16384        # bytes of request line and headers
WORKERS = 4             # threads answering complete requests, per listener
BACKLOG = 128
EMFILE_PAUSE = 0.1      # seconds without accepting when no descriptor is left and nothing can be closed


def connection_bound(listeners: int = 2) -> int:
    """Connections held per listener: MAX_CONNECTIONS, less when RLIMIT_NOFILE cannot hold them all."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, (soft - FD_RESERVE) // listeners))


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
        # KILL_SWITCH_FILE exists / the circuit breaker is open: no order is sent (still live)
        "kill_switch": engine.killed,
        "circuit_breaker_open": time.time() < engine.breaker_until,
        "geoblock": engine.geoblock,
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


class _SocketWriter(io.BufferedIOBase):
    """wfile: every write goes out whole (sendall, bounded by the socket's WRITE_TIMEOUT)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes


class _Handler(BaseHTTPRequestHandler):
    """What both listeners share: keep-alive, no Nagle delay, access log at debug level.

    The listener has already read the request head (``head``); the handler answers exactly
    that one request and hands the connection back for the next one.
    """

    server: DashboardServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    log_prefix = "http"

    def __init__(self, request: socket.socket, client_address: Any, server: DashboardServer, head: bytes) -> None:
        self.head = head
        super().__init__(request, client_address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = io.BytesIO(self.head)
        self.wfile = _SocketWriter(self.connection)

    def handle(self) -> None:
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (headers.get("Content-Length", "0").strip() not in ("", "0")
                                    or "Transfer-Encoding" in headers):
            self.close_connection = True  # a body we do not read would be taken for the next request

    def finish(self) -> None:
        pass  # the socket belongs to the listener

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
        # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"); the token is compared in constant time
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip(" ").encode(), cfg.api_secret_key.reveal().encode())

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
                          "health": health(self.server.engine)[1], "risk": self.server.engine.risk_status()}

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


class _Conn:
    __slots__ = ("sock", "addr", "buf", "deadline")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = b""
        self.deadline = deadline


def _head_end(buf: bytes) -> int:
    """Length of the request head at the start of buf (through its blank line), 0 while incomplete."""
    ends = [i + n for i, n in ((buf.find(b"\r\n\r\n"), 4), (buf.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else 0


class DashboardServer:
    """One listener: an event loop reading request heads, WORKERS threads answering them."""

    def __init__(self, address: tuple[str, int], handler: type[_Handler], engine: Engine, *,
                 max_connections: int | None = None, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.engine = engine
        self.handler = handler
        self.started = time.time()
        self.max_connections = max_connections or connection_bound()
        self.header_timeout = header_timeout
        self.name = handler.log_prefix
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self.socket, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._idle: collections.OrderedDict[int, _Conn] = collections.OrderedDict()  # oldest deadline first
        self._busy = 0
        self._ready: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self._back: collections.deque[tuple[_Conn, bool]] = collections.deque()
        self._accepting = True
        self._resume_at = 0.0
        self._emfile_logged = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> DashboardServer:
        loop = threading.Thread(target=self._loop, name=f"{self.name}-listener", daemon=True)
        self._threads = [loop] + [threading.Thread(target=self._work, name=f"{self.name}-worker", daemon=True)
                                  for _ in range(WORKERS)]
        for t in self._threads:
            t.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting and answering; idle connections are closed. Returns when the threads are done."""
        self._stop.set()
        self._wake()
        for _ in range(WORKERS):
            self._ready.put(None)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(WRITE_TIMEOUT + 1)

    def server_close(self) -> None:
        if not self._threads or not any(t.is_alive() for t in self._threads):
            self._close_all()

    def connections(self) -> int:
        """Connections held now (idle ones and those being answered)."""
        return len(self._idle) + self._busy

    # ---- the event loop (one thread) -----------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = 0.5
                if self._idle:
                    timeout = min(timeout, max(0.0, next(iter(self._idle.values())).deadline - now))
                if not self._accepting:
                    timeout = min(timeout, max(0.0, self._resume_at - now))
                for key, _mask in self._sel.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        self._read(key.data)
                self._take_back()
                self._expire()
        except Exception:  # noqa: BLE001 - a bug here must not pass silently
            log.exception("%s: listener stopped", self.name)
        finally:
            self._close_all()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.debug("%s: accept: %s", self.name, exc)
                    return
                # No descriptor left: free one, or stop polling the listening socket for a moment
                # (it stays readable, so polling it again at once would spin a core).
                if self._idle:
                    self._drop(next(iter(self._idle.values())), "fd-limit")
                else:
                    self._pause_accepting()
                now = time.monotonic()
                if now - self._emfile_logged > 60:
                    self._emfile_logged = now
                    log.warning("%s: accept: %s; holding %d connection(s)", self.name, exc.strerror,
                                self.connections())
                return
            sock.setblocking(False)
            if self.connections() >= self.max_connections:
                if self._idle:
                    self._drop(next(iter(self._idle.values())), "limit")
                else:
                    self._count("limit")
                    sock.close()
                    continue
            conn = _Conn(sock, addr, time.monotonic() + self.header_timeout)
            self._idle[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._sel.unregister(self.socket)
            self._accepting = False
        self._resume_at = time.monotonic() + EMFILE_PAUSE

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("%s: %s dropped the connection (%s)", self.name, conn.addr, exc.__class__.__name__)
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.buf += data
        self._dispatch_or_wait(conn)

    def _dispatch_or_wait(self, conn: _Conn) -> None:
        if _head_end(conn.buf):
            fd = conn.sock.fileno()
            self._sel.unregister(conn.sock)
            del self._idle[fd]
            self._busy += 1
            self._ready.put(conn)
        elif len(conn.buf) > MAX_HEAD:
            self._drop(conn, "oversize")

    def _take_back(self) -> None:
        while self._back:
            conn, keep = self._back.popleft()
            self._busy -= 1
            if not keep or self._stop.is_set():
                self._close(conn)
                continue
            conn.deadline = time.monotonic() + self.header_timeout
            self._idle[conn.sock.fileno()] = conn
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            self._dispatch_or_wait(conn)  # a pipelined request may be waiting already

    def _expire(self) -> None:
        now = time.monotonic()
        while self._idle:
            conn = next(iter(self._idle.values()))
            if conn.deadline > now:
                break
            self._drop(conn, "timeout")
        if not self._accepting and now >= self._resume_at:
            self._sel.register(self.socket, selectors.EVENT_READ)
            self._accepting = True

    def _drop(self, conn: _Conn, reason: str) -> None:
        self._count(reason)
        log.debug("%s: closing %s (%s)", self.name, conn.addr, reason)
        self._close(conn)

    def _count(self, reason: str) -> None:
        self.engine.metrics.inc("polymarket_http_connections_dropped_total", listener=self.name, reason=reason)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self._idle.pop(fd, None) is not None:
            self._sel.unregister(conn.sock)
        conn.sock.close()

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._idle.values()):
            self._close(conn)
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()
        self._sel.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already awake (buffer full) or closed

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # ---- workers ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            keep = False
            n = _head_end(conn.buf)
            head, conn.buf = conn.buf[:n], conn.buf[n:]
            try:
                conn.sock.settimeout(WRITE_TIMEOUT)
                handler = self.handler(conn.sock, conn.addr, self, head)
                keep = not handler.close_connection
                conn.sock.setblocking(False)
            except OSError as exc:  # the client went away (EPIPE, ECONNRESET) or did not read in time
                log.debug("%s: %s dropped the connection (%s)", self.name, conn.addr, exc.__class__.__name__)
            except Exception:  # noqa: BLE001 - one request failing must not stop the worker
                log.exception("%s: error answering %s", self.name, conn.addr)
            self._back.append((conn, keep))
            self._wake()


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
