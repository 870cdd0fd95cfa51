"""polymarket-journal-remote (polymarket_journal_remote.py, loaded by tests.payload): its files are never written
through a planted symlink, keys are 0600, a request is signed for the host of node_targets only, and the gate's
TLS context takes a CA-signed client and refuses one without a certificate. The booted-container test of the
whole path: tests/system/test_journal.py."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import ModuleType

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


def test_sign_refuses_a_host_outside_node_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = journal()
    conf = tmp_path / "monitoring.conf"
    conf.write_text('NODE_TARGETS="primary=192.0.2.11"\nJOURNAL_ADDRESS="192.0.2.13"\n')
    monkeypatch.setattr(mod, "SETTINGS", conf)
    assert mod.main(["sign", "intruder"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: 'intruder' is not a host of node_targets (primary)"
