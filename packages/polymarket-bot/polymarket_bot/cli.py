"""The ``polymarket-bot`` command: run, validate-config, prune, secret."""

from __future__ import annotations

import argparse
import ctypes
import logging
import logging.handlers
import math
import os
import pwd
import signal
import sqlite3
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import __version__
from .config import SETTINGS, Config, db_path_problem, env_file_path, get, load
from .errors import BotError, ConfigError
from .secrets import (
    BAD_INPUT,
    DEFAULT_STORE,
    KEY_CHOICES,
    SECRET_NAMES,
    TOOL_FAILED,
    SecretError,
    Store,
    check_name,
    commented_warnings,
    env_files,
    migrate,
    plaintext_in,
    read_value,
    require_root,
)

log = logging.getLogger("polymarket_bot")
PR_SET_DUMPABLE = 4


def no_core_dumps() -> None:
    """prctl(PR_SET_DUMPABLE, 0): no core dump and no ptrace by other users' processes."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("could not disable core dumps (prctl unavailable)")


def _load(args: argparse.Namespace) -> Config:
    return load(env_file_path(args.config, os.environ))


def _store_values_outside_unit() -> tuple[dict[str, str] | None, list[str]]:
    """Run by root outside the unit (no $CREDENTIALS_DIRECTORY): the stored secrets, decrypted in
    memory, so that validate-config checks what the service will get."""
    if os.environ.get("CREDENTIALS_DIRECTORY") or os.geteuid() != 0:
        return None, []
    store = Store.default()
    if not store.directory.is_dir():
        return None, []
    return store.values()


def cmd_validate(args: argparse.Namespace) -> int:
    no_core_dumps()  # root's validate-config decrypts every credential into this process's memory
    credentials, unreadable = _store_values_outside_unit()
    for p in unreadable:
        print(f"error: {p}", file=sys.stderr)
    try:
        cfg = load(env_file_path(args.config, os.environ), credentials=credentials)
    except ConfigError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        return 1
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if unreadable:
        return 1
    if "DB_PATH" in os.environ:
        print("warning: DB_PATH: set in the environment; polymarket-ha and polymarket-backup read the env file "
              "only (polymarket-bot config get DB_PATH) and would not follow: set it there", file=sys.stderr)
    problem = db_path_problem(cfg.db_path, os.environ) or check_ledger_path(cfg.db_path)
    if problem:
        print(f"error: DB_PATH: {problem}", file=sys.stderr)
        return 1
    if getattr(args, "geoblock", False) and cfg.geoblock_url:
        from .engine import check_geoblock
        from .httpclient import HttpError

        try:
            geo = check_geoblock(cfg.geoblock_url)
        except HttpError as exc:
            print(f"warning: GEOBLOCK_URL: could not check: {exc}", file=sys.stderr)
        else:
            if geo["blocked"]:
                print(f"error: GEOBLOCK_URL: Polymarket refuses orders from this host's IP {geo['ip']} "
                      f"({geo['country']} {geo['region']})", file=sys.stderr)
                return 1
    print(f"configuration OK (mode {cfg.mode}, {len(cfg.leaders)} leader(s))")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """config get KEY: one resolved, checked value on stdout (the helpers of polymarket-ha and polymarket-backup)."""
    print(get(args.key, env_file_path(args.config, os.environ), os.environ))
    return 0


def check_ledger_path(path: Path) -> str | None:
    """What ``run`` needs of DB_PATH, checked read-only: nothing is created, opened for writing or migrated.

    ``run`` creates the directories and the database and migrates the schema, as the service user;
    validate-config (the unit's ExecStartPre, or root by hand) must leave the disk as it found it.
    """
    try:
        return _check_ledger_path(path)
    except OSError as exc:  # a directory on the way that cannot be searched: stat() says EACCES
        return (f"cannot check {exc.filename or path}: {exc.strerror} (every directory above DB_PATH must be "
                "searchable by the service user)")


def _check_ledger_path(path: Path) -> str | None:
    try:
        who = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        who = f"uid {os.geteuid()}"
    if not (path.exists() or path.is_symlink()):
        ancestor = path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"{ancestor} is not a directory, so {path} cannot be created"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"{ancestor} is not writable by {who}, so {path} cannot be created"
        return None
    if not path.is_file():
        return f"{path} is not a regular file"
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if name.exists() and not os.access(name, os.R_OK | os.W_OK):
            return f"{name} is not readable and writable by {who} (owner uid {name.stat().st_uid})"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path.parent} is not writable by {who} (SQLite keeps its -wal and -shm files there)"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not head:
        return None  # an empty file is an empty database to SQLite
    if head != b"SQLite format 3\x00":
        return f"{path} is not an SQLite database"
    try:
        # immutable=1: no lock, no -wal/-shm/-journal file, no write of any kind
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro&immutable=1", uri=True)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"cannot read {path} as an SQLite database: {exc}"
    return None


def _log_to_file(cfg: Config) -> None:
    """Also log to LOG_FILE; WatchedFileHandler reopens it after logrotate moves it."""
    if cfg.log_file is None:
        return
    try:
        handler = logging.handlers.WatchedFileHandler(cfg.log_file, encoding="utf-8")
    except OSError as exc:
        log.warning("LOG_FILE: cannot open %s (%s); logging to the journal only", cfg.log_file, exc.strerror)
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def cmd_run(args: argparse.Namespace) -> int:
    no_core_dumps()
    cfg = _load(args)
    logging.getLogger().setLevel(cfg.log_level)
    _log_to_file(cfg)
    for w in cfg.warnings:
        log.warning("%s", w)
    from .engine import Engine
    from .ledger import Ledger, LedgerBusy
    from .server import start_servers

    ledger = Ledger(cfg.db_path)
    try:
        ledger.claim()  # one process per ledger, for its lifetime (issue 9)
    except LedgerBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    engine = Engine(cfg, ledger)
    servers = start_servers(engine)
    log.info("listening on %s:%d (dashboard) and :%d (metrics); mode %s", cfg.bind_address,
             cfg.dashboard_port, cfg.metrics_port, engine.mode)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        engine.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    died: list[BaseException] = []

    def work() -> None:
        try:
            engine.run()
        except BaseException as exc:  # noqa: BLE001 - the process must end non-zero, see below
            died.append(exc)
            log.critical("engine stopped by an unexpected error: %s: %s", exc.__class__.__name__, exc,
                         exc_info=exc)

    worker = threading.Thread(target=work, name="engine")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    for s in servers:
        s.shutdown()
    ledger.close()
    return 1 if died else 0  # systemd restarts it (Restart=always) and counts the crash loop


def retention_days(raw: str) -> float:
    """--days: a finite number, at least 1 (-1 or nan would delete every row)."""
    try:
        days = float(raw)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 1:
        raise BotError(f"--days: must be a number of days, at least 1, got {raw!r}; nothing deleted",
                       "the service's timer runs: polymarket-bot prune --days 90")
    return days


def cmd_prune(args: argparse.Namespace) -> int:
    days = retention_days(args.days)
    cfg = _load(args)
    from .ledger import Ledger

    # prune never creates the ledger (nor its directories), and never leaves a file of the service's
    # owned by root: root's SQLite would create a root-owned -wal/-shm the service cannot open
    try:
        st = cfg.db_path.stat()
    except FileNotFoundError:
        print(f"no ledger at {cfg.db_path}, nothing to prune")
        return 0
    except OSError as exc:
        raise BotError(f"DB_PATH: cannot read {exc.filename or cfg.db_path}: {exc.strerror}; nothing deleted") from None
    if os.geteuid() == 0 and st.st_uid != 0:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        raise BotError(f"prune: {cfg.db_path} belongs to {owner}; root would leave root-owned files beside it "
                       "that the service cannot open; nothing deleted",
                       f"run as {owner}: sudo -u {owner} polymarket-bot prune --days {days:g}")
    ledger = Ledger(cfg.db_path)
    removed = ledger.prune(days)
    ledger.close()
    print("pruned " + ", ".join(f"{v} {k}" for k, v in removed.items()) + f" older than {days:g} days")
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    """secret set|list|remove|migrate: one line per result, `error: ...` and a status for the rest."""
    no_core_dumps()  # a value, typed or decrypted, is in this process's memory: no core dump of it
    try:
        return _secret(args)
    except SecretError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror}; nothing changed", file=sys.stderr)
        return 1


def _secret(args: argparse.Namespace) -> int:
    store = Store.default()
    env_file = env_file_path(args.config, os.environ)
    if args.action == "set":
        if args.argv_value:
            raise SecretError("secret set: the value is read from stdin, never from the command line; nothing "
                              "stored. The value you gave is exposed: sudo logged the command line (the journal, "
                              "/var/log/auth.log), ps showed it, the shell history keeps it",
                              "treat it as leaked and rotate it (a new wallet key, the funds moved to it; a new "
                              "token: openssl rand -hex 32), then give the new value on stdin: "
                              "printf %s \"$VALUE\" | sudo polymarket-bot secret set NAME, or type it at the "
                              "prompt", status=BAD_INPUT)
        check_name(args.name)
        require_root(f"secret set {args.name}")
        fp = store.set(args.name, read_value(), args.with_key)
        print(f"{args.name}: stored encrypted in {store.path(args.name)} ({fp}); "
              "restart the service to use it: systemctl restart polymarket-bot")
        for path in env_files(env_file):
            if args.name in plaintext_in(path):
                print(f"warning: {args.name} is still in plaintext in {path}: polymarket-bot secret migrate",
                      file=sys.stderr)
        return 0
    if args.action == "remove":
        check_name(args.name)
        require_root(f"secret remove {args.name}")
        store.remove(args.name)
        print(f"{args.name}: removed {store.path(args.name)}; restart the service: systemctl restart polymarket-bot")
        return 0
    if args.action == "migrate":
        require_root("secret migrate")
        result = migrate(store, env_file, args.with_key)
        for line in result.done:
            print(line)
        for w in result.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for p in result.problems:
            print(f"error: {p}", file=sys.stderr)
        return BAD_INPUT if result.problems else 0
    require_root("secret list")
    entries = store.entries(env_file)
    for w in commented_warnings(env_file):
        print(f"warning: {w}", file=sys.stderr)
    width = max(len(n) for n in SECRET_NAMES)
    print(f"{'NAME':<{width}}  {'STATE':<13}  FINGERPRINT")
    for e in entries:
        tail = f"  ({e.detail})" if e.detail else ""
        print(f"{e.name:<{width}}  {e.state:<13}  {e.fingerprint or '-'}{tail}")
    return TOOL_FAILED if any(e.state == "undecryptable" for e in entries) else 0


def _secret_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = ", ".join(SECRET_NAMES)
    sp = sub.add_parser(
        "secret", help="encrypted secrets (systemd credentials): set, list, remove, migrate",
        description=f"Secrets ({names}) are kept encrypted by systemd-creds in {DEFAULT_STORE}/NAME.cred "
                    "and handed to the service by systemd. Root only.")
    sp.set_defaults(func=cmd_secret)
    acts = sp.add_subparsers(dest="action", required=True, metavar="ACTION")
    key_help = ("auto (default): the host key, plus the TPM2 when the host has one; "
                "host, host+tpm2, tpm2: that choice")
    st = acts.add_parser("set", help="store NAME encrypted; the value is read from stdin (never an argument)")
    st.add_argument("name", metavar="NAME", help=names)
    st.add_argument("argv_value", nargs="*", help=argparse.SUPPRESS)  # refused, and never echoed
    st.add_argument("--with-key", choices=KEY_CHOICES, default="auto", help=key_help)
    acts.add_parser("list", help="names, state and fingerprints: the wallet's address, a token's length and date "
                                 "(never a value, nor a hash of one)")
    rm = acts.add_parser("remove", help="delete the credential NAME")
    rm.add_argument("name", metavar="NAME", help=names)
    mg = acts.add_parser("migrate", help="move plaintext secrets of the env file into credentials and blank them")
    mg.add_argument("--with-key", choices=KEY_CHOICES, default="auto", help=key_help)


def parser() -> argparse.ArgumentParser:
    keys = "\n".join(f"  {s.key:<24} default {s.default or '(empty)'}: {s.help}" for s in SETTINGS)
    p = argparse.ArgumentParser(
        prog="polymarket-bot", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Polymarket copy-trading service (CLOB V2).",
        epilog="settings (env file KEY=value; the process environment overrides):\n" + keys)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", metavar="FILE",
                   help="env file (default: $POLYMARKET_ENV_FILE or /etc/polymarket/.env)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the service").set_defaults(func=cmd_run)
    va = sub.add_parser("validate-config", help="check the configuration; one line per problem")
    va.add_argument("--geoblock", action="store_true",
                    help="also ask GEOBLOCK_URL whether Polymarket accepts orders from this host's IP")
    va.set_defaults(func=cmd_validate)
    cf = sub.add_parser("config", help="read the configuration as the service resolves it: config get KEY")
    cf.set_defaults(func=cmd_config)
    get_parser = cf.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "get", help="print KEY's value (the environment, else the env file, else the default), checked as "
                    "validate-config does; never a secret; DB_PATH only directly in /var/lib/polymarket")
    get_parser.add_argument("key", metavar="KEY")
    pr = sub.add_parser("prune", help="delete ledger rows older than --days (retention)")
    pr.add_argument("--days", default="90", metavar="N", help="keep this many days, at least 1 (default 90)")
    pr.set_defaults(func=cmd_prune)
    _secret_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
