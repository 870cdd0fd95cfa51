"""Outside review of the listeners (issue 7, item 3): attacks the event-loop server still loses to.

Each test runs the real service (or a real listener) the way tests/bot/test_listener.py does.
Each was an xfail(strict) naming the defect until the fix (server.py, ledger.ping_readonly).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Harness
from polymarket_bot import server as srv
from polymarket_bot.server import DashboardHandler, DashboardServer
from test_listener import UNIT_NOFILE, cpu_seconds, many_fds, timed_health, unit_limits  # noqa: F401 (fixture)
from test_service import free_port, health, wait_for


@pytest.fixture
def service(service_ports: tuple[subprocess.Popen[str], int, int]) -> tuple[subprocess.Popen[str], int]:
    """The real service under the unit's RLIMIT_NOFILE: (process, dashboard port)."""
    return service_ports[:2]


@pytest.fixture
def service_ports(h: Harness, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """The real service under the unit's RLIMIT_NOFILE; yields (process, dashboard port, metrics port)."""
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
    try:
        assert wait_for(lambda: health(dport) == 200), "the service never became healthy"
        yield p, dport, mport
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "Traceback" not in err, err


PIPELINED = b"GET /health HTTP/1.1\r\nHost: bot\r\n\r\n"


def test_attack_pipelined_requests_whose_answers_are_never_read_do_not_stop_health(
        service: tuple[subprocess.Popen[str], int]) -> None:
    p, dport = service
    socks = []
    try:
        for _ in range(16):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a small window: answers pile up server-side
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.connect(("127.0.0.1", dport))
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.send(PIPELINED * 10000)  # 340 KB of complete requests, cheap to send; never read anything
            socks.append(s)
        cpu0, wall0 = cpu_seconds(p.pid), time.monotonic()
        answers = []
        # the answers pile up until the kernel buffers are full (a few seconds of the service's
        # CPU), then the workers block; stop at the first late answer, keep the test short
        while time.monotonic() - wall0 < 25:
            answers.append(timed_health(dport))
            if answers[-1][0] != 200 or answers[-1][1] >= 1.0:
                break
            time.sleep(0.5)
        print(f"\nservice CPU {cpu_seconds(p.pid) - cpu0:.1f} s in {time.monotonic() - wall0:.1f} s; {answers}")
        assert all(status == 200 and took < 1.0 for status, took in answers), answers
    finally:
        for s in socks:
            s.close()


@pytest.mark.usefixtures("many_fds")
def test_attack_pipeliners_and_one_request_never_read_clients_do_not_stop_health_or_metrics(
        service_ports: tuple[subprocess.Popen[str], int, int]) -> None:
    """The attacker's recipe against the old server: on each port, 6 connections pipelining
    /health and never reading, and 300 connections sending one request and never reading its
    answer; every new /health (and metrics scrape) connection was reset."""
    p, dport, mport = service_ports
    socks = []
    try:
        for port in (dport, mport):
            for _ in range(6):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.send(PIPELINED * 10000)
                socks.append(s)
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(PIPELINED)
                socks.append(s)
        wall0 = time.monotonic()
        answers = []
        while time.monotonic() - wall0 < 8:
            answers += [("health", *timed_health(dport)), ("metrics", *timed_health(mport, timeout=3.0))]
            time.sleep(0.5)
        print(f"\n{answers}")
        # /health on the dashboard port (what HAProxy and keepalived ask) within 1 s, every time. The
        # metrics port serves Prometheus, which waits 10 s for a scrape: every probe is answered, within
        # 3 s (one over 1 s was seen in a loaded CI run: the service shares 2 cores with 612 attackers).
        assert all(status == 200 and took < 1.0 for kind, status, took in answers if kind == "health"), answers
        assert all(status == 200 and took < 3.0 for kind, status, took in answers if kind == "metrics"), answers
        assert p.poll() is None
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def listener(h: Harness) -> Iterator[DashboardServer]:
    s = DashboardServer(("127.0.0.1", 0), DashboardHandler, h.engine(), max_connections=16,
                        header_timeout=2.0).start()
    yield s
    s.shutdown()
    s.server_close()


def read_all(s: socket.socket, wait: float = 2.0) -> bytes:
    s.settimeout(wait)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_attack_head_over_16k_is_refused_even_when_its_end_arrives_in_one_read(listener: DashboardServer) -> None:
    with socket.create_connection(listener.server_address, timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 990)
                                                                      for i in range(15)))  # 15 KB, under the bound
        time.sleep(0.3)
        s.sendall(b"".join(b"Y-%d: %s\r\n" % (i, b"b" * 990) for i in range(30)) + b"\r\n")  # 30 KB more, and the end
        data = read_all(s)
    assert srv.MAX_HEAD == 16384
    # closed unanswered (or 431); never answered as a request (this engine never polled: 503)
    assert data == b"" or data.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), data[:200]


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("framing", [
    b"Content-Length: 0\r\nContent-Length: %d" % len(SMUGGLED),
    b"Content-Length : %d" % len(SMUGGLED),
    b"Transfer-Encoding : chunked",
    b"Content-Length\x00: %d" % len(SMUGGLED),
], ids=["two-content-lengths", "space-before-colon", "te-space-before-colon", "nul-in-name"])
def test_attack_ambiguous_body_framing_is_refused_and_the_body_never_runs(listener: DashboardServer,
                                                                          framing: bytes) -> None:
    with socket.create_connection(listener.server_address, timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n" + SMUGGLED)
        data = read_all(s)
    assert data.count(b"HTTP/1.1 ") <= 1 and b"404" not in data, data


def test_attack_health_answers_while_another_process_holds_the_ledger_write_lock(
        h: Harness, tmp_path: Path, service: tuple[subprocess.Popen[str], int]) -> None:
    import sqlite3

    _p, dport = service
    db = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # what prune does for the length of its DELETEs
        h.trade(leader=0, ago=0)       # a leader trade: the engine has something to write
        t0 = time.monotonic()
        answers = []
        while time.monotonic() - t0 < 4:
            answers.append(timed_health(dport))
            time.sleep(0.25)
    finally:
        db.execute("ROLLBACK")
        db.close()
    # 200, or 503 naming the database: either way an answer, within 1 s
    assert all(status in (200, 503) and took < 1.0 for status, took in answers), answers
