"""Outside review of issue 9: two real `polymarket-bot run` processes on one ledger. The old one is
frozen (SIGSTOP) between committing its decision and signing its order; a restarted one is refused
(the frozen one still owns the ledger); then the old one is thawed (SIGCONT). The fake's order log
is the truth."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import Harness
from test_crash_points import ledger_rows, setup, start
from test_service import health, wait_for


def _env(h: Harness, tmp_path: Path, name: str) -> tuple[Path, int]:
    env_file, port = setup(h, tmp_path)
    mine = tmp_path / name
    env_file.rename(mine)
    return mine, port


def test_attack_money_sigstop_old_process_then_restart_sends_one_order(h: Harness, tmp_path: Path) -> None:
    # Owners' change to the outside review's test (issue 9, commit message): B copying while A is
    # frozen cannot be asserted: a SIGSTOPped process is alive and owns the ledger (flock for its
    # lifetime), so B refuses with one line. What is asserted: B sends nothing and exits non-zero,
    # the thawed A sends exactly one order, and the next start after A ends owns the ledger.
    db = tmp_path / "ledger.db"
    env_a, port_a = _env(h, tmp_path, "a.env")
    env_b, port_b = _env(h, tmp_path, "b.env")
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
        _out, err = b.communicate(timeout=15)
        assert b.returncode != 0
        errors = [x for x in err.splitlines() if x.startswith("error: ")]   # (config warnings go before)
        assert len(errors) == 1 and str(a.pid) in errors[0] and "Traceback" not in err, err
        assert len(h.ex.s.orders) == 0                  # nothing sent while A is frozen
        a.send_signal(signal.SIGCONT)
        assert wait_for(lambda: ledger_rows(db, "SELECT decision FROM decisions") == [("copied",)], timeout=15)
        time.sleep(2)
        assert len(h.ex.s.orders) == 1, [o["order"]["salt"] for o in h.ex.s.orders]
        a.send_signal(signal.SIGTERM)
        a.communicate(timeout=15)
        b = start(env_b)                                # A ended: the lock went with it
        assert wait_for(lambda: health(port_b) == 200, timeout=15)
        time.sleep(1)
        assert len(h.ex.s.orders) == 1
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
