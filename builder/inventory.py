"""Load and validate the inventory of hosts (``autoinstall/inventory.yaml``).

The inventory is parsed once into frozen dataclasses; everything downstream
(autoinstall media, debconf answers) reads those, never the raw YAML.  Every
problem is an InputError of one line naming the file, the host and the field,
e.g. ``inventory.yaml:64: host standby: address 192.168.2.101 is outside
network 192.168.1.0/24``.  Every key and value is one line of printable text
(no newline, tab, NUL, DEL, C1 or Unicode line separator, which YAML's escapes
and block scalars could otherwise carry into netplan, grub or authorized_keys),
and every pattern matches the whole value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import posixpath
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import available_timezones

import yaml

from builder import packages, project
from builder.errors import InputError
from builder.packages import Role as Role  # the roles are the registry's; re-exported
from builder.text import control_problem, http_url, shown

HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DISK = re.compile(r"/dev/[A-Za-z0-9/_.:-]+")
# A Linux interface name as polymarket-ha check-value takes it (the kernel's
# dev_valid_name: 1-15 bytes, not "." or "..", no "/", ":" or whitespace; and
# only what keepalived.conf and systemd units take): tests/unit hold both to
# the same samples.
INTERFACE = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9_.@-]{1,15}")
# Host names that mean something else where the builder writes them: pxe/ is
# the PXE tree beside the host directories, GRUB's menu has an entry --id
# local, dnsmasq reads dhcp-host=MAC,ignore / ,infinite / a lease time such
# as 45m or 3600.
RESERVED_HOSTS = frozenset({"pxe", "local", "localhost", "ignore", "infinite", "deprecated", "http", "grub"})
LEASE_TIME = re.compile(r"[0-9]+[smhdw]?")
LOCALE = re.compile(r"[a-z]{2,3}_[A-Z]{2}\.UTF-8")
KEYBOARD = re.compile(r"[a-z]{2,3}")
# What polymarket-monitoring check-value takes for its receivers (the same patterns as its own), by kind. None
# of its answers may hold a character of monitoring.conf's KEY="value" grammar (UNQUOTABLE there).
UNQUOTABLE = '"\\$`'
RECEIVER: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9.!#%&'*+/=?^_{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}"),
    "smarthost": re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?:[0-9]{1,5}"),
    "smtp_username": re.compile(r"[^\s\"'\\$`]{1,256}"),
    "chat_id": re.compile(r"-?[0-9]{1,20}"),
    "phone": re.compile(r"\+?[0-9][0-9 ()./-]{2,31}"),
    "contact_text": re.compile(r"[^\x00-\x1f\x7f]{1,80}"),
}
# The severities of polymarket-monitoring's alert rules; routes name the contacts e-mailed for each.
SEVERITIES = ("critical", "warning")
# Keys that would put a secret into the media: each names the command that sets it on the monitoring host.
SECRET_KEYS = {
    "password": "smtp_password",
    "smtp_password": "smtp_password",
    "bot_token": "telegram_bot_token",
    "telegram_bot_token": "telegram_bot_token",
    "token": "telegram_bot_token",
}
MONITORING_PACKAGE = "polymarket-monitoring"

# The SSH public key types sshd on Ubuntu 24.04 accepts.  DSA is gone; RSA
# keys must have at least 3072 bits.
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)
MIN_RSA_BITS = 3072
# An ECDSA key blob holds its type, its curve's name and the uncompressed EC
# point (0x04, X, Y) of that curve.
ECDSA_POINT_BYTES = {"ecdsa-sha2-nistp256": 65, "ecdsa-sha2-nistp384": 97, "ecdsa-sha2-nistp521": 133}

# Accounts every Ubuntu 24.04 server of ours has besides our packages' own
# (base-passwd's static ones, those of the server install and of our
# packages' dependencies): cloud-init would make one of them the NOPASSWD
# sudo admin.
SYSTEM_ACCOUNTS = frozenset(
    {
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
        "www-data", "backup", "list", "irc", "_apt", "nobody", "systemd-network", "systemd-resolve",
        "systemd-timesync", "systemd-coredump", "messagebus", "syslog", "sshd", "polkitd", "tss", "uuidd",
        "tcpdump", "landscape", "fwupd-refresh", "usbmux", "dnsmasq", "haproxy", "_rpc", "statd",
        "dhcpcd", "pollinate", "lxd", "gnats", "systemd-oom", "_chrony", "_laurel", "ntp", "postfix",
        "keepalived", "keepalived_script",
    }
)  # fmt: skip

# Groups an Ubuntu 24.04 server has after install (base-passwd's static ones,
# systemd's and those of the server seed): cloud-init's useradd of an admin
# named like one fails ("group exists"), and the host boots with no admin,
# password and root logins off.
SYSTEM_GROUPS = frozenset(
    {
        "root", "daemon", "bin", "sys", "adm", "tty", "disk", "lp", "mail", "news", "uucp", "man", "proxy",
        "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio", "dip", "www-data",
        "backup", "operator", "list", "irc", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff",
        "games", "users", "nogroup", "systemd-journal", "systemd-network", "systemd-resolve",
        "systemd-timesync", "crontab", "messagebus", "syslog", "_ssh", "tss", "input", "sgx", "kvm",
        "render", "lxd", "uuidd", "tcpdump", "landscape", "fwupd-refresh", "netdev", "polkitd", "rdma",
        "pollinate", "ssl-cert",
        "systemd-coredump", "dnsmasq", "haproxy", "_chrony", "gnats", "dhcpcd", "usbmux",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Network:
    cidr: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    dns: tuple[ipaddress.IPv4Address, ...]
    interface: str
    virtual_ip: ipaddress.IPv4Address
    admin_network: ipaddress.IPv4Network


@dataclass(frozen=True)
class Admin:
    user: str
    ssh_keys: tuple[str, ...]


@dataclass(frozen=True)
class AptRepo:
    url: str
    key_file: Path  # absolute


@dataclass(frozen=True)
class Pxe:
    http_url: str  # where pxe/http/ is served; a host's seed is http_url/HOST/
    iso_url: str  # the Ubuntu live-server ISO, for casper's url=


@dataclass(frozen=True)
class Host:
    name: str
    role: Role
    address: ipaddress.IPv4Address
    mac: str
    disks: tuple[str, ...]
    timezone: str
    locale: str
    keyboard: str


@dataclass(frozen=True)
class Contact:
    """One row of the plan's emergency-contacts table."""

    name: str  # the key under contacts:, e.g. primary-on-call
    role: str  # "Primary On-Call"
    person: str
    phone: str
    email: str


@dataclass(frozen=True)
class Alerts:
    """Where polymarket-monitoring's Alertmanager sends alerts; never a secret (those are set on the host)."""

    smtp_smarthost: str = ""
    smtp_from: str = ""
    smtp_username: str = ""
    webhook_url: str = ""
    telegram_chat_id: str = ""
    # severity -> the names of the contacts e-mailed
    routes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: Path
    network: Network
    admin: Admin
    apt: AptRepo
    pxe: Pxe
    roles: Mapping[Role, tuple[str, ...]]
    hosts: tuple[Host, ...]
    contacts: tuple[Contact, ...] = ()
    alerts: Alerts = dataclasses.field(default_factory=Alerts)

    def packages(self, host: Host) -> tuple[str, ...]:
        return self.roles[host.role]

    def peer(self, host: Host) -> Host | None:
        """The other node of the HA pair (primary <-> standby); none for the load balancer."""
        want = {Role.PRIMARY: Role.STANDBY, Role.STANDBY: Role.PRIMARY}.get(host.role)
        return next((h for h in self.hosts if h.role is want), None)


T = TypeVar("T")


class _Reader:
    """Typed access to one YAML mapping, with errors that name file, line, host and field."""

    def __init__(self, file: str, data: Any, where: str, path: tuple[str, ...], lines: Mapping[tuple[str, ...], int]):
        self.file = file
        self.where = where  # "host standby", "network", ...
        self.path = path
        self.lines = lines
        if not isinstance(data, dict):
            self.fail(f"must be a mapping, not {_kind(data)}")
        self.data: dict[str, Any] = data

    def _at(self, *at: str) -> str:
        """file:line of the deepest of ``at`` (a field, then an item index) the YAML has."""
        line = None
        for depth in range(len(at), -1, -1):
            line = self.lines.get((*self.path, *at[:depth]))
            if line:
                break
        return f"{self.file}:{line}" if line else self.file

    def fail(self, text: str, hint: str | None = None, at: tuple[str, ...] | str = ()) -> InputError:
        where = (at,) if isinstance(at, str) else at
        raise InputError(f"{self._at(*where)}: {self.where}: {text}", hint=hint)

    def fail_field(self, field: str, text: str, hint: str | None = None, item: int | None = None) -> InputError:
        at = (field,) if item is None else (field, f"[{item}]")
        raise InputError(f"{self._at(*at)}: {self.where}: {field}: {text}", hint=hint)

    def only(self, *known: str) -> None:
        for key in self.data:
            if key not in known:
                self.fail(f"unknown key {shown(key)}", hint=f"known keys here: {', '.join(known)}", at=str(key))

    def get(self, field: str, default: Any = None) -> Any:
        if field in self.data:
            return self.data[field]
        if default is None:
            self.fail(f"missing field {field!r}")
        return default

    def string(self, field: str, pattern: re.Pattern[str] | None = None, default: str | None = None) -> str:
        value = self.get(field, default)
        if not isinstance(value, str) or not value:
            self.fail_field(field, f"must be a non-empty string, not {_kind(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail_field(field, f"{shown(value)} is not valid (expected {pattern.pattern})")
        return str(value)

    def parse(self, field: str, convert: Callable[[str], T], what: str, default: str | None = None) -> T:
        value = self.get(field, default)
        if not isinstance(value, str):
            self.fail_field(field, f"{shown(value)} is not {what}")
        try:
            return convert(value)
        except ValueError:
            self.fail_field(field, f"{shown(value)} is not {what}")
            raise  # unreachable

    def strings(self, field: str, pattern: re.Pattern[str] | None = None, what: str = "valid") -> tuple[str, ...]:
        value = self.get(field)
        if not isinstance(value, list):
            self.fail_field(field, f"must be a list, not {_kind(value)}")
        if not value:
            self.fail_field(field, "must list at least one entry")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or (pattern is not None and not pattern.fullmatch(item)):
                self.fail_field(field, f"{shown(item)} is not {what}", item=i)
            if item in out:
                self.fail_field(field, f"{shown(item)} is listed twice", item=i)
            out.append(item)
        return tuple(out)

    def sub(self, field: str) -> _Reader:
        where = field if self.where == "inventory" else f"{self.where}.{field}"
        return _Reader(self.file, self.get(field), where, (*self.path, field), self.lines)


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}.get(
        type(value), type(value).__name__
    )


def check_interface(value: str) -> str:
    """``value`` when it is an interface name polymarket-ha takes (see INTERFACE), else ValueError."""
    if not INTERFACE.fullmatch(value):
        raise ValueError(value)
    return value


def _ipv4(value: str) -> ipaddress.IPv4Address:
    addr = ipaddress.ip_address(value)
    if not isinstance(addr, ipaddress.IPv4Address):
        raise ValueError(value)
    return addr


def _ipv4_net(value: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(value, strict=True)


def ssh_key_problem(line: str) -> str | None:
    """Why ``line`` is not a usable authorized_keys public key (None when it is)."""
    control = control_problem(line)
    if control:  # a second line would be a second, unchecked authorized_keys entry
        return control
    words = line.split()
    if line.startswith("-----BEGIN"):
        return "this is not a public key (give the line of the .pub file, never the private key)"
    if len(words) < 2:
        return "is not 'TYPE BASE64 [COMMENT]'"
    kind, blob64 = words[0], words[1]
    if kind not in SSH_KEY_TYPES:
        return f"type {shown(kind)} is not accepted (use ssh-ed25519)"
    try:
        blob = base64.b64decode(blob64, validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    fields = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return "the key data is truncated"
        (size,) = struct.unpack(">I", blob[offset : offset + 4])
        offset += 4
        if offset + size > len(blob):
            return "the key data is truncated"
        fields.append(blob[offset : offset + size])
        offset += size
    if not fields or fields[0] != kind.encode():
        return f"the key data does not match its type {kind}"
    if kind == "ssh-ed25519" and (len(fields) != 2 or len(fields[1]) != 32):
        return "the key data is not a valid ssh-ed25519 key"
    if kind == "sk-ssh-ed25519@openssh.com" and (len(fields) != 3 or len(fields[1]) != 32 or not fields[2]):
        return f"the key data is not a valid {kind} key (type, 32-byte key, application)"
    if kind in ECDSA_POINT_BYTES or kind == "sk-ecdsa-sha2-nistp256@openssh.com":
        curve = kind.removeprefix("sk-").removesuffix("@openssh.com").removeprefix("ecdsa-sha2-")
        want = 4 if kind.startswith("sk-") else 3
        if (
            len(fields) != want
            or fields[1] != curve.encode()
            or len(fields[2]) != ECDSA_POINT_BYTES[f"ecdsa-sha2-{curve}"]
            or fields[2][:1] != b"\x04"
            or (want == 4 and not fields[3])
        ):
            what = "type, curve, EC point" + (", application" if want == 4 else "")
            return f"the key data is not a valid {kind} key ({what})"
    if kind == "ssh-rsa":
        if len(fields) != 3:
            return "the key data is not a valid ssh-rsa key"
        bits = int.from_bytes(fields[2], "big").bit_length()
        if bits < MIN_RSA_BITS:
            return f"RSA key of {bits} bits is too short (at least {MIN_RSA_BITS})"
    return None


def _where(path: tuple[str, ...]) -> tuple[str, str]:
    """The ``where`` and ``field`` of an error about ``path`` (as _Reader names them), items counted from 1."""
    if path[:1] == ("hosts",) and len(path) > 1:
        where, rest = f"host {path[1]}", path[2:]
    elif path:
        where, rest = path[0], path[1:]
    else:
        where, rest = "inventory", ()
    field = ""
    for part in rest:
        if part.startswith("[") and part.endswith("]") and part[1:-1].isdigit():
            field += f"[{int(part[1:-1]) + 1}]"
        else:
            field += f".{part}" if field else part
    return where, field


def _refuse_controls(text: str, path: tuple[str, ...], line: int, name: str, what: str = "") -> None:
    """Every key and value is one line of printable text (yaml's escapes and block scalars can hold any)."""
    problem = control_problem(text)
    if problem:
        where, field = _where(path)
        shown = f"{what}{text!r}" if len(text) <= 80 else f"{what}{text[:77]!r}..."
        raise InputError(
            f"{name}:{line}: {where}: {field + ': ' if field else ''}{shown}: {problem}",
            hint="every inventory value is one line of printable text",
        )


INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
MAX_NUMBER_CHARS = 100  # Python's int() of a YAML number refuses over 4300 digits (a ValueError, no line)


def _walk(
    node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int], name: str, walked: set[int]
) -> None:
    """Record the line of every mapping key, refuse a key given twice (PyYAML keeps the last) and any
    control character in a key or value.  A node reached again through an alias is not walked again (an
    alias to itself would never end, nested aliases would multiply)."""
    if id(node) in walked:
        return
    walked.add(id(node))
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
        _refuse_controls(node.value, path, lines[path], name)
        if node.tag in (INT_TAG, FLOAT_TAG) and len(node.value) > MAX_NUMBER_CHARS:
            where, field = _where(path)
            raise InputError(
                f"{name}:{lines[path]}: {where}: {field + ': ' if field else ''}a number of {len(node.value)} "
                f"characters is too long (at most {MAX_NUMBER_CHARS})",
                hint="quote the value if it is meant as text",
            )
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            lines[(*path, f"#{index}")] = line  # a key that YAML makes no string (null, 1_000) is found by position
            _refuse_controls(key, path, line, name, what="host " if path == ("hosts",) else "key ")
            if key in seen:
                what = f"host {key[:60]}" if path == ("hosts",) else f"key {shown(key)}"
                where = ".".join(path) or "inventory"
                raise InputError(f"{name}:{line}: {where}: {what} is defined twice")
            seen.add(key)
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, name, walked)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, f"[{i}]"), lines, name, walked)


def _load_yaml(path: Path, name: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        hint = "give the inventory with --inventory FILE"
        raise InputError(f"{name}: cannot read: {exc.strerror}", hint=hint) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{name}:{line}: byte 0x{raw[exc.start]:02X} is not UTF-8", hint="save the inventory as UTF-8"
        ) from None
    lines: dict[tuple[str, ...], int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _walk(node, (), lines, name, set())
        return yaml.safe_load(text), lines
    except yaml.reader.ReaderError as exc:  # a raw control character in the file
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(f"{name}:{line}: a control character (U+{exc.character:04X}) is not allowed") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{name}{where}: {problem}") from exc


ADMIN_HINT = "the admin is a person's login that gets sudo: pick a name of its own, such as admin"


def load(path: Path, service_users: Mapping[str, str] | None = None) -> Inventory:
    """Read and validate the inventory at ``path``.  ``service_users``, the accounts our packages
    create (the admin may not be one), default to those of the builder's own tree."""
    name = str(path)
    data, lines = _load_yaml(path, name)
    top = _Reader(name, data, "inventory", (), lines)
    top.only("network", "admin", "apt", "pxe", "defaults", "roles", "hosts", "contacts", "alerts")

    n = top.sub("network")
    n.only("cidr", "gateway", "dns", "interface", "virtual_ip", "admin_network")
    cidr = n.parse("cidr", _ipv4_net, "an IPv4 network such as 192.168.1.0/24")
    dns_raw = n.strings("dns")
    dns = []
    for i, item in enumerate(dns_raw):
        try:
            dns.append(_ipv4(item))
        except ValueError:
            n.fail_field("dns", f"{shown(item)} is not an IPv4 address", item=i)
    network = Network(
        cidr=cidr,
        gateway=n.parse("gateway", _ipv4, "an IPv4 address"),
        dns=tuple(dns),
        interface=n.parse("interface", check_interface, "an interface name (1-15 of A-Z a-z 0-9 - _ . @; not . or ..)"),
        virtual_ip=n.parse("virtual_ip", _ipv4, "an IPv4 address"),
        admin_network=n.parse("admin_network", _ipv4_net, "an IPv4 network", default=str(cidr)),
    )
    for field, addr in (("gateway", network.gateway), ("virtual_ip", network.virtual_ip)):
        if addr not in cidr or addr in (cidr.network_address, cidr.broadcast_address):
            n.fail(f"{field} {addr} is outside network {cidr}", at=field)
    if network.gateway == network.virtual_ip:
        n.fail(f"virtual_ip {network.virtual_ip} is the gateway's address")

    a = top.sub("admin")
    a.only("user", "ssh_keys")
    user = a.string("user", USERNAME)
    if service_users is None:
        service_users = project.service_users(Path(__file__).resolve().parents[1])
    if user in service_users:
        a.fail_field("user", f"{user!r} is reserved (the service account of {service_users[user]})", hint=ADMIN_HINT)
    if user in SYSTEM_ACCOUNTS:
        a.fail_field("user", f"{user!r} is reserved (a system account of Ubuntu)", hint=ADMIN_HINT)
    if user in SYSTEM_GROUPS:
        a.fail_field(
            "user", f"{user!r} is the name of a group of Ubuntu (useradd would fail: no admin)", hint=ADMIN_HINT
        )
    keys = a.strings("ssh_keys")
    for i, key in enumerate(keys, 1):
        problem = ssh_key_problem(key)
        if problem:
            a.fail(
                f"ssh_keys[{i}]: {problem}",
                hint="paste the one line of a .pub file made by ssh-keygen -t ed25519",
                at=("ssh_keys", f"[{i - 1}]"),
            )
    admin = Admin(user, keys)

    r = top.sub("apt")
    r.only("url", "key_file")
    key_file = r.string("key_file")
    apt = AptRepo(
        url=r.parse("url", http_url, "an http:// or https:// URL"),
        key_file=(path.parent / key_file).resolve(),
    )

    p = top.sub("pxe")
    p.only("http_url", "iso_url")
    pxe = Pxe(
        http_url=p.parse("http_url", http_url, "an http:// URL"),
        iso_url=p.parse("iso_url", http_url, "an http:// URL"),
    )

    d = top.sub("defaults") if "defaults" in top.data else _Reader(name, {}, "defaults", ("defaults",), lines)
    d.only("timezone", "locale", "keyboard")
    zones = available_timezones() | {"UTC"}

    def timezone_of(reader: _Reader, default: str) -> str:
        tz = reader.string("timezone", default=default)
        if tz not in zones:
            reader.fail_field("timezone", f"{shown(tz)} is not a known time zone (such as UTC or Europe/Berlin)")
        return tz

    default_tz = timezone_of(d, "UTC")
    default_locale = d.string("locale", LOCALE, default="en_US.UTF-8")
    default_keyboard = d.string("keyboard", KEYBOARD, default="us")

    ro = top.sub("roles")
    roles: dict[Role, tuple[str, ...]] = {}
    for role_name in ro.data:
        if role_name not in {r.value for r in Role}:
            ro.fail(f"unknown role {shown(role_name)}", hint=f"the roles are: {', '.join(Role)}", at=role_name)
        roles[Role(role_name)] = ro.strings(role_name, PACKAGE, "a Debian package name")
        for i, pkg_name in enumerate(roles[Role(role_name)]):
            pkg = packages.get(pkg_name)
            if pkg is None:
                known = ", ".join(p.name for p in packages.REGISTRY)
                ro.fail_field(role_name, f"{pkg_name} is not one of our packages", hint=f"ours: {known}", item=i)
            elif role_name not in pkg.roles:
                goes_on = ", ".join(r for r in Role if r in pkg.roles)
                ro.fail_field(
                    role_name,
                    f"{pkg_name} is not installed on role {role_name}",
                    hint=f"{pkg_name} goes on: {goes_on} ({packages.REGISTRY_FILE})",
                    item=i,
                )

    hs = top.sub("hosts")
    if not hs.data:
        hs.fail("no hosts")
    hosts: list[Host] = []
    seen_addr: dict[ipaddress.IPv4Address, str] = {
        network.gateway: "the gateway",
        network.virtual_ip: "the virtual IP",
    }
    seen_mac: dict[str, str] = {}
    for index, (host_name, raw) in enumerate(hs.data.items()):
        if not isinstance(host_name, str):  # null, 1_000, true: YAML made it no string (and no line of its own)
            line = lines.get(("hosts", f"#{index}"))
            raise InputError(
                f"{name}{f':{line}' if line else ''}: hosts: the host name {shown(host_name)} is {_kind(host_name)}, "
                "not a lower-case DNS label (a-z, 0-9, -)"
            )
        h = _Reader(name, raw, f"host {host_name}", ("hosts", host_name), lines)
        if not HOSTNAME.fullmatch(host_name):
            h.fail("the host name must be a lower-case DNS label (a-z, 0-9, -)")
        if host_name in RESERVED_HOSTS or LEASE_TIME.fullmatch(host_name):
            h.fail(
                f"the host name {host_name!r} is reserved (the PXE tree, GRUB's local entry, or a word or "
                "lease time to dnsmasq)",
                hint="name hosts by a word with a letter, such as primary, standby, lb1",
            )
        h.only("role", "address", "mac", "disks", "timezone", "locale", "keyboard")
        role_name = h.string("role")
        if role_name not in {r.value for r in Role}:
            h.fail_field("role", f"unknown role {shown(role_name)}", hint=f"the roles are: {', '.join(Role)}")
        role = Role(role_name)
        if role not in roles:
            h.fail_field("role", f"role {role_name!r} has no packages under roles:")
        address = h.parse("address", _ipv4, "an IPv4 address")
        if address not in cidr or address in (cidr.network_address, cidr.broadcast_address):
            h.fail(f"address {address} is outside network {cidr}", at="address")
        if address in seen_addr:
            h.fail(f"address {address} is already used by {seen_addr[address]}", at="address")
        seen_addr[address] = f"host {host_name}"
        mac = h.string("mac").lower()
        if not MAC.fullmatch(mac):
            h.fail_field("mac", f"{shown(h.data['mac'])} is not a MAC address such as 52:54:00:12:34:56")
        if mac in seen_mac:
            h.fail(f"mac {mac} is already used by {seen_mac[mac]}", at="mac")
        seen_mac[mac] = f"host {host_name}"
        disks = h.strings("disks", DISK, "a device path such as /dev/sda")
        for i, disk in enumerate(disks):
            if posixpath.normpath(disk) != disk:
                h.fail_field("disks", f"{disk!r} is not a plain device path (no '.', '..', '//')", item=i)
        if len(disks) > 2:
            h.fail_field("disks", f"{len(disks)} disks listed; give one, or two for RAID 1")
        hosts.append(
            Host(
                name=host_name,
                role=role,
                address=address,
                mac=mac,
                disks=disks,
                timezone=timezone_of(h, default_tz),
                locale=h.string("locale", LOCALE, default=default_locale),
                keyboard=h.string("keyboard", KEYBOARD, default=default_keyboard),
            )
        )
    for role in (Role.PRIMARY, Role.STANDBY):
        named = [h.name for h in hosts if h.role is role]
        if len(named) > 1:
            hs.fail(f"{len(named)} hosts have role {role} ({', '.join(named)}); the HA pair has one of each")
    if any(h.role is Role.STANDBY for h in hosts) and not any(h.role is Role.PRIMARY for h in hosts):
        hs.fail("a standby host needs a primary host")
    monitoring = [h.name for h in hosts if MONITORING_PACKAGE in roles[h.role]]
    if len(monitoring) > 1:
        hs.fail(
            f"{len(monitoring)} hosts install {MONITORING_PACKAGE} ({', '.join(monitoring)}); one host monitors "
            "(each would send every alert)",
            hint="list it under roles: lb, or under roles: monitoring for a host of its own, not both",
        )
    contacts = _contacts(top)
    alerts = _alerts(top, {c.name: c for c in contacts})
    if "alerts" in top.data and not monitoring:
        top.sub("alerts").fail(f"no host installs {MONITORING_PACKAGE}", hint="list it under roles: lb (or monitoring)")
    return Inventory(path, network, admin, apt, pxe, roles, tuple(hosts), contacts, alerts)


def _contacts(top: _Reader) -> tuple[Contact, ...]:
    """The plan's emergency-contacts table: NAME: {role, name, phone, email}."""
    if "contacts" not in top.data:
        return ()
    c = top.sub("contacts")
    out = []
    for name in c.data:
        if not isinstance(name, str) or not HOSTNAME.fullmatch(name):
            c.fail(f"contact {shown(name)}: the name must be a lower-case label (a-z, 0-9, -)", at=str(name))
        row = c.sub(name)
        row.only("role", "name", "phone", "email")
        out.append(
            Contact(
                name=name,
                role=row.string("role", RECEIVER["contact_text"]),
                person=row.string("name", RECEIVER["contact_text"]),
                phone=row.string("phone", RECEIVER["phone"]),
                email=row.string("email", RECEIVER["email"]),
            )
        )
    return tuple(out)


def _refuse_secrets(reader: _Reader) -> None:
    for key in reader.data:
        if key in SECRET_KEYS:
            reader.fail(
                f"{key}: secrets are never in the inventory (the media carry it in clear)",
                hint=f"set it on the monitoring host: polymarket-monitoring secret set {SECRET_KEYS[key]}",
                at=key,
            )


def _alerts(top: _Reader, contacts: Mapping[str, Contact]) -> Alerts:
    """Receivers and routing by severity, rendered into polymarket-monitoring's debconf answers."""
    if "alerts" not in top.data:
        return Alerts()
    a = top.sub("alerts")
    _refuse_secrets(a)
    a.only("email", "webhook_url", "telegram_chat_id", "routes")
    smarthost = sender = username = ""
    if "email" in a.data:
        e = a.sub("email")
        _refuse_secrets(e)
        e.only("smarthost", "from", "username")
        smarthost = e.string("smarthost", RECEIVER["smarthost"])
        if not 1 <= int(smarthost.rsplit(":", 1)[1]) <= 65535:
            e.fail_field("smarthost", f"port {smarthost.rsplit(':', 1)[1]} is not 1-65535")
        sender = e.string("from", RECEIVER["email"])
        username = e.string("username", RECEIVER["smtp_username"]) if "username" in e.data else ""
    webhook = a.parse("webhook_url", http_url, "an http:// or https:// URL") if "webhook_url" in a.data else ""
    if any(ch in webhook for ch in UNQUOTABLE):
        a.fail_field("webhook_url", "holds one of \" \\ $ ` (polymarket-monitoring refuses them): percent-encode it")
    chat = a.get("telegram_chat_id", "")
    if isinstance(chat, int) and not isinstance(chat, bool):
        chat = str(chat)
    if chat != "" and (not isinstance(chat, str) or not RECEIVER["chat_id"].fullmatch(chat)):
        a.fail_field("telegram_chat_id", f'{shown(chat)} is not a numeric Telegram chat id such as "-1001234567890"')
    routes: dict[str, tuple[str, ...]] = {}
    if "routes" in a.data:
        r = a.sub("routes")
        r.only(*SEVERITIES)
        for severity in SEVERITIES:
            if severity not in r.data:
                continue
            names = r.strings(severity, HOSTNAME, "a contact name")
            for i, name in enumerate(names):
                if name not in contacts:
                    known = ", ".join(contacts) or "none"
                    r.fail_field(severity, f"{name} is not under contacts:", hint=f"the contacts: {known}", item=i)
            routes[severity] = names
        for i, name in enumerate(routes.get("warning", ())):
            if name not in routes.get("critical", ()):
                r.fail_field(
                    "warning",
                    f"{name} gets the warnings but not the critical alerts",
                    hint="list it under critical too",
                    item=i,
                )
        if any(routes.values()) and not smarthost:
            r.fail("contacts are e-mailed, but alerts has no email: section (smarthost, from)")
    return Alerts(smarthost, sender, username, webhook, chat, routes)


def alert_answers(inv: Inventory) -> dict[str, str]:
    """polymarket-monitoring's receiver questions (without the package prefix) from the alerts section, those
    it sets.
    Warnings go to email_to, critical alerts to email_to and email_critical_to (polymarket-monitoring's
    routing), so a contact listed under warning gets both, one under critical only the critical ones."""
    al = inv.alerts
    email = {c.name: c.email for c in inv.contacts}
    warning = list(dict.fromkeys(email[n] for n in al.routes.get("warning", ())))
    critical = [m for m in dict.fromkeys(email[n] for n in al.routes.get("critical", ())) if m not in warning]
    answers = {
        "webhook_url": al.webhook_url,
        "smtp_smarthost": al.smtp_smarthost,
        "smtp_from": al.smtp_from,
        "smtp_username": al.smtp_username,
        "email_to": " ".join(warning),
        "email_critical_to": " ".join(critical),
        "telegram_chat_id": al.telegram_chat_id,
    }
    return {q: v for q, v in answers.items() if v}  # the rest stay at their defaults (empty: no receiver)
