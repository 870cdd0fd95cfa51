#!/usr/bin/python3
"""polymarket-journal-remote: the monitoring host's side of log aggregation.

The hosts send their journals over HTTPS to JOURNAL_ADDRESS:19532 (monitoring.conf; the segment
address, never every address), where ``polymarket-journal-remote gate`` (polymarket-journal-gate.service)
accepts only clients with a certificate signed by the CA made here, and passes their requests to
systemd-journal-remote (the archive's) on 127.0.0.1:19533, which writes /var/log/journal/remote/.
The gate is ours because Debian's systemd-journal-remote is built without GnuTLS: its --trust= is
"not available" and it takes uploads from any client at all. The CA's key never leaves this host;
each host is enrolled once, from the admin host, with one pipe (its side is polymarket-hardening's
polymarket-journal-upload):

    ssh NODE sudo polymarket-journal-upload csr | ssh MON sudo polymarket-journal-remote sign NODE \\
        | ssh NODE sudo polymarket-journal-upload join

Every file is written under a directory opened without following links, into a new file that is
renamed over the old one: a symlink planted in its place is replaced, never followed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ETC = Path("/etc/polymarket-monitoring")
SETTINGS = ETC / "monitoring.conf"
DIR = ETC / "journal"
CA_KEY, CA_CERT = "ca.key", "ca.crt"
SERVER_KEY, SERVER_CERT = "server.key", "server.crt"
PORT = 19532
BACKEND = ("127.0.0.1", 19533)  # systemd-journal-remote.socket (our drop-in): plain HTTP, loopback only
HANDSHAKE_TIMEOUT = 10
UFW_TAG = "polymarket-journal"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


class Error(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def openssl(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["openssl", *argv], capture_output=True, text=True, input=stdin, env=ENV, check=False)
    if proc.returncode != 0:
        raise Error(f"openssl {argv[0]}: " + (proc.stderr.strip().splitlines() or ["failed"])[-1])
    return proc.stdout


def settings(path: Path | None = None) -> tuple[str, dict[str, str]]:
    """(JOURNAL_ADDRESS, {NAME: ADDRESS} of NODE_TARGETS) from monitoring.conf."""
    path = path or SETTINGS
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Error(f"{path}: {exc.strerror}", "dpkg-reconfigure polymarket-monitoring") from None
    for line in text.splitlines():
        m = re.fullmatch(r'([A-Z_]+)="([^"\\$`]*)"', line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    members: dict[str, str] = {}
    for word in values.get("NODE_TARGETS", "").split():
        name, _, address = word.partition("=")
        members[name] = address
    address = values.get("JOURNAL_ADDRESS", "")
    if address:
        ipaddress.ip_address(address)  # checked by check-value; a hand edit fails here as a ValueError
    return address, members


def open_dir(path: Path, mode: int = 0o755) -> int:
    """A descriptor of ``path`` (made when missing), refused when it is a symlink or not root's."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Error(f"{path}: not a directory of its own ({exc.strerror}): refused") from None
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise Error(f"{path}: not owned by root or writable by others: refused")
    return fd


def write(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """``name`` in the directory ``dir_fd``: a new file, then renamed over the old one (a link is replaced)."""
    tmp = f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def read(dir_fd: int, name: str) -> str | None:
    """The regular file ``name`` in ``dir_fd`` (a symlink is not followed: None)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except (FileNotFoundError, OSError):
        return None
    with os.fdopen(fd, encoding="ascii") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def ensure_ca(dir_fd: int, address: str) -> None:
    """The CA (made once, its key 0600 root) and the server's key and certificate for ``address``."""
    with tempfile.TemporaryDirectory(prefix="polymarket-journal.") as tmp:
        if read(dir_fd, CA_KEY) is None or read(dir_fd, CA_CERT) is None:
            openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", f"{tmp}/ca.key", "-out", f"{tmp}/ca.crt", "-days", "3650",
                    "-subj", "/CN=polymarket journal CA", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            write(dir_fd, CA_KEY, Path(f"{tmp}/ca.key").read_bytes(), 0o600)
            write(dir_fd, CA_CERT, Path(f"{tmp}/ca.crt").read_bytes(), 0o644)
        cert = read(dir_fd, SERVER_CERT)
        if cert is not None and read(dir_fd, SERVER_KEY) is not None:
            Path(f"{tmp}/s.crt").write_text(cert, encoding="ascii")
            san = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", f"{tmp}/s.crt")
            if f"IP Address:{address}" in san:
                return
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{tmp}/s.key")
        csr = openssl("req", "-new", "-key", f"{tmp}/s.key", "-subj", f"/CN={address}")
        write(dir_fd, SERVER_CERT, sign(dir_fd, csr, address, address, "serverAuth").encode(), 0o644)
        # 0600 root: the service reads it as a credential (LoadCredential= of our drop-in).
        write(dir_fd, SERVER_KEY, Path(f"{tmp}/s.key").read_bytes(), 0o600)


def sign(dir_fd: int, csr: str, name: str, address: str, usage: str = "clientAuth") -> str:
    if "-----BEGIN CERTIFICATE REQUEST-----" not in csr or any(ord(c) < 0x20 and c not in "\n\r" for c in csr):
        raise Error("the input is not a PEM certificate request", "on the node: polymarket-journal-upload csr")
    ca_key, ca_cert = read(dir_fd, CA_KEY), read(dir_fd, CA_CERT)
    if ca_key is None or ca_cert is None:
        raise Error(f"{DIR}: no CA", "dpkg-reconfigure polymarket-monitoring (journal_address)")
    with tempfile.TemporaryDirectory(prefix="polymarket-journal-sign.") as tmp:
        os.chmod(tmp, 0o700)
        Path(f"{tmp}/req.csr").write_text(csr, encoding="ascii")
        openssl("req", "-verify", "-noout", "-in", f"{tmp}/req.csr")
        Path(f"{tmp}/ca.key").write_text(ca_key, encoding="ascii")
        Path(f"{tmp}/ca.crt").write_text(ca_cert, encoding="ascii")
        Path(f"{tmp}/ext").write_text(
            f"subjectAltName=IP:{address}\nbasicConstraints=critical,CA:FALSE\n"
            f"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n", encoding="ascii")
        return openssl("x509", "-req", "-in", f"{tmp}/req.csr", "-CA", f"{tmp}/ca.crt", "-CAkey", f"{tmp}/ca.key",
                       "-set_serial", "0x" + os.urandom(16).hex(), "-days", "3650", "-subj", f"/CN={name}",
                       "-extfile", f"{tmp}/ext")


def ufw_rules(address: str, members: dict[str, str]) -> list[str]:
    """`ufw allow` rules: the port for each member's address only, on this host's segment address."""
    return [f"allow from {a} to {address} port {PORT} proto tcp" for a in sorted(set(members.values()))]


def apply_ufw(address: str, members: dict[str, str]) -> None:
    if shutil.which("ufw", path=ENV["PATH"]) is None:
        return
    added = subprocess.run(["ufw", "show", "added"], capture_output=True, text=True, env=ENV, check=False).stdout
    current = re.findall(rf"^ufw (.*) comment '{UFW_TAG}'$", added, re.M)
    wanted = ufw_rules(address, members)
    for rule in current:
        if rule not in wanted:
            subprocess.run(["ufw", "--force", "delete", *rule.split()], capture_output=True, env=ENV, check=False)
    for rule in wanted:
        subprocess.run(["ufw", *rule.split(), "comment", UFW_TAG], capture_output=True, env=ENV, check=False)


def cmd_init(_args: argparse.Namespace) -> int:
    """The postinst: CA, server certificate and firewall (nothing without JOURNAL_ADDRESS)."""
    address, members = settings()
    if not address:
        print("polymarket-journal-remote: no journal_address: not receiving journals "
              "(dpkg-reconfigure polymarket-monitoring)", file=sys.stderr)
        return 0
    fd = open_dir(DIR, 0o755)
    try:
        ensure_ca(fd, address)
    finally:
        os.close(fd)
    apply_ufw(address, members)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    address, members = settings()
    if args.name not in members:
        raise Error(f"{args.name!r} is not a host of node_targets ({', '.join(members) or 'none'})",
                    "dpkg-reconfigure polymarket-monitoring (node_targets)")
    if not address:
        raise Error("no journal_address: this host receives no journals", "dpkg-reconfigure polymarket-monitoring")
    fd = open_dir(DIR, 0o755)
    try:
        cert = sign(fd, sys.stdin.read(65536), args.name, members[args.name])
        ca = read(fd, CA_CERT) or ""
    finally:
        os.close(fd)
    host = f"[{address}]" if ":" in address else address
    print(cert + ca + f"URL=https://{host}:{PORT}", end="\n")
    return 0


def cmd_remove(_args: argparse.Namespace) -> int:
    """The prerm (remove): our firewall rules go; the CA and the journals stay."""
    if shutil.which("ufw", path=ENV["PATH"]) is not None:
        added = subprocess.run(["ufw", "show", "added"], capture_output=True, text=True, env=ENV, check=False).stdout
        for rule in re.findall(rf"^ufw (.*) comment '{UFW_TAG}'$", added, re.M):
            subprocess.run(["ufw", "--force", "delete", *rule.split()], capture_output=True, env=ENV, check=False)
    return 0


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, half_close: bool) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
        if half_close and dst.can_write_eof():
            dst.write_eof()
            return
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    dst.close()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client that passed the handshake (its certificate chains to our CA): piped to journal-remote."""
    try:
        up_reader, up_writer = await asyncio.open_connection(*BACKEND)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, up_writer, True), _pipe(up_reader, writer, False))
    up_writer.close()
    writer.close()


def gate_context(key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(DIR / SERVER_CERT, key)
    ctx.load_verify_locations(DIR / CA_CERT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # no certificate, or one our CA did not sign: no connection
    return ctx


async def _serve(ctx: ssl.SSLContext, address: str) -> None:
    server = await asyncio.start_server(_handle, address, PORT, ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                                        reuse_address=True)
    async with server:
        await server.serve_forever()


def cmd_gate(_args: argparse.Namespace) -> int:
    """polymarket-journal-gate.service: TLS with client certificates on JOURNAL_ADDRESS:19532 only."""
    address, _ = settings()
    if not address:
        raise Error("no journal_address: this host receives no journals", "dpkg-reconfigure polymarket-monitoring")
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    try:
        ctx = gate_context(Path(creds, SERVER_KEY) if creds else DIR / SERVER_KEY)
    except (OSError, ssl.SSLError) as exc:
        raise Error(f"{DIR}: the server certificate or the CA cannot be loaded ({exc})",
                    "dpkg-reconfigure polymarket-monitoring") from None
    asyncio.run(_serve(ctx, address))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polymarket-journal-remote")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="make the CA and the server certificate, listen, open the firewall to the hosts"
                   ).set_defaults(fn=cmd_init)
    p = sub.add_parser("sign", help="sign a host's request (stdin) for its journal upload: sign NAME")
    p.add_argument("name")
    p.set_defaults(fn=cmd_sign)
    sub.add_parser("remove", help="the prerm: drop the firewall rules").set_defaults(fn=cmd_remove)
    sub.add_parser("gate", help="the TLS gate of polymarket-journal-gate.service").set_defaults(fn=cmd_gate)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {SETTINGS}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
