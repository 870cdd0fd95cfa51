"""polymarket-journal-remote (polymarket_journal_remote.py, loaded by tests.payload): its files are never written
through a planted symlink, keys are 0600, a request is signed for the host of node_targets only, and the gate's
TLS context takes a CA-signed client and refuses one without a certificate. The booted-container test of the
whole path: tests/system/test_journal.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests import payload


def journal() -> ModuleType:
    return payload.load("polymarket-monitoring", "polymarket_journal_remote.py")


def test_a_planted_symlink_is_replaced_never_followed(tmp_path: Path) -> None:
    mod = journal()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    d = tmp_path / "journal"
    d.mkdir()
    os.symlink(victim, d / "ca.key")
    fd = mod.open_dir(d)
    try:
        mod.write(fd, "ca.key", b"KEY\n", 0o600)
    finally:
        os.close(fd)
    assert victim.read_text() == "precious\n"
    assert not (d / "ca.key").is_symlink() and (d / "ca.key").read_text() == "KEY\n"
    assert (d / "ca.key").stat().st_mode & 0o777 == 0o600


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    mod = journal()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "journal")
    with pytest.raises(mod.Error, match="not a directory of its own"):
        mod.open_dir(tmp_path / "journal")


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    mod = journal()
    d = tmp_path / "journal"
    monkeypatch.setattr(mod, "DIR", d)
    fd = mod.open_dir(d)
    try:
        mod.ensure_ca(fd, "127.0.0.1")
    finally:
        os.close(fd)
    return mod, d


def client_cert(mod: ModuleType, d: Path, tmp: Path, name: str = "primary") -> tuple[Path, Path]:
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(tmp / "c.key")], check=True, capture_output=True)  # fmt: skip
    csr = mod.openssl("req", "-new", "-key", str(tmp / "c.key"), "-subj", "/CN=x")
    fd = mod.open_dir(d)
    try:
        (tmp / "c.crt").write_text(mod.sign(fd, csr, name, "192.0.2.11"))
    finally:
        os.close(fd)
    return tmp / "c.crt", tmp / "c.key"


def test_keys_are_0600_and_the_certificate_names_the_host(ca: tuple[ModuleType, Path], tmp_path: Path) -> None:
    mod, d = ca
    assert {p.name: p.stat().st_mode & 0o777 for p in d.iterdir()} == {
        "ca.key": 0o600,
        "ca.crt": 0o644,
        "server.key": 0o600,
        "server.crt": 0o644,
        "issued": 0o644,  # "SERIAL NAME" of every certificate signed (revoke's list)
    }
    crt, _ = client_cert(mod, d, tmp_path)
    text = mod.openssl("x509", "-noout", "-subject", "-ext", "subjectAltName", "-in", str(crt))
    assert "CN=primary" in text.replace(" ", "") and "IP Address:192.0.2.11" in text
    mod.openssl("verify", "-CAfile", str(d / "ca.crt"), "-purpose", "sslclient", str(crt))


def test_the_gate_takes_a_signed_client_and_refuses_one_without(ca: tuple[ModuleType, Path], tmp_path: Path) -> None:
    """The reason for the gate: Debian's systemd-journal-remote has no --trust= and takes any client."""
    mod, d = ca
    crt, key = client_cert(mod, d, tmp_path)
    server_ctx = mod.gate_context(d / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    results: list[str] = []

    def serve() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    results.append(tls.getpeercert()["subject"][0][0][1])
            except (ssl.SSLError, OSError) as exc:
                results.append(f"refused: {type(exc).__name__}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    for cert in ((crt, key), None):
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        ctx.check_hostname = False
        if cert:
            ctx.load_cert_chain(*cert)
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as tls:
                tls.sendall(b"x")
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
    thread.join(10)
    listener.close()
    assert results[0] == "primary"
    assert results[1].startswith("refused")


@pytest.mark.parametrize(("targets", "name", "first_line"), [
    ("primary=192.0.2.11", "intruder", "error: 'intruder' is not a host of node_targets (primary)"),
    ("Primary=192.0.2.11", "Primary", "error: 'Primary' is not a host name"),  # the gate would refuse it
])  # fmt: skip
def test_sign_refuses_a_host_outside_node_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], targets: str, name: str,
    first_line: str,
) -> None:
    mod = journal()
    conf = tmp_path / "monitoring.conf"
    conf.write_text(f'NODE_TARGETS="{targets}"\nJOURNAL_ADDRESS="192.0.2.13"\n')
    monkeypatch.setattr(mod, "SETTINGS", conf)
    assert mod.main(["sign", name]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == first_line if name == "intruder" else err[0].startswith(first_line)


class Backends:
    """One plain-HTTP unix socket per host name, as polymarket-journal-remote@NAME.socket: what each received."""

    def __init__(self, d: Path, names: tuple[str, ...]) -> None:
        self.got: dict[str, bytes] = {n: b"" for n in names}
        self.listeners: list[socket.socket] = []
        for n in names:
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(d / f"{n}.sock"))
            s.listen(64)
            self.listeners.append(s)
            threading.Thread(target=self._serve, args=(s, n), daemon=True).start()

    def _serve(self, s: socket.socket, name: str) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                self.got[name] += data
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


GateFixture = tuple[ModuleType, Path, Backends, int, Any]  # the module, the CA dir, backends, port, the Gate


@pytest.fixture
def gate(ca: tuple[ModuleType, Path], tmp_path: Path) -> Iterator[GateFixture]:
    """The gate on 127.0.0.1 (a free port) with small timeouts, its backends primary.sock and standby.sock."""
    mod, d = ca
    sockets = tmp_path / "run"
    sockets.mkdir()
    backends = Backends(sockets, ("primary", "standby"))
    g = mod.Gate(mod.gate_context(d / "server.key"), sockets, d / "revoked", max_total=64, max_per_peer=8,
                 handshake_timeout=1.0, idle_timeout=1.0)  # fmt: skip
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    def run() -> None:
        server = loop.run_until_complete(asyncio.start_server(g.handle, "127.0.0.1", 0, backlog=4096))
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield mod, d, backends, port[0], g
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    for s in backends.listeners:
        s.close()


def upload(d: Path, port: int, cert: tuple[Path, Path], claimed_host: str = "standby", source: str = "") -> str:
    """A journal upload with ``cert`` that claims to come from ``claimed_host``: the HTTP answer, or the error."""
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(*cert)
    body = f"_HOSTNAME={claimed_host}\nMESSAGE=hello\n\n".encode()
    request = (f"POST /upload HTTP/1.1\r\nHost: {claimed_host}\r\nContent-Type: application/vnd.fdo.journal\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0) if source else None
                                      ) as raw, ctx.wrap_socket(raw) as tls:  # fmt: skip
            tls.sendall(request)
            return tls.recv(100).decode(errors="replace").split("\r\n")[0] or "closed"
    except (ssl.SSLError, OSError) as exc:
        return f"error: {exc}"


def test_the_upload_goes_to_the_journal_of_the_certificates_name_only(gate: GateFixture, tmp_path: Path) -> None:
    """Review finding 2: the primary's certificate claiming to be standby lands in primary's journal, not standby's."""
    mod, d, backends, port, _g = gate
    crt = client_cert(mod, d, tmp_path, "primary")
    assert upload(d, port, crt, claimed_host="standby") == "HTTP/1.1 202 Accepted"
    assert b"POST /upload" in backends.got["primary"] and backends.got["standby"] == b""


def test_a_certificate_whose_cn_is_no_host_name_is_refused(gate: GateFixture, tmp_path: Path) -> None:
    mod, d, backends, port, _g = gate
    for i, name in enumerate(("..", "Standby", "primary.sock", "standby x")):
        (tmp_path / str(i)).mkdir()
        crt = client_cert(mod, d, tmp_path / str(i), name)
        assert not upload(d, port, crt).startswith("HTTP/"), name
    assert backends.got == {"primary": b"", "standby": b""}


def test_a_revoked_node_is_refused_the_others_pass_a_new_enrolment_passes(
    gate: GateFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding 4: `revoke primary` refuses the primary's certificate from its next connection on."""
    mod, d, backends, port, _g = gate
    monkeypatch.setattr(mod, "DIR", d)
    (tmp_path / "p").mkdir()
    (tmp_path / "s").mkdir()
    primary = client_cert(mod, d, tmp_path / "p", "primary")
    standby = client_cert(mod, d, tmp_path / "s", "standby")
    assert upload(d, port, primary, "primary") == "HTTP/1.1 202 Accepted"
    assert mod.main(["revoke", "primary"]) == 0
    assert (d / "revoked").stat().st_mode & 0o777 == 0o644
    before = backends.got["primary"]
    assert not upload(d, port, primary, "primary").startswith("HTTP/")
    assert backends.got["primary"] == before
    assert upload(d, port, standby, "standby") == "HTTP/1.1 202 Accepted"
    (tmp_path / "p2").mkdir()
    again = client_cert(mod, d, tmp_path / "p2", "primary")  # enrolled anew: a new serial
    assert upload(d, port, again, "primary") == "HTTP/1.1 202 Accepted"
    capsys.readouterr()
    assert mod.main(["revoke", "nobody"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == "error: no certificate was signed for 'nobody'"


def test_node_certificates_live_825_days(ca: tuple[ModuleType, Path], tmp_path: Path) -> None:
    mod, d = ca
    crt, _ = client_cert(mod, d, tmp_path)
    dates = mod.openssl("x509", "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601", "-in", str(crt))
    start, end = (line.split("=", 1)[1].strip() for line in dates.splitlines())
    days = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).days
    assert days == 825, dates


def test_idle_connections_are_capped_and_closed_and_an_upload_still_passes(gate: GateFixture, tmp_path: Path) -> None:
    """Review finding 3: 2,000 idle TCP connections (no handshake) from one address: at most max_per_peer are
    held, the rest closed at once; an upload from another address passes meanwhile; after the handshake timeout
    the held ones are closed too. A TLS client that sends nothing after its handshake is closed (idle)."""
    mod, d, _backends, port, g = gate
    crt = client_cert(mod, d, tmp_path, "primary")
    start = time.monotonic()
    idle = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
        idle.append(s)
    time.sleep(0.3)
    held = g.total
    fds = len(os.listdir("/proc/self/fd"))
    answer = upload(d, port, crt, "primary")
    took = time.monotonic() - start
    print(f"\n2000 idle connections: {held} held by the gate, upload {answer!r} after {took:.2f} s, "
          f"{fds} descriptors in the test process (both ends)")
    assert held <= 8 and answer == "HTTP/1.1 202 Accepted"
    closed = 0
    for s in idle:
        s.settimeout(3)
        try:
            if s.recv(1) == b"":
                closed += 1
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        s.close()
    assert closed == 2000, closed
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(*crt)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        t0 = time.monotonic()
        assert tls.recv(1) == b""
        assert time.monotonic() - t0 < 4
    deadline = time.monotonic() + 5
    while g.total and time.monotonic() < deadline:
        time.sleep(0.1)
    assert g.total == 0 and g.peers == {}


# polymarket-journal-remote as its own process, as `sudo polymarket-journal-remote ...` runs it: argv DIR SETTINGS ARGS.
RUN = f"""import sys
from pathlib import Path
sys.path.insert(0, {str(payload.REPO)!r})
from tests import payload
mod = payload.load("polymarket-monitoring", "polymarket_journal_remote.py")
mod.DIR, mod.SETTINGS = Path(sys.argv[1]), Path(sys.argv[2])
sys.exit(mod.main(sys.argv[3:]))
"""


def test_parallel_signs_lose_no_serial_and_revoke_takes_them_all(
    ca: tuple[ModuleType, Path], tmp_path: Path
) -> None:
    """Attack 10.1: 16 `sign primary` at once (issued was read-modify-written unlocked, through one shared
    temporary name: serials lost, FileNotFoundError tracebacks). Each exits 0, the serial of every certificate
    handed out is in `issued`, no temporary file is left, and `revoke primary` revokes every one of them."""
    mod, d = ca
    conf = tmp_path / "monitoring.conf"
    conf.write_text('NODE_TARGETS="primary=192.0.2.11"\nJOURNAL_ADDRESS="127.0.0.1"\n')
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                    str(tmp_path / "c.key")], check=True, capture_output=True)  # fmt: skip
    csr = mod.openssl("req", "-new", "-key", str(tmp_path / "c.key"), "-subj", "/CN=x")
    (tmp_path / "c.csr").write_text(csr)
    procs = []
    for _ in range(16):
        with (tmp_path / "c.csr").open() as request:  # one file offset each
            procs.append(subprocess.Popen([sys.executable, "-c", RUN, str(d), str(conf), "sign", "primary"],
                                          stdin=request, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    handed_out = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == "", err
        cert = out.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        (tmp_path / "n.crt").write_text(cert)
        handed_out.add(int(mod.openssl("x509", "-noout", "-serial", "-in", str(tmp_path / "n.crt"))
                           .strip().split("=")[1], 16))  # fmt: skip
    assert len(handed_out) == 16
    issued = mod.serials((d / "issued").read_text(), "primary")
    print(f"\n16 parallel signs: {len(issued & handed_out)} of 16 serials in issued")
    assert handed_out <= issued
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]
    revoke = subprocess.run([sys.executable, "-c", RUN, str(d), str(conf), "revoke", "primary"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert revoke.returncode == 0, revoke.stderr
    assert revoke.stdout.startswith("revoked 16 certificate(s) of primary")
    assert handed_out <= mod.serials((d / "revoked").read_text(), "primary")


def test_revoke_closes_a_connection_that_is_already_open(
    gate: GateFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack 10.2: a client connected before `revoke` kept uploading (202). Now its next request on that
    connection is not passed on (the connection is closed, nothing reaches the backend), and a connection
    that sends nothing is closed within the poll interval, long before the idle timeout."""
    mod, d, backends, port, g = gate
    g.idle_timeout = 30
    monkeypatch.setattr(mod, "DIR", d)
    crt = client_cert(mod, d, tmp_path, "primary")
    ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
    ctx.check_hostname = False
    ctx.load_cert_chain(*crt)
    with contextlib.ExitStack() as stack:
        talking, quiet = (
            stack.enter_context(ctx.wrap_socket(stack.enter_context(socket.create_connection(("127.0.0.1", port),
                                                                                             timeout=10))))
            for _ in range(2)
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while g.total < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # both relayed to the backend
        assert mod.main(["revoke", "primary"]) == 0
        answer = b""
        with contextlib.suppress(OSError):
            talking.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = talking.recv(100)
        assert answer == b"", answer
        t0 = time.monotonic()
        quiet.settimeout(10)
        closed = b"x"
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            closed = quiet.recv(1)
        took = time.monotonic() - t0
    print(f"\nrevoked: the next request closed, nothing passed on; the quiet connection closed after {took:.2f} s")
    assert closed == b"" and took < g.revoked_poll + 3
    assert backends.got["primary"] == b""


def test_revoke_without_the_directory_or_not_as_root_is_one_error_line(
    ca: tuple[ModuleType, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack 10.3: `revoke primary` without /etc/polymarket-monitoring, or as non-root, was a traceback."""
    mod, d = ca
    monkeypatch.setattr(mod, "DIR", tmp_path / "missing" / "journal")
    assert mod.main(["revoke", "primary"]) == 1
    err = capsys.readouterr().err.splitlines()
    expected = f"error: {tmp_path / 'missing' / 'journal'}: No such file or directory"
    assert err[0] == expected, err
    assert not [line for line in err if "Traceback" in line]
    # as nobody, on a CA directory of root's that nobody may read but not write (tmp_path is 0700: a copy)
    top = Path(tempfile.mkdtemp(prefix="pmjr-"))
    try:
        top.chmod(0o755)
        shutil.copytree(d, top / "journal")
        client_cert(mod, top / "journal", tmp_path, "primary")
        conf = top / "monitoring.conf"
        conf.write_text('NODE_TARGETS="primary=192.0.2.11"\nJOURNAL_ADDRESS="127.0.0.1"\n')
        conf.chmod(0o644)
        csr = mod.openssl("req", "-new", "-key", str(tmp_path / "c.key"), "-subj", "/CN=x")
        for argv, culprit in ((["revoke", "primary"], "revoked"), (["sign", "primary"], "ca.key")):
            proc = subprocess.run([sys.executable, "-c", RUN, str(top / "journal"), str(conf), *argv], input=csr,
                                  user="nobody", capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            expected = f"error: {top / 'journal' / culprit}: Permission denied"
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.splitlines()[0] == expected, proc.stderr
            assert "Traceback" not in proc.stderr
        assert not (top / "journal" / "revoked").exists()
    finally:
        shutil.rmtree(top)
