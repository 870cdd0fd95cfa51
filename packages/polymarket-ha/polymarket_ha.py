#!/usr/bin/python3
"""polymarket-ha: high availability of the Polymarket deployment.

keepalived (VRRP) owns the virtual IP; this tool renders its configuration and
HAProxy's from /etc/polymarket-ha/ha.conf, is keepalived's notify script
(MASTER: promote, then let the bot trade; anything else: make the bot passive),
snapshots the SQLite ledger with the online backup API and ships it to the peer
with rsync over ssh, and reports the HA state. Only the standard library.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import pwd
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("polymarket-ha")

SETTINGS = Path("/etc/polymarket-ha/ha.conf")
STATE_DIR = Path("/var/lib/polymarket-ha")
RUN_DIR = Path("/run/polymarket-ha")
PASSIVE = Path("/run/polymarket/passive")
STATUS_JSON = Path("/run/polymarket/ha-status.json")
# The ledger is the bot's DB_PATH (ledger_path); this is its name on the wire, in replica/ and in previous/.
REPLICA_NAME = "trade_history.db"
BOT_CONFIG_TIMEOUT = 30  # seconds "polymarket-bot config get DB_PATH" may take
# The bot's state directory, in root's /var/lib: DB_PATH must be a file directly in it. Re-checked here on the
# bot's answer (never trusted): the bot's user owns the directory and could swap a subdirectory for a link.
LEDGER_DIR = Path("/var/lib/polymarket")
BOT_UNIT = "polymarket-bot.service"
BOT_USER = "polymarket-bot"
HA_USER = "polymarket-ha"
REPLICA_DIR = STATE_DIR / "replica"
OUTGOING_DIR = STATE_DIR / "outgoing"
PREVIOUS_DIR = STATE_DIR / "previous"
SSH_DIR = STATE_DIR / ".ssh"
KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
LAST_ACTIVE = STATE_DIR / "last-active"
# The lease generation (the leader key's etcd create revision) this node last held a valid lease under,
# written by its lease keeper: what a promotion compares with the replica's (never file times).
OWN_GENERATION = STATE_DIR / "lease-generation"  # traded under: copied by the trading node's promotion/heartbeat
RUN_GENERATION = RUN_DIR / "lease-generation"  # held now: the keeper's (its sandbox writes only /run)
LAST_REPLICATION = STATE_DIR / "last-replication.json"
VRRP_STATE = RUN_DIR / "vrrp-state"
PROMOTING = RUN_DIR / "promoting"
NOTIFY_LOCK = RUN_DIR / "notify.lock"
# Textfile metrics for the node exporter (polymarket-monitoring's metrics contract): one file, replaced atomically.
TEXTFILE_DIR = Path("/var/lib/prometheus/node-exporter")
METRICS_NAME = "polymarket-ha.prom"
METRICS_LOCK = RUN_DIR / "metrics.lock"
LEASE_SEEN = RUN_DIR / "lease-held"  # lease-check's last answer: the metric is rewritten when it changes
REPLICATE_UNIT = "polymarket-ha-replicate.service"
RRSYNC = "/usr/bin/rrsync"
# Deadlines of replicate's children (they run as service users, which can stop them): seconds.
SNAPSHOT_TIMEOUT = 120
SEND_TIMEOUT = 600
ROLES = ("primary", "standby", "lb")
# previous/ keeps the ledgers replaced by the last promotions, no more (each a set of db, -wal, -shm).
PREVIOUS_KEEP = 5
# A promotion takes at most: stop the bot (90 s), start it, 60 s for /health. A "promoting" marker older
# than this, or whose process is gone, is stale (a promotion killed midway) and is ignored by check-bot.
PROMOTING_MAX_AGE = 300
PRIORITY = {"primary": 150, "standby": 100}

# -- the trading lease (issue 11): etcd, three members, a leader key under a lease --------------------------------
ETCD_DIR = Path("/etc/polymarket-ha/etcd")
ETCD_CA_KEY = ETCD_DIR / "ca.key"      # the lb only: the cluster CA's private key
ETCD_CA = ETCD_DIR / "ca.crt"
ETCD_KEY = ETCD_DIR / "member.key"    # made on each node, never leaves it
ETCD_CSR = ETCD_DIR / "member.csr"
ETCD_CERT = ETCD_DIR / "member.crt"   # signed by the CA on the lb (etcd-sign), installed by etcd-join
ETCD_DATA = "/var/lib/etcd/polymarket"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
LEASE_FILE = Path("/run/polymarket/lease")
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
BOOT_ID_ENV = "POLYMARKET_HA_BOOT_ID"  # set to systemd's %b by polymarket-ha-lease.service (see boot_id)
LEADER_KEY = "/polymarket/leader"
# Written by a holder that gives the key up on purpose (a clean stop: switchover, upgrade), after its lease file
# says nobody and under the compare that the key is still its own: the ID of the lease it gives up.
RELEASED_KEY = "/polymarket/released"
LEASE_TTL = 6            # seconds: etcd expires the key this long after the last keepalive it received
LEASE_RENEW = 1.0        # a keepalive every second: the deadline is renewed 5 times per TTL
LEASE_RATE = 0.01        # clocks may run 1 % apart (NTP slews at most 0.05 %)
LEASE_MARGIN = 0.5       # seconds for an order checked just before the deadline to reach the exchange
LEASE_REQUEST_TIMEOUT = 1.0
# The fence (issue 11, promotion): "leader trade K was copied by the lease holder", in etcd under COPIED_PREFIX,
# written through the lease keeper's unix socket (the bot holds no etcd credential) by a transaction that
# succeeds only while LEADER_KEY is this node's, under this node's lease.
FENCE_SOCKET = RUN_DIR / "fence.sock"
COPIED_PREFIX = "/polymarket/copied/"
FENCE_BUCKET = 60        # seconds: one etcd lease per minute (and per TTL asked) carries the copied keys
FENCE_MAX_TTL = 7 * 86400
FENCE_MAX_REQUEST = 65536


class HAError(Exception):
    """A failure with a one-line message and a hint for the operator."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Settings:
    role: str
    own_address: str
    peer_address: str
    virtual_ip: str  # address/prefix
    interface: str
    router_id: int
    backends: tuple[str, ...]
    bot_port: int = 8080
    witness_address: str = ""  # the lb, third etcd member (primary/standby); empty: no lease (legacy VRRP only)
    metrics_allow: tuple[str, ...] = ()  # lb: who may scrape HAProxy's exporter on OWN_ADDRESS; empty: loopback only

    @property
    def members(self) -> dict[str, str]:
        """The etcd members by name (primary, standby, lb), or {} when the lease is not configured."""
        if self.role in PRIORITY:
            if not self.witness_address:
                return {}
            other = "standby" if self.role == "primary" else "primary"
            return {self.role: self.own_address, other: self.peer_address, "lb": self.witness_address}
        if len(self.backends) != 2:
            return {}
        return {"primary": self.backends[0], "standby": self.backends[1], "lb": self.own_address}

    @property
    def lease(self) -> bool:
        return bool(self.members)

    @property
    def vip_address(self) -> str:
        return self.virtual_ip.split("/", 1)[0]

    @property
    def ha_node(self) -> bool:
        return self.role in PRIORITY


def _address(value: str, what: str, *, empty_ok: bool = False) -> str:
    if not value and empty_ok:
        return ""
    return check_address(value, what, f"fix it in {SETTINGS}")


def read_pairs(text: str) -> dict[str, str]:
    """ha.conf's KEY=value lines (the value quoted or not), unchecked: the one grammar of the file."""
    raw: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise HAError(f"{SETTINGS}:{number}: not KEY=value", "see the comments in the file")
        raw[key.strip()] = value.strip().strip('"')
    return raw


def parse_settings(text: str) -> Settings:
    """Parse ha.conf (KEY="value" lines, as the postinst writes them)."""
    raw = read_pairs(text)
    role = raw.get("ROLE", "")
    if role not in ROLES:
        raise HAError(f"ROLE {role!r} is not one of {', '.join(ROLES)}", "dpkg-reconfigure polymarket-ha")
    vip = raw.get("VIRTUAL_IP", "")
    backend_text = raw.get("BACKENDS", "")
    # The lb needs the VIP only when it has no BACKENDS (HAProxy sends to the VIP then).
    vip_needed = role in PRIORITY or not backend_text.split()
    try:
        net = ipaddress.ip_interface(vip if "/" in vip else f"{vip}/32") if vip or vip_needed else None
    except ValueError:
        hint = "dpkg-reconfigure polymarket-ha, or preseed polymarket-ha/virtual_ip"
        if not vip:
            raise HAError("VIRTUAL_IP is not set" + ("" if role in PRIORITY else " (the lb has no BACKENDS)"),
                          hint) from None
        raise HAError(f"VIRTUAL_IP {vip!r} is not an address[/prefix]", hint) from None
    interface = raw.get("INTERFACE", "enp1s0")
    try:
        check_interface(interface)
    except HAError as exc:
        raise HAError(f"INTERFACE: {exc}", exc.hint) from None
    try:
        router_id = int(raw.get("ROUTER_ID", "51"))
    except ValueError:
        router_id = 0
    if not 1 <= router_id <= 255:
        raise HAError(f"ROUTER_ID {raw.get('ROUTER_ID')!r} is not 1-255", "dpkg-reconfigure polymarket-ha")
    own = _address(raw.get("OWN_ADDRESS", ""), "OWN_ADDRESS")
    peer = _address(raw.get("PEER_ADDRESS", ""), "PEER_ADDRESS", empty_ok=True)
    if role in PRIORITY and not peer:
        raise HAError(f"PEER_ADDRESS is empty on the {role}", "dpkg-reconfigure polymarket-ha")
    backends = tuple(_address(b, "BACKENDS entry") for b in raw.get("BACKENDS", "").split())
    witness = _address(raw.get("WITNESS_ADDRESS", ""), "WITNESS_ADDRESS", empty_ok=True)
    if role in PRIORITY and witness and len({own, peer, witness}) != 3:
        raise HAError("OWN_ADDRESS, PEER_ADDRESS and WITNESS_ADDRESS must be three different hosts",
                      "dpkg-reconfigure polymarket-ha")
    allow_text = raw.get("METRICS_ALLOW", "")
    try:
        no_control(allow_text, "METRICS_ALLOW")
    except HAError as exc:
        raise HAError(str(exc), f"fix it in {SETTINGS}") from None
    allow = tuple(_address(a, "METRICS_ALLOW entry") for a in allow_text.split())
    return Settings(role, own, peer, f"{net.ip}/{net.network.prefixlen}" if net else "", interface, router_id,
                    backends, witness_address=witness, metrics_allow=allow)


def load_settings(path: Path = SETTINGS) -> Settings:
    try:
        return parse_settings(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HAError(f"{path} is missing", "dpkg-reconfigure polymarket-ha") from None


# ha.conf's keys as `polymarket-ha get KEY` prints them (the shell helpers and maintainer scripts read the file
# through it, never with sed): the validated value, BACKENDS space-separated, an unset optional key empty.
GET_KEYS: dict[str, Any] = {
    "ROLE": lambda s: s.role,
    "OWN_ADDRESS": lambda s: s.own_address,
    "PEER_ADDRESS": lambda s: s.peer_address,
    "VIRTUAL_IP": lambda s: s.virtual_ip,
    "INTERFACE": lambda s: s.interface,
    "ROUTER_ID": lambda s: str(s.router_id),
    "BACKENDS": lambda s: " ".join(s.backends),
    "WITNESS_ADDRESS": lambda s: s.witness_address,
    "METRICS_ALLOW": lambda s: " ".join(s.metrics_allow),
}


def cmd_get(args: argparse.Namespace) -> int:
    if args.key not in GET_KEYS:
        print(f"error: unknown key {args.key!r} (one of {', '.join(GET_KEYS)})", file=sys.stderr)
        return 2
    path = Path(args.settings)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HAError(f"{path} is missing", "dpkg-reconfigure polymarket-ha") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HAError(f"{path}: cannot read it: {exc}", "dpkg-reconfigure polymarket-ha") from None
    if args.raw:
        print(read_pairs(text).get(args.key, ""))
    else:
        print(GET_KEYS[args.key](parse_settings(text)))
    return 0


def settings_for_timer(what: str) -> Settings | None:
    """The settings, or None (logged) while the node is not configured yet.

    The timers fire on a node whose debconf questions have not been answered
    (installed by hand, before dpkg-reconfigure): that is not a failure of the
    unit, so they log why they do nothing and exit 0. The operator's commands
    (status, ...) still fail with the one-line error.
    """
    try:
        return load_settings()
    except HAError as exc:
        log.warning("%s: polymarket-ha is not configured (%s): nothing to do; run: dpkg-reconfigure polymarket-ha",
                    what, exc)
        return None


# -- rendering --------------------------------------------------------------------

HEADER = ("# Generated by polymarket-ha from {src}; edits here are kept by ucf.\n"
          "# Change the settings with: dpkg-reconfigure polymarket-ha\n")


def render_keepalived(s: Settings) -> str:
    """keepalived.conf of a primary or standby node."""
    if not s.ha_node:
        raise HAError(f"the {s.role} runs no keepalived")
    return HEADER.format(src=SETTINGS) + f"""
global_defs {{
    router_id polymarket-{s.role}
    # Scripts run as root and must not be writable by anyone else.
    script_user root
    enable_script_security
    vrrp_garp_master_refresh 60
}}

# The node is fit to hold the VIP only while its bot process is live (/live:
# it answers and its loop turns, active or passive), never on the exchange's
# freshness: a Data API outage does not fail over. A planned restart (or a
# promotion's) is not a failure; a killed, stopped or hung bot is, for 2 checks.
vrrp_script polymarket_bot {{
    script "/usr/lib/polymarket-ha/check-bot {s.own_address} {s.bot_port}"
    interval 2
    timeout 4
    fall 2
    rise 2
}}
{_lease_script(s)}
vrrp_instance polymarket {{
    # Both nodes start as BACKUP with nopreempt: a recovered primary does not
    # take the VIP back from a healthy standby (one failover, not two).
    state BACKUP
    nopreempt
    interface {s.interface}
    virtual_router_id {s.router_id}
    priority {PRIORITY[s.role]}
    advert_int 1
    # Unicast to the one peer; adverts from any other source are dropped.
    # No "authentication": VRRPv2 PASS is a cleartext password on the wire
    # and VRRPv3 removed authentication altogether.
    unicast_src_ip {s.own_address}
    unicast_peer {{
        {s.peer_address}
    }}
    check_unicast_src
    virtual_ipaddress {{
        {s.virtual_ip} dev {s.interface}
    }}
    track_script {{
        polymarket_bot{"" if not s.lease else chr(10) + "        polymarket_lease"}
    }}
    notify "/usr/sbin/polymarket-ha notify"
}}
"""


def _lease_script(s: Settings) -> str:
    if not s.lease:
        return ""
    return f"""
# The VIP follows the trading lease: without a valid lease in {LEASE_FILE} naming
# this node (etcd, issue 11) the instance is FAULT and holds no VIP.
vrrp_script polymarket_lease {{
    script "/usr/sbin/polymarket-ha lease-check"
    interval 1
    timeout 2
    fall 1
    rise 1
}}
"""


def render_etcd_env(s: Settings) -> str:
    """Environment of etcd.service (polymarket-ha's drop-in): one member of the three, TLS everywhere."""
    members = s.members
    if not members:
        raise HAError(f"the {s.role} has no etcd members configured",
                      "set polymarket-ha/witness_address (primary, standby) or two BACKENDS (lb)")
    name = s.role
    host = f"[{s.own_address}]" if ":" in s.own_address else s.own_address

    def url(addr: str, port: int) -> str:
        return f"https://[{addr}]:{port}" if ":" in addr else f"https://{addr}:{port}"

    cluster = ",".join(f"{n}={url(a, ETCD_PEER_PORT)}" for n, a in members.items())
    tls = (f"ETCD_CERT_FILE={ETCD_CERT}\nETCD_KEY_FILE={ETCD_KEY}\nETCD_TRUSTED_CA_FILE={ETCD_CA}\n"
           "ETCD_CLIENT_CERT_AUTH=true\n"
           f"ETCD_PEER_CERT_FILE={ETCD_CERT}\nETCD_PEER_KEY_FILE={ETCD_KEY}\nETCD_PEER_TRUSTED_CA_FILE={ETCD_CA}\n"
           "ETCD_PEER_CLIENT_CERT_AUTH=true\n")
    return HEADER.format(src=SETTINGS) + (
        "# Read by etcd.service through polymarket-ha's drop-in (overrides /etc/default/etcd).\n"
        f"ETCD_NAME={name}\n"
        f"ETCD_DATA_DIR={ETCD_DATA}\n"
        f"ETCD_LISTEN_PEER_URLS=https://{host}:{ETCD_PEER_PORT}\n"
        f"ETCD_LISTEN_CLIENT_URLS=https://{host}:{ETCD_CLIENT_PORT}\n"
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{host}:{ETCD_PEER_PORT}\n"
        f"ETCD_ADVERTISE_CLIENT_URLS=https://{host}:{ETCD_CLIENT_PORT}\n"
        f"ETCD_INITIAL_CLUSTER={cluster}\n"
        "ETCD_INITIAL_CLUSTER_STATE=new\n"
        "ETCD_INITIAL_CLUSTER_TOKEN=polymarket-ha\n"
        "# etcd's defaults: heartbeat 100 ms, election 1 s (the lease TTL is 6 s).\n"
        "ETCD_HEARTBEAT_INTERVAL=100\n"
        "ETCD_ELECTION_TIMEOUT=1000\n"
        + tls
    )


HAPROXY_METRICS_PORT = 8405


def render_haproxy(s: Settings) -> str:
    """The HAProxy part of the lb: the active node gets the traffic; while none is (a switchover, a failover, a
    Data API outage that makes /health 503), any live bot answers it, its pages saying which role it has."""
    if s.role != "lb":
        raise HAError(f"the {s.role} runs no HAProxy for polymarket")
    servers = list(s.backends) or [s.vip_address]

    def server_lines() -> str:
        lines = []
        for i, addr in enumerate(servers):
            name = ("primary", "standby")[i] if len(servers) == 2 else f"node{i + 1}"
            backup = " backup" if i > 0 and len(servers) == 2 else ""
            # every second; down after 2 failed checks, up after 1 good one (the new active node at once)
            lines.append(f"    server {name} {addr}:{s.bot_port} check inter 1s fall 2 rise 1{backup}")
        return "\n".join(lines) + "\n"

    route = ("    use_backend polymarket_bots if { nbsrv(polymarket_bots) gt 0 }\n"
             "    default_backend polymarket_live\n")
    tls = ""
    if Path("/etc/ssl/private/polymarket.pem").exists():
        tls = f"""
frontend polymarket_https
    bind {s.own_address}:443 ssl crt /etc/ssl/private/polymarket.pem
    mode http
{route}"""
    return HEADER.format(src=SETTINGS) + f"""
frontend polymarket_http
    bind {s.own_address}:{s.bot_port}
    mode http
    timeout client 30s
{route}{tls}
{render_haproxy_metrics(s)}
backend polymarket_bots
    mode http
    timeout connect 3s
    timeout server 30s
    # Healthy (200) and active: a passive bot answers 200 too but must get no traffic while one is active.
    option httpchk GET /health
    http-check expect status 200
    http-check expect rstring '"role": *"active"'
""" + server_lines() + """
# While no bot is active and healthy: any bot whose process is live (/live) answers, so the pages stay up
# through a handover or an exchange outage and say "passive" (or 503 on /health) themselves.
backend polymarket_live
    mode http
    timeout connect 3s
    timeout server 30s
    option httpchk GET /live
    http-check expect status 200
""" + server_lines()


def render_haproxy_metrics(s: Settings) -> str:
    """HAProxy's own Prometheus exporter, nothing but /metrics: on the loopback (polymarket-monitoring on the lb,
    haproxy_target 127.0.0.1:8405) and, with METRICS_ALLOW, on OWN_ADDRESS too for those sources only (a
    monitoring host of its own, haproxy_target LB:8405; the firewall opens the port to them alone)."""
    if not s.metrics_allow:
        return ("# HAProxy's own Prometheus exporter, scraped by polymarket-monitoring "
                "(haproxy_target 127.0.0.1:8405):\n") + f"""\
# loopback only, nothing but /metrics.
frontend polymarket_metrics
    bind 127.0.0.1:{HAPROXY_METRICS_PORT}
    mode http
    timeout client 30s
    http-request use-service prometheus-exporter if {{ path /metrics }}
    http-request deny
"""
    allowed = " ".join(s.metrics_allow)
    return f"""\
# HAProxy's own Prometheus exporter, scraped by polymarket-monitoring: on the loopback, and on this host's
# address for METRICS_ALLOW only (haproxy_target {s.own_address}:{HAPROXY_METRICS_PORT}); any other source is
# denied (403), and nothing but /metrics is served.
frontend polymarket_metrics
    bind 127.0.0.1:{HAPROXY_METRICS_PORT}
    bind {s.own_address}:{HAPROXY_METRICS_PORT}
    mode http
    timeout client 30s
    acl metrics_allowed src 127.0.0.1 {allowed}
    http-request deny unless metrics_allowed
    http-request use-service prometheus-exporter if {{ path /metrics }}
    http-request deny
"""


def render_bot_env(s: Settings) -> str:
    lease = ""
    if s.lease and s.ha_node:
        lease = ("# Orders only while the trading lease names this node and its deadline is ahead (issue 11),\n"
                 "# each recorded in etcd through the lease keeper's socket before it leaves.\n"
                 f"LEASE_FILE={LEASE_FILE}\nLEASE_NODE={s.role}\nFENCE_SOCKET={FENCE_SOCKET}\n")
    return HEADER.format(src=SETTINGS) + (
        "# Read by polymarket-bot.service through polymarket-ha's drop-in; overrides /etc/polymarket/.env.\n"
        f"BIND_ADDRESS={s.own_address}\n" + lease
    )


def render_haproxy_env(s: Settings) -> str:
    return HEADER.format(src=SETTINGS) + (
        "# Read by haproxy.service through polymarket-ha's drop-in.\n"
        'CONFIG="/etc/haproxy/haproxy.cfg -f /etc/polymarket-ha/haproxy.cfg"\n'
    )


def cmd_render(args: argparse.Namespace) -> int:
    s = load_settings(Path(args.settings))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"bot.env": render_bot_env(s)}
    if s.lease:
        files["etcd.env"] = render_etcd_env(s)
    if s.ha_node:
        files["keepalived.conf"] = render_keepalived(s)
    else:
        files["haproxy.cfg"] = render_haproxy(s)
        files["haproxy.env"] = render_haproxy_env(s)
    for name, text in sorted(files.items()):
        (out / name).write_text(text, encoding="utf-8")
        print(name)
    return 0


# -- debconf answers (issue 7, item 5) ------------------------------------------------

# "polymarket-ha check-value QUESTION VALUE" is how the debconf config loop and the
# postinst check one answer: a value that fails is refused with one line, never
# repaired (stripping characters turned 192.168.1.1OO into 192.168.1.1).
QUESTIONS = ("role", "own_address", "peer_address", "virtual_ip", "interface", "router_id", "backends",
             "witness_address", "metrics_allow")
IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL
# Questions whose answer is refused with any control character in it, a newline or a tab too, before the
# whitespace is collapsed (the maintainer scripts already make those spaces; a caller of check-value may not).
RAW_CHECKED = ("metrics_allow",)


def check_address(value: str, what: str, hint: str = "dpkg-reconfigure polymarket-ha") -> str:
    """An IPv4 or IPv6 address, without an IPv6 scope id (fe80::1%eth0: any characters after the %, rendered
    into keepalived.conf, haproxy.cfg and authorized_keys' from=) and not IPv4-mapped (::ffff:10.0.0.2: an
    IPv6 rule never matches the IPv4 peer). The ha firewall's sed pattern matches every address accepted."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise HAError(f"{what} {value!r} is not an IP address", hint) from None
    if isinstance(address, ipaddress.IPv6Address) and (address.scope_id is not None or "%" in value):
        raise HAError(f"{what} {value!r}: an IPv6 address with a scope id (%...) is not supported", hint)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise HAError(f"{what} {value!r} is an IPv4-mapped IPv6 address: give the IPv4 address "
                      f"{address.ipv4_mapped}", hint)
    return str(address)


def no_control(value: str, what: str) -> str:
    """No control character (newline and tab included, shown as \\xNN): a value rendered into haproxy.cfg and a
    ufw rule is one line of addresses separated by spaces."""
    bad = sorted({c for c in value if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0})
    if bad:
        shown = " ".join(f"\\x{ord(c):02x}" for c in bad)
        raise HAError(f"{what}: a control character ({shown}) in {value.encode('unicode_escape').decode()!r}",
                      "dpkg-reconfigure polymarket-ha")
    return value


def check_interface(value: str) -> str:
    """A Linux interface name (the kernel's dev_valid_name: 1-15 bytes, not "." or "..", no "/", ":" or
    whitespace), and only letters, digits and - _ . @ (what keepalived.conf and the systemd units take)."""
    hint = "dpkg-reconfigure polymarket-ha"
    if value.startswith("-"):
        raise HAError(f"interface {value!r} starts with '-'", hint)
    if not value or len(value.encode()) >= IFNAMSIZ or value in (".", ".."):
        raise HAError(f"interface {value!r} is not an interface name (1-15 characters)", hint)
    bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "-_.@"))})
    if bad:
        raise HAError(f"interface {value!r} is not an interface name (no {' '.join(map(repr, bad))})", hint)
    return value


def check_value(question: str, value: str) -> str:
    """Check the answer to polymarket-ha/QUESTION (whitespace already collapsed); return it or raise."""
    hint = "dpkg-reconfigure polymarket-ha"
    if value.startswith("-"):
        raise HAError(f"{question} {value!r} starts with '-': no answer does", hint)
    if question == "role":
        if value not in ROLES:
            raise HAError(f"role {value!r} is not one of {', '.join(ROLES)}", hint)
    elif question == "own_address":
        check_address(value, "own_address")
    elif question in ("peer_address", "witness_address"):
        if value:
            check_address(value, question)
    elif question == "virtual_ip":
        address, slash, prefix = value.partition("/")
        width = ipaddress.ip_address(check_address(address, "virtual_ip")).max_prefixlen
        if slash and not (prefix.isascii() and prefix.isdigit() and 1 <= int(prefix) <= width):
            raise HAError(f"virtual_ip {value!r}: the prefix length must be 1-{width}", hint)
    elif question == "interface":
        check_interface(value)
    elif question == "router_id":
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 255):
            raise HAError(f"router_id {value!r} is not a number 1-255", hint)
    elif question == "backends":
        for backend in value.split():
            check_address(backend, "backends entry")
    elif question == "metrics_allow":
        no_control(value, question)
        for entry in value.split():
            check_address(entry, "metrics_allow entry")
    else:
        raise HAError(f"no question polymarket-ha/{question}", f"one of: {', '.join(QUESTIONS)}")
    return value


def cmd_check_value(args: argparse.Namespace) -> int:
    if args.question in RAW_CHECKED:
        no_control(args.value.strip(" "), args.question)
    check_value(args.question, " ".join(args.value.split()))
    return 0


def check_value_argv(argv: list[str]) -> int | None:
    """"[--debug] check-value [--] QUESTION [--] VALUE" read positionally, never through argparse, which takes
    a VALUE such as -h, --help or --he (an abbreviation) for an option and exits 0. None: not check-value."""
    rest = argv[1:] if argv[:1] == ["--debug"] else argv
    if rest[:1] != ["check-value"]:
        return None
    rest = rest[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if len(rest) == 3 and rest[1] == "--":
        rest = [rest[0], rest[2]]
    if len(rest) != 2 or rest[0] not in QUESTIONS:
        print(f"error: usage: polymarket-ha check-value [--] QUESTION VALUE (QUESTION: {', '.join(QUESTIONS)})",
              file=sys.stderr)
        return 2  # a usage error, as argparse's
    try:
        if rest[0] in RAW_CHECKED:
            no_control(rest[1].strip(" "), rest[0])
        check_value(rest[0], " ".join(rest[1].split()))
    except HAError as exc:
        print(f"error: {exc}" + (f" (hint: {exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    return 0


# -- state ------------------------------------------------------------------------

def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    log.debug("+ %s", " ".join(argv))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, check=False, **kw)


def ledger_path() -> Path:
    """The ledger: the bot's DB_PATH, asked of the bot, which owns it (its parser and defaults). Only a file
    directly in LEDGER_DIR, reached through no link, is taken. Failing that, an error: no promotion or
    replication."""
    argv = ["polymarket-bot", "config", "get", "DB_PATH"]
    try:
        proc = run(argv, cwd="/", timeout=BOT_CONFIG_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess(argv, 124, "", f"error: took more than {BOT_CONFIG_TIMEOUT} s")
    except OSError as exc:
        proc = subprocess.CompletedProcess(argv, 127, "", f"error: {exc.strerror}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")] or ["error: no path"]
    if proc.returncode != 0 or not proc.stdout.startswith("/"):
        raise HAError(f"cannot tell where the ledger is: {' '.join(argv)}: {errors[0].removeprefix('error: ')}",
                      "is polymarket-bot installed? sudo polymarket-bot validate-config")
    ledger = Path(proc.stdout.strip())
    links = [d for d in (LEDGER_DIR, *LEDGER_DIR.parents) if os.path.islink(d)]
    if ledger.parent != LEDGER_DIR or links:
        raise HAError(f"cannot tell where the ledger is: the bot answered {str(ledger)!a}: not a file directly "
                      f"in {LEDGER_DIR} reached through no link", "sudo polymarket-bot validate-config")
    return ledger


def holds_vip(s: Settings) -> bool:
    proc = run(["ip", "-o", "addr", "show", "dev", s.interface])
    return any(f" {s.vip_address}/" in line for line in proc.stdout.splitlines())


def vrrp_state() -> str:
    try:
        return VRRP_STATE.read_text(encoding="ascii").strip() or "UNKNOWN"
    except OSError:
        return "UNKNOWN"


def http_health(address: str, port: int, timeout: float = 3, path: str = "/health") -> dict[str, Any]:
    host = f"[{address}]" if ":" in address else address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
            return {"http": resp.status, "role": body.get("role"), "status": body.get("status")}
    except urllib.error.HTTPError as exc:
        return {"http": exc.code, "role": None, "status": "unhealthy"}
    except (OSError, ValueError) as exc:
        return {"http": None, "role": None, "status": f"unreachable ({exc.__class__.__name__})"}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- files in directories that another user owns ------------------------------------
#
# /var/lib/polymarket belongs to polymarket-bot and /var/lib/polymarket-ha (with .ssh) to polymarket-ha:
# either user can put a symlink where root is about to write. Root therefore never opens a path there
# that follows a link: new files are created with O_CREAT|O_EXCL|O_NOFOLLOW after the old name is
# unlinked (unlink removes a link, not its target), owner and mode are set through the descriptor,
# and the file is renamed into place (rename replaces a link, it never writes through one).

def _create_exclusive(path: Path, mode: int = 0o600) -> int:
    """A new, empty regular file at ``path`` (a link or file there is removed first); its descriptor."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def _copy_fd(src: int, dst: int) -> None:
    os.lseek(src, 0, os.SEEK_SET)
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)
    os.fsync(dst)


def _open_regular(path: Path) -> int:
    """``path`` opened for reading, refusing a symlink or anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HAError(f"{path} is a symlink: refused") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise HAError(f"{path} is not a regular file: refused")
    return fd


def write_file(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Atomically replace ``path`` with ``data``; never writes through a symlink planted at either name."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = _create_exclusive(tmp, 0o600)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _root_dir_fd(path: Path, mode: int = 0o700) -> int:
    """A descriptor of root's private directory ``path`` (made if missing); refused if it is a link or not root's.

    Later moves use the descriptor, so renaming the directory away and planting a link meanwhile changes nothing.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise HAError(f"{path} is not a directory ({exc.strerror}): refused", "remove it; it is made again") from None
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        os.close(fd)
        raise HAError(f"{path} is not root's private directory: refused", "remove it; it is made again")
    return fd


def _move_into(src: Path, dir_fd: int, name: str) -> None:
    """Move ``src`` (the bot's file) into the directory ``dir_fd`` as ``name``; a symlink is dropped, not followed."""
    try:
        os.rename(src, name, dst_dir_fd=dir_fd)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if stat.S_ISLNK(os.lstat(src).st_mode):
        os.unlink(src)
        return
    fd = _open_regular(src)
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            _copy_fd(fd, out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    os.unlink(src)


def gather(s: Settings) -> dict[str, Any]:
    status: dict[str, Any] = {"role": s.role, "hostname": socket.gethostname(), "virtual_ip": s.virtual_ip,
                              "checked_at": _iso(time.time())}
    if s.ha_node:
        local = http_health(s.own_address, s.bot_port)
        peer = http_health(s.peer_address, s.bot_port)
        status.update({
            "vrrp_state": vrrp_state(),
            "vip_held": holds_vip(s),
            "passive": PASSIVE.exists(),
            "bot": local,
            "peer": {"address": s.peer_address, **peer},
            "replica_at": _iso(_mtime(REPLICA_DIR / REPLICA_NAME)),
        })
        if s.lease:
            ok, why = lease_valid(s.role)
            status["lease"] = {"held": ok, "detail": why, "enrolled": ETCD_CERT.exists()}
        status["last_replication"] = read_state_json(LAST_REPLICATION)
        status["split_brain"] = local.get("role") == "active" and peer.get("role") == "active"
    else:
        status["backends"] = {b: http_health(b, s.bot_port) for b in (s.backends or (s.vip_address,))}
    return status


def read_state_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable. A link, FIFO or anything but a regular file
    is never opened for reading (a FIFO would block the heartbeat forever): one warning, then treated as absent."""
    try:
        fd = _open_regular(path)
    except FileNotFoundError:
        return None
    except (HAError, OSError) as exc:
        log.warning("%s: treated as absent", exc)
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, text.encode("utf-8"), mode)


def _touch(path: Path) -> None:
    """Set the mtime of ``path`` to now (made if missing) without following a symlink there."""
    try:
        os.utime(path, follow_symlinks=False)
    except FileNotFoundError:
        os.close(_create_exclusive(path, 0o644))


def cmd_status(args: argparse.Namespace) -> int:
    s = load_settings()
    st = gather(s)
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        print(f"role:        {st['role']} ({st['hostname']})")
        print(f"virtual IP:  {st['virtual_ip']}")
        if s.ha_node:
            print(f"VRRP state:  {st['vrrp_state']}")
            print(f"VIP held:    {'yes' if st['vip_held'] else 'no'}")
            print(f"bot:         {'passive' if st['passive'] else 'active'}; /health {st['bot']['http']}")
            peer = st["peer"]
            print(f"peer:        {peer['address']} /health {peer['http']} role {peer['role']}")
            last = st["last_replication"]
            print(f"replication: last sent {last['at'] if last else 'never'}"
                  f"{' (' + last['result'] + ')' if last else ''}; replica here from {st['replica_at'] or 'never'}")
            if "lease" in st:
                print(f"lease:       {'held' if st['lease']['held'] else 'not held'} ({st['lease']['detail']})"
                      f"{'' if st['lease']['enrolled'] else '; etcd not enrolled (see man polymarket-ha)'}")
            if st["split_brain"]:
                print("WARNING:     both nodes report an active bot (split brain)")
        else:
            for addr, h in st["backends"].items():
                print(f"backend:     {addr} /health {h['http']} role {h['role']}")
    if s.ha_node and st["split_brain"]:
        return 2
    return 0


def cmd_heartbeat(_args: argparse.Namespace) -> int:
    """Every minute (plan 3.5): peer health and VRRP state, logged and written as JSON."""
    s = settings_for_timer("heartbeat")
    if s is None:
        return 0
    st = gather(s)
    if STATUS_JSON.parent.is_dir():
        _write_atomic(STATUS_JSON, json.dumps(st, indent=2, sort_keys=True) + "\n")
    if not s.ha_node:
        down = [a for a, h in st["backends"].items() if h["http"] != 200]
        log.log(logging.WARNING if down else logging.INFO, "lb backends: %s",
                ", ".join(f"{a}={h['http']}/{h['role']}" for a, h in st["backends"].items()))
        return 0
    if st["vrrp_state"] == "MASTER" and st["vip_held"] and not st["passive"]:
        _touch(LAST_ACTIVE)
        persist_generation()
        last = st["last_replication"]
        if not isinstance(last, dict) or last.get("result") != "ok":
            # Never sent (just installed or trusted) or the last run failed: once a minute, not every 5.
            log.info("no good replication yet: starting %s", REPLICATE_UNIT)
            run(["systemctl", "start", "--no-block", REPLICATE_UNIT])
    write_metrics(s, st)
    if PROMOTING.exists() and not promoting_live():
        log.warning("removing the stale %s of a promotion that did not finish", PROMOTING)
        PROMOTING.unlink(missing_ok=True)
    if st["split_brain"]:
        log.critical("split brain: this node and %s both report an active bot", s.peer_address)
        return 2
    level = logging.INFO if st["peer"]["http"] == 200 else logging.WARNING
    log.log(level, "state %s, vip %s, peer %s /health %s role %s", st["vrrp_state"],
            "held" if st["vip_held"] else "not held", s.peer_address, st["peer"]["http"], st["peer"]["role"])
    return 0


# -- textfile metrics (polymarket-monitoring's metrics contract) ----------------------
#
# /var/lib/prometheus/node-exporter/polymarket-ha.prom, read by the node exporter's textfile collector. Root
# writes it, so never through a link: /var/lib/prometheus belongs to prometheus, which could plant one there.
# Each component is opened without following a link; the last must be root's and writable by root only (as
# prometheus-node-exporter ships it), and is made so if missing; the file is a new one renamed into place.

def _textfile_dir_fd(path: Path, owner: int = 0) -> int:
    """A descriptor of ``path``, each component opened with O_NOFOLLOW (made 0755 if missing); refused unless the
    last is ``owner``'s (root's) and not group- or world-writable."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for part in path.parts[1:]:
            made = True
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                made = False
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise HAError(f"{path}: {part} is a symlink or not a directory ({exc.strerror}): no metrics written",
                              f"remove it; the node exporter's textfile directory is {TEXTFILE_DIR}") from None
            os.close(fd)
            fd = nfd
            if made:
                os.fchmod(fd, 0o755)  # whatever the caller's umask (keepalived runs its scripts with 0177)
        st = os.fstat(fd)
        if st.st_uid != owner or st.st_mode & 0o022:
            raise HAError(f"{path} is not root's or is writable by others: no metrics written",
                          f"chown root:root {path}; chmod 0755 {path}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def render_metrics(s: Settings, st: dict[str, Any] | None = None) -> str:
    """The textfile: the lease (when configured), the VRRP state, the last good replication, split brain."""
    status = st if st is not None else read_state_json(STATUS_JSON)
    split = bool(status.get("split_brain")) if isinstance(status, dict) else False
    last = read_state_json(LAST_REPLICATION)
    sent = last.get("last_ok_at") if isinstance(last, dict) else None
    received = _mtime(REPLICA_DIR / "trade_history.db")  # rsync -t: the snapshot's time on the sender
    newest = max([t for t in (sent, received) if isinstance(t, (int, float))], default=0)
    gauges: list[tuple[str, str, float]] = []
    if s.lease:
        gauges.append(("polymarket_ha_lease_holder", "1 while this node holds the trading lease",
                       int(lease_valid(s.role, LEASE_FILE)[0])))
    gauges += [
        ("polymarket_ha_last_replication_timestamp_seconds",
         "Unix time of the newest good ledger copy of the pair: sent from here or received here (0: never)",
         round(float(newest), 3)),
        ("polymarket_ha_vrrp_master", "1 while keepalived is MASTER on this node", int(vrrp_state() == "MASTER")),
        ("polymarket_ha_split_brain", "1 when this node and its peer both report an active bot (heartbeat)",
         int(split)),
    ]
    return "".join(f"# HELP {name} {text}\n# TYPE {name} gauge\n{name} {value}\n" for name, text, value in gauges)


def write_metrics(s: Settings | None = None, st: dict[str, Any] | None = None, directory: Path | None = None,
                  owner: int = 0) -> None:
    """Replace polymarket-ha.prom atomically; a failure is one warning, never the caller's failure."""
    try:
        s = s or load_settings()
        if not s.ha_node:
            return
        text = render_metrics(s, st)
        RUN_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(METRICS_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fd = _textfile_dir_fd(directory or TEXTFILE_DIR, owner)
            try:
                _write_at(fd, METRICS_NAME, text.encode("ascii"), 0o644)
            finally:
                os.close(fd)
    except (HAError, OSError, ValueError) as exc:
        log.warning("metrics: %s", exc)


def note_lease_held(held: bool) -> None:
    """lease-check's answer (every second): the lease metric is rewritten only when it changes."""
    seen = LEASE_SEEN
    mark = "1\n" if held else "0\n"
    try:
        if read_small(seen) == mark:
            return
        write_file(seen, mark.encode("ascii"), 0o644)
    except OSError:
        return
    write_metrics()


def read_small(path: Path) -> str | None:
    """A small root state file's text, or None (missing, a link, not a regular file)."""
    try:
        fd = _open_regular(path)
    except (HAError, OSError):
        return None
    try:
        return os.read(fd, 64).decode("ascii", errors="replace")
    finally:
        os.close(fd)


# -- keepalived notify: promotion and demotion ------------------------------------

@contextlib.contextmanager
def notify_lock() -> Iterator[None]:
    RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    with open(NOTIFY_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def make_passive() -> None:
    if PASSIVE.parent.is_dir():
        PASSIVE.touch(mode=0o644)


def integrity_ok(db: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            return bool(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    except sqlite3.Error:
        return False


def bot_healthy(s: Settings, timeout: float) -> bool:
    """The bot is live again (/live): not /health, which an exchange outage keeps 503 (the promotion would give
    up and the node stay passive for good)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if http_health(s.own_address, s.bot_port, timeout=2, path="/live")["http"] == 200:
            return True
        time.sleep(0.5)
    return False


def prune_previous(dir_fd: int, keep: int = PREVIOUS_KEEP) -> list[str]:
    """Keep the ledgers of the last ``keep`` promotions in previous/; delete older ones. The deleted names."""
    stamps = sorted({name.rsplit(".", 1)[-1] for name in os.listdir(dir_fd) if name.startswith(REPLICA_NAME)})
    gone = []
    for name in sorted(os.listdir(dir_fd)):
        if name.startswith(REPLICA_NAME) and name.rsplit(".", 1)[-1] in stamps[:-keep]:
            os.unlink(name, dir_fd=dir_fd)
            gone.append(name)
    return gone


def adopt_replica(s: Settings, ledger: Path) -> str:
    """Put the newest replica in place of the ledger, if it is newer than this node's own trading."""
    replica = REPLICA_DIR / REPLICA_NAME
    try:
        src = _open_regular(replica)
    except FileNotFoundError:
        return "no replica: keeping the local ledger"
    except HAError as exc:
        return f"{exc}: kept the local ledger"
    try:
        replica_at = os.fstat(src).st_mtime
        active_at = _mtime(LAST_ACTIVE)
        lease = bool(s is not None and s.lease)
        if not lease and active_at is not None and active_at >= replica_at:
            # VRRP only (no lease, no generation): the times of the files are all there is
            return (f"replica of {_iso(replica_at)} is older than this node's own trading ({_iso(active_at)}): "
                    "kept local")
        prev = _root_dir_fd(PREVIOUS_DIR)
        os.close(prev)
        # Checked in a directory of root's own, then written into the bot's directory through a new file.
        with tempfile.TemporaryDirectory(prefix="polymarket-ha-promote.", dir="/var/tmp") as tmp:
            checked = Path(tmp) / REPLICA_NAME
            out = os.open(checked, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                _copy_fd(src, out)
            finally:
                os.close(out)
            if not integrity_ok(checked):
                return f"replica of {_iso(replica_at)} fails integrity_check: kept the local ledger"
            if lease:
                keep = newer_here(own_generation(), ledger_generation(checked))
                if keep:
                    return keep
            bot = pwd.getpwnam(BOT_USER)
            staged = ledger.with_name(f".{ledger.name}.promote")
            fd = _create_exclusive(staged, 0o600)
            try:
                with open(checked, "rb") as good:
                    _copy_fd(good.fileno(), fd)
                os.fchown(fd, bot.pw_uid, bot.pw_gid)
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
    finally:
        os.close(src)
    prev = _root_dir_fd(PREVIOUS_DIR)
    try:
        run(["systemctl", "stop", BOT_UNIT])
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            old = ledger.with_name(ledger.name + suffix)
            if os.path.lexists(old):
                _move_into(old, prev, f"{REPLICA_NAME}{suffix}.{stamp}")
        os.rename(staged, ledger)
        run(["systemctl", "start", BOT_UNIT])
        pruned = prune_previous(prev)
    finally:
        os.close(prev)
    kept = f" ({len(pruned)} older file(s) pruned, the last {PREVIOUS_KEEP} kept)" if pruned else ""
    return f"adopted the replica of {_iso(replica_at)}; previous ledger in {PREVIOUS_DIR}{kept}"


def read_generation(path: Path) -> int | None:
    """The lease generation in ``path`` (root's state file), or None (absent, a link, not a number)."""
    text = (read_small(path) or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None


def ledger_generation(db: Path) -> int | None:
    """``meta.lease_generation`` of a ledger (root's checked copy): the lease under which its last holder began
    to trade (the bot keeps the highest), or None."""
    deadline = time.monotonic() + 5
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            con.execute("PRAGMA trusted_schema=OFF")
            # the peer wrote this file: a table only (never a view it could make endless), and a time limit
            con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            if con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
                return None
            row = con.execute("SELECT value FROM meta WHERE key='lease_generation'").fetchone()
    except sqlite3.Error:
        return None
    value = str(row[0]).strip() if row else ""
    if not (value.isascii() and value.isdigit() and len(value) <= 19):
        return None
    return int(value)


def own_generation() -> int | None:
    """The newest lease generation this node *traded* under (/var/lib, kept across a reboot): not the keeper's
    current one, which at a promotion is the new lease itself, newer than any replica."""
    return read_generation(OWN_GENERATION)


def persist_generation() -> None:
    """Copy the keeper's generation (/run) to /var/lib when it is newer: when this node trades under it (at the
    end of its promotion, at each heartbeat of the trading node). A failure is a warning."""
    run_gen, kept = read_generation(RUN_GENERATION), read_generation(OWN_GENERATION)
    if run_gen is not None and (kept is None or run_gen > kept):
        try:
            _write_atomic(OWN_GENERATION, f"{run_gen}\n")
        except (HAError, OSError) as exc:
            log.warning("lease generation %d not kept in %s: %s", run_gen, OWN_GENERATION, exc)


def newer_here(own: int | None, replica: int | None) -> str:
    """With the lease: whether this node's own ledger is the newer one, by lease generation (etcd's revision of
    the leader key, which only grows), never by file times. A reason to keep the local ledger, or "" to adopt."""
    if own is None:
        return ""  # this node never held a valid lease: the replica, whatever its age, is the newer history
    if replica is None:
        return f"replica holds no lease generation, this node traded under generation {own}: kept local"
    if own >= replica:
        return f"replica of lease generation {replica}, this node traded under generation {own}: kept local"
    return ""


def promoting_live(path: Path = PROMOTING, max_age: float = PROMOTING_MAX_AGE) -> bool:
    """Whether ``path`` marks a promotion under way: its process is alive and it is younger than ``max_age``."""
    try:
        st = os.lstat(path)
        text = path.read_text(encoding="ascii", errors="replace") if stat.S_ISREG(st.st_mode) else ""
    except OSError:
        return False
    pid = text.split()[0] if text.split() else ""
    return pid.isdigit() and Path(f"/proc/{pid}").is_dir() and time.time() - st.st_mtime < max_age


def cmd_notify(args: argparse.Namespace) -> int:
    """keepalived's notify script: TYPE NAME STATE [PRIORITY]."""
    state = args.state.upper()
    RUN_DIR.mkdir(mode=0o755, exist_ok=True)
    # Trading until now: MASTER and not passive. Only then does leaving MASTER mark this node's own trading
    # (last-active); a BACKUP, FAULT or STOP of a node that was passive anyway (a keepalived restart on the
    # standby) must not make a fresh replica look older than this node's stale ledger (issue 11 cause 4).
    was_trading = vrrp_state() == "MASTER" and PASSIVE.parent.is_dir() and not PASSIVE.exists()
    _write_atomic(VRRP_STATE, state + "\n")
    if state != "MASTER":
        make_passive()  # at once, before any lock: never two trading nodes
    write_metrics()
    with notify_lock():
        if vrrp_state() != "MASTER":
            make_passive()
            if state != "MASTER":
                log.warning("VRRP %s: bot passive", state)
                if was_trading:
                    with contextlib.suppress(OSError):
                        _touch(LAST_ACTIVE)
            return 0
        s = load_settings()
        held_by = time.monotonic() + 10
        while not holds_vip(s):  # keepalived adds the VIP around the notify; trade only once it is really here
            if time.monotonic() > held_by:
                log.error("VRRP MASTER but %s is not on %s: bot stays passive", s.vip_address, s.interface)
                return 1
            time.sleep(0.2)
        # Our pid: check-bot ignores the marker once this process is gone (killed midway) or it is too old.
        _write_atomic(PROMOTING, f"{os.getpid()}\n")
        try:
            ledger = ledger_path()
            detail = adopt_replica(s, ledger) if ledger.parent.is_dir() else "no ledger directory"
            log.warning("VRRP MASTER: %s", detail)
            if not bot_healthy(s, 60):
                log.error("the bot is not healthy after promotion; staying passive")
                return 1
            if vrrp_state() == "MASTER":  # still: a BACKUP meanwhile waits for the lock, then re-asserts passive
                _touch(LAST_ACTIVE)
                persist_generation()
                PASSIVE.unlink(missing_ok=True)
                log.warning("VRRP MASTER: bot active")
        finally:
            PROMOTING.unlink(missing_ok=True)
    return 0


# -- replication ------------------------------------------------------------------

def cmd_snapshot(args: argparse.Namespace) -> int:
    """Run as polymarket-bot: a consistent copy with the online backup API."""
    src, dest = Path(args.source), Path(args.dest)
    tmp = dest.with_name(f".{dest.name}.new")
    tmp.unlink(missing_ok=True)
    # Opened read-write as the ledger's owner (a WAL reader needs the -shm); backup() only reads it.
    with contextlib.closing(sqlite3.connect(src, timeout=30)) as con, \
            contextlib.closing(sqlite3.connect(tmp)) as out:
        con.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")  # a self-contained file: no -wal to ship along
    tmp.chmod(0o640)
    if not integrity_ok(tmp):
        tmp.unlink()
        raise HAError("the snapshot fails integrity_check", "check the ledger with sqlite3")
    tmp.replace(dest)
    return 0


def ssh_command() -> str:
    # The peer's host key is pinned by trust-peer: no trust on first use at replication time.
    return (f"ssh -i {KEY} -o BatchMode=yes -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={KNOWN_HOSTS} -o ConnectTimeout=10")


def cmd_replicate(args: argparse.Namespace) -> int:
    s = settings_for_timer("replicate")
    if s is None:
        return 0
    if not s.ha_node:
        log.info("the %s keeps no ledger", s.role)
        return 0
    if not (vrrp_state() == "MASTER" and holds_vip(s)):
        log.info("not the active node: nothing to send")
        return 0
    ledger = ledger_path()
    if not ledger.exists():
        log.info("no ledger yet: nothing to send")
        return 0
    if not KNOWN_HOSTS.exists():
        log.info("the peer is not trusted yet (polymarket-ha trust-peer, see man polymarket-ha): nothing sent")
        return 0
    snap = OUTGOING_DIR / REPLICA_NAME
    started = time.time()
    result = "ok"
    # Each child runs as a service user, which can stop it (SIGSTOP, same uid): each has a deadline.
    try:
        proc = run([sys.executable, "-I", os.path.realpath(__file__), "snapshot", str(ledger), str(snap)],
                   user=BOT_USER, group=HA_USER, extra_groups=[], timeout=SNAPSHOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc = None
        result = f"snapshot killed after {SNAPSHOT_TIMEOUT} s (stopped or hung)"
    if proc is not None and proc.returncode != 0:
        result = "snapshot failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    elif proc is not None:
        argv = ["rsync", "-t", "--timeout=60", "--chmod=F0600", "-e", ssh_command()]
        if args.full:
            argv.append("--whole-file")
        # Into the replica directory itself ("."), never onto the file's name: trixie's rrsync (rsync 3.5.0
        # +deb13u2) pins an existing destination as /proc/self/fd/N, and rsync then fails to replace it ("could
        # not make way for new regular file", exit 23): every replication after the first one failed. The name
        # is the snapshot's (OUTGOING_DIR/REPLICA_NAME); rsync lands it by rename, replacing a planted link.
        argv += [str(snap), f"{HA_USER}@{s.peer_address}:"]
        try:
            sent = run(argv, user=HA_USER, group=HA_USER, extra_groups=[], cwd=str(STATE_DIR), timeout=SEND_TIMEOUT)
        except subprocess.TimeoutExpired:
            sent = subprocess.CompletedProcess(argv, 124, "", f"killed after {SEND_TIMEOUT} s (stopped or hung)")
        if sent.returncode != 0:
            result = f"rsync exit {sent.returncode}: " + (sent.stderr.strip().splitlines() or ["?"])[-1]
            if "Host key verification failed" in sent.stderr:
                result = ("Host key verification failed: the peer's ssh host key is not the one pinned by "
                          "trust-peer (reinstalled peer? then run trust-peer again with --host-key)")
    record = {"at": _iso(started), "kind": "full" if args.full else "incremental", "peer": s.peer_address,
              "result": result, "seconds": round(time.time() - started, 3)}
    previous = read_state_json(LAST_REPLICATION)
    ok_at = previous.get("last_ok_at") if isinstance(previous, dict) else None
    record["last_ok_at"] = round(started, 3) if result == "ok" else ok_at  # Unix time of the last success
    _write_atomic(LAST_REPLICATION, json.dumps(record) + "\n")
    write_metrics(s)
    if result != "ok":
        raise HAError(f"replication to {s.peer_address} failed: {result}", "polymarket-ha status; journalctl -u "
                      "polymarket-ha-replicate")
    log.info("snapshot of %s sent to %s (%s)", ledger, s.peer_address, record["kind"])
    return 0


def cmd_pubkey(_args: argparse.Namespace) -> int:
    print(Path(f"{KEY}.pub").read_text(encoding="ascii").strip())
    return 0


def parse_ed25519(text: str, what: str) -> str:
    """``ssh-ed25519 BASE64 [comment]`` checked down to the key: the canonical "ssh-ed25519 BASE64".

    Refused: control characters (a newline would add a second, unchecked line), options before the type,
    another type, base64 that does not decode strictly, a blob whose inner type is not ssh-ed25519 or whose
    key is not 32 bytes, trailing bytes (a truncated or padded key).
    """
    hint = "on the peer run: polymarket-ha pubkey" if what == "key" else \
        "on the peer: cat /etc/ssh/ssh_host_ed25519_key.pub"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise HAError(f"the {what} contains a control character (newline?)", hint)
    fields = text.split()
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise HAError(f"the {what} is not an ssh-ed25519 public key (\"ssh-ed25519 AAAA...\")", hint)
    try:
        blob = binascii.a2b_base64(fields[1].encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise HAError(f"the {what} is not valid base64 (truncated?)", hint) from None
    if base64.b64encode(blob).decode("ascii") != fields[1]:  # the one canonical spelling: no stray padding
        raise HAError(f"the {what} is not canonical base64 (truncated or padded?)", hint)
    parts = []
    rest = blob
    while len(rest) >= 4:
        n = int.from_bytes(rest[:4], "big")
        if n > len(rest) - 4:
            break
        parts.append(rest[4:4 + n])
        rest = rest[4 + n:]
    if rest or len(parts) != 2 or parts[0] != b"ssh-ed25519" or len(parts[1]) != 32:
        raise HAError(f"the {what} is not a complete ssh-ed25519 key (truncated?)", hint)
    return f"ssh-ed25519 {base64.b64encode(blob).decode('ascii')}"


def scan_host_key(address: str) -> str:
    proc = run(["ssh-keyscan", "-T", "10", "-t", "ed25519", address])
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "ssh-ed25519":
            return parse_ed25519(" ".join(fields[1:3]), "host key")
    raise HAError(f"no ssh-ed25519 host key from {address}:22", "give it with --host-key "
                  "'ssh-ed25519 AAAA...' (on the peer: cat /etc/ssh/ssh_host_ed25519_key.pub)")


def fingerprint(key: str) -> str:
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _ssh_dir_fd() -> int:
    """A descriptor of SSH_DIR, each of its last two components opened without following a link.

    The postinst makes STATE_DIR and .ssh root's; a link at either (planted by an older version's polymarket-ha,
    which owned both) is refused: O_NOFOLLOW on the file names alone would still write through a linked .ssh.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        parent = os.open(SSH_DIR.parent, flags)
    except OSError as exc:
        raise HAError(f"{SSH_DIR.parent} is not a directory ({exc.strerror}): refused", "dpkg-reconfigure "
                      "polymarket-ha") from None
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(SSH_DIR.name, 0o755, dir_fd=parent)
        try:
            return os.open(SSH_DIR.name, flags, dir_fd=parent)
        except OSError as exc:
            raise HAError(f"{SSH_DIR} is a symlink or not a directory ({exc.strerror}): refused",
                          f"remove {SSH_DIR}, then dpkg-reconfigure polymarket-ha") from None
    finally:
        os.close(parent)


def _write_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace ``name`` in ``dir_fd`` by a new file of root's with ``data`` (a link there is replaced)."""
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(tmp, "wb", opener=lambda path, _: os.open(path, flags, 0o600, dir_fd=dir_fd)) as f:
        f.write(data)
        f.flush()
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def cmd_trust_peer(args: argparse.Namespace) -> int:
    """Let the peer's replication key write into our replica directory, and nothing else; pin its host key."""
    s = load_settings()
    if not s.ha_node:
        raise HAError("only the primary and the standby replicate")
    key = parse_ed25519(args.key, "key")
    host_key = parse_ed25519(args.host_key, "host key") if args.host_key else scan_host_key(s.peer_address)
    line = (f'restrict,from="{s.peer_address}",command="{RRSYNC} -wo {REPLICA_DIR}" '
            f"{key} polymarket-ha@{s.peer_address}\n")
    # Both checked before either is written: a bad input leaves the working files as they were.
    path = SSH_DIR / "authorized_keys"
    ssh = _ssh_dir_fd()
    try:
        _write_at(ssh, path.name, line.encode("ascii"))
        _write_at(ssh, KNOWN_HOSTS.name, f"{s.peer_address} {host_key}\n".encode("ascii"))
    finally:
        os.close(ssh)
    print(f"{path}: the key of {s.peer_address} may write replicas into {REPLICA_DIR} only")
    print(f"{KNOWN_HOSTS}: host key of {s.peer_address} pinned, {fingerprint(host_key)} "
          "(compare on the peer: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")
    first_replication(s)
    return 0


def first_replication(s: Settings) -> None:
    """Right after trust-peer: the active node sends its first snapshot now, not at the next 5-minute timer. A
    failure (the peer not reachable, or not trusting this node yet) is a warning: the heartbeat retries it
    every minute until one succeeds."""
    if not (vrrp_state() == "MASTER" and holds_vip(s)):
        print("replication: the active node sends its first snapshot to the passive one within a minute "
              "(its heartbeat), once each node trusts the other")
        return
    try:
        cmd_replicate(argparse.Namespace(full=False))
    except HAError as exc:
        print(f"warning: first replication to {s.peer_address} failed: {exc} (retried every minute; run "
              "trust-peer on the peer too if not done yet)", file=sys.stderr)
    else:
        print(f"replication: first snapshot sent to {s.peer_address}")


# -- the trading lease (issue 11) ---------------------------------------------------------------------------------
#
# Three etcd members (primary, standby, the lb as witness) hold one key, LEADER_KEY, under a lease of
# LEASE_TTL seconds. The lease keeper of the primary and of the standby campaigns for the key and keeps
# its lease alive; the holder writes LEASE_FILE, which the bot reads before every order and keepalived's
# vrrp_script reads every second. The file's deadline is on CLOCK_BOOTTIME (counts while the machine is
# suspended, unlike CLOCK_MONOTONIC) and is computed from the moment the keepalive was *sent*: etcd's
# leader cannot expire the key before it received that keepalive plus the TTL, so the deadline
# (sent + TTL x (1 - LEASE_RATE) - LEASE_MARGIN) passes before any other node can take the key.


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    """This boot's ID as systemd (PID 1) sees it: BOOT_ID_ENV when set (the lease keeper's unit passes systemd's
    %b there), else BOOT_ID_FILE. Writer and readers of the lease file must agree on it, and a sandboxed
    service may not see the /proc/sys of everyone else: in a systemd-nspawn container, systemd 252 (Debian
    bookworm) gives a service with ProtectKernelTunables= or ProtectControlGroups= a /proc/sys without
    nspawn's per-container boot_id, so the keeper read the host kernel's ID, and keepalived's lease-check
    (unsandboxed, the container's ID) found every lease "from another boot": nobody ever held it."""
    raw = os.environ.get(BOOT_ID_ENV, "").strip().replace("-", "").lower()
    if len(raw) == 32 and all(c in "0123456789abcdef" for c in raw):  # %b: 32 hex digits, no dashes
        return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except OSError:
        return ""


def lease_record(holder: str, deadline: float, **extra: Any) -> dict[str, Any]:
    return {"holder": holder, "deadline": round(deadline, 3), "clock": "CLOCK_BOOTTIME", "boot_id": boot_id(),
            "ttl": LEASE_TTL, "written_at": _iso(time.time()), **extra}


def lease_valid(node: str, path: Path = LEASE_FILE, now: float | None = None) -> tuple[bool, str]:
    """Whether ``path`` is a lease for ``node`` of this boot whose deadline is ahead; and why (not)."""
    try:
        fd = _open_regular(path)
    except FileNotFoundError:
        return False, f"no lease file {path}"
    except (HAError, OSError) as exc:
        return False, str(exc)
    try:
        data = json.loads(os.read(fd, 65536) or b"{}")
    except ValueError:
        return False, f"{path} is not JSON"
    finally:
        os.close(fd)
    if not isinstance(data, dict):
        return False, f"{path} is not a lease"
    if data.get("holder") != node:
        return False, f"the lease is held by {data.get('holder') or 'nobody'}"
    if data.get("clock") != "CLOCK_BOOTTIME" or data.get("boot_id") != boot_id():
        return False, "the lease is from another boot"
    deadline = data.get("deadline")
    if not isinstance(deadline, (int, float)):
        return False, "the lease has no deadline"
    left = deadline - (boottime() if now is None else now)
    if left <= 0:
        return False, f"the lease expired {-left:.1f}s ago"
    return True, f"held by {node}, {left:.1f}s left"


class Etcd:
    """etcd's v3 JSON gateway over HTTPS with this member's certificate; tries the members in turn."""

    def __init__(self, endpoints: list[str], cafile: Path = ETCD_CA, cert: Path = ETCD_CERT, key: Path = ETCD_KEY,
                 timeout: float = LEASE_REQUEST_TIMEOUT) -> None:
        import ssl
        self.endpoints = endpoints
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=str(cafile))
        self.ctx.load_cert_chain(str(cert), str(key))
        self.preferred = endpoints[0] if endpoints else ""

    def order(self) -> list[str]:
        """The members to try, the last one that answered first: a member cut off from etcd's leader (this
        node's own, in a primary/standby cut) would cost its full timeout on every call, each order's fence
        included, where one call finds the member that answers and the next ones go straight to it."""
        return [e for e in self.endpoints if e == self.preferred] + [e for e in self.endpoints if e != self.preferred]

    def answered(self, endpoint: str) -> None:
        if endpoint != self.preferred:
            log.info("etcd: %s answers, %s did not: asked first from now on", endpoint, self.preferred)
            self.preferred = endpoint

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        errors = []
        for endpoint in self.order():
            req = urllib.request.Request(f"{endpoint}{path}", data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as resp:
                    answer = json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                errors.append(f"{endpoint}: HTTP {exc.code} {exc.read(200)!r}")
                continue
            except (OSError, ValueError) as exc:
                errors.append(f"{endpoint}: {exc}")
                continue
            if isinstance(answer, dict) and "error" in answer:
                errors.append(f"{endpoint}: {answer.get('error') or answer.get('message')}")
                continue
            self.answered(endpoint)
            return answer.get("result", answer) if isinstance(answer, dict) else {}
        raise HAError("etcd: " + "; ".join(errors), "journalctl -u etcd; polymarket-ha status")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class LeaseKeeper:
    """Campaign for LEADER_KEY, keep the lease alive, and write LEASE_FILE (see the section comment)."""

    def __init__(self, name: str, etcd: Etcd, path: Path = LEASE_FILE) -> None:
        self.name = name
        self.etcd = etcd
        self.path = path
        self.lease_id = ""
        # The last moment another holder's key was seen (or could have existed, unseen): a new holder
        # writes a valid lease only LEASE_TTL after it. Unknown at start: now.
        self.other_seen = boottime()
        self.other_lease = ""  # the etcd lease of that other holder's key, as last seen
        self.other_holder = ""  # and the holder it named (never this node: a retried campaign can see its own)
        self.written: tuple[str, bool] | None = None
        self.generation = 0  # the leader key's create revision while this node holds it
        self.generation_written = 0
        self.generation_path = RUN_GENERATION if path == LEASE_FILE else path.with_name(path.name + ".generation")

    def write(self, holder: str, deadline: float, **extra: Any) -> None:
        if self.path.parent.is_dir():
            write_file(self.path, (json.dumps(lease_record(holder, deadline, **extra)) + "\n").encode(), 0o644)
        state = (holder, deadline > 0)
        if self.written != state:
            log.warning("lease: %s", f"valid for this node until {deadline:.1f} (CLOCK_BOOTTIME)" if deadline > 0
                        else f"held by {holder}, not valid for trading here yet" if holder == self.name
                        else f"held by {holder or 'nobody'}: this node is passive")
        self.written = state

    def campaign(self) -> None:
        sent = boottime()
        grant = self.etcd.call("/v3/lease/grant", {"TTL": LEASE_TTL})
        lease_id = str(grant["ID"])
        ttl = int(grant.get("TTL", 0))
        key = _b64(LEADER_KEY)
        txn = self.etcd.call("/v3/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"requestPut": {"key": key, "value": _b64(self.name), "lease": lease_id}},
                        {"requestRange": {"key": _b64(RELEASED_KEY)}}],
            "failure": [{"requestRange": {"key": key}}]})
        if txn.get("succeeded"):
            self.lease_id = lease_id
            with contextlib.suppress(TypeError, ValueError):
                self.generation = int(txn.get("header", {}).get("revision", 0))
            log.warning("lease: took %s under lease %s (TTL %ds)", LEADER_KEY, lease_id, ttl)
            released = [base64.b64decode(kv.get("value", "")).decode(errors="replace")
                        for r in txn.get("responses", []) for kv in r.get("response_range", {}).get("kvs", [])]
            if self.other_lease and self.other_lease in released:
                # The holder last seen here gave that very lease up itself (its lease file said nobody first):
                # nothing of it can still be running, so no TTL wait (a planned switchover hands over at once).
                log.warning("lease: %s was released by its holder: valid at once", self.other_lease)
                self.other_seen = boottime() - LEASE_TTL
            elif self.other_lease and self.other_holder not in ("", self.name) and \
                    self.expired_in_etcd(self.other_lease):
                # etcd's leader expired it: TTL after the last keepalive it *received*, which its holder sent
                # earlier and counted its own deadline from (sent + TTL x (1 - LEASE_RATE) - LEASE_MARGIN): that
                # deadline has passed. Only a key gone while its lease still lives (deleted by hand) or an
                # unanswered question keeps the wait of TTL since the key was last seen.
                log.warning("lease: %s expired in etcd: its holder's own deadline has passed, valid at once",
                            self.other_lease)
                self.other_seen = boottime() - LEASE_TTL
            self.other_lease = ""
            self.renewed(sent, ttl)
            return
        seen = boottime()
        with contextlib.suppress(Exception):
            self.etcd.call("/v3/lease/revoke", {"ID": lease_id})
        holder = other_lease = ""
        for r in txn.get("responses", []):
            for kv in r.get("response_range", {}).get("kvs", []):
                holder = base64.b64decode(kv.get("value", "")).decode(errors="replace")
                other_lease = str(kv.get("lease", ""))
        self.other_seen = seen
        self.other_lease = other_lease
        self.other_holder = holder
        self.write(holder, 0.0)

    def expired_in_etcd(self, lease_id: str) -> bool:
        """Whether etcd no longer knows the lease ``lease_id`` (TTL -1): expired or revoked, never still running.
        An error: False (the caller waits)."""
        try:
            answer = self.etcd.call("/v3/lease/timetolive", {"ID": lease_id})
            return int(answer.get("TTL", 0)) == -1
        except (HAError, TypeError, ValueError):
            return False

    def renewed(self, sent: float, ttl: int) -> None:
        deadline = sent + ttl * (1 - LEASE_RATE) - LEASE_MARGIN
        valid_from = self.other_seen + LEASE_TTL
        if boottime() < valid_from:  # the previous holder's lease may still run: not yet ours to trade on
            self.write(self.name, 0.0, waiting_until=round(valid_from, 3))
            return
        if self.generation and self.generation != self.generation_written:
            try:  # before the first valid deadline of this generation: a promotion compares it with a replica's
                _write_atomic(self.generation_path, f"{self.generation}\n")
                self.generation_written = self.generation
            except (HAError, OSError) as exc:  # the fence still stops a trade twice; the ledger choice is weaker
                log.error("lease: generation %d not recorded (%s)", self.generation, exc)
        self.write(self.name, deadline, lease=self.lease_id)

    def keepalive(self) -> None:
        sent = boottime()
        result = self.etcd.call("/v3/lease/keepalive", {"ID": self.lease_id})
        ttl = int(result.get("TTL", 0) or 0)
        if ttl <= 0:
            log.error("lease: lease %s expired (no keepalive in time): not the holder any more", self.lease_id)
            self.lost()
            return
        got = self.etcd.call("/v3/kv/range", {"key": _b64(LEADER_KEY)})
        kvs = got.get("kvs", [])
        value = base64.b64decode(kvs[0].get("value", "")).decode(errors="replace") if kvs else ""
        if value != self.name or str(kvs[0].get("lease", "")) != self.lease_id:
            log.error("lease: %s is %r, not ours: not the holder any more", LEADER_KEY, value)
            self.lost()
            return
        self.renewed(sent, ttl)

    def lost(self) -> None:
        self.lease_id = ""
        self.other_seen = boottime()
        self.other_lease = ""
        self.write("", 0.0)

    def step(self) -> None:
        try:
            if self.lease_id:
                self.keepalive()
            else:
                self.campaign()
        except (HAError, KeyError, TypeError, ValueError) as exc:
            # The written deadline stands (it runs out by itself); nothing is extended without etcd.
            log.warning("lease: %s", exc)

    def release(self) -> None:
        """On a clean stop: the lease file says nobody first, then the key is given up at once."""
        lease_id = self.lease_id
        self.write("", 0.0)
        if lease_id:
            key = _b64(LEADER_KEY)
            with contextlib.suppress(HAError):  # only while the key is still ours: the next holder need not wait
                self.etcd.call("/v3/kv/txn", {
                    "compare": [{"key": key, "target": "VALUE", "result": "EQUAL", "value": _b64(self.name)},
                                {"key": key, "target": "LEASE", "result": "EQUAL", "lease": lease_id}],
                    "success": [{"requestPut": {"key": _b64(RELEASED_KEY), "value": _b64(lease_id)}}]})
            with contextlib.suppress(HAError):
                self.etcd.call("/v3/lease/revoke", {"ID": lease_id})


class KeptEtcd(Etcd):
    """Etcd over kept-alive HTTPS connections, one per member: the fence's call is on the bot's order path,
    and a TLS handshake per call (``Etcd``) would add milliseconds to every order. Thread-safe (one lock)."""

    def __init__(self, endpoints: list[str], cafile: Path = ETCD_CA, cert: Path = ETCD_CERT, key: Path = ETCD_KEY,
                 timeout: float = LEASE_REQUEST_TIMEOUT) -> None:
        import threading
        super().__init__(endpoints, cafile, cert, key, timeout)
        self.conns: dict[str, Any] = {}
        self.lock = threading.Lock()

    def _post(self, endpoint: str, path: str, data: bytes) -> tuple[int, bytes]:
        import http.client
        import urllib.parse
        for attempt in (0, 1):  # a kept connection the member closed meanwhile: once more on a new one
            conn = self.conns.get(endpoint)
            fresh = conn is None
            if conn is None:
                url = urllib.parse.urlsplit(endpoint)
                conn = http.client.HTTPSConnection(url.hostname or "", url.port, timeout=self.timeout,
                                                   context=self.ctx)
                self.conns[endpoint] = conn
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read(1 << 24)
            except (OSError, http.client.HTTPException):
                conn.close()
                self.conns.pop(endpoint, None)
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import http.client
        data = json.dumps(body).encode()
        errors = []
        with self.lock:
            for endpoint in self.order():
                try:
                    status, raw = self._post(endpoint, path, data)
                    answer = json.loads(raw or b"{}")
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    errors.append(f"{endpoint}: {exc.__class__.__name__}: {exc}")
                    continue
                if status != 200 or (isinstance(answer, dict) and "error" in answer):
                    why = (answer.get("error") or answer.get("message") if isinstance(answer, dict)
                           else repr(raw[:200]))
                    errors.append(f"{endpoint}: HTTP {status} {why}")
                    continue
                self.answered(endpoint)
                return answer.get("result", answer) if isinstance(answer, dict) else {}
        raise HAError("etcd: " + "; ".join(errors), "journalctl -u etcd; polymarket-ha status")


class FenceServer:
    """The lease keeper's unix socket for the bot (FENCE_SOCKET, root:polymarket-bot 0660; the caller's uid is
    checked too): one JSON request line, one JSON answer line.

    ``{"op": "record", "key": K, "ttl": N, "order": H}``: puts COPIED_PREFIX + K in etcd, by a transaction
    whose compare is "LEADER_KEY holds this node's name under this node's lease": a node that lost the lease
    (expired, taken over, frozen meanwhile) cannot record, so its bot does not send. The key is put under a
    shared etcd lease of N + FENCE_BUCKET seconds (one per minute), so it expires by itself.
    ``{"op": "copied"}``: every recorded key (any holder), read under the same compare, and the generation
    of this node's lease (the leader key's create revision). ``{"op": "forget", "key": K}``: K deleted under
    the same compare (the bot recorded K and then did not send)."""

    def __init__(self, keeper: LeaseKeeper, etcd: Etcd, path: Path = FENCE_SOCKET,
                 uids: set[int] | None = None) -> None:
        import grp
        self.keeper = keeper
        self.etcd = etcd
        self.path = path
        self.buckets: dict[int, tuple[str, float]] = {}  # ttl asked -> (etcd lease id, granted at, BOOTTIME)
        self.uids = {0} if uids is None else uids  # root and polymarket-bot may ask
        self.gid = 0
        with contextlib.suppress(KeyError):
            if uids is None:
                self.uids.add(pwd.getpwnam(BOT_USER).pw_uid)
            self.gid = grp.getgrnam(BOT_USER).gr_gid

    def _compare(self, lease_id: str) -> list[dict[str, Any]]:
        key = _b64(LEADER_KEY)
        return [{"key": key, "target": "VALUE", "result": "EQUAL", "value": _b64(self.keeper.name)},
                {"key": key, "target": "LEASE", "result": "EQUAL", "lease": lease_id}]

    def _bucket(self, ttl: int, renew: bool = False) -> str:
        hit = self.buckets.get(ttl)
        if hit and not renew and boottime() - hit[1] < FENCE_BUCKET:
            return hit[0]
        grant = self.etcd.call("/v3/lease/grant", {"TTL": ttl + FENCE_BUCKET})
        self.buckets[ttl] = (str(grant["ID"]), boottime())
        return self.buckets[ttl][0]

    def answer(self, req: Any) -> dict[str, Any]:
        refused = {"ok": False, "fenced": True, "error": f"{self.keeper.name} does not hold {LEADER_KEY}"}
        lease_id = self.keeper.lease_id
        if not isinstance(req, dict):
            return {"ok": False, "error": "not a JSON object"}
        if not lease_id:
            return refused
        key = req.get("key")
        if req.get("op") in ("record", "forget") and (
                not isinstance(key, str) or not 0 < len(key) <= 1000 or any(ord(c) < 0x20 for c in key)):
            return {"ok": False, "error": "key: 1-1000 printable characters"}
        if req.get("op") == "forget":  # recorded, then not sent: taken back while this node still holds the key
            txn = self.etcd.call("/v3/kv/txn", {
                "compare": self._compare(lease_id),
                "success": [{"requestDeleteRange": {"key": _b64(COPIED_PREFIX + str(key))}}],
                "failure": []})
            return {"ok": True} if txn.get("succeeded") else refused
        if req.get("op") == "record":
            ttl = req.get("ttl")
            if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= FENCE_MAX_TTL:
                return {"ok": False, "error": f"ttl: seconds, 1-{FENCE_MAX_TTL}"}
            value = json.dumps({"holder": self.keeper.name, "at": round(time.time(), 3),
                                "order": str(req.get("order", ""))[:200]})
            for attempt in (0, 1):
                bucket = self._bucket(ttl, renew=attempt > 0)
                try:
                    txn = self.etcd.call("/v3/kv/txn", {
                        "compare": self._compare(lease_id),
                        "success": [{"requestPut": {"key": _b64(COPIED_PREFIX + str(key)), "value": _b64(value),
                                                    "lease": bucket}}],
                        "failure": []})
                except HAError as exc:
                    if attempt == 0 and "lease not found" in str(exc):  # the bucket expired early (revoked?)
                        continue
                    raise
                break
            if not txn.get("succeeded"):
                return refused
            return {"ok": True, "revision": str(txn.get("header", {}).get("revision", ""))}
        if req.get("op") == "copied":
            prefix = COPIED_PREFIX.encode()
            end = prefix[:-1] + bytes([prefix[-1] + 1])
            txn = self.etcd.call("/v3/kv/txn", {
                "compare": self._compare(lease_id),
                "success": [{"requestRange": {"key": base64.b64encode(prefix).decode(),
                                              "range_end": base64.b64encode(end).decode()}},
                            {"requestRange": {"key": _b64(LEADER_KEY)}}],
                "failure": []})
            if not txn.get("succeeded"):
                return refused
            responses = txn.get("responses", [])
            keys: dict[str, Any] = {}
            for kv in responses[0].get("response_range", {}).get("kvs", []):
                name = base64.b64decode(kv["key"]).decode(errors="replace")[len(COPIED_PREFIX):]
                try:
                    keys[name] = json.loads(base64.b64decode(kv.get("value", "")) or b"{}")
                except ValueError:
                    keys[name] = {}
            leader = responses[1].get("response_range", {}).get("kvs", [{}])
            return {"ok": True, "keys": keys, "generation": int(leader[0].get("create_revision", 0))}
        return {"ok": False, "error": f"unknown op {req.get('op')!r}"}

    def handle(self, conn: socket.socket) -> None:
        import struct
        conn.settimeout(2.0)
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        data = b""
        while not data.endswith(b"\n") and len(data) <= FENCE_MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if uid not in self.uids:
            log.warning("fence: uid %d refused", uid)
            conn.sendall(b'{"ok": false, "error": "refused: not polymarket-bot or root"}\n')
            return
        try:
            answer = self.answer(json.loads(data))
        except ValueError:
            answer = {"ok": False, "error": "not one JSON line"}
        except (HAError, KeyError, IndexError, TypeError) as exc:
            answer = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"}
            log.warning("fence: %s", answer["error"])
        conn.sendall(json.dumps(answer, separators=(",", ":")).encode() + b"\n")

    def listen(self) -> socket.socket:
        """The socket, bound and listening: made in root's RUN_DIR (never in a directory another user owns)."""
        with contextlib.suppress(FileExistsError):
            self.path.parent.mkdir(mode=0o755)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chown(self.path, 0 if os.geteuid() == 0 else -1, self.gid if os.geteuid() == 0 else -1)
        os.chmod(self.path, 0o660)
        sock.listen(16)
        return sock

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError as exc:
                if sock.fileno() == -1:  # closed: the keeper is ending
                    return
                log.warning("fence: accept: %s", exc)
                time.sleep(0.1)
                continue
            with conn:
                try:
                    self.handle(conn)
                except OSError as exc:
                    log.warning("fence: %s", exc)


def etcd_endpoints(s: Settings) -> list[str]:
    own = [s.own_address]
    others = [a for n, a in s.members.items() if a != s.own_address]
    return [f"https://[{a}]:{ETCD_CLIENT_PORT}" if ":" in a else f"https://{a}:{ETCD_CLIENT_PORT}"
            for a in own + sorted(others, key=lambda a: a != s.witness_address)]


def cmd_lease_keeper(_args: argparse.Namespace) -> int:
    import signal
    s = load_settings()
    if not (s.ha_node and s.lease):
        raise HAError(f"no lease on this node (role {s.role}, witness {s.witness_address or 'not set'})",
                      "dpkg-reconfigure polymarket-ha (witness_address)")
    import threading
    keeper = LeaseKeeper(s.role, Etcd(etcd_endpoints(s)))
    fence = FenceServer(keeper, KeptEtcd(etcd_endpoints(s)))
    threading.Thread(target=fence.serve, args=(fence.listen(),), name="fence", daemon=True).start()
    stop = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    keeper.write("", 0.0)  # nothing from before this start is trusted
    log.info("lease keeper of %s: key %s, TTL %ds, endpoints %s; fence socket %s", s.role, LEADER_KEY, LEASE_TTL,
             " ".join(keeper.etcd.endpoints), fence.path)
    while not stop:
        started = boottime()
        keeper.step()
        time.sleep(max(0.0, LEASE_RENEW - (boottime() - started)))
    keeper.release()
    with contextlib.suppress(OSError):
        os.unlink(fence.path)
    return 0


def cmd_lease_check(args: argparse.Namespace) -> int:
    """keepalived's vrrp_script: 0 while this node holds a valid lease."""
    if args.node:
        node = args.node
    else:
        s = load_settings()
        node = s.role
    ok, why = lease_valid(node)
    if not ok or args.verbose:
        print(why, file=sys.stderr if not ok else sys.stdout)
    note_lease_held(ok)
    return 0 if ok else 1


# -- the etcd cluster's CA and the members' certificates ---------------------------------------------------------
#
# The CA is made on the lb at install (its key never leaves the lb). Each node makes its own key and a
# certificate request at install; the one-time enrolment of a node is one pipe, run from the admin host:
#   ssh NODE sudo polymarket-ha etcd-csr | ssh LB sudo polymarket-ha etcd-sign NODE \
#     | ssh NODE sudo polymarket-ha etcd-join
# The lb signs only the request's public key: the name and the address come from the lb's own settings.

def openssl(*argv: str, stdin: str | None = None) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(["openssl", *argv], capture_output=True, text=True, input=stdin, env=env, check=False)
    if proc.returncode != 0:
        raise HAError(f"openssl {argv[0]}: " + (proc.stderr.strip().splitlines() or ["failed"])[-1])
    return proc.stdout


def _etcd_group() -> int:
    import grp
    try:
        return grp.getgrnam("etcd").gr_gid
    except KeyError:
        raise HAError("no group etcd (is etcd-server installed?)", "apt-get install etcd-server") from None


def ensure_member_key(s: Settings) -> None:
    """This node's etcd key (root:etcd 0640) and its certificate request, made once."""
    ETCD_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not ETCD_KEY.exists():
        with tempfile.TemporaryDirectory(prefix="polymarket-ha-key.") as tmp:
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{tmp}/k")
            write_file(ETCD_KEY, Path(f"{tmp}/k").read_bytes(), 0o640, (0, _etcd_group()))
    if not ETCD_CSR.exists():
        csr = openssl("req", "-new", "-key", str(ETCD_KEY), "-subj", f"/CN=polymarket-ha {s.role}")
        write_file(ETCD_CSR, csr.encode(), 0o644)


def ensure_ca(s: Settings) -> None:
    """On the lb: the cluster CA (made once) and the lb's own member certificate."""
    ETCD_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not (ETCD_CA_KEY.exists() and ETCD_CA.exists()):
        with tempfile.TemporaryDirectory(prefix="polymarket-ha-ca.") as tmp:
            openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", f"{tmp}/ca.key", "-out", f"{tmp}/ca.crt", "-days", "3650",
                    "-subj", "/CN=polymarket-ha etcd CA", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
            write_file(ETCD_CA_KEY, Path(f"{tmp}/ca.key").read_bytes(), 0o600)
            write_file(ETCD_CA, Path(f"{tmp}/ca.crt").read_bytes(), 0o644)
    ensure_member_key(s)
    if not ETCD_CERT.exists():
        write_file(ETCD_CERT, sign_member(s, "lb", ETCD_CSR.read_text(encoding="ascii")).encode(), 0o644)


def sign_member(s: Settings, name: str, csr: str) -> str:
    members = s.members
    if name not in members:
        raise HAError(f"{name!r} is not a member ({', '.join(members) or 'none configured'})",
                      "the members are primary, standby (BACKENDS on the lb) and lb")
    if "-----BEGIN CERTIFICATE REQUEST-----" not in csr or any(ord(c) < 0x20 and c not in "\n\r" for c in csr):
        raise HAError("the input is not a PEM certificate request", "on the node: polymarket-ha etcd-csr")
    with tempfile.TemporaryDirectory(prefix="polymarket-ha-sign.") as tmp:
        Path(f"{tmp}/req.csr").write_text(csr, encoding="ascii")
        openssl("req", "-verify", "-noout", "-in", f"{tmp}/req.csr")
        Path(f"{tmp}/ext").write_text(
            f"subjectAltName=IP:{members[name]}\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
            encoding="ascii")
        serial = "0x" + os.urandom(16).hex()
        return openssl("x509", "-req", "-in", f"{tmp}/req.csr", "-CA", str(ETCD_CA), "-CAkey", str(ETCD_CA_KEY),
                       "-set_serial", serial, "-days", "3650", "-subj", f"/CN=polymarket-ha {name}",
                       "-extfile", f"{tmp}/ext")


def cmd_etcd_init(_args: argparse.Namespace) -> int:
    """The postinst: the CA (lb) or this node's key and request; nothing without etcd members."""
    s = load_settings()
    if not s.lease:
        return 0
    if s.role == "lb":
        ensure_ca(s)
    else:
        ensure_member_key(s)
        if not ETCD_CERT.exists():
            print(f"polymarket-ha: etcd not enrolled yet; from the admin host: ssh THIS-NODE sudo polymarket-ha "
                  f"etcd-csr | ssh LB sudo polymarket-ha etcd-sign {s.role} | ssh THIS-NODE sudo polymarket-ha "
                  "etcd-join", file=sys.stderr)
    return 0


def cmd_etcd_csr(_args: argparse.Namespace) -> int:
    s = load_settings()
    ensure_member_key(s)
    print(ETCD_CSR.read_text(encoding="ascii"), end="")
    return 0


def cmd_etcd_sign(args: argparse.Namespace) -> int:
    s = load_settings()
    if s.role != "lb":
        raise HAError("the cluster CA is on the lb", "run etcd-sign on the lb")
    if not ETCD_CA_KEY.exists():
        raise HAError(f"{ETCD_CA_KEY} is missing", "dpkg-reconfigure polymarket-ha on the lb (BACKENDS: 2 addresses)")
    cert = sign_member(s, args.name, sys.stdin.read(65536))
    print(cert + ETCD_CA.read_text(encoding="ascii"), end="")
    return 0


def cmd_etcd_join(_args: argparse.Namespace) -> int:
    """Install the certificate the lb signed for this node (stdin: certificate, then the CA)."""
    s = load_settings()
    if not s.lease:
        raise HAError("no etcd members configured", "dpkg-reconfigure polymarket-ha (witness_address)")
    text = sys.stdin.read(65536)
    blocks = [b + "-----END CERTIFICATE-----\n" for b in text.split("-----END CERTIFICATE-----")[:-1]]
    blocks = [b[b.index("-----BEGIN CERTIFICATE-----"):] for b in blocks if "-----BEGIN CERTIFICATE-----" in b]
    if len(blocks) != 2:
        raise HAError("the input is not a certificate and the CA (two PEM certificates)",
                      "pipe in the output of 'polymarket-ha etcd-sign NAME' on the lb")
    cert, ca = blocks
    with tempfile.TemporaryDirectory(prefix="polymarket-ha-join.") as tmp:
        Path(f"{tmp}/c").write_text(cert, encoding="ascii")
        Path(f"{tmp}/ca").write_text(ca, encoding="ascii")
        openssl("verify", "-CAfile", f"{tmp}/ca", f"{tmp}/c")
        if openssl("x509", "-noout", "-pubkey", "-in", f"{tmp}/c") != openssl("pkey", "-pubout", "-in", str(ETCD_KEY)):
            raise HAError("the certificate is not for this node's key", "run etcd-csr on this node again and re-sign")
        san = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", f"{tmp}/c")
        if f"IP Address:{s.own_address}" not in san:
            raise HAError(f"the certificate is not for {s.own_address} ({' '.join(san.split()[-1:])})",
                          f"on the lb: polymarket-ha etcd-sign {s.role}")
        fp = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", f"{tmp}/ca").strip()
    write_file(ETCD_CA, ca.encode(), 0o644)
    write_file(ETCD_CERT, cert.encode(), 0o644)
    print(f"{ETCD_CERT}: installed; CA {fp} (compare on the lb: openssl x509 -noout -fingerprint -sha256 "
          f"-in {ETCD_CA})")
    for unit in ("etcd.service", "polymarket-ha-lease.service"):
        run(["systemctl", "restart", "--no-block", unit])
    return 0


# -- planned switchover --------------------------------------------------------------
#
# Under nopreempt the VIP never moves back by itself. "polymarket-ha switchover", on the node that trades, hands
# over at once: with the lease, the lease keeper is stopped (it writes "nobody" into the lease file, so the bot
# stops sending, then revokes its etcd lease: the key is gone now, not after the TTL), the peer's keeper takes
# the key, and the keeper is started again as a follower; keepalived moves the VIP with the key. Without the
# lease, keepalived is stopped here until the peer holds the VIP, then started again as BACKUP.

LEASE_UNIT = "polymarket-ha-lease.service"
SWITCHOVER_TIMEOUT = 60.0


def _leader_in_etcd(etcd: Etcd) -> str:
    got = etcd.call("/v3/kv/range", {"key": _b64(LEADER_KEY)})
    kvs = got.get("kvs", [])
    return base64.b64decode(kvs[0].get("value", "")).decode(errors="replace") if kvs else ""


def _wait_for(pred: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(HAError, OSError, KeyError, ValueError):
            if pred():
                return time.monotonic() - started
        time.sleep(0.2)
    raise HAError(f"switchover: {what} did not happen within {timeout:.0f} s", "polymarket-ha status on both nodes")


def cmd_switchover(args: argparse.Namespace) -> int:
    s = load_settings()
    if not s.ha_node:
        raise HAError("the lb holds no VIP: run switchover on the node that trades")
    other = "standby" if s.role == "primary" else "primary"

    def peer_fit() -> None:  # checked before anything is stopped: a peer that cannot take over gets nothing
        if http_health(s.peer_address, s.bot_port, 3, "/live")["http"] != 200:
            raise HAError(f"the {other}'s bot is not live ({s.peer_address}:{s.bot_port}/live): nothing handed over",
                          f"on the {other}: systemctl status polymarket-bot")

    if s.lease:
        if not lease_valid(s.role, LEASE_FILE)[0]:
            raise HAError(f"this node ({s.role}) does not hold the trading lease: nothing to hand over",
                          f"run it on the {other}")
        peer_fit()
        etcd = Etcd(etcd_endpoints(s))
        if _leader_in_etcd(etcd) != s.role:  # a linearizable read: a majority is there to hand the key over
            raise HAError(f"etcd does not name {s.role} as the holder", "polymarket-ha status; journalctl -u etcd")
        print(f"switchover: {s.role} gives up the trading lease")
        proc = run(["systemctl", "stop", LEASE_UNIT])
        if proc.returncode != 0:
            raise HAError(f"systemctl stop {LEASE_UNIT}: {proc.stderr.strip()}")
        try:
            took = _wait_for(lambda: _leader_in_etcd(etcd) == other, args.timeout, f"the {other} taking the lease")
        finally:
            run(["systemctl", "start", LEASE_UNIT])  # a follower now: the key is the peer's
        print(f"switchover: the {other} holds the lease after {took:.1f} s")
        moved = _wait_for(lambda: not holds_vip(s), args.timeout, "the VIP leaving this node")
        print(f"switchover: the VIP left this node after {took + moved:.1f} s")
        return 0
    if not holds_vip(s):
        raise HAError(f"this node ({s.role}) does not hold the VIP: nothing to hand over", f"run it on the {other}")
    peer_fit()
    print(f"switchover: {s.role} stops keepalived until the {other} holds the VIP")
    run(["systemctl", "stop", "keepalived.service"])
    try:
        peer_up = _wait_for(lambda: http_health(s.peer_address, s.bot_port, 2, "/live")["role"] == "active",
                            args.timeout, f"the {other}'s bot active")
    finally:
        run(["systemctl", "start", "keepalived.service"])  # BACKUP again (nopreempt)
    print(f"switchover: the {other} trades after {peer_up:.1f} s; keepalived here is BACKUP again")
    return 0


# -- CLI --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    checked = check_value_argv(sys.argv[1:] if argv is None else argv)
    if checked is not None:
        return checked
    parser = argparse.ArgumentParser(prog="polymarket-ha", description="Polymarket HA: status and helpers.")
    parser.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="role, VRRP state, VIP, peer health, last replication")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    sub.add_parser("heartbeat", help="check the peer and write the status JSON").set_defaults(func=cmd_heartbeat)
    p = sub.add_parser("replicate", help="snapshot the ledger and send it to the peer")
    p.add_argument("--full", action="store_true", help="send the whole file (the daily run)")
    p.set_defaults(func=cmd_replicate)
    sub.add_parser("pubkey", help="print this node's replication key").set_defaults(func=cmd_pubkey)
    p = sub.add_parser("trust-peer", help="accept the peer's replication key and pin its ssh host key")
    p.add_argument("key", help="the peer's 'polymarket-ha pubkey' line")
    p.add_argument("--host-key", metavar="KEY",
                   help="the peer's /etc/ssh/ssh_host_ed25519_key.pub (default: read from the peer now, "
                        "fingerprint printed)")
    p.set_defaults(func=cmd_trust_peer)
    p = sub.add_parser("render", help="render the generated configuration files")
    p.add_argument("--settings", default=str(SETTINGS))
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("get", help="print one validated value of ha.conf (the shell helpers use it)")
    p.add_argument("key", help=", ".join(GET_KEYS))
    p.add_argument("--raw", action="store_true", help="the value as written, unchecked (debconf's config script)")
    p.add_argument("--settings", default=str(SETTINGS))
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("check-value", help="check one debconf answer (the maintainer scripts use it)")
    p.add_argument("question", choices=QUESTIONS)
    p.add_argument("value")
    p.set_defaults(func=cmd_check_value)
    p = sub.add_parser("notify", help="keepalived's notify script")
    p.add_argument("type", nargs="?", default="INSTANCE")
    p.add_argument("name", nargs="?", default="polymarket")
    p.add_argument("state")
    p.add_argument("priority", nargs="?")
    p.set_defaults(func=cmd_notify)
    sub.add_parser("lease-keeper", help="campaign for the trading lease in etcd and keep it (a service)"
                   ).set_defaults(func=cmd_lease_keeper)
    p = sub.add_parser("switchover", help="on the node that trades: hand the lease and the VIP to the peer now")
    p.add_argument("--timeout", type=float, default=SWITCHOVER_TIMEOUT, help="seconds to wait for each step")
    p.set_defaults(func=cmd_switchover)
    p = sub.add_parser("lease-check", help="exit 0 while this node holds a valid trading lease (vrrp_script)")
    p.add_argument("--node", help="the node name to check for (default: this node's role)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_lease_check)
    sub.add_parser("etcd-csr", help="print this node's etcd certificate request").set_defaults(func=cmd_etcd_csr)
    p = sub.add_parser("etcd-sign", help="on the lb: sign a member's request (stdin) with the cluster CA")
    p.add_argument("name", choices=("primary", "standby", "lb"))
    p.set_defaults(func=cmd_etcd_sign)
    sub.add_parser("etcd-join", help="install this node's signed etcd certificate (stdin: etcd-sign's output)"
                   ).set_defaults(func=cmd_etcd_join)
    p = sub.add_parser("etcd-init", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_etcd_init)
    p = sub.add_parser("snapshot", help=argparse.SUPPRESS)
    p.add_argument("source")
    p.add_argument("dest")
    p.set_defaults(func=cmd_snapshot)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="polymarket-ha: %(message)s")
    try:
        return int(args.func(args))
    except HAError as exc:
        if args.debug:
            raise
        print(f"error: {exc}" + (f" (hint: {exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    except PermissionError as exc:
        if args.debug:
            raise
        print(f"error: {exc} (hint: run as root)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
