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

from . import pages as ui
from .config import Config
from .engine import Engine

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256   # per listener; the unit's LimitNOFILE=1024 leaves room for both and the rest
FD_RESERVE = 64         # descriptors kept for the ledger, the log file and the exchange connections
HEADER_TIMEOUT = 10.0   # seconds for a complete request head, from the accept or the previous response
WRITE_TIMEOUT = 10.0    # seconds a whole answer may wait for the client to take it, then the connection is closed
MAX_HEAD = 16384        # bytes of request line and headers
WORKERS = 4             # threads answering complete requests, per listener
BACKLOG = 1024          # the kernel caps it at net.core.somaxconn (4096 on current kernels)
EMFILE_PAUSE = 0.1      # seconds without accepting when no descriptor is left and nothing can be closed
THROTTLE_FREE = 10      # wrong dashboard tokens a peer may send before it is made to wait
THROTTLE_LONGEST = 300.0  # seconds: the longest wait (it doubles from 1 s with each further wrong token)
THROTTLE_PEERS = 4096   # peers remembered (the one not seen the longest is forgotten first)


def finite(value: Any) -> Any:
    """``value`` for JSON with every NaN/Infinity float made None (an unknown figure, never a non-JSON token)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def to_json(value: Any) -> bytes:
    return json.dumps(finite(value), default=str, allow_nan=False).encode()


class Throttle:
    """Wrong dashboard tokens (login form or Bearer header) per peer address: after THROTTLE_FREE of them, each
    further one makes the peer wait 1, 2, 4 ... THROTTLE_LONGEST s, answered 429 meanwhile; a right token
    clears it. At most THROTTLE_PEERS peers are remembered, so a flood of addresses costs bounded memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.peers: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()

    def wait(self, peer: str) -> float:
        """Seconds ``peer`` must still wait before its next try (0: it may try now)."""
        with self.lock:
            _, until = self.peers.get(peer, (0, 0.0))
        return max(0.0, until - time.monotonic())

    def failed(self, peer: str) -> None:
        with self.lock:
            n, _ = self.peers.pop(peer, (0, 0.0))
            n += 1
            wait = 0.0 if n <= THROTTLE_FREE else min(THROTTLE_LONGEST, 2.0 ** (n - THROTTLE_FREE - 1))
            self.peers[peer] = (n, time.monotonic() + wait)
            while len(self.peers) > THROTTLE_PEERS:
                self.peers.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        with self.lock:
            self.peers.pop(peer, None)


def connection_bound(listeners: int = 2) -> int:
    """Connections held per listener: MAX_CONNECTIONS, less when RLIMIT_NOFILE cannot hold them all."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, (soft - FD_RESERVE) // listeners))


def health(engine: Engine) -> tuple[int, dict[str, Any]]:
    cfg = engine.cfg
    db_ok = engine.ledger.ping_readonly()
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


def live(engine: Engine) -> tuple[int, dict[str, Any]]:
    """Liveness for HA (polymarket-ha's check-bot: the VIP and the lease): this process answers and its engine
    loop turns. Not the exchange: a Data API outage leaves it 200 (/health says 503), so it never fails over;
    a stopped or dead process does not answer at all. A loop stuck longer than any run of HTTP timeouts and
    retries could take is 503."""
    at = getattr(engine, "loop_at", None)  # set by Engine.run at each turn; None: not started yet
    stuck_after = max(300.0, min(900.0, 60 * engine.cfg.http_timeout))  # a turn's per-position work is bounded
    age = None if at is None else time.monotonic() - at
    ok = age is None or age <= stuck_after
    return (200 if ok else 503), {"live": ok, "loop_age_seconds": None if age is None else round(age, 3),
                                  "role": "passive" if engine.passive else "active"}


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
    """What both listeners share: keep-alive, access log at debug level.

    The listener has already read the request head (``head``); the handler answers exactly that
    one request into ``wfile`` (a buffer: it never touches the socket, the listener's event loop
    writes the answer out without blocking).
    """

    server: DashboardServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"
    log_prefix = "http"

    def __init__(self, request: Any, client_address: Any, server: DashboardServer, head: bytes) -> None:
        self.head = head
        super().__init__(request, client_address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self.head)
        self.wfile = io.BytesIO()

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

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if ctype.startswith("text/html"):
            headers = [("Content-Security-Policy", ui.CSP), ("X-Frame-Options", "DENY"),
                       ("Referrer-Policy", "no-referrer"), *(headers or [])]
        for name, value in headers or []:
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="polymarket-bot"')
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        cfg: Config = self.server.engine.cfg
        if not cfg.dashboard_token_set:
            return False
        if ui.session_ok(self.headers, cfg.api_secret_key.reveal().encode()):
            return True  # a browser's session cookie (pages.py), set by POST /login
        # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"); the token is compared in constant time
        scheme, _, token = self.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip(" ").encode(), cfg.api_secret_key.reveal().encode())

    def do_GET(self) -> None:  # noqa: N802
        engine = self.server.engine
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/live"):
            status, body = (health if path == "/health" else live)(engine)
            self._send(status, to_json(body))
            return
        if path == "/login":
            self._send(*self._html(ui.login_form(200, self.headers)))
            return
        pages = {"/": self._summary, "/system": self._system, "/metrics": self._metrics, "/ha": self._ha,
                 "/compliance": self._compliance}
        if path not in pages:
            self._send(404, b'{"error": "not found"}')
            return
        fmt = ui.negotiate(self.path.partition("?")[2], self.headers.get("Accept", ""))
        if fmt is None:
            self._send(400, b'{"error": "format must be json or html"}')
        elif self._throttled():
            return
        elif not self._authorised():
            if "Authorization" in self.headers:  # a wrong Bearer token (a browser without a session sends none)
                self.server.throttle.failed(self._peer())
            if fmt == "html":
                self._send(*self._html(ui.login_form(401, self.headers, path)))
            else:
                self._send(401, b'{"error": "a valid Authorization: Bearer token is required"}')
        elif fmt == "json":
            self.server.throttle.succeeded(self._peer())
            self._send(200, to_json(pages[path]()[1]))
        else:
            self.server.throttle.succeeded(self._peer())
            self._send(200, ui.render(path, pages[path]()[1], engine), "text/html; charset=utf-8")

    @staticmethod
    def _html(answer: ui.Answer) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        status, body, headers = answer
        return status, body, "text/html; charset=utf-8", headers

    def do_POST(self) -> None:  # noqa: N802
        """The login form (and logout); a body of at most pages.MAX_FORM bytes, read by the listener."""
        path = self.path.split("?", 1)[0]
        if path not in ("/login", "/logout"):
            self._send(405, b'{"error": "method not allowed"}', headers=[("Allow", "GET")])
            return
        cfg: Config = self.server.engine.cfg
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if 0 < size <= ui.MAX_FORM else b""
        if path == "/logout":
            self._send(*self._html(ui.logout(self.headers)))
            return
        if self._throttled():
            return
        token = cfg.api_secret_key.reveal().encode() if cfg.dashboard_token_set else None
        status, page, headers = ui.login(token, body, self.headers, self._peer())
        if status == 401:
            self.server.throttle.failed(self._peer())
        elif status == 303:
            self.server.throttle.succeeded(self._peer())
        self._send(status, page, "text/html; charset=utf-8", headers)

    def _peer(self) -> str:
        return str(self.client_address[0])

    def _throttled(self) -> bool:
        """Answer 429 (and say so) while this peer must wait after too many wrong tokens."""
        wait = self.server.throttle.wait(self._peer())
        if wait <= 0:
            return False
        self._send(429, b'{"error": "too many wrong tokens from this address: try again later"}',
                   headers=[("Retry-After", str(int(wait) + 1))])
        return True

    def _summary(self) -> tuple[str, Any]:
        e = self.server.engine
        return "Summary", ui.summary(e, health(e)[1], self._ha()[1], self._compliance()[1],
                                     ui.backup_status(e.cfg.textfile_dir))

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
            report = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(report, dict):
                return "Compliance", {"report": None, "detail": f"{path} is not a JSON object"}
            return "Compliance", report
        except FileNotFoundError:
            return "Compliance", {"report": None, "detail": f"{path} not present"}
        except (OSError, ValueError) as exc:
            return "Compliance", {"report": None, "detail": f"{path} unreadable: {exc.__class__.__name__}"}


class MetricsHandler(_Handler):
    log_prefix = "metrics"

    def do_GET(self) -> None:  # noqa: N802
        """With METRICS_TOKEN_FILE: every series, to ``Authorization: Bearer <token>`` only (401 otherwise; wrong
        tokens throttled per peer like the dashboard's). Without: every series but the account's money ones."""
        token = self.server.engine.cfg.metrics_token.reveal()
        if token:
            peer = str(self.client_address[0])
            wait = self.server.throttle.wait(peer)
            scheme, _, sent = self.headers.get("Authorization", "").strip().partition(" ")
            if wait > 0 or scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip(" ").encode(),
                                                                                 token.encode()):
                if wait <= 0 and "Authorization" in self.headers:
                    self.server.throttle.failed(peer)
                status, msg = (429, b"too many wrong tokens\n") if wait > 0 else (401, b"a bearer token is required\n")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(msg)))
                self.send_header("WWW-Authenticate", 'Bearer realm="polymarket-bot metrics"')
                self.end_headers()
                self.wfile.write(msg)
                return
        body = self.server.engine.metrics.render(private=bool(token)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


READING, WORKING, WRITING = 0, 1, 2   # a connection waits for a request head / for its answer / for the client


class _Conn:
    __slots__ = ("sock", "addr", "inbuf", "out", "state", "deadline", "close_after", "closed", "events")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock = sock
        self.addr = addr
        self.inbuf = b""          # bytes read and not parsed yet (pipelined requests wait here)
        self.out = memoryview(b"")  # the answer not written yet
        self.state = READING
        self.deadline = deadline  # READING: the whole head; WRITING: the whole answer; WORKING: none
        self.close_after = False
        self.closed = False
        self.events = 0           # what the selector watches for


def _head_end(buf: bytes) -> int:
    """Length of the request head at the start of buf (through its blank line), 0 while incomplete.

    Only the first MAX_HEAD bytes are searched: a head whose end lies beyond is oversize however
    the bytes arrived (in one read or many)."""
    ends = [i + n for i, n in ((buf.find(b"\r\n\r\n", 0, MAX_HEAD), 4), (buf.find(b"\n\n", 0, MAX_HEAD), 2))
            if i >= 0]
    return min(ends) if ends else 0


_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _framing_problem(head: bytes) -> str | None:
    """Why the head's body framing is ambiguous (RFC 9112 5.1, 6.3), or None.

    A header name with anything but token characters (``Content-Length : 5``, a NUL), a folded
    line, two Content-Length fields, or Transfer-Encoding with Content-Length: a front end may
    read the body's length otherwise than we do, so the body could run as a second request."""
    lines = head.replace(b"\r\n", b"\n").split(b"\n")[1:]
    lengths = 0
    chunked = False
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            return "folded header line"
        name, sep, _value = line.partition(b":")
        if not sep or not name or not _TCHAR.issuperset(name):
            return "malformed header name"
        lname = name.lower()
        if lname == b"content-length":
            lengths += 1
        elif lname == b"transfer-encoding":
            chunked = True
    if lengths > 1:
        return "more than one Content-Length"
    if lengths and chunked:
        return "Transfer-Encoding with Content-Length"
    return None


def _form_length(head: bytes) -> int:
    """Bytes of body that belong to this head: a POST's Content-Length up to pages.MAX_FORM (a login form), read
    like the head; -1 for more or a bad value; 0 for any other request (its body is never read)."""
    if not head.startswith(b"POST "):
        return 0
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            value = value.strip()
            return int(value) if value.isdigit() and int(value) <= ui.MAX_FORM else -1
    return 0


def _bad_request(reason: str) -> bytes:
    body = json.dumps({"error": f"bad request: {reason}"}).encode()
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def _is_health(head: bytes) -> bool:
    line = head.split(b"\n", 1)[0]
    return line.startswith((b"GET /health ", b"GET /health?", b"HEAD /health ", b"HEAD /health?", b"GET /live "))


class DashboardServer:
    """One listener: an event loop reading requests and writing answers, WORKERS threads computing them."""

    def __init__(self, address: tuple[str, int], handler: type[_Handler], engine: Engine, *,
                 max_connections: int | None = None, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.engine = engine
        engine.ledger.ping_readonly()  # opens /health's read-only ledger connection while descriptors are free
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
        # every connection held, least recently served first (the order eviction looks in)
        self._conns: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        self._ready: queue.SimpleQueue[tuple[_Conn, bytes] | None] = queue.SimpleQueue()
        self._back: collections.deque[tuple[_Conn, bytes, bool]] = collections.deque()
        self._again: collections.deque[_Conn] = collections.deque()  # a pipelined request waits, after a flush
        self._accepting = True
        self._resume_at = 0.0
        self._emfile_logged = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.throttle = Throttle()

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> DashboardServer:
        loop = threading.Thread(target=self._loop, name=f"{self.name}-listener", daemon=True)
        self._threads = [loop] + [threading.Thread(target=self._work, name=f"{self.name}-worker", daemon=True)
                                  for _ in range(WORKERS)]
        for t in self._threads:
            t.start()
        return self

    def shutdown(self) -> None:
        """Stop accepting and answering; connections are closed. Returns when the threads are done."""
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
        """Connections held now (reading, being answered, or writing)."""
        return len(self._conns)

    # ---- the event loop (one thread) -----------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = 0.0 if self._again else 0.5
                for conn in self._conns.values():
                    if conn.deadline - now < timeout:
                        timeout = max(0.0, conn.deadline - now)
                if not self._accepting:
                    timeout = min(timeout, max(0.0, self._resume_at - now))
                for key, mask in self._sel.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    elif mask & selectors.EVENT_WRITE:
                        self._flush(key.data)
                    else:
                        self._read(key.data)
                self._take_back()
                for _ in range(len(self._again)):  # one request per connection per turn: fair to all
                    conn = self._again.popleft()
                    if not conn.closed and conn.state == READING:
                        self._next_request(conn)
                self._expire()
        except Exception:  # noqa: BLE001 - a bug here must not pass silently
            log.exception("%s: listener stopped", self.name)
        finally:
            self._close_all()

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not events:
            self._sel.unregister(conn.sock)
        elif not conn.events:
            self._sel.register(conn.sock, events, conn)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.events = events

    def _victim(self) -> _Conn | None:
        """The connection to close for a newcomer: one whose client does not take its answer, else
        the one waiting longest for a request, else the one waiting longest for its answer."""
        for state in (WRITING, READING, WORKING):
            for conn in self._conns.values():
                if conn.state == state:
                    return conn
        return None

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
                victim = self._victim()
                if victim is not None:
                    self._drop(victim, "fd-limit")
                else:
                    self._pause_accepting()
                now = time.monotonic()
                if now - self._emfile_logged > 60:
                    self._emfile_logged = now
                    log.warning("%s: accept: %s; holding %d connection(s)", self.name, exc.strerror,
                                self.connections())
                return
            sock.setblocking(False)
            # headers and body go out in one write now, but a pipelined client's answers would wait for ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.connections() >= self.max_connections:
                victim = self._victim()
                if victim is not None:
                    self._drop(victim, "limit")
                else:
                    self._count("limit")
                    sock.close()
                    continue
            conn = _Conn(sock, addr, time.monotonic() + self.header_timeout)
            self._conns[sock.fileno()] = conn
            self._watch(conn, selectors.EVENT_READ)

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
        conn.inbuf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        """Take one complete request head from inbuf, if there is one; nothing more is read until it is answered."""
        n = _head_end(conn.inbuf)
        if not n:
            if len(conn.inbuf) > MAX_HEAD:
                self._drop(conn, "oversize")
            else:
                self._watch(conn, selectors.EVENT_READ)
            return
        problem = _framing_problem(conn.inbuf[:n])
        form = _form_length(conn.inbuf[:n]) if problem is None and self.handler is DashboardHandler else 0
        if len(conn.inbuf) < n + form:
            self._watch(conn, selectors.EVENT_READ)  # the rest of a login form: due by the head's deadline
            return
        head, conn.inbuf = conn.inbuf[:n + max(form, 0)], conn.inbuf[n + max(form, 0):]
        self._watch(conn, 0)
        conn.state = WORKING
        conn.deadline = float("inf")
        if problem is not None or form < 0:
            self._count("bad-request")
            self._answer(conn, _bad_request(problem or f"a POST body over {ui.MAX_FORM} bytes"), False)
        elif _is_health(head) or self.handler is MetricsHandler:
            # cheap and never waiting on a lock (ledger.ping_readonly): answered here, so no worker
            # held by other clients can delay an HA health check
            self._answer(conn, *self._respond(conn, head))
        else:
            self._ready.put((conn, head))

    def _respond(self, conn: _Conn, head: bytes) -> tuple[bytes, bool]:
        try:
            handler = self.handler(None, conn.addr, self, head)
            return handler.wfile.getvalue(), not handler.close_connection  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - one request failing must not stop the listener
            log.exception("%s: error answering %s", self.name, conn.addr)
            body = b'{"error": "internal error: see the bot\'s log"}'
            return (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                    b"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)), False

    def _answer(self, conn: _Conn, data: bytes, keep: bool) -> None:
        if conn.closed:
            return  # evicted while its answer was computed
        conn.state = WRITING
        conn.close_after = not keep or self._stop.is_set()
        conn.out = memoryview(data)
        conn.deadline = time.monotonic() + WRITE_TIMEOUT
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                self._watch(conn, selectors.EVENT_WRITE)  # the rest when the client takes some
                return
            except OSError as exc:  # EPIPE, ECONNRESET: the client went away
                log.debug("%s: %s dropped the connection (%s)", self.name, conn.addr, exc.__class__.__name__)
                self._close(conn)
                return
            conn.out = conn.out[sent:]
        if conn.close_after:
            self._close(conn)
            return
        conn.state = READING
        conn.deadline = time.monotonic() + self.header_timeout
        self._conns.move_to_end(conn.sock.fileno())
        if conn.inbuf:
            # a pipelined request: next turn, after the other connections; nothing more is read
            # until inbuf holds no complete head (so it never grows past MAX_HEAD + one read)
            self._watch(conn, 0)
            self._again.append(conn)
        else:
            self._watch(conn, selectors.EVENT_READ)

    def _take_back(self) -> None:
        while self._back:
            conn, data, keep = self._back.popleft()
            self._answer(conn, data, keep)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._drop(conn, "timeout" if conn.state == READING else "write-timeout")
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
        if conn.closed:
            return
        conn.closed = True
        self._watch(conn, 0)
        self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        conn.inbuf = b""
        conn.out = memoryview(b"")

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._conns.values()):
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

    # ---- workers: they compute answers, the loop writes them ---------------------------------
    def _work(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            conn, head = item
            data, keep = (b"", False) if conn.closed else self._respond(conn, head)
            self._back.append((conn, data, keep))
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
