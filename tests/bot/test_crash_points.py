"""kill -9 of `polymarket-bot run` at each step of the order path, then a restart: exactly one
order on the exchange (none once the leader trade has expired) and a ledger position equal to
what the exchange holds. The fake's order log and balances are the truth, not our logs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ME, ROOT, YES, Harness
from test_service import free_port, health, wait_for


def start(env_file: Path, crash_at: str = "") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYMARKET", "PRIVATE_KEY"))}
    env["PYTHONPATH"] = str(ROOT / "packages" / "polymarket-bot")
    if crash_at:
        env["POLYMARKET_BOT_TEST_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), "run"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def ledger_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def number(db: Path, sql: str) -> float | None:
    """The one number ``sql`` selects, or None when the ledger (or the row) is not there yet."""
    rows = ledger_rows(db, sql)
    if not rows or rows[0][0] is None:
        return None
    value = rows[0][0]
    assert isinstance(value, int | float), f"{sql}: {value!r} is not a number"
    return float(value)


def settled(db: Path) -> bool:
    open_ones = number(db, "SELECT COUNT(*) FROM decisions WHERE decision IN ('pending', 'unknown')")
    total = number(db, "SELECT COUNT(*) FROM decisions")
    return open_ones == 0 and total is not None and total >= 1


def position(db: Path) -> float:
    return number(db, f"SELECT shares FROM positions WHERE mode='live' AND asset='{YES}'") or 0.0


def setup(h: Harness, tmp_path: Path, **over: str) -> tuple[Path, int]:
    port = free_port()
    env = h.env(DASHBOARD_PORT=port, METRICS_PORT=free_port(), POLL_INTERVAL="0.1", LOG_FILE="", **over)
    env_file = tmp_path / "bot.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    return env_file, port


def kill(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    assert p.returncode == -signal.SIGKILL


def restart_until_settled(env_file: Path, db: Path) -> None:
    p = start(env_file)
    try:
        assert wait_for(lambda: settled(db), timeout=15), "decision never resolved"
        time.sleep(0.5)  # a few more polls: nothing is sent twice
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=15)
    assert p.returncode == 0, err[-2000:]


@pytest.mark.parametrize("point", ["before_decision_commit", "after_trade_recorded", "after_decision_commit",
                                   "after_send", "after_answer"])
def test_kill_9_at_each_step_gives_one_order_and_a_true_position(h: Harness, tmp_path: Path, point: str) -> None:
    env_file, port = setup(h, tmp_path)
    db = tmp_path / "ledger.db"
    if point == "after_send":
        h.ex.add_fault("/order", "hold", delay=30)  # the exchange has the order; the answer waits
    p = start(env_file, "" if point == "after_send" else point)
    try:
        assert wait_for(lambda: health(port) == 200, timeout=15)  # started and caught up
        h.trade(leader=1, ago=1)
        if point == "after_send":
            assert wait_for(lambda: len(h.ex.s.orders) == 1, timeout=10)
    finally:
        if point != "after_send":
            p.wait(timeout=15)  # the crash hook kills it
        kill(p)
    sent_before = len(h.ex.s.orders)
    assert sent_before == (1 if point in ("after_send", "after_answer") else 0)
    restart_until_settled(env_file, db)
    assert len(h.ex.s.orders) == 1
    held = h.ex.s.holdings.get((ME.lower(), YES), 0) / 1e6
    assert held == pytest.approx(20) and position(db) == pytest.approx(held)
    assert ledger_rows(db, "SELECT decision FROM decisions") == [("copied",)]


def test_kill_9_after_commit_then_trade_expired_gives_no_order(h: Harness, tmp_path: Path) -> None:
    env_file, port = setup(h, tmp_path, MAX_TRADE_AGE_SECONDS="3")
    db = tmp_path / "ledger.db"
    p = start(env_file, "after_decision_commit")
    try:
        assert wait_for(lambda: health(port) == 200, timeout=15)
        h.trade(leader=1, ago=0)
    finally:
        p.wait(timeout=15)
        kill(p)
    time.sleep(3.5)  # down for longer than MAX_TRADE_AGE_SECONDS
    restart_until_settled(env_file, db)
    assert h.ex.s.orders == [] and position(db) == 0
    assert ledger_rows(db, "SELECT decision FROM decisions") == [("expired",)]


def test_ledger_has_one_owner_and_its_lock_file_follows_no_symlink(tmp_path: Path) -> None:
    """Issue 9 (outside review): one process owns the ledger (flock on <DB_PATH>.lock); a second
    claim is refused, a lock file planted as a symlink is never followed, and the owner's end
    frees it."""
    from polymarket_bot.ledger import Ledger, LedgerBusy
    db = tmp_path / "ledger.db"
    first, second = Ledger(db), Ledger(db)
    first.claim()
    assert (tmp_path / "ledger.db.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(LedgerBusy, match=f"pid {os.getpid()}"):
        second.claim()
    first.close()
    second.claim()                                   # the owner ended: the lock went with it
    second.close()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    other = tmp_path / "other.db"
    (tmp_path / "other.db.lock").symlink_to(victim)
    third = Ledger(other)
    with pytest.raises(LedgerBusy, match="cannot open the ledger lock"):
        third.claim()
    third.close()
    assert victim.read_text() == "precious\n"
