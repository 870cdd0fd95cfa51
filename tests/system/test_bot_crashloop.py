"""polymarket-bot fails loudly under systemd: an error in the engine thread ends the process
non-zero, systemd restarts it, and a crash loop ends in `failed` (systemctl --failed).

The installed unit and package in a booted trixie container; the crash is the engine's test
hook (POLYMARKET_BOT_TEST_CRASH_AT=raise:before_decision_commit in a drop-in), raised each time
the leader's trade is handled: nothing was committed, so every restart reads it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import deb
from tests.system.harness import Container
from tests.system.test_bot import LEADER, configure_for_fake, fake, orders, wait


@pytest.fixture
def bot(container: Container, dist: Path) -> Container:
    container.install_debs([deb(dist, "polymarket-bot")])
    return container


def prop(c: Container, name: str) -> str:
    return c.sh(f"systemctl show -p {name} --value polymarket-bot").stdout.strip()


def test_engine_death_restarts_then_a_crash_loop_ends_failed(bot: Container) -> None:
    c = bot
    configure_for_fake(c)
    c.sh("mkdir -p /etc/systemd/system/polymarket-bot.service.d")
    c.sh("cat > /etc/systemd/system/polymarket-bot.service.d/test-crash.conf",
         input="[Service]\nEnvironment=POLYMARKET_BOT_TEST_CRASH_AT=raise:before_decision_commit\n")
    c.sh("systemctl daemon-reload && systemctl restart polymarket-bot")
    wait(lambda: prop(c, "ActiveState") == "active", what="the bot active")
    fake(c, "/_control/trade", {"proxyWallet": LEADER, "side": "BUY", "asset": "1001", "size": 40, "price": 0.5})
    # each start handles the trade and dies: exit 1, restarted after RestartSec=5, until the
    # start limit (5 in 300 s) leaves the unit failed
    wait(lambda: prop(c, "ActiveState") == "failed", timeout=120, what="the unit failed")
    # restarted by systemd (Restart=always), not only by our restarts: the start limit counts
    # every start in the window, the operator's two restarts above included
    assert int(prop(c, "NRestarts")) >= 2
    assert prop(c, "Result") in ("exit-code", "start-limit-hit")
    assert "polymarket-bot.service" in c.sh("systemctl --failed --no-legend --plain").stdout
    log = c.sh("journalctl -u polymarket-bot --no-pager -o cat").stdout
    assert "engine stopped by an unexpected error: RuntimeError" in log
    assert "status=1/FAILURE" in c.sh("journalctl -u polymarket-bot --no-pager").stdout or \
        "code=exited, status=1" in c.sh("journalctl --no-pager").stdout
    assert orders(c) == []
    # the operator fixes it and resets the failure: the service trades again
    c.sh("rm /etc/systemd/system/polymarket-bot.service.d/test-crash.conf && systemctl daemon-reload "
         "&& systemctl reset-failed polymarket-bot && systemctl start polymarket-bot")
    wait(lambda: len(orders(c)) == 1, timeout=60, what="the trade copied after the fix")
