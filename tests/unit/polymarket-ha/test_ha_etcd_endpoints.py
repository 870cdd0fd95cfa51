"""The lease keeper's etcd client asks first the member that answered last (issue 11: a primary/standby cut).

In that cut this node's own etcd member loses etcd's leader and answers nothing until its request timeout. Asked
first on every call, it cost each order's fence a full timeout (LEASE_REQUEST_TIMEOUT) before the witness was
tried, and an order whose fence missed the bot's deadline was held. Shown with two real TLS servers on the
loopback: a member that accepts and never answers, and one that answers; the outsider's view is how many
requests reached the silent member.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests import payload


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)  # fmt: skip
    return key, crt


class Silent:
    """A member cut off from etcd's leader: takes the connection (TLS and all), never answers."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.ctx = ctx
        self.requests = 0
        self.stop = threading.Event()
        self.held: list[Any] = []
        threading.Thread(target=self.serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
                tls.settimeout(5)
                if tls.recv(65536):
                    self.requests += 1
                self.held.append(tls)
            except (OSError, ssl.SSLError):
                conn.close()


@pytest.fixture
def members(cert: tuple[Path, Path]) -> Iterator[tuple[Silent, Any]]:
    key, crt = cert
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(crt), str(key))
    silent = Silent(ctx)
    answered: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            answered.append(self.path)
            body = json.dumps({"header": {}, "count": "0"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    good = type("Good", (), {"url": f"https://127.0.0.1:{server.server_address[1]}", "answered": answered})
    try:
        yield silent, good
    finally:
        server.shutdown()
        silent.stop.set()


@pytest.mark.parametrize("kind", ["Etcd", "KeptEtcd"])
def test_the_member_that_answered_is_asked_first(kind: str, cert: tuple[Path, Path],
                                                 members: tuple[Silent, Any]) -> None:
    ha = payload.ha()
    key, crt = cert
    silent, good = members
    etcd = getattr(ha, kind)([silent.url, good.url], cafile=crt, cert=crt, key=key, timeout=0.5)
    for _ in range(5):
        assert etcd.call("/v3/kv/range", {"key": "a2V5"}) == {"header": {}, "count": "0"}
    assert len(good.answered) == 5
    # the silent member cost one timeout, on the first call only: the next four went to the member that answered
    assert silent.requests == 1
    # and when that one stops answering too, the call fails with both named, not with a hang
    etcd.endpoints = [silent.url]
    etcd.preferred = silent.url
    with pytest.raises(ha.HAError, match="etcd: "):
        etcd.call("/v3/kv/range", {"key": "a2V5"})
