"""Outside review of issue 9: two real `polymarket-bot run` processes on one ledger. The old one is
frozen (SIGSTOP) between committing its decision and signing its order; a restarted one resolves
the decision; then the old one is thawed (SIGCONT). The fake's order log is the truth."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import Harness
from test_crash_points import ledger_rows, setup, start
from test_service import health, wait_for


def _env(h: Harness, tmp_path: Path, name: str) -> tuple[Path, int]:
    env_file, port = setup(h, tmp_path)
    mine = tmp_path / name
    env_file.rename(mine)
    return mine, port


@pytest.mark.xfail(strict=True, reason="issue 9: nothing stops a second process on the same ledger (no "
                   "lock); the thawed one signs a new order for a decision the other already copied: two "
                   "exchange orders for one leader trade")
def test_attack_money_sigstop_old_process_then_restart_sends_one_order(h: Harness, tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    env_a, port_a = _env(h, tmp_path, "a.env")
    env_b, _port_b = _env(h, tmp_path, "b.env")
    a = start(env_a)
    b = None
    try:
        assert wait_for(lambda: health(port_a) == 200, timeout=15)
        h.ex.add_fault("/book", "hold", delay=3.0)     # keeps A between its decision and its order
        h.trade(leader=1, ago=1)
        assert wait_for(lambda: ledger_rows(db, "SELECT COUNT(*) FROM decisions WHERE decision='pending'")
                        == [(1,)], timeout=10)
        a.send_signal(signal.SIGSTOP)                   # frozen; the operator starts the bot again
        b = start(env_b)
        assert wait_for(lambda: len(h.ex.s.orders) == 1, timeout=15)
        assert wait_for(lambda: ledger_rows(db, "SELECT decision FROM decisions") == [("copied",)], timeout=10)
        b.send_signal(signal.SIGTERM)
        b.communicate(timeout=15)
        a.send_signal(signal.SIGCONT)
        time.sleep(5)
        assert len(h.ex.s.orders) == 1, [o["order"]["salt"] for o in h.ex.s.orders]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
