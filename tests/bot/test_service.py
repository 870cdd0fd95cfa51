"""`polymarket-bot run` as a process: health, a copied trade, SIGTERM, restart without duplicate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import KEY, LEADERS, ROOT, Harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def start(env_file: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET", "PRIVATE_KEY"))}
    env["PYTHONPATH"] = str(ROOT / "packages" / "polymarket-bot")
    return subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def stop(p: subprocess.Popen[str]) -> str:
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    return err


def test_service_copies_once_across_restart(h: Harness, tmp_path: Path) -> None:
    dport, mport = free_port(), free_port()
    env = h.env(DASHBOARD_PORT=dport, METRICS_PORT=mport, POLL_INTERVAL="0.1")
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    p = start(env_file)
    try:
        assert wait_for(lambda: health(dport) == 200), (
            p.stderr.read() if p.stderr is not None and p.poll() is not None else "no health")
        h.trade(leader=1)
        assert wait_for(lambda: len(h.ex.s.orders) == 1)
    finally:
        err = stop(p)
    assert KEY[2:] not in err
    p = start(env_file)
    try:
        assert wait_for(lambda: health(dport) == 200)
        time.sleep(0.5)
        assert len(h.ex.s.orders) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2) as r:
            assert b"polymarket_last_poll_age_seconds" in r.read()
    finally:
        stop(p)
    assert json.loads(json.dumps(h.ex.s.orders[0]["order"]))["maker"].lower() != LEADERS[1]


def test_validate_config_leaves_the_ledger_and_run_migrates_it(h: Harness, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The unit's ExecStartPre (validate-config) changes nothing; ExecStart (run) migrates."""
    import sqlite3

    from test_config_cli import old_schema_ledger, run_cli, snapshot

    lib = tmp_path / "lib"
    lib.mkdir()
    monkeypatch.setenv("POLYMARKET_STATE_DIRECTORY", str(lib))  # the ledger directly in it
    db = lib / "ledger.db"
    old_schema_ledger(db)
    before = snapshot(lib)
    dport, mport = free_port(), free_port()
    env = h.env(DASHBOARD_PORT=dport, METRICS_PORT=mport, DB_PATH=str(db), LOG_FILE="")
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    r = run_cli("--config", str(env_file), "validate-config")
    assert r.returncode == 0, r.stderr
    assert snapshot(lib) == before
    p = start(env_file)
    try:
        assert wait_for(lambda: health(dport) == 200)
    finally:
        stop(p)
    con = sqlite3.connect(db)
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    decisions = con.execute("SELECT decision FROM decisions").fetchall()
    con.close()
    assert {"leader_trades", "orders", "positions"} <= tables
    # the decision a crash left pending is resolved (flagged for a human) by run, not by validation
    assert len(decisions) == 1 and decisions[0][0] != "pending"
