"""Configuration parsing, validate-config, prune and the secrecy of the key."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEY, ROOT
from polymarket_bot import cli, config
from polymarket_bot.errors import ConfigError

PKG = ROOT / "packages" / "polymarket-bot"


def write(tmp: Path, text: str) -> Path:
    p = tmp / "env"
    p.write_text(text)
    p.chmod(0o600)
    return p


def problems(tmp: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp, text), {})
    return list(exc.value.problems)


def test_defaults() -> None:
    cfg = config.load(None, {})
    assert cfg.data_api_url == "https://data-api.polymarket.com"
    assert cfg.clob_url == "https://clob.polymarket.com"
    assert cfg.gamma_url == "https://gamma-api.polymarket.com"
    assert str(cfg.mode) == "dry-run" and cfg.poll_interval <= 1
    assert (cfg.dashboard_port, cfg.metrics_port, cfg.bind_address) == (8080, 9090, "127.0.0.1")
    assert str(cfg.db_path) == "/var/lib/polymarket/trade_history.db"
    assert str(cfg.passive_file) == "/run/polymarket/passive"
    # polymarket-compliance writes its reports outside the bot's own (bot-writable) directory
    assert str(cfg.compliance_report) == "/var/lib/polymarket-hardening/compliance/latest.json"


def test_url_with_an_explicit_valid_port_is_kept(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "POLYMARKET_CLOB_URL=http://[::1]:65535/\n"), {})
    assert cfg.clob_url == "http://[::1]:65535"


def test_plan_example_file_parses(tmp_path: Path) -> None:
    plan = """# Polymarket API Configuration
POLYGON_RPC_URL=https://polygon-rpc.com
PRIVATE_KEY=your_private_key_here
WALLET_ADDRESS=0x...
ENVIRONMENT=production
LOG_LEVEL=INFO
MAX_POSITION_SIZE=1000
STOP_LOSS_PERCENTAGE=5
ENCRYPTION_KEY=your_strong_encryption_key_here
API_SECRET_KEY=your_api_secret_here
HEALTH_CHECK_INTERVAL=30
METRICS_PORT=9090
DASHBOARD_PORT=8080
TRADING_MODE=live
"""
    cfg = config.load(write(tmp_path, plan), {})
    assert str(cfg.mode) == "dry-run"  # placeholder key forces paper trading
    assert any("dry-run forced" in w for w in cfg.warnings)
    assert not cfg.dashboard_token_set


@pytest.mark.parametrize(("line", "needle"), [
    ("TRADING_MODE=yolo", "TRADING_MODE: must be one of dry-run | live"),
    ("SIZING_MODE=kelly", "SIZING_MODE: must be one of fixed | ratio | balance"),
    ("FIXED_AMOUNT_USD=0", "FIXED_AMOUNT_USD: must be greater than 0"),
    ("FIXED_AMOUNT_USD=ten", "FIXED_AMOUNT_USD: must be a number"),
    ("SIZE_RATIO=-1", "SIZE_RATIO: must be greater than 0"),
    ("MAX_ORDER_SIZE=nan", "MAX_ORDER_SIZE: must be"),
    ("MAX_POSITION_SIZE=-5", "MAX_POSITION_SIZE: must be"),
    ("MAX_DAILY_VOLUME=abc", "MAX_DAILY_VOLUME: must be a number"),
    ("SLIPPAGE_TOLERANCE=0.9", "SLIPPAGE_TOLERANCE: must be at least 0 and at most 0.5"),
    ("MAX_TRADE_AGE_SECONDS=0", "MAX_TRADE_AGE_SECONDS: must be"),
    ("STOP_LOSS_PERCENTAGE=150", "STOP_LOSS_PERCENTAGE: must be"),
    ("POLL_INTERVAL=0", "POLL_INTERVAL: must be"),
    ("DASHBOARD_PORT=80800", "DASHBOARD_PORT: must be between 1 and 65535"),
    ("METRICS_PORT=x", "METRICS_PORT: must be a whole number"),
    ("BIND_ADDRESS=localhost", "BIND_ADDRESS: must be an IP address"),
    ("DB_PATH=relative.db", "DB_PATH: must be an absolute path"),
    ("PASSIVE_FILE=passive", "PASSIVE_FILE: must be an absolute path"),
    ("COPY_LEADERS=0x123,bob", "COPY_LEADERS: '0x123' is not a 0x-prefixed"),
    ("POLYMARKET_CLOB_URL=ftp://x", "POLYMARKET_CLOB_URL: must be an http(s) URL"),
    ("POLYMARKET_DATA_API_URL=nope", "POLYMARKET_DATA_API_URL: must be an http(s) URL"),
    ("POLYMARKET_GAMMA_URL=", "POLYMARKET_GAMMA_URL: must be an http(s) URL"),
    ("POLYMARKET_CLOB_URL=https://clob.polymarket.com:99999", "POLYMARKET_CLOB_URL: must be an http(s) URL with a"),
    ("POLYMARKET_CLOB_URL=http://127.0.0.1:0", "POLYMARKET_CLOB_URL: must be an http(s) URL with a host and a port"),
    ("POLYMARKET_CLOB_URL=http://127.0.0.1:http", "POLYMARKET_CLOB_URL: must be an http(s) URL with a host"),
    ("POLYMARKET_CLOB_URL=http://:8080", "POLYMARKET_CLOB_URL: must be an http(s) URL with a host"),
    ("POLYMARKET_DATA_API_URL=http://h:65536/", "POLYMARKET_DATA_API_URL: must be an http(s) URL with a host"),
    ("POLYMARKET_GAMMA_URL=http://h:-1", "POLYMARKET_GAMMA_URL: must be an http(s) URL with a host"),
    ("POLYGON_RPC_URL=https://polygon-rpc.com:100000", "POLYGON_RPC_URL: must be an http(s) URL with a host"),
    ("POLYMARKET_CLOB_URL=http://h/ Trusted=yes", "POLYMARKET_CLOB_URL: must be an http(s) URL without spaces"),
    ("WALLET_ADDRESS=0xabc", "WALLET_ADDRESS: must be a 0x-prefixed"),
    ("LOG_LEVEL=LOUD", "LOG_LEVEL: must be DEBUG"),
    ("ORDER_TYPE=GTC", "ORDER_TYPE: must be one of FAK | FOK"),
    ("LEADER_FEED=psychic", "LEADER_FEED: must be one of"),
    ("SIGNATURE_TYPE=7", "SIGNATURE_TYPE: must be between 0 and 3"),
    ("HEALTH_CHECK_INTERVAL=0", "HEALTH_CHECK_INTERVAL: must be"),
    ("PRIVATE_KEY=0x1234", "PRIVATE_KEY: must be 64 hexadecimal digits"),
    ("PRIVATE_KEY=0x" + "0" * 64, "PRIVATE_KEY: private key is out of range"),
    ("this is not a setting", "not a KEY=value line"),
])
def test_each_bad_value_is_one_line_naming_file_line_and_key(tmp_path: Path, line: str, needle: str) -> None:
    (p,) = problems(tmp_path, "# header\n" + line + "\n")
    assert needle in p, p
    if "=" in line:
        assert p.startswith(f"{tmp_path / 'env'}:2: ")


def test_cross_field_problems(tmp_path: Path) -> None:
    ps = problems(tmp_path, "MAX_ORDER_SIZE=500\nMAX_POSITION_SIZE=100\nMETRICS_PORT=8080\n"
                            "MARKET_ALLOWLIST=a,b\nMARKET_DENYLIST=b\nSIGNATURE_TYPE=1\n")
    assert len(ps) == 4
    assert any("MAX_ORDER_SIZE" in p for p in ps) and any("METRICS_PORT" in p for p in ps)
    assert any("MARKET_DENYLIST" in p for p in ps) and any("WALLET_ADDRESS" in p for p in ps)


def test_environment_overrides_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "DASHBOARD_PORT=8081\n"), {"DASHBOARD_PORT": "8082"})
    assert cfg.dashboard_port == 8082


def test_quotes_export_and_comments(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'export LOG_LEVEL="debug"\nENVIRONMENT=staging # inline\n'), {})
    assert cfg.log_level == "DEBUG" and cfg.environment == "staging"


def test_key_never_in_repr_errors_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config.load(write(tmp_path, f"PRIVATE_KEY={KEY}\nTRADING_MODE=live\n"), {})
    assert KEY[2:] not in repr(cfg) and KEY[2:] not in str(cfg)
    bad = "f" * 63 + "g"
    ps = problems(tmp_path, f"PRIVATE_KEY={bad}\n")
    assert bad not in " ".join(ps)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("x").info("cfg %s %r", cfg, cfg.private_key)
    assert KEY[2:] not in caplog.text


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in {s.key for s in config.SETTINGS}}
    e["PYTHONPATH"] = str(PKG)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "polymarket_bot", *args], capture_output=True, text=True,
                          env=e, timeout=60, stdin=subprocess.DEVNULL)


def test_cli_help_and_validate(tmp_path: Path) -> None:
    r = run_cli("--help")
    assert r.returncode == 0 and "validate-config" in r.stdout and "COPY_LEADERS" in r.stdout
    good = write(tmp_path, f"DB_PATH={tmp_path}/db.sqlite\nAPI_SECRET_KEY=tok\nCOPY_LEADERS=0x{'1' * 40}\n")
    r = run_cli("--config", str(good), "validate-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    bad = tmp_path / "bad"
    bad.write_text("DASHBOARD_PORT=0\nSIZING_MODE=x\n")
    r = run_cli("validate-config", env={"POLYMARKET_ENV_FILE": str(bad)})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in r.stderr
    r = run_cli("--config", str(tmp_path / "missing"), "validate-config")
    assert r.returncode == 1 and "no such file" in r.stderr


def test_cli_prune(tmp_path: Path) -> None:
    from polymarket_bot.ledger import Ledger

    Ledger(tmp_path / "db.sqlite").close()  # prune never creates the ledger (test_attack_cli)
    good = write(tmp_path, f"DB_PATH={tmp_path}/db.sqlite\n")
    r = run_cli("--config", str(good), "prune", "--days", "90")
    assert r.returncode == 0 and "pruned" in r.stdout, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root pruning the service user's ledger")
def test_cli_prune_as_root_refuses_a_ledger_root_does_not_own(tmp_path: Path) -> None:
    from polymarket_bot.ledger import Ledger

    db = tmp_path / "lib" / "db.sqlite"
    Ledger(db).close()
    for p in (db.parent, *db.parent.iterdir()):
        os.chown(p, 65534, 65534)
    before = {p.name: (p.stat().st_uid, p.read_bytes()) for p in db.parent.iterdir()}
    r = run_cli("--config", str(write(tmp_path, f"DB_PATH={db}\n")), "prune", "--days", "90")
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("error: prune: ") and "sudo -u nobody polymarket-bot prune" in r.stderr, r.stderr
    assert {p.name: (p.stat().st_uid, p.read_bytes()) for p in db.parent.iterdir()} == before


def test_prune_keeps_recent_and_positions(tmp_path: Path) -> None:
    from polymarket_bot.ledger import Ledger

    led = Ledger(tmp_path / "l.db")
    t = {"proxyWallet": "0xA", "side": "BUY", "asset": "1", "size": 1, "price": 0.5, "timestamp": 1}
    old = led.record_trade("old", t)
    assert old is not None
    led.record_order(old, mode="live", token_id="1", side="BUY", order_type="FAK", price=0.5, size=2, usd=1,
                     order_hash=None, request=None, status="accepted", response={}, filled_shares=2,
                     filled_usd=1, latency_ms=1, condition_id="c", decision="copied")
    led.db.execute("UPDATE leader_trades SET seen_at = seen_at - 100*86400")
    led.db.execute("UPDATE decisions SET created_at = created_at - 100*86400")
    led.db.execute("UPDATE orders SET created_at = created_at - 100*86400")
    assert led.record_trade("new", t) is not None
    assert led.prune(90) == {"orders": 1, "decisions": 1, "leader_trades": 1}
    assert led.seen("new") and not led.seen("old")
    assert led.position("live", "1") is not None
    assert led.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_prctl_dumpable_off() -> None:
    code = ("from polymarket_bot.cli import no_core_dumps; import ctypes; no_core_dumps(); "
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(PKG)}, timeout=30)
    assert r.stdout.strip() == "0"


def test_validate_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "POLL_INTERVAL=-1\n")
    assert cli.main(["--config", str(p), "validate-config"]) == 1
    assert "POLL_INTERVAL" in capsys.readouterr().err


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root, with the bytes of each file (None for a directory)."""
    return {str(q.relative_to(root)): None if q.is_dir() else q.read_bytes() for q in sorted(root.rglob("*"))}


def old_schema_ledger(path: Path) -> None:
    """A ledger of an older release: fewer tables, WAL, one decision left pending by a crash."""
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE decisions (id INTEGER PRIMARY KEY, leader_trade_id INTEGER, kind TEXT NOT NULL, "
               "decision TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, "
               "updated_at REAL NOT NULL)")
    db.execute("INSERT INTO decisions (kind, decision, created_at, updated_at) VALUES ('copy', 'pending', 1, 1)")
    db.commit()
    db.close()


def test_validate_config_creates_nothing_for_a_new_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    monkeypatch.setenv("POLYMARKET_STATE_DIRECTORY", f"{root}/new/dir")  # not made yet: run makes it
    env = write(tmp_path, f"DB_PATH={root}/new/dir/trade_history.db\nAPI_SECRET_KEY=tok\n")
    r = run_cli("--config", str(env), "validate-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    assert list(root.iterdir()) == []


def test_validate_config_leaves_an_old_ledger_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    monkeypatch.setenv("POLYMARKET_STATE_DIRECTORY", str(root))
    old_schema_ledger(root / "trade_history.db")
    before = snapshot(root)
    assert list(before) == ["trade_history.db"]
    env = write(tmp_path, f"DB_PATH={root}/trade_history.db\nAPI_SECRET_KEY=tok\n")
    r = run_cli("--config", str(env), "validate-config")
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    assert snapshot(root) == before  # no -wal/-shm, no new table, the pending decision untouched


@pytest.mark.parametrize(("content", "needle"), [
    (b"not a database at all", "is not an SQLite database"),
    (b"SQLite format 3\x00" + b"\xff" * 200, "cannot read"),
])
def test_validate_config_refuses_a_db_path_that_is_not_a_ledger(tmp_path: Path, content: bytes, needle: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "lib" / "trade_history.db"
    db.parent.mkdir()
    monkeypatch.setenv("POLYMARKET_STATE_DIRECTORY", str(db.parent))
    db.write_bytes(content)
    env = write(tmp_path, f"DB_PATH={db}\n")
    r = run_cli("--config", str(env), "validate-config")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 1 and len(errors) == 1 and needle in errors[0], r.stderr
    assert errors[0].startswith("error: DB_PATH: ") and "Traceback" not in r.stderr
    assert db.read_bytes() == content and sorted(p.name for p in db.parent.iterdir()) == ["trade_history.db"]


@pytest.mark.parametrize("days", ["-1", "0", "0.5", "nan", "NaN", "inf", "-inf", "1e999", "abc", ""])
def test_prune_refuses_days_below_one_or_not_finite(tmp_path: Path, days: str) -> None:
    from polymarket_bot.ledger import Ledger

    led = Ledger(tmp_path / "l.db")
    t = {"proxyWallet": "0xA", "side": "BUY", "asset": "1", "size": 1, "price": 0.5, "timestamp": 1}
    assert led.record_trade("recent", t) is not None
    led.decide(1, "copied")
    led.close()
    before = snapshot(tmp_path)
    env = write(tmp_path, f"DB_PATH={tmp_path}/l.db\n")
    before["env"] = env.read_bytes()
    r = run_cli("--config", str(env), "prune", f"--days={days}")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--days" in errors[0] and "at least 1" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "usage:" not in r.stderr
    assert snapshot(tmp_path) == before  # nothing deleted, the ledger not even opened
    led = Ledger(tmp_path / "l.db")
    assert led.seen("recent") and led.counts() == {"copied": 1}
    led.close()


def test_prune_accepts_one_day_and_fractions_above(tmp_path: Path) -> None:
    from polymarket_bot.ledger import Ledger

    Ledger(tmp_path / "l.db").close()
    env = write(tmp_path, f"DB_PATH={tmp_path}/l.db\n")
    for days in ("1", "1.5", "3650"):
        r = run_cli("--config", str(env), "prune", "--days", days)
        assert r.returncode == 0 and f"older than {float(days):g} days" in r.stdout, r.stderr
