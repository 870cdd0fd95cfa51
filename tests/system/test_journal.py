"""Log aggregation in booted containers: the primary's journal reaches the monitoring host.

Two containers on a private L2 segment of the test's own (a bridge in a network namespace,
one veth pair per container; nothing in this machine's network namespace): the "primary"
installs polymarket-hardening (polymarket-journal-upload), the monitoring host "mon"
polymarket-monitoring (polymarket-journal-remote, systemd-journal-remote), with ufw denying
incoming as polymarket-hardening leaves a host. The enrolment is the README's pipe. A third
address on the bridge stands in for a host that is no member. Run under
``flock /tmp/ha-system-test.lock`` like the other segment tests; the namespaces are pmjrPID-*.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.harness import Container

NET = "10.214.0"
ADDR = {"primary": f"{NET}.11", "mon": f"{NET}.13"}
OUTSIDER = f"{NET}.20"  # the bridge's own address: on the segment, not a member
PORT = 19532
REMOTE = "/var/log/journal/remote"
EXTRA = ("systemd-journal-remote",)  # not in ROOTFS_PACKAGES: a rootfs of its own (cached)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass
class Segment:
    nodes: dict[str, Container]
    bridge_ns: str


@pytest.fixture(scope="module")
def journal_rootfs() -> Path:
    missing = harness.missing_prerequisites()
    if missing:
        pytest.skip(f"system tests need: {', '.join(missing)}")
    return harness.rootfs_tarball(extra=EXTRA)


@contextlib.contextmanager
def segment(rootfs: Path) -> Iterator[Segment]:
    tag = f"pmjr{os.getpid() % 10000}"
    spaces = {role: f"{tag}-{role}" for role in ADDR}
    bridge_ns = f"{tag}-lan"
    made = []
    try:
        for ns in (bridge_ns, *spaces.values()):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        sh("ip", "-n", bridge_ns, "link", "set", "lo", "up")
        sh("ip", "-n", bridge_ns, "addr", "add", f"{OUTSIDER}/24", "dev", "br0")
        for role in ADDR:
            sh("ip", "-n", bridge_ns, "link", "add", f"b{role[0]}", "type", "veth", "peer", "name", "lan0",
               "netns", spaces[role])  # fmt: skip
            sh("ip", "-n", bridge_ns, "link", "set", f"b{role[0]}", "master", "br0", "up")
        with contextlib.ExitStack() as stack:
            nodes = {}
            for role in ADDR:
                netns = f"--network-namespace-path=/run/netns/{spaces[role]}"
                caps = "--capability=CAP_NET_ADMIN,CAP_NET_RAW"  # ufw's, as on a real host
                c = stack.enter_context(harness.booted(rootfs, name=f"pmjr-{role}", network="none",
                                                       extra_args=[netns, caps]))  # fmt: skip
                c.sh(f"ip addr add {ADDR[role]}/24 dev lan0 && ip link set lan0 up && ip link set lo up")
                nodes[role] = c
            yield Segment(nodes, bridge_ns)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def enrol(seg: Segment, name: str) -> subprocess.CompletedProcess[str]:
    """The README's pipe: csr on the host, sign on the monitoring host, join on the host."""
    node, mon = seg.nodes[name], seg.nodes["mon"]
    csr = node.sh("polymarket-journal-upload csr").stdout
    bundle = mon.sh(f"polymarket-journal-remote sign {name}", input=csr).stdout
    return node.sh("polymarket-journal-upload join", input=bundle, check=False)


@pytest.fixture(scope="module")
def lan(journal_rootfs: Path, dist: Path) -> Iterator[Segment]:
    with segment(journal_rootfs) as seg:
        p, mon = seg.nodes["primary"], seg.nodes["mon"]
        mon.sh("ufw default deny incoming && ufw limit 22/tcp && ufw --force enable")
        mon.sh(
            "debconf-set-selections",
            input=(
                f"polymarket-monitoring polymarket-monitoring/node_targets string primary={ADDR['primary']} "
                f"mon={ADDR['mon']}\n"
                f"polymarket-monitoring polymarket-monitoring/journal_address string {ADDR['mon']}\n"
            ),
        )
        mon.install_debs([deb(dist, "polymarket-monitoring")])
        p.sh("echo 'polymarket-hardening polymarket-hardening/allow_users string admin' | debconf-set-selections")
        p.install_debs([deb(dist, "polymarket-hardening")])
        yield seg


def remote_lines(mon: Container, tag: str) -> str:
    """The messages of every received journal (of identifier ``tag`` when given)."""
    only = f"-t {tag}" if tag else ""
    return mon.sh(f"journalctl -D {REMOTE} {only} -o cat --no-pager 2>/dev/null", check=False).stdout


def remote_file(mon: Container, name: str) -> str:
    """The messages of the journal files of certificate name ``name`` only (the README's way)."""
    return mon.sh(f"journalctl --file '{REMOTE}/remote-{name}*' -o cat --no-pager 2>/dev/null", check=False).stdout


def test_ca_keys_socket_and_firewall_on_the_monitoring_host(lan: Segment) -> None:
    mon = lan.nodes["mon"]
    modes = mon.sh("stat -c '%n %a %U' /etc/polymarket-monitoring/journal/*").stdout.splitlines()
    assert "/etc/polymarket-monitoring/journal/ca.key 600 root" in modes
    assert "/etc/polymarket-monitoring/journal/server.key 600 root" in modes
    listening = mon.sh(f"ss -Hltn 'sport = :{PORT}'").stdout.split()
    assert f"{ADDR['mon']}:{PORT}" in listening and f"*:{PORT}" not in listening, listening
    assert f"0.0.0.0:{PORT}" not in listening
    # systemd-journal-remote itself (plain HTTP): no TCP port at all (127.0.0.1:19533 was open to every local
    # user), one unix socket per host that only the gate's group may open.
    assert mon.sh(f"ss -Hltn 'sport = :{PORT + 1}'").stdout.split() == []
    socks = mon.sh("stat -c '%n %F %a %U %G' /run/polymarket-journal/*").stdout.splitlines()
    assert socks == [f"/run/polymarket-journal/{n}.sock socket 660 root polymarket-journal" for n in ("mon", "primary")]
    assert "polymarket-journal" in mon.sh("cat /proc/$(systemctl show -p MainPID --value polymarket-journal-gate)"
                                          "/status | grep ^Groups; getent group polymarket-journal").stdout  # fmt: skip
    # A local user who is not root: cannot write through the backend, nor put a socket of its own in its place.
    entry = "MESSAGE=pmjr-local-forgery\\n_HOSTNAME=pmjr-primary\\n\\n"
    for n in ("primary", "mon"):
        out = mon.sh(f"printf '{entry}' | runuser -u nobody -- curl -sS --unix-socket /run/polymarket-journal/{n}.sock"
                     " -H 'Content-Type: application/vnd.fdo.journal' --data-binary @- http://x/upload",
                     check=False)  # fmt: skip
        assert out.returncode == 7, (n, out)  # curl: could not connect
        out = mon.sh("runuser -u nobody -- python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect("
                     f"'/run/polymarket-journal/{n}.sock')\"", check=False)  # fmt: skip
        assert out.returncode != 0 and "PermissionError" in out.stderr, (n, out)
    squat = mon.sh("runuser -u nobody -- python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind("
                   "'/run/polymarket-journal/x.sock')\"", check=False)  # fmt: skip
    assert squat.returncode != 0 and "Permission denied" in squat.stderr
    time.sleep(1)
    assert "pmjr-local-forgery" not in remote_lines(mon, "")
    rules = mon.sh("ufw status").stdout
    assert f"{ADDR['mon']} {PORT}/tcp" in rules and ADDR["primary"] in rules, rules
    assert OUTSIDER not in rules


def test_join_refuses_a_certificate_for_another_key_and_installs_nothing(lan: Segment) -> None:
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    p.sh("polymarket-journal-upload csr >/dev/null")  # the host's own key exists
    other = mon.sh("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout /dev/null "
                   "-subj /CN=x 2>/dev/null").stdout  # fmt: skip
    bundle = mon.sh("polymarket-journal-remote sign primary", input=other).stdout
    out = p.sh("polymarket-journal-upload join", input=bundle, check=False)
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == "error: the certificate is not for this host's key", out.stderr
    assert p.sh("ls /etc/polymarket-hardening/journal-upload/").stdout.split() == ["client.csr", "client.key"]
    assert p.sh("test -e /etc/systemd/journal-upload.conf.d/polymarket-hardening.conf", check=False).returncode


def test_the_primarys_log_line_is_readable_on_the_monitoring_host(lan: Segment) -> None:
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    joined = enrol(lan, "primary")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "uploading to https://10.214.0.13:19532" in joined.stdout
    key = p.sh("stat -c '%a %U' /etc/polymarket-hardening/journal-upload/client.key").stdout.split()
    assert key == ["600", "root"]
    marker = f"pmjr-{uuid.uuid4().hex}"
    start = time.monotonic()
    p.sh(f"logger -t pmjr-test {marker}")
    deadline = start + 60
    while marker not in remote_lines(mon, "pmjr-test"):
        assert time.monotonic() < deadline, (
            "the primary's line never reached the monitoring host: "
            + p.sh(
                "systemctl status systemd-journal-upload --no-pager; journalctl -u systemd-journal-upload "
                "--no-pager | tail -20",
                check=False,
            ).stdout
            + mon.sh("journalctl -u systemd-journal-remote --no-pager | tail -20", check=False).stdout
        )
        time.sleep(0.5)
    took = time.monotonic() - start
    print(f"\nthe primary's log line was readable on the monitoring host after {took:.1f} s")
    # One file per certificate name, and the README's way of reading one host's logs.
    files = mon.sh(f"ls {REMOTE}").stdout.split()
    assert "remote-primary.journal" in files, files
    assert marker in mon.sh(f"journalctl --file '{REMOTE}/remote-primary*' -o cat --no-pager").stdout


def test_the_primarys_certificate_cannot_write_the_journal_of_another_host(lan: Segment) -> None:
    """Review finding 2: the primary uploads entries that say they come from mon (_HOSTNAME, Host:): they are
    stored in the primary's file, the one its certificate names; mon's file gets none of them."""
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    p.sh(
        "logger -t pmjr-src2 src && sleep 1 && journalctl -o export -t pmjr-src2 -n 1 | sed "
        "'s/pmjr-src2/pmjr-impostor/; s/^MESSAGE=src$/MESSAGE=pmjr-impostor/; s/^_HOSTNAME=.*/_HOSTNAME=pmjr-mon/'"
        " > /tmp/impostor"
    )
    tls = "/etc/polymarket-hardening/journal-upload/client"
    p.sh(f"curl -sS -k --fail-with-body --cert {tls}.crt --key {tls}.key -H 'Host: pmjr-mon' "
         f"-H 'Content-Type: application/vnd.fdo.journal' --data-binary @/tmp/impostor "
         f"https://{ADDR['mon']}:{PORT}/upload")  # fmt: skip
    deadline = time.monotonic() + 30
    while "pmjr-impostor" not in mon.sh(f"journalctl --file '{REMOTE}/remote-primary*' -t pmjr-impostor -o cat "
                                        "--no-pager", check=False).stdout:  # fmt: skip
        assert time.monotonic() < deadline, mon.sh(f"ls -l {REMOTE}").stdout
        time.sleep(0.5)
    assert not [f for f in mon.sh(f"ls {REMOTE}").stdout.split() if f.startswith("remote-mon")]
    assert "pmjr-impostor" not in mon.sh(f"journalctl --file '{REMOTE}/remote-mon*' -o cat --no-pager 2>&1",
                                         check=False).stdout  # fmt: skip


def test_a_client_without_a_ca_signed_certificate_is_refused(lan: Segment) -> None:
    """A member (the firewall lets it in) with no certificate, or a self-signed one, sends nothing."""
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    p.sh(
        "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
        "-subj /CN=primary -keyout self.key -out self.crt 2>/dev/null"
    )
    # One valid entry in the Journal Export Format (what systemd-journal-upload sends): a real one of the
    # primary's journal, its identifier and message renamed to ones that were never logged anywhere.
    p.sh(
        "logger -t pmjr-src src && sleep 1 && journalctl -o export -t pmjr-src -n 1 "
        "| sed 's/pmjr-src/pmjr-forged/; s/^MESSAGE=src$/MESSAGE=pmjr-forged/' > /tmp/entry"
    )
    url = f"https://{ADDR['mon']}:{PORT}/upload"
    for cert in ("", "--cert /tmp/self.crt --key /tmp/self.key"):
        out = p.sh(
            f"curl -sS -k -o /dev/null -w '%{{http_code}}' {cert} -H 'Content-Type: application/vnd.fdo.journal'"
            f" --data-binary @/tmp/entry {url}",
            check=False,
        )
        assert out.stdout.strip() in ("", "000") or out.stdout.strip().startswith(("4", "5")), (cert, out.stdout)
    time.sleep(2)
    assert "pmjr-forged" not in remote_lines(mon, "pmjr-forged")
    # The same request with the primary's CA-signed certificate is taken: the refusals above are the
    # certificate's, not a malformed entry's.
    tls = "/etc/polymarket-hardening/journal-upload/client"
    signed = f"--cert {tls}.crt --key {tls}.key"
    p.sh(
        f"sed -i 's/pmjr-forged/pmjr-signed/g' /tmp/entry && curl -sS -k --fail-with-body {signed} "
        f"-H 'Content-Type: application/vnd.fdo.journal' --data-binary @/tmp/entry {url}"
    )
    deadline = time.monotonic() + 30
    while "pmjr-signed" not in remote_lines(mon, "pmjr-signed"):
        assert time.monotonic() < deadline, (
            "the CA-signed client's entry was not written either: "
            + mon.sh(
                "journalctl -u systemd-journal-remote -u polymarket-journal-gate --no-pager | tail -8", check=False
            ).stdout
        )
        time.sleep(0.5)


def test_a_host_that_is_no_member_cannot_reach_the_port(lan: Segment) -> None:
    """ufw on the monitoring host: the segment's third address gets no TCP connection at all."""
    out = subprocess.run(["ip", "netns", "exec", lan.bridge_ns, "timeout", "5", "bash", "-c",
                          f"exec 3<>/dev/tcp/{ADDR['mon']}/{PORT}"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode != 0
    member = lan.nodes["primary"].sh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ADDR['mon']}/{PORT}'", check=False)
    assert member.returncode == 0, member.stderr


def signed_upload(node: Container, cert: str, key: str, tag: str) -> subprocess.CompletedProcess[str]:
    """One entry (tag ``tag``) uploaded with ``cert``/``key`` by curl: its HTTP code, as curl prints it."""
    node.sh(f"logger -t pmjr-src3 src && sleep 0.5 && journalctl -o export -t pmjr-src3 -n 1 "
            f"| sed 's/pmjr-src3/{tag}/; s/^MESSAGE=src$/MESSAGE={tag}/' > /tmp/{tag}")  # fmt: skip
    return node.sh(f"curl -sS -k -o /dev/null -w '%{{http_code}}' --cert {cert} --key {key} "
                   f"-H 'Content-Type: application/vnd.fdo.journal' --data-binary @/tmp/{tag} "
                   f"https://{ADDR['mon']}:{PORT}/upload", check=False)  # fmt: skip


def enrol_mon(mon: Container) -> tuple[str, str]:
    """mon enrolled as a host of its own (it is one of node_targets): its key and certificate in /root."""
    csr = mon.sh("cd /root && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                 "-keyout mon.key -subj /CN=x 2>/dev/null").stdout  # fmt: skip
    bundle = mon.sh("polymarket-journal-remote sign mon", input=csr).stdout
    mon.sh("openssl x509 -out /root/mon.crt", input=bundle)
    return "/root/mon.crt", "/root/mon.key"


def test_idle_connections_do_not_exhaust_the_gate(lan: Segment) -> None:
    """Review finding 3: 2,000 idle TCP connections held open to the gate (from mon's own address, no handshake):
    the gate keeps at most 16 of them and few descriptors; the primary's upload is written meanwhile."""
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    holder = (
        "import socket, time\n"
        "socks = []\n"
        "for _ in range(2000):\n"
        "    s = socket.socket(); s.settimeout(5)\n"
        f"    s.connect(('{ADDR['mon']}', {PORT})); socks.append(s)\n"
        "open('/run/pmjr-idle.up', 'w').write(str(len(socks)))\n"
        "time.sleep(40)\n"
    )
    mon.sh("cat > /root/idle.py", input=holder)
    mon.sh("rm -f /run/pmjr-idle.up; systemd-run --unit pmjr-idle -p LimitNOFILE=8192 python3 /root/idle.py")
    try:
        deadline = time.monotonic() + 60
        while mon.sh("cat /run/pmjr-idle.up 2>/dev/null", check=False).stdout.strip() != "2000":
            assert time.monotonic() < deadline, mon.sh("systemctl status pmjr-idle --no-pager", check=False).stdout
            time.sleep(0.5)
        gate = mon.sh("systemctl show -p MainPID --value polymarket-journal-gate").stdout.strip()
        fds = int(mon.sh(f"ls /proc/{gate}/fd | wc -l").stdout)
        held = mon.sh(f"ss -Htn state established 'dport = :{PORT}' src {ADDR['mon']} | wc -l").stdout.strip()
        tls = "/etc/polymarket-hardening/journal-upload/client"
        start = time.monotonic()
        code = signed_upload(p, f"{tls}.crt", f"{tls}.key", "pmjr-busy")
        took = time.monotonic() - start
        print(f"\n2000 idle connections opened: the gate has {fds} descriptors, {held} client sockets still "
              f"established; the primary's upload answered {code.stdout} in {took:.2f} s")  # fmt: skip
        assert code.stdout == "202", code.stdout + code.stderr
        assert fds < 100, fds
        deadline = time.monotonic() + 30
        while "pmjr-busy" not in remote_file(mon, "primary"):
            assert time.monotonic() < deadline, "the primary's upload was answered but not written"
            time.sleep(0.5)
    finally:
        mon.sh("systemctl stop pmjr-idle", check=False)


def test_a_revoked_node_is_refused_the_others_still_pass(lan: Segment) -> None:
    """Review finding 4: `revoke primary` on the monitoring host: the primary's certificate gets no answer from its
    next connection on (nothing written), mon's certificate still uploads; enrolled again, the primary sends."""
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    tls = "/etc/polymarket-hardening/journal-upload/client"
    mon_cert, mon_key = enrol_mon(mon)
    assert signed_upload(p, f"{tls}.crt", f"{tls}.key", "pmjr-before").stdout == "202"
    out = mon.sh("polymarket-journal-remote revoke primary")
    assert re.match(r"revoked [12] certificate\(s\) of primary", out.stdout), out.stdout  # 2: one for another key
    refused = signed_upload(p, f"{tls}.crt", f"{tls}.key", "pmjr-revoked")
    assert refused.stdout in ("", "000"), refused.stdout
    assert signed_upload(mon, mon_cert, mon_key, "pmjr-other").stdout == "202"
    time.sleep(2)
    assert "pmjr-revoked" not in mon.sh(f"journalctl -D {REMOTE} -o cat --no-pager", check=False).stdout
    assert "pmjr-other" in mon.sh(f"journalctl --file '{REMOTE}/remote-mon*' -o cat --no-pager").stdout
    assert enrol(lan, "primary").returncode == 0
    assert signed_upload(p, f"{tls}.crt", f"{tls}.key", "pmjr-again").stdout == "202"
    dates = p.sh(f"openssl x509 -noout -startdate -enddate -dateopt iso_8601 -in {tls}.crt").stdout.split()
    print(f"\nthe primary's new certificate: {dates}")


OPEN_THEN_REVOKE = """import socket, ssl, subprocess, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
tls = ctx.wrap_socket(socket.create_connection((sys.argv[3], int(sys.argv[4])), timeout=10))
time.sleep(1)  # relayed to the backend
print(subprocess.run(["polymarket-journal-remote", "revoke", "mon"], capture_output=True, text=True).stdout.strip())
body = open(sys.argv[5], "rb").read()
head = "POST /upload HTTP/1.1\\r\\nHost: mon\\r\\nContent-Type: application/vnd.fdo.journal\\r\\n"
try:
    tls.sendall(f"{head}Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
    print("answer", tls.recv(100))
except OSError as exc:
    print("answer", type(exc).__name__)
"""


def test_parallel_signs_then_revoke_cuts_the_open_connection(lan: Segment) -> None:
    """Attack 10: 12 `sign mon` at once on the monitoring host: every serial handed out is in `issued` (were
    lost); a connection mon opened before `revoke mon` gets its next upload cut (it was answered 202 and
    written); `revoke` as nobody is one error line. After test_a_revoked_node... (it needs mon's certificate)."""
    mon = lan.nodes["mon"]
    journal = "/etc/polymarket-monitoring/journal"
    mon.sh("cd /root && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout par.key -subj /CN=x -out par.csr 2>/dev/null")  # fmt: skip
    mon.sh("cd /root && for i in $(seq 12); do polymarket-journal-remote sign mon <par.csr >par.$i 2>par.$i.err & done;"
           " wait; cat par.*.err")  # fmt: skip
    errors = mon.sh("cat /root/par.*.err").stdout
    handed_out = {
        int(line.split("=")[1], 16)
        for line in mon.sh("for i in $(seq 12); do openssl x509 -noout -serial -in /root/par.$i; done").stdout.split()
    }
    issued = {int(line.split()[0], 16) for line in mon.sh(f"cat {journal}/issued").stdout.splitlines()}
    print(f"\n12 parallel signs on mon: {len(handed_out & issued)} of {len(handed_out)} serials in issued")
    assert errors == "" and len(handed_out) == 12 and handed_out <= issued, errors
    assert mon.sh(f"ls -A {journal} | grep '^\\.' || true").stdout == ""
    mon.sh("openssl x509 -out /root/par.crt -in /root/par.1")
    mon.sh("logger -t pmjr-src4 src && sleep 0.5 && journalctl -o export -t pmjr-src4 -n 1 "
           "| sed 's/pmjr-src4/pmjr-open/; s/^MESSAGE=src$/MESSAGE=pmjr-open/' > /tmp/pmjr-open")  # fmt: skip
    mon.sh("cat > /root/open_then_revoke.py", input=OPEN_THEN_REVOKE)
    out = mon.sh(f"python3 /root/open_then_revoke.py /root/par.crt /root/par.key {ADDR['mon']} {PORT} /tmp/pmjr-open"
                 ).stdout.splitlines()  # fmt: skip
    print(out)
    assert out[0].startswith("revoked ") and "of mon" in out[0], out
    assert out[1] in ("answer b''", "answer ConnectionResetError", "answer SSLEOFError"), out
    time.sleep(2)
    assert "pmjr-open" not in mon.sh(f"journalctl -D {REMOTE} -o cat --no-pager", check=False).stdout
    nobody = mon.sh("runuser -u nobody -- polymarket-journal-remote revoke mon", check=False)
    assert nobody.returncode == 1 and nobody.stderr.splitlines()[0].startswith("error: "), nobody.stderr
    assert "Traceback" not in nobody.stderr


def test_remove_closes_the_port_and_keeps_the_ca_purge_deletes_it(lan: Segment) -> None:
    """Last (it removes both packages): remove stops the upload and the gate and drops our ufw rules, the CA and
    the received journals stay; purge deletes the keys on both sides."""
    p, mon = lan.nodes["primary"], lan.nodes["mon"]
    p.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y polymarket-hardening")
    assert p.sh("systemctl is-enabled systemd-journal-upload", check=False).stdout.strip() == "disabled"
    assert p.sh("test -e /etc/systemd/journal-upload.conf.d/polymarket-hardening.conf", check=False).returncode
    assert p.sh("stat -c %a /etc/polymarket-hardening/journal-upload/client.key").stdout.strip() == "600"
    mon.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y polymarket-monitoring")
    assert "polymarket-journal" not in mon.sh("ufw status").stdout
    assert mon.sh("systemctl is-active polymarket-journal-gate", check=False).stdout.strip() != "active"
    assert mon.sh("stat -c %a /etc/polymarket-monitoring/journal/ca.key").stdout.strip() == "600"
    assert "remote-primary.journal" in mon.sh(f"ls {REMOTE}").stdout
    assert mon.sh("ls /etc/systemd/system/sockets.target.wants/ | grep polymarket-journal", check=False).stdout == ""
    assert mon.sh("test -e /run/polymarket-journal/primary.sock", check=False).returncode
    p.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-hardening")
    mon.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y polymarket-monitoring")
    assert p.sh("test -e /etc/polymarket-hardening/journal-upload", check=False).returncode
    assert mon.sh("test -e /etc/polymarket-monitoring/journal", check=False).returncode
