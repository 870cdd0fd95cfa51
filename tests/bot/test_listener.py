"""The listeners under hostile clients: idle connections, slowloris, dropped connections.

An unauthenticated client must never stop /health (HAProxy and keepalived fail the node
over on it) nor spin a core.
"""

from __future__ import annotations

import http.client
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Harness
from polymarket_bot import server as srv
from polymarket_bot.server import DashboardHandler, DashboardServer
from test_service import free_port, health, wait_for

UNIT_NOFILE = 1024  # LimitNOFILE= of debian-overlay/polymarket-bot.service
HALF_SENT = b"GET /health HTTP/1.1\r\nHost: bot\r\n"  # no blank line: the head never completes


def unit_limits() -> int:
    for line in (ROOT / "packages/polymarket-bot/debian-overlay/polymarket-bot.service").read_text().splitlines():
        if line.startswith("LimitNOFILE="):
            return int(line.split("=", 1)[1])
    raise AssertionError("the unit sets no LimitNOFILE")


def timed_health(port: int, timeout: float = 1.0) -> tuple[int, float]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except OSError:
        return 0, time.monotonic() - t0
    finally:
        c.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def closed_by_peer(s: socket.socket, wait: float) -> bool:
    """True once the server has closed s (EOF or reset), within wait seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


class Slowloris(threading.Thread):
    """Sends a request head one byte per interval, and notes when the server cuts it."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.started_at = 0.0
        self.cut_after: float | None = None
        self.sent = 0
        self.done = threading.Event()

    def run(self) -> None:
        payload = b"GET /health HTTP/1.1\r\nHost: bot\r\n" + b"X-Slow: " + b"a" * 10000
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            self.started_at = time.monotonic()
            for byte in payload:
                try:
                    s.send(bytes([byte]))
                    self.sent += 1
                except OSError:
                    break
                if self.done.wait(self.interval):
                    return
                if closed_by_peer_nowait(s):
                    break
            self.cut_after = time.monotonic() - self.started_at


def closed_by_peer_nowait(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)
        s.settimeout(5)


def open_idle(port: int, n: int) -> list[socket.socket]:
    """n connections, each sending a request head that never completes.

    Connects without blocking, so a server that stops accepting (full backlog) gets the
    whole load anyway and the test goes on to /health.
    """
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        time.sleep(0.001)  # paced, as a patient attacker would: a small backlog does not overflow
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    end = time.monotonic() + 15  # a server that stops accepting leaves the rest pending
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sel.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                sock.send(HALF_SENT)
    sel.close()
    for s in socks:
        s.settimeout(5)
    return socks


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.fail(f"this test needs 5000 descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 5000), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_2000_idle_connections_and_a_slowloris_do_not_stop_health(h: Harness, tmp_path: Path,
                                                                    many_fds: None) -> None:
    """The real service, under the unit's RLIMIT_NOFILE: /health within 1 s, no spinning core."""
    nofile = unit_limits()
    assert nofile == UNIT_NOFILE
    dport, mport = free_port(), free_port()
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in h.env(DASHBOARD_PORT=dport, METRICS_PORT=mport,
                                                                POLL_INTERVAL="0.5", LOG_FILE="").items()))
    env_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET", "PRIVATE_KEY"))}
    env["PYTHONPATH"] = str(ROOT / "packages" / "polymarket-bot")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    p = subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), "run"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=limit)
    socks: list[socket.socket] = []
    slow = Slowloris(dport, 1.0)
    try:
        assert wait_for(lambda: health(dport) == 200), "the service never became healthy"
        t0 = time.monotonic()
        socks = open_idle(dport, 2000)
        opened = time.monotonic() - t0
        slow.start()  # after the idle ones: the bound closes the longest idle first, this one must meet the deadline
        # /health answers within 1 s, every time, while the load holds (until the head deadline
        # frees the connections: that is also when the slowloris must be cut)
        cpu0, wall0 = cpu_seconds(p.pid), time.monotonic()
        answers = []
        held = 0
        while time.monotonic() - wall0 < srv.HEADER_TIMEOUT - 2:
            answers.append(timed_health(dport))
            held = max(held, len(os.listdir(f"/proc/{p.pid}/fd")))
            time.sleep(0.25)
        cpu = cpu_seconds(p.pid) - cpu0
        wall = time.monotonic() - wall0
        assert all(status == 200 and took < 1.0 for status, took in answers), answers
        # not spinning: an EMFILE loop burns a whole core (cpu ≈ wall)
        assert cpu < 0.1 * wall, f"{cpu:.2f} s CPU in {wall:.2f} s"
        assert held <= 2 * srv.MAX_CONNECTIONS + srv.FD_RESERVE, held
        # the slowloris is cut by the head deadline, not served a byte at a time forever
        slow.join(srv.HEADER_TIMEOUT + 5)
        assert slow.cut_after is not None, "the slowloris was never cut"
        assert srv.HEADER_TIMEOUT - 1 < slow.cut_after < srv.HEADER_TIMEOUT + 3, slow.cut_after
        assert slow.sent < 30
        # the idle connections still open are closed by the same deadline
        still = [s for s in socks if not closed_by_peer_nowait(s)]
        assert len(still) <= srv.MAX_CONNECTIONS
        assert all(closed_by_peer(s, srv.HEADER_TIMEOUT + 2) for s in still)
        assert p.poll() is None and timed_health(dport)[0] == 200
        print(f"\n2000 idle connections opened in {opened:.2f} s; service held {held} fds; "
              f"/health max {max(t for _, t in answers) * 1000:.1f} ms over {len(answers)} requests; "
              f"service CPU {cpu:.2f} s in {wall:.2f} s; slowloris cut after {slow.cut_after:.1f} s")
    finally:
        slow.done.set()
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "Traceback" not in err, err


@pytest.fixture
def small(h: Harness) -> Iterator[DashboardServer]:
    """An in-process dashboard listener with a small bound and a short head deadline."""
    e = h.engine()
    s = DashboardServer(("127.0.0.1", 0), DashboardHandler, e, max_connections=16, header_timeout=1.0).start()
    yield s
    s.shutdown()
    s.server_close()


def test_the_bound_closes_the_longest_idle_connection_and_health_gets_in(small: DashboardServer) -> None:
    port = small.server_address[1]
    socks = open_idle(port, 40)
    try:
        assert wait_for(lambda: small.connections() <= 16, 2)
        # the oldest were closed to make room, the newest are held
        assert all(closed_by_peer(s, 1) for s in socks[:20])
        assert not any(closed_by_peer_nowait(s) for s in socks[-10:])
        status, took = timed_health(port)
        assert status in (200, 503) and took < 1.0  # 503: this engine never polled; answered all the same
        assert small.engine.metrics.get("polymarket_http_connections_dropped_total", listener="http",
                                        reason="limit") >= 24
    finally:
        for s in socks:
            s.close()


def test_slowloris_is_cut_at_the_head_deadline(small: DashboardServer) -> None:
    slow = Slowloris(small.server_address[1], 0.1)
    slow.start()
    slow.join(5)
    assert slow.cut_after is not None and 0.9 < slow.cut_after < 2.0, slow.cut_after
    assert small.engine.metrics.get("polymarket_http_connections_dropped_total", listener="http",
                                    reason="timeout") == 1


def test_oversized_head_is_closed(small: DashboardServer) -> None:
    with socket.create_connection(small.server_address, timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (srv.MAX_HEAD + 10))
        assert closed_by_peer(s, 2)


def test_keep_alive_and_pipelined_requests_are_answered_on_one_connection(small: DashboardServer) -> None:
    c = http.client.HTTPConnection(*small.server_address, timeout=2)
    for _ in range(3):
        c.request("GET", "/health")
        r = c.getresponse()
        r.read()
        assert r.status in (200, 503) and not r.will_close
    first = c.sock
    c.request("GET", "/nope")
    c.getresponse().read()
    assert c.sock is first
    c.close()
    with socket.create_connection(small.server_address, timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 404" in data


def rst_close(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_dropped_connections_leave_no_traceback(h: Harness, tmp_path: Path) -> None:
    """Clients that reset the connection before or after their answer: at most a debug line each."""
    dport, mport = free_port(), free_port()
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in h.env(DASHBOARD_PORT=dport, METRICS_PORT=mport,
                                                                LOG_FILE="").items()))
    env_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET", "PRIVATE_KEY"))}
    env["PYTHONPATH"] = str(ROOT / "packages" / "polymarket-bot")
    p = subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), "run"], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: health(dport) == 200)
        for port, path in ((dport, "/system"), (dport, "/health"), (mport, "/metrics")):
            req = (f"GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-token\r\n\r\n").encode()
            for _ in range(10):
                # reset right after sending: the answer meets a closed connection
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(req)
                rst_close(s)
                # a keep-alive client that reads its answer and then resets
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(req)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
                rst_close(s)
        time.sleep(0.5)
        assert health(dport) == 200
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    for word in ("Traceback", "BrokenPipe", "ConnectionReset", "Exception occurred"):
        assert word not in err, err


EMFILE_SCRIPT = """
import resource, sys, time
sys.path[:0] = [{tests!r}, {pkg!r}]
from conftest import Harness
from polymarket_bot.fake_exchange import FakeServer
from polymarket_bot.server import DashboardHandler, DashboardServer
from pathlib import Path
fake = FakeServer(0).start()
h = Harness(Path({tmp!r}), fake)
e = h.engine()
e.poll_once()
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
# a bound above what the descriptors allow: accept runs into EMFILE
s = DashboardServer(("127.0.0.1", 0), DashboardHandler, e, max_connections=5000).start()
print(s.server_address[1], flush=True)
sys.stdin.read()
print(e.metrics.get("polymarket_http_connections_dropped_total", listener="http", reason="fd-limit"), flush=True)
"""


def test_out_of_descriptors_frees_one_instead_of_spinning(tmp_path: Path, many_fds: None) -> None:
    code = EMFILE_SCRIPT.format(tests=str(Path(__file__).parent), pkg=str(ROOT / "packages" / "polymarket-bot"),
                                tmp=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    socks: list[socket.socket] = []
    try:
        assert p.stdout is not None and p.stdin is not None
        port = int(p.stdout.readline())
        socks = open_idle(port, 400)
        cpu0, wall0 = cpu_seconds(p.pid), time.monotonic()
        answers = []
        while time.monotonic() - wall0 < 3:
            answers.append(timed_health(port))
            time.sleep(0.2)
        cpu = cpu_seconds(p.pid) - cpu0
        assert all(status == 200 and took < 1.0 for status, took in answers), answers
        assert cpu < 0.3, f"{cpu:.2f} s CPU in 3 s"
        assert len(os.listdir(f"/proc/{p.pid}/fd")) <= 128
        out, err = p.communicate("", timeout=10)
    finally:
        for s in socks:
            s.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert float(out.strip()) >= 200  # the oldest idle connections were closed to free descriptors
    assert "Traceback" not in err, err
