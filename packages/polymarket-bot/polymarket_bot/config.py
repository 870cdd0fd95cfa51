"""The bot's configuration: one table of settings, parsed once into a frozen dataclass.

Values come from an env file (``KEY=value`` lines, as systemd's EnvironmentFile reads
them); variables in the process environment override the file.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import BotError, ConfigError
from .secrets import (
    MIN_TOKEN,
    NOT_PROVISIONED,
    SECRET_NAMES,
    TOKEN_HINT,
    Secret,
    commented_warnings,
    from_credentials_directory,
    is_unset,
)

DEFAULT_ENV_FILE = "/etc/polymarket/.env"
# DB_PATH must be a file directly in it (no subdirectory): the service may write only there (the units'
# ReadWritePaths), and polymarket-ha and polymarket-backup, which ask "polymarket-bot config get DB_PATH", act on
# the ledger only there.
# $POLYMARKET_STATE_DIRECTORY moves it (tests): the process environment only, never the env file.
STATE_DIRECTORY = "/var/lib/polymarket"
# The shipped placeholders, and the unit's SetCredential= fallback: none of them is a secret.
PLACEHOLDER_KEYS = {"", "your_private_key_here", NOT_PROVISIONED}
PLACEHOLDER_SECRETS = {"", "your_api_secret_here", "your_strong_encryption_key_here", NOT_PROVISIONED}
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_KEYLIKE = re.compile(r"[0-9a-fA-F]{64}")


# The settings' choices: member name -> the value written in the env file.
TradingMode = enum.StrEnum("TradingMode", {"DRY_RUN": "dry-run", "LIVE": "live"})
SizingMode = enum.StrEnum("SizingMode", {"FIXED": "fixed", "RATIO": "ratio", "BALANCE": "balance"})
OrderType = enum.StrEnum("OrderType", {"FAK": "FAK", "FOK": "FOK"})
LeaderFeed = enum.StrEnum("LeaderFeed", {"AUTO": "auto", "PER_LEADER": "per-leader", "GLOBAL": "global"})


class Invalid(ValueError):
    pass


def _str(raw: str) -> str:
    return raw


def _secret(raw: str) -> Secret:
    return Secret(raw)


def _number(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            v = float(raw)
        except ValueError:
            raise Invalid(f"must be a number, got {raw!r}") from None
        if v != v or v < lo or v > hi or (lo_open and v == lo):
            bound = f"greater than {lo:g}" if lo_open else f"at least {lo:g}"
            raise Invalid(f"must be {bound} and at most {hi:g}, got {raw!r}")
        return v

    return parse


def _integer(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            v = int(raw)
        except ValueError:
            raise Invalid(f"must be a whole number, got {raw!r}") from None
        if not lo <= v <= hi:
            raise Invalid(f"must be between {lo} and {hi}, got {v}")
        return v

    return parse


def _choice(kind: type[enum.StrEnum]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return kind(raw.strip())
        except ValueError:
            allowed = " | ".join(m.value for m in kind)
            raise Invalid(f"must be one of {allowed}, got {raw!r}") from None

    return parse


def _url(raw: str) -> str:
    if any(c <= " " or c == "\x7f" for c in raw):
        raise Invalid(f"must be an http(s) URL without spaces or control characters, got {raw!r}")
    try:
        parts = urlsplit(raw)
        hostname = parts.hostname
    except ValueError as exc:  # a broken IPv6 literal: "http://[::1", "http://[]:80"
        raise Invalid(f"must be an http(s) URL, got {raw!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Invalid(f"must be an http(s) URL, got {raw!r}")
    if "@" in parts.netloc:
        # urllib would send user:pass nowhere (no Authorization header): refuse rather than drop it
        raise Invalid("must be an http(s) URL without user:password@ (credentials in a URL are not used), "
                      f"got {parts._replace(netloc='...@' + parts.netloc.rpartition('@')[2]).geturl()!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or not hostname:
        raise Invalid(f"must be an http(s) URL with a host and a port between 1 and 65535, got {raw!r}")
    return raw.rstrip("/")


def _shown(raw: str) -> str:
    """RAW for an error message, unless it holds 64 hex digits: a wallet key pasted into the wrong
    setting must not reach the journal (validate-config is the unit's ExecStartPre)."""
    if _KEYLIKE.search(raw):
        return ("a value with 64 hex digits (a private key? not shown; if it is one, it sat in plaintext "
                "in the wrong setting: rotate it)")
    return repr(raw)


def _address_list(raw: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        if not _ADDRESS.match(item):
            raise Invalid(f"{_shown(item)} is not a 0x-prefixed 40-hex-digit address")
        if item.lower() not in out:
            out.append(item.lower())
    return tuple(out)


def _word_list(raw: str) -> frozenset[str]:
    return frozenset(x.strip().lower() for x in raw.split(",") if x.strip())


def _wallet(raw: str) -> str:
    if raw in ("", "0x..."):
        return ""
    if not _ADDRESS.match(raw):
        raise Invalid(f"must be a 0x-prefixed 40-hex-digit address, got {_shown(raw)}")
    return raw


def _private_key(raw: str) -> Secret:
    if raw.strip() in PLACEHOLDER_KEYS:
        return Secret("")
    h = raw.strip().removeprefix("0x").removeprefix("0X")
    if len(h) != 64 or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise Invalid("must be 64 hexadecimal digits (optionally 0x-prefixed); value not shown")
    from .crypto import SignatureError, private_key_int

    try:
        private_key_int(Secret(raw.strip()))
    except SignatureError as exc:
        raise Invalid(f"{exc} (value not shown)") from None
    return Secret(raw.strip())


def _bind(raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise Invalid(f"must be an IP address (e.g. 127.0.0.1 or 0.0.0.0), got {raw!r}") from None
    return raw


def _log_level(raw: str) -> str:
    v = raw.strip().upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise Invalid(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return v


# C0/C1 controls, DEL, and the invisible characters a terminal or a browser obeys (bidi, zero-width, separators)
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _path(raw: str) -> Path:
    if not raw.startswith("/"):
        raise Invalid(f"must be an absolute path, got {raw!r}")
    if _UNPRINTABLE.search(raw):  # repr() shows them escaped: never raw on root's terminal
        raise Invalid(f"must be a path without control or invisible characters, got {ascii(raw)}")
    return Path(raw)


def redact_url(url: str) -> str:
    """An RPC URL for a message: scheme and host only; its path and query (where Infura, Alchemy and the like
    put the API key) are never shown."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<an unparsable URL, not shown>"
    if not parts.scheme or _UNPRINTABLE.search(host) or any(c <= " " for c in host):
        return "<a URL, not shown>"
    tail = "/<redacted>" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{tail}"


def _rpc_url(raw: str) -> str:
    """POLYGON_RPC_URL: an http(s) URL that may carry an API key in its path; never echoed whole."""
    try:
        return _url(raw)
    except Invalid:
        raise Invalid(f"must be an http(s) URL with a host, no spaces, control characters or user:password@, "
                      f"got {redact_url(raw)}") from None


def _optional_path(raw: str) -> Path | None:
    return _path(raw) if raw.strip() else None


@dataclass(frozen=True)
class Setting:
    key: str
    attr: str
    default: str
    parse: Callable[[str], Any]
    help: str


PORT = _integer(1, 65535)

SETTINGS: tuple[Setting, ...] = (
    Setting("PRIVATE_KEY", "private_key", "", _private_key,
            "wallet private key (hex); placeholder or empty forces dry-run"),
    Setting("WALLET_ADDRESS", "wallet_address", "", _wallet,
            "funder/maker address; empty: the key's own address"),
    Setting("SIGNATURE_TYPE", "signature_type", "0", _integer(0, 3),
            "0 EOA, 1 Polymarket proxy, 2 Gnosis safe, 3 deposit wallet (POLY_1271)"),
    Setting("CHAIN_ID", "chain_id", "137", _integer(1, 2**31), "137 Polygon, 80002 Amoy"),
    Setting("POLYGON_RPC_URL", "polygon_rpc_url", "https://polygon-rpc.com", _rpc_url,
            "Polygon RPC (unused); may hold an API key: config get shows its host only"),
    Setting("ENVIRONMENT", "environment", "production", _str, "free-form environment name"),
    Setting("LOG_LEVEL", "log_level", "INFO", _log_level, "logging level"),
    Setting("ENCRYPTION_KEY", "encryption_key", "", _secret, "accepted for the plan; unused by the bot"),
    Setting("API_SECRET_KEY", "api_secret_key", "", _secret,
            "bearer token for the dashboard pages; empty or placeholder: pages refused"),
    Setting("HEALTH_CHECK_INTERVAL", "health_check_interval", "30", _number(1, 3600),
            "seconds between exchange reachability probes"),
    Setting("COPY_LEADERS", "leaders", "", _address_list, "comma-separated leader wallet addresses"),
    Setting("POLYMARKET_DATA_API_URL", "data_api_url", "https://data-api.polymarket.com", _url, "Data API"),
    Setting("POLYMARKET_CLOB_URL", "clob_url", "https://clob.polymarket.com", _url, "CLOB API"),
    Setting("POLYMARKET_GAMMA_URL", "gamma_url", "https://gamma-api.polymarket.com", _url, "Gamma API"),
    Setting("TRADING_MODE", "requested_mode", "dry-run", _choice(TradingMode), "dry-run | live"),
    Setting("SIZING_MODE", "sizing_mode", "fixed", _choice(SizingMode), "fixed | ratio | balance"),
    Setting("FIXED_AMOUNT_USD", "fixed_amount_usd", "10", _number(0, 1e9, lo_open=True),
            "USD per copied buy (fixed sizing)"),
    Setting("SIZE_RATIO", "size_ratio", "0.1", _number(0, 100, lo_open=True),
            "fraction of the leader's USD size (ratio sizing)"),
    Setting("MAX_ORDER_SIZE", "max_order_size", "100", _number(0, 1e9, lo_open=True), "USD cap per order"),
    Setting("MAX_POSITION_SIZE", "max_position_size", "1000", _number(0, 1e9, lo_open=True),
            "USD cap on the cost of one position"),
    Setting("MAX_DAILY_VOLUME", "max_daily_volume", "5000", _number(0, 1e12, lo_open=True),
            "USD cap on orders per UTC day"),
    Setting("SLIPPAGE_TOLERANCE", "slippage_tolerance", "0.02", _number(0, 0.5),
            "fraction of the leader's price we accept to pay above (buy) or below (sell) it"),
    Setting("MAX_TRADE_AGE_SECONDS", "max_trade_age", "60", _number(1, 86400),
            "leader trades older than this are skipped"),
    Setting("MARKET_ALLOWLIST", "allowlist", "", _word_list, "condition ids or slugs; empty: all"),
    Setting("MARKET_DENYLIST", "denylist", "", _word_list, "condition ids or slugs never traded"),
    Setting("STOP_LOSS_PERCENTAGE", "stop_loss_pct", "5", _number(0, 100),
            "close a position that lost this percent; 0 disables"),
    Setting("POLL_INTERVAL", "poll_interval", "0.5", _number(0.05, 60), "seconds between polls"),
    Setting("ORDER_TYPE", "order_type", "FAK", _choice(OrderType), "FAK | FOK for copies"),
    Setting("LEADER_FEED", "leader_feed", "auto", _choice(LeaderFeed),
            "per-leader polling, the global trade feed, or auto (global above 5 leaders)"),
    Setting("DATA_API_MAX_RPS", "data_api_max_rps", "15", _number(0.1, 100),
            "request budget per second towards the Data API"),
    Setting("HTTP_TIMEOUT", "http_timeout", "5", _number(0.1, 120), "seconds per HTTP request"),
    Setting("DB_PATH", "db_path", "/var/lib/polymarket/trade_history.db", _path, "SQLite ledger"),
    Setting("BIND_ADDRESS", "bind_address", "127.0.0.1", _bind,
            "address of the dashboard and metrics listeners; set the host address for HAProxy"),
    Setting("DASHBOARD_PORT", "dashboard_port", "8080", PORT, "/health and dashboard pages"),
    Setting("METRICS_PORT", "metrics_port", "9090", PORT, "Prometheus text format"),
    Setting("METRICS_TOKEN_FILE", "metrics_token_file", "", _optional_path,
            "a file holding the bearer token METRICS_PORT demands (Prometheus: authorization credentials_file); "
            "empty: no token, and METRICS_PORT leaves out the account's money series"),
    Setting("PASSIVE_FILE", "passive_file", "/run/polymarket/passive", _path,
            "while this file exists no order is sent"),
    Setting("LOG_FILE", "log_file", "/var/log/polymarket/bot.log", _optional_path,
            "log file besides the journal (rotated by polymarket-hardening's logrotate policy); empty: none"),
    Setting("HA_STATUS_FILE", "ha_status_file", "/run/polymarket/ha-status.json", _path,
            "polymarket-ha's heartbeat status, shown on /ha"),
    Setting("COMPLIANCE_REPORT", "compliance_report", "/var/lib/polymarket-hardening/compliance/latest.json",
            _path, "polymarket-compliance's latest report, shown on /compliance"),
    Setting("TEXTFILE_DIR", "textfile_dir", "/var/lib/prometheus/node-exporter", _path,
            "the node exporter's textfile directory: polymarket-backup's metrics there are shown on / and /ha"),
    # --- the exchange as the truth, and account-level risk limits (issue 9) ---------------
    Setting("RECONCILE_INTERVAL_SECONDS", "reconcile_interval", "300", _number(10, 86400),
            "seconds between reconciling the ledger's positions with the exchange's (also at start "
            "and when the node turns active)"),
    # The account-level limits: US dollars, 0 (the default) for none.
    *(Setting(key, attr, "0", _number(0, 1e12), f"{what}; 0: no limit") for key, attr, what in (
        ("MAX_DAILY_LOSS_USD", "max_daily_loss",
         "realised + unrealised loss since 00:00 UTC that stops new buys (sells still run)"),
        ("MAX_TOTAL_EXPOSURE_USD", "max_total_exposure", "cap on the summed cost of all open positions"),
        ("MAX_LEADER_EXPOSURE_USD", "max_leader_exposure", "cap on the cost of positions bought after one leader"),
    )),
    Setting("KILL_SWITCH_FILE", "kill_switch_file", "/etc/polymarket/kill-switch", _path,
            "while this file exists no order at all is sent (shown on /health)"),
    Setting("MAX_CONSECUTIVE_ORDER_ERRORS", "max_consecutive_order_errors", "5", _integer(1, 1000),
            "order errors in a row that open the circuit breaker"),
    Setting("CIRCUIT_BREAKER_SECONDS", "circuit_breaker_seconds", "300", _number(1, 86400),
            "seconds the circuit breaker pauses trading"),
    # --- the trading lease of polymarket-ha (issue 11); set by its drop-in, never by hand --------
    Setting("LEASE_FILE", "lease_file", "", _optional_path,
            "when set, no order unless this lease file (polymarket-ha's lease keeper) names LEASE_NODE "
            "with a deadline ahead on CLOCK_BOOTTIME; absent, unreadable or expired: passive"),
    Setting("LEASE_NODE", "lease_node", "", _str, "this node's name in LEASE_FILE (primary or standby)"),
    Setting("FENCE_SOCKET", "fence_socket", "", _optional_path,
            "when set, each order's leader trade is first recorded in etcd through this socket of polymarket-ha's "
            "lease keeper (refused unless this node holds the lease), and a promotion reads those records: a "
            "trade copied by either node is never copied again; unreachable: no order"),
    Setting("GEOBLOCK_URL", "geoblock_url", "https://polymarket.com/api/geoblock",
            lambda raw: _url(raw) if raw.strip() else "",
            "Polymarket's geoblock check of this host's IP (at start and hourly, on /health; "
            "validate-config --geoblock); empty: not checked"),
)

KNOWN = {s.key for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    private_key: Secret = field(repr=False)
    wallet_address: str
    signature_type: int
    chain_id: int
    polygon_rpc_url: str = field(repr=False)
    environment: str
    log_level: str
    encryption_key: Secret = field(repr=False)
    api_secret_key: Secret = field(repr=False)
    health_check_interval: float
    leaders: tuple[str, ...]
    data_api_url: str
    clob_url: str
    gamma_url: str
    requested_mode: TradingMode
    sizing_mode: SizingMode
    fixed_amount_usd: float
    size_ratio: float
    max_order_size: float
    max_position_size: float
    max_daily_volume: float
    slippage_tolerance: float
    max_trade_age: float
    allowlist: frozenset[str]
    denylist: frozenset[str]
    stop_loss_pct: float
    poll_interval: float
    order_type: OrderType
    leader_feed: LeaderFeed
    data_api_max_rps: float
    http_timeout: float
    db_path: Path
    bind_address: str
    dashboard_port: int
    metrics_port: int
    passive_file: Path
    compliance_report: Path
    log_file: Path | None
    ha_status_file: Path
    textfile_dir: Path
    reconcile_interval: float
    max_daily_loss: float
    max_total_exposure: float
    max_leader_exposure: float
    kill_switch_file: Path
    max_consecutive_order_errors: int
    circuit_breaker_seconds: float
    geoblock_url: str
    lease_file: Path | None
    lease_node: str
    fence_socket: Path | None
    metrics_token_file: Path | None = None
    warnings: tuple[str, ...] = ()
    metrics_token: Secret = field(default_factory=lambda: Secret(""), repr=False)  # METRICS_TOKEN_FILE's

    @property
    def mode(self) -> TradingMode:
        """Live only when asked for and a real key is present."""
        if self.requested_mode is TradingMode.LIVE and self.private_key:
            return TradingMode.LIVE
        return TradingMode.DRY_RUN

    @property
    def dashboard_token_set(self) -> bool:
        return self.api_secret_key.reveal() not in PLACEHOLDER_SECRETS


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_line(line: str) -> tuple[str, str] | None:
    """One env-file line: (KEY, value); None for a blank or comment line; ValueError for anything else."""
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    if s.startswith("export "):
        s = s[7:].lstrip()
    key, sep, value = s.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ValueError("not a KEY=value line")
    value = value.strip()
    end = value.find(value[0], 1) if value[:1] in ("'", '"') else -1
    if end > 0 and value[end + 1:].lstrip()[:1] in ("", "#"):
        value = value[1:end]  # "quoted"  # and a comment
    elif " #" in value:
        value = value.split(" #", 1)[0].rstrip()
    return key, value


def read_env_file(path: Path) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """KEY=value lines -> {KEY: (value, line)}; problems for lines that are not."""
    values: dict[str, tuple[str, int]] = {}
    problems: list[str] = []
    text = path.read_text(encoding="utf-8")
    for no, line in enumerate(text.splitlines(), 1):
        try:
            kv = env_line(line)
        except ValueError as exc:
            problems.append(f"{path}:{no}: {exc}")
            continue
        if kv:
            values[kv[0]] = (kv[1], no)
    return values, problems


def _read_env(path: Path) -> tuple[dict[str, tuple[str, int]], list[str], bool]:
    """read_env_file with its errors as problems; whether the file could be read."""
    try:
        values, problems = read_env_file(path)
    except FileNotFoundError:
        return {}, [f"{path}: no such file (use --config or POLYMARKET_ENV_FILE)"], False
    except (PermissionError, UnicodeDecodeError) as exc:
        return {}, [f"{path}: cannot read: {exc.__class__.__name__}"], False
    return values, problems, True


def db_path_problem(path: Path, environ: Mapping[str, str]) -> str | None:
    """Why DB_PATH cannot be the ledger: not a file directly in the state directory, or a link.

    Directly in it, never in a subdirectory: the bot's user owns the state directory, and could swap a subdirectory
    for a link between root's check and root's writes (polymarket-ha's promotion, polymarket-backup's restore).
    The state directory itself sits in root's /var/lib: the bot cannot swap it."""
    state = Path(environ.get("POLYMARKET_STATE_DIRECTORY") or STATE_DIRECTORY)
    if ".." in path.parts or path.parent != state:
        return (f"{path} is not a file directly in {state} (no subdirectory): the service may write only there "
                "(its units' ReadWritePaths), and polymarket-ha and polymarket-backup, root, act on the ledger only "
                "there, where the bot's user cannot swap a directory for a link")
    real = Path(os.path.realpath(state))
    if real != state:
        return f"{state} leads through a symbolic link (to {real}): root's helpers follow none there"
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            link = stat.S_ISLNK(os.lstat(name).st_mode)
        except OSError:
            continue  # absent (run creates it) or unreadable (check_ledger_path says so)
        if link:
            return f"{ascii(name)} is a symbolic link: the ledger must be a plain file, root's helpers follow no link"
    return None


def get(key: str, path: Path, environ: Mapping[str, str]) -> str:
    """One setting as the service resolves it (the environment, else the env file, else the default), checked by
    its own parser, in env-file form: what polymarket-ha and polymarket-backup ask. Never a secret."""
    setting = next((s for s in SETTINGS if s.key == key), None)
    if setting is None:
        raise BotError(f"config get: {key!r} is not a setting", "polymarket-bot --help lists them")
    if key in SECRET_NAMES:
        raise BotError(f"config get: {key} is a secret, never printed", "sudo polymarket-bot secret list")
    file_values, problems, _ = _read_env(path)
    raw, where = setting.default, f"{key} (default)"
    if key in environ:
        raw, where = environ[key], f"environment: {key}"
    elif key in file_values:
        raw, where = file_values[key][0], f"{path}:{file_values[key][1]}: {key}"
    try:
        value = setting.parse(raw)
    except Invalid as exc:
        problems.append(f"{where}: {exc}")
    else:
        problem = db_path_problem(value, environ) if key == "DB_PATH" else None
        if problem:
            problems.append(f"{where}: {problem}")
    if problems:
        raise ConfigError(problems)
    if isinstance(value, (tuple, frozenset)):
        shown = ",".join(sorted(value) if isinstance(value, frozenset) else value)
    else:
        shown = f"{value:.15g}" if isinstance(value, float) else "" if value is None else str(value)
    if _KEYLIKE.search(shown):  # a wallet key pasted into the wrong setting never leaves this process
        raise ConfigError([f"{where}: {_shown(shown)}"])
    if key == "POLYGON_RPC_URL":  # an API key in the path (Infura, Alchemy): the host only
        return redact_url(shown)
    if _UNPRINTABLE.search(shown):  # never raw on root's terminal nor in the helpers' parsers
        raise ConfigError([f"{where}: holds a control or invisible character, not printed: {ascii(shown)}"])
    return shown


def _metrics_token(path: Path) -> tuple[str, str]:
    """(the token, "") or ("", why not): one line of at least MIN_TOKEN printable characters, not world-readable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            raw = os.read(fd, 4096) if stat.S_ISREG(st.st_mode) else b""
        finally:
            os.close(fd)
    except OSError as exc:
        return "", f"cannot read {ascii(str(path))}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "", f"{ascii(str(path))} is not a regular file"
    if st.st_mode & 0o007:
        return "", f"{ascii(str(path))} is readable by others: chmod o-rwx (root:polymarket-bot 0640)"
    token = raw.decode("utf-8", "replace").strip()
    if len(token) < MIN_TOKEN or any(c <= " " or c == "\x7f" for c in token):
        return "", f"the token in {ascii(str(path))} must be one line of at least {MIN_TOKEN} printable characters"
    return token, ""


def env_file_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    return Path(cli_value or environ.get("POLYMARKET_ENV_FILE") or DEFAULT_ENV_FILE)


def load(path: Path | None, environ: Mapping[str, str] | None = None,
         credentials: Mapping[str, str] | None = None) -> Config:
    """Parse and check everything; raise ConfigError listing every problem.

    Secrets come first from ``credentials`` (default: what the unit delivered in
    $CREDENTIALS_DIRECTORY), then the environment, then the env file (with a warning: plaintext).
    """
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    warnings: list[str] = []
    if credentials is None:
        credentials, problems = from_credentials_directory(env.get("CREDENTIALS_DIRECTORY"))
    file_values: dict[str, tuple[str, int]] = {}
    if path is not None:
        file_values, file_problems, read = _read_env(path)
        problems += file_problems
        if read:
            try:
                if path.stat().st_mode & 0o077:
                    warnings.append(f"{path}: readable by group/others; it holds secrets, chmod 600")
            except OSError:
                pass
        for key, (_, no) in file_values.items():
            if key not in KNOWN and key not in ("POLYMARKET_ENV_FILE",):
                warnings.append(f"{path}:{no}: {key}: unknown key, ignored")
        warnings += commented_warnings(path)
    kwargs: dict[str, Any] = {}
    for s in SETTINGS:
        where = s.key
        raw = s.default
        in_file = s.key in file_values and not (s.key in SECRET_NAMES and is_unset(s.key, file_values[s.key][0]))
        if s.key in credentials:
            raw, where = credentials[s.key], f"credential {s.key}"
            if in_file:
                warnings.append(f"{path}:{file_values[s.key][1]}: {s.key}: also here in plaintext, unused (the "
                                "encrypted credential wins); blank it: sudo polymarket-bot secret migrate")
        elif s.key in env:
            raw, where = env[s.key], f"environment: {s.key}"
        elif s.key in file_values:
            raw, no = file_values[s.key]
            where = f"{path}:{no}: {s.key}"
            if in_file and s.key in SECRET_NAMES:
                warnings.append(f"{where}: in plaintext in the env file; encrypt it: sudo polymarket-bot secret "
                                "migrate (see man polymarket-bot, SECRETS)")
        try:
            kwargs[s.attr] = s.parse(raw)
        except Invalid as exc:
            problems.append(f"{where}: {exc}")
    if not problems:
        if kwargs["max_order_size"] > kwargs["max_position_size"]:
            problems.append("MAX_ORDER_SIZE: larger than MAX_POSITION_SIZE")
        if kwargs["dashboard_port"] == kwargs["metrics_port"]:
            problems.append("METRICS_PORT: same port as DASHBOARD_PORT")
        overlap = kwargs["allowlist"] & kwargs["denylist"]
        if overlap:
            problems.append(f"MARKET_DENYLIST: also in MARKET_ALLOWLIST: {', '.join(sorted(overlap))}")
        if kwargs["requested_mode"] is TradingMode.LIVE and not kwargs["private_key"]:
            warnings.append("TRADING_MODE=live but PRIVATE_KEY is empty or the placeholder: dry-run forced")
        if kwargs["signature_type"] != 0 and not kwargs["wallet_address"]:
            problems.append("WALLET_ADDRESS: required when SIGNATURE_TYPE is 1, 2 or 3 (the proxy, safe or "
                            "deposit wallet)")
        if kwargs["api_secret_key"].reveal() in PLACEHOLDER_SECRETS:
            warnings.append("API_SECRET_KEY: empty or the placeholder; dashboard pages will refuse access")
        elif len(kwargs["api_secret_key"].reveal()) < MIN_TOKEN:
            warnings.append(f"API_SECRET_KEY: shorter than {MIN_TOKEN} characters, it can be guessed: {TOKEN_HINT}")
        if not kwargs["leaders"]:
            warnings.append("COPY_LEADERS: empty; the bot will follow nobody")
        if kwargs["lease_file"] is not None and not kwargs["lease_node"]:
            problems.append("LEASE_NODE: required when LEASE_FILE is set (the node name the lease must hold)")
        if kwargs["metrics_token_file"] is not None:
            token, problem = _metrics_token(kwargs["metrics_token_file"])
            if problem:
                problems.append(f"METRICS_TOKEN_FILE: {problem}")
            kwargs["metrics_token"] = Secret(token)
    if problems:
        raise ConfigError(problems)
    return Config(**kwargs, warnings=tuple(warnings))
