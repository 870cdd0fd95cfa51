#!/usr/bin/python3
"""polymarket-journal-remote: the monitoring host's side of log aggregation.

The hosts send their journals over HTTPS to JOURNAL_ADDRESS:19532 (monitoring.conf; the segment
address, never every address), where ``polymarket-journal-remote gate`` (polymarket-journal-gate.service)
accepts only clients with a certificate signed by the CA made here, not revoked, whose CN is a NAME,
and passes their requests to the systemd-journal-remote (the archive's program) of that CN alone:
polymarket-journal-remote@NAME.socket, the unix socket /run/polymarket-journal/NAME.sock (0660, group
polymarket-journal, which only the gate's service has), writing /var/log/journal/remote/remote-NAME.journal.
The file a journal lands in is the certificate's name, never what the client says about itself.
The gate is ours because Debian's systemd-journal-remote is built without GnuTLS: its --trust= is
"not available" and it takes uploads from any client at all. The CA's key never leaves this host;
each host is enrolled once, from the admin host, with one pipe (its side is polymarket-hardening's
polymarket-journal-upload):

    ssh NODE sudo polymarket-journal-upload csr | ssh MON sudo polymarket-journal-remote sign NODE \\
        | ssh NODE sudo polymarket-journal-upload join

Every file is written under a directory opened without following links, into a new file of a name of
its own (O_EXCL) that is renamed over the old one: a symlink planted in its place is replaced, never
followed, and two writers never share a temporary file. `sign` and `revoke` read and rewrite `issued` and
`revoked` under an exclusive flock(2) of that directory: parallel runs lose no serial.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

ETC = Path("/etc/polymarket-monitoring")
SETTINGS = ETC / "monitoring.conf"
DIR = ETC / "journal"
CA_KEY, CA_CERT = "ca.key", "ca.crt"
SERVER_KEY, SERVER_CERT = "server.key", "server.crt"
ISSUED, REVOKED = "issued", "revoked"  # "SERIAL NAME" lines: every certificate signed, and those revoked
PORT = 19532
# polymarket-journal-remote@NAME.socket: plain HTTP, a unix socket only the gate's group may open.
BACKEND_DIR = Path("/run/polymarket-journal")
BACKEND_UNIT = "polymarket-journal-remote@{}.socket"
WANTS = Path("/etc/systemd/system/sockets.target.wants")
# 825 days: the longest a publicly trusted TLS certificate may live (CA/Browser Forum, 2018-2020), a
# re-enrolment every two years; a node's stolen key is refused sooner with `revoke`.
NODE_DAYS = 825
HANDSHAKE_TIMEOUT = 10.0  # seconds from the TCP connection to a finished TLS handshake
IDLE_TIMEOUT = 120.0  # seconds without a byte from the client: closed (journal-upload reconnects)
REVOKED_POLL = 1.0  # seconds between two looks at `revoked` for a connection that sends nothing
MAX_CONNECTIONS = 256  # at once, handshakes included (2 descriptors each; LimitNOFILE=4096)
MAX_PER_PEER = 16  # at once from one address (journal-upload holds one)
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


@contextlib.contextmanager
def locked(dir_fd: int) -> Iterator[None]:
    """An exclusive flock(2) of the directory ``dir_fd`` (opened by open_dir: no link followed) for a
    read-modify-write of its files; another `sign` or `revoke` waits. Not reentrant: take it once."""
    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


def write(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """``name`` in the directory ``dir_fd``: a new file of a name no other writer has (O_EXCL), then renamed
    over the old one (a link is replaced)."""
    while True:
        tmp = f".{name}.{secrets.token_hex(8)}.new"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        except OSError as exc:  # not root: named by the file it was to replace
            raise OSError(exc.errno, exc.strerror, name) from None
        break
    try:
        try:
            os.fchown(fd, 0, 0)
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def read(dir_fd: int, name: str) -> str | None:
    """The regular file ``name`` in ``dir_fd`` (a symlink is not followed: None; not root: PermissionError)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except PermissionError:
        raise
    except OSError:
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
        write(dir_fd, SERVER_CERT, sign(dir_fd, csr, address, address, "serverAuth", 3650).encode(), 0o644)
        # 0600 root: the service reads it as a credential (LoadCredential= of our drop-in).
        write(dir_fd, SERVER_KEY, Path(f"{tmp}/s.key").read_bytes(), 0o600)


def sign(dir_fd: int, csr: str, name: str, address: str, usage: str = "clientAuth", days: int = NODE_DAYS) -> str:
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
        serial = int.from_bytes(os.urandom(16), "big") >> 1  # positive, at most 127 bits
        cert = openssl("x509", "-req", "-in", f"{tmp}/req.csr", "-CA", f"{tmp}/ca.crt", "-CAkey",
                       f"{tmp}/ca.key", "-set_serial", f"0x{serial:x}", "-days", str(days), "-subj", f"/CN={name}",
                       "-extfile", f"{tmp}/ext")
    with locked(dir_fd):
        write(dir_fd, ISSUED, ((read(dir_fd, ISSUED) or "") + f"{serial:x} {name}\n").encode(), 0o644)
    return cert


def serials(text: str | None, name: str | None = None) -> set[int]:
    """The serial numbers of an ``issued`` or ``revoked`` text ("SERIAL NAME" lines), of ``name`` only if given."""
    found = set()
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) == 2 and (name is None or words[1] == name):
            with contextlib.suppress(ValueError):
                found.add(int(words[0], 16))
    return found


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
    apply_units(members)
    return 0


def systemctl(*argv: str) -> None:
    subprocess.run(["systemctl", "--quiet", *argv], capture_output=True, env=ENV, check=False)


def enabled_units() -> set[str]:
    """Our backend sockets enabled now (their symlinks in sockets.target.wants)."""
    try:
        return {p.name for p in WANTS.iterdir() if re.fullmatch(BACKEND_UNIT.format(".+"), p.name)}
    except OSError:
        return set()


def apply_units(members: dict[str, str]) -> None:
    """One systemd-journal-remote per host of node_targets (its socket enabled, and started when booted)."""
    if shutil.which("systemctl", path=ENV["PATH"]) is None:
        return
    booted = Path("/run/systemd/system").is_dir()
    wanted = {BACKEND_UNIT.format(name) for name in members if NAME.fullmatch(name)}
    for unit in sorted(enabled_units() - wanted):
        systemctl("disable", *(["--now"] if booted else []), unit)
        if booted:
            systemctl("stop", unit.replace(".socket", ".service"))
    for unit in sorted(wanted):
        systemctl("enable", *(["--now"] if booted else []), unit)


def cmd_sign(args: argparse.Namespace) -> int:
    address, members = settings()
    if not NAME.fullmatch(args.name):
        raise Error(f"{args.name!r} is not a host name ([a-z0-9][a-z0-9-]*): the gate would refuse it")
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


def cmd_revoke(args: argparse.Namespace) -> int:
    """Every certificate signed for NAME so far is refused by the gate, its open connections closed."""
    fd = open_dir(DIR, 0o755)
    try:
        with locked(fd):
            issued = serials(read(fd, ISSUED), args.name)
            if not issued:
                raise Error(f"no certificate was signed for {args.name!r}", f"see {DIR / ISSUED}")
            text = read(fd, REVOKED) or ""
            new = issued - serials(text)
            write(fd, REVOKED, (text + "".join(f"{s:x} {args.name}\n" for s in sorted(new))).encode(), 0o644)
    finally:
        os.close(fd)
    print(f"revoked {len(new)} certificate(s) of {args.name}; enrol it again with a new key to let it send")
    return 0


def cmd_remove(_args: argparse.Namespace) -> int:
    """The prerm (remove): our firewall rules and backend sockets go; the CA and the journals stay."""
    apply_units({})
    if shutil.which("ufw", path=ENV["PATH"]) is not None:
        added = subprocess.run(["ufw", "show", "added"], capture_output=True, text=True, env=ENV, check=False).stdout
        for rule in re.findall(rf"^ufw (.*) comment '{UFW_TAG}'$", added, re.M):
            subprocess.run(["ufw", "--force", "delete", *rule.split()], capture_output=True, env=ENV, check=False)
    return 0


def common_name(cert: dict | None) -> str:  # type: ignore[type-arg]
    """The CN of a peer certificate as ssl gives it (getpeercert()), or ""."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class Gate:
    """The TLS gate: client certificate checked, CN a NAME not revoked, relayed to that NAME's backend only.

    Each connection counts from its accept (the handshake included) against ``max_total`` and
    ``max_per_peer``: over either, it is closed at once; a handshake gets ``handshake_timeout``
    seconds, a client that sends nothing for ``idle_timeout`` seconds is closed. A connection whose
    certificate is revoked while it is open is closed: ``revoked`` is looked at (one stat, read again only
    when it changed) before each chunk from the client is passed on, and every ``revoked_poll`` seconds."""

    def __init__(self, ctx: ssl.SSLContext, backend_dir: Path = BACKEND_DIR, revoked: Path = DIR / REVOKED, *,
                 max_total: int = MAX_CONNECTIONS, max_per_peer: int = MAX_PER_PEER,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 revoked_poll: float = REVOKED_POLL) -> None:
        self.ctx, self.backend_dir, self.revoked = ctx, backend_dir, revoked
        self.max_total, self.max_per_peer = max_total, max_per_peer
        self.handshake_timeout, self.idle_timeout = handshake_timeout, idle_timeout
        self.revoked_poll = revoked_poll
        self.total = 0
        self.peers: dict[str, int] = {}
        # `revoked` as last read: its (device, inode, size, mtime) and its serials, or why it is unreadable.
        self._revoked_stamp: tuple[int, int, int, int] | None = None
        self._revoked: set[int] | str = set()

    def revoked_serials(self) -> set[int] | str:
        """The serials of ``revoked`` (read again only when its stat changed: revoke renames a new file into
        place), or why it cannot be read (then nobody is let in)."""
        try:
            st = os.stat(self.revoked)
        except FileNotFoundError:
            self._revoked_stamp, self._revoked = None, set()
            return self._revoked
        except OSError as exc:
            self._revoked_stamp = None
            return f"{self.revoked}: unreadable ({exc}): nobody is let in"
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._revoked_stamp:
            try:
                self._revoked = serials(self.revoked.read_text(encoding="ascii"))
            except FileNotFoundError:
                self._revoked = set()
            except (OSError, UnicodeDecodeError) as exc:
                self._revoked_stamp = None
                return f"{self.revoked}: unreadable ({exc}): nobody is let in"
            self._revoked_stamp = stamp
        return self._revoked

    def refused(self, cert: dict | None) -> str:  # type: ignore[type-arg]
        """Why this (CA-checked) certificate may not send, or "" when it may."""
        name = common_name(cert)
        if not NAME.fullmatch(name):
            return f"the certificate's CN {name!r} is not a host name"
        revoked = self.revoked_serials()
        if isinstance(revoked, str):
            return revoked
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if int(str((cert or {})["serialNumber"]), 16) in revoked:
                return f"the certificate of {name} is revoked"
        return ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str((writer.get_extra_info("peername") or ("?",))[0])
        if self.total >= self.max_total or self.peers.get(peer, 0) >= self.max_per_peer:
            writer.transport.abort()
            return
        self.total += 1
        self.peers[peer] = self.peers.get(peer, 0) + 1
        try:
            await self._client(reader, writer, peer)
        finally:
            self.total -= 1
            self.peers[peer] -= 1
            if not self.peers[peer]:
                del self.peers[peer]
            writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            await writer.start_tls(self.ctx, ssl_handshake_timeout=self.handshake_timeout)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError):
            return  # no certificate, one our CA did not sign, or too slow
        cert = writer.get_extra_info("peercert")
        why = self.refused(cert)
        if why:
            print(f"refused {peer}: {why}", file=sys.stderr, flush=True)
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(
                str(self.backend_dir / f"{common_name(cert)}.sock"))
        except OSError as exc:
            print(f"refused {peer}: no journal for {common_name(cert)} here ({exc.strerror})", file=sys.stderr,
                  flush=True)
            return
        why_closed: list[str] = []

        def check() -> bool:
            """True while the peer's certificate may still send."""
            if not why_closed and (why := self.refused(cert)):
                why_closed.append(why)
            return not why_closed

        pipes = asyncio.gather(self._pipe(reader, up_writer, True, self.idle_timeout, check),
                               self._pipe(up_reader, writer, False, None))
        watch = asyncio.ensure_future(self._watch(check))
        try:
            await asyncio.wait((pipes, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            pipes.cancel()
            up_writer.transport.abort()
            writer.transport.abort()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pipes
        if why_closed:
            print(f"closed {peer}: {why_closed[0]}", file=sys.stderr, flush=True)

    async def _watch(self, check: Callable[[], bool]) -> None:
        """Returns (the connection is closed) once ``check`` says no: a client sending nothing is cut too."""
        while check():
            await asyncio.sleep(self.revoked_poll)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, half_close: bool,
                    idle: float | None, check: Callable[[], bool] | None = None) -> None:
        try:
            while data := await asyncio.wait_for(src.read(65536), idle):
                if check is not None and not check():
                    dst.transport.abort()  # revoked meanwhile: this chunk never reaches the journal
                    return
                dst.write(data)
                await dst.drain()
            if half_close and dst.can_write_eof():
                dst.write_eof()
                return
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
        dst.transport.abort()

    async def serve(self, address: str, port: int = PORT) -> None:
        server = await asyncio.start_server(self.handle, address, port, reuse_address=True, backlog=512)
        async with server:
            await server.serve_forever()


def gate_context(key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(DIR / SERVER_CERT, key)
    ctx.load_verify_locations(DIR / CA_CERT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # no certificate, or one our CA did not sign: no connection
    return ctx


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
    asyncio.run(Gate(ctx).serve(address))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polymarket-journal-remote")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="make the CA and the server certificate, listen, open the firewall to the hosts"
                   ).set_defaults(fn=cmd_init)
    p = sub.add_parser("sign", help="sign a host's request (stdin) for its journal upload: sign NAME")
    p.add_argument("name")
    p.set_defaults(fn=cmd_sign)
    p = sub.add_parser("revoke", help="refuse every certificate signed so far for host NAME: revoke NAME")
    p.add_argument("name")
    p.set_defaults(fn=cmd_revoke)
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
    except OSError as exc:  # e.g. /etc/polymarket-monitoring missing, or not run as root
        where = f"{Path(DIR, exc.filename)}: " if exc.filename else ""  # relative: a file of DIR
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        print("hint: run it as root on the monitoring host, polymarket-monitoring installed", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
