"""The service fails loudly: an unexpected error in the engine thread ends `run` non-zero (so
systemd restarts it and counts the crash loop); an exchange answering nonsense is retried with
one log line per poll, never a traceback per request."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from conftest import Harness
from test_crash_points import setup, start
from test_service import health, wait_for


def test_engine_death_ends_the_process_non_zero(h: Harness, tmp_path: Path) -> None:
    env_file, port = setup(h, tmp_path)
    p = start(env_file, "raise:after_decision_commit")
    try:
        assert wait_for(lambda: health(port) == 200, timeout=15)
        h.trade(leader=1)
        p.wait(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read() if p.stderr else ""
    assert p.returncode == 1, err[-2000:]
    assert "engine stopped by an unexpected error: RuntimeError" in err
    assert h.ex.s.orders == []


def test_unexpected_api_key_answer_is_retried_like_a_poll(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    e = h.engine()
    h.ex.add_fault("/auth/api-key", "unexpected", count=3)   # 200, valid JSON, not the documented shape
    h.trade()
    caplog.set_level(logging.INFO)
    worker = threading.Thread(target=e.run)
    worker.start()
    try:
        assert wait_for(lambda: len(h.ex.s.orders) == 1, timeout=10)
    finally:
        e.stop.set()
        worker.join(10)
    assert not worker.is_alive() and e.creds is not None
    assert not [r for r in caplog.records if r.exc_info]       # no traceback
    failed = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert len(failed) == 3 and all("malformed answer" in m and "\n" not in m for m in failed)
