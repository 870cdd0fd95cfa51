"""/live (polymarket-ha's liveness check for the VIP and the lease, issue 11 cause 7) against /health: an outage
of the Data API makes /health 503 but leaves /live 200 (no failover); a loop that stops turning makes /live 503."""

from __future__ import annotations

import threading
import time

from conftest import Harness
from polymarket_bot import server


def test_live_stays_200_through_a_data_api_outage_health_does_not(h: Harness) -> None:
    e = h.engine()
    worker = threading.Thread(target=e.run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while server.health(e)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.health(e)[0] == 200 and server.live(e)[0] == 200
        h.ex.add_fault("/", "500", count=10**6)  # every Data API (and CLOB) request fails from now on
        time.sleep(0.5)  # a poll under way when the outage began may still succeed
        e.last_poll = time.time() - 11  # as if the outage had lasted past /health's 10 s
        time.sleep(0.5)  # a few failing polls
        status, body = server.health(e)
        assert status == 503 and body["status"] == "unhealthy"
        status, body = server.live(e)
        assert status == 200 and body["live"] is True and body["loop_age_seconds"] < 60
    finally:
        e.stop.set()
        worker.join(30)


def test_live_is_503_when_the_engine_loop_stops_turning(h: Harness) -> None:
    e = h.engine()
    assert server.live(e) == (200, {"live": True, "loop_age_seconds": None, "role": "active"})  # not started yet
    e.loop_at = time.monotonic() - 301  # stuck longer than max(300 s, 60 x HTTP_TIMEOUT)
    status, body = server.live(e)
    assert status == 503 and body["live"] is False
