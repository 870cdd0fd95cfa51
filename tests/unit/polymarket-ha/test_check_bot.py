"""check-bot, keepalived's vrrp_script (issue 11 cause 7): the VIP follows the liveness of the local bot process,
restart-tolerant, never the exchange's freshness. Run as shipped, with systemctl and curl replaced by stand-ins
on PATH that answer as systemd and the bot would (the booted test, tests/system/test_ha.py, does it for real)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import payload

SCRIPT = payload.PACKAGES / "polymarket-ha" / "check-bot"


def uptime_us() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * 1_000_000)


class Bot:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        self.asked: list[str] = []

    def check(self, *, live: bool, active: str = "active", sub: str = "running", restarts: int = 0,
              started_ago: float = 3600) -> int:
        since = max(1, uptime_us() - int(started_ago * 1_000_000))
        (self.bin / "systemctl").write_text(
            "#!/bin/sh\n"
            f"printf 'NRestarts={restarts}\\nActiveState={active}\\nSubState={sub}\\n"
            f"ActiveEnterTimestampMonotonic={since}\\n'\n")
        (self.bin / "curl").write_text(f'#!/bin/sh\necho "$@" >>{self.tmp}/curl.log\nexit {0 if live else 28}\n')
        for f in ("systemctl", "curl"):
            (self.bin / f).chmod(0o755)
        env = {**os.environ, "PATH": f"{self.bin}:/usr/bin:/bin", "POLYMARKET_HA_RUN_DIR": str(self.run_dir)}
        proc = subprocess.run(["sh", str(SCRIPT), "10.0.0.1", "8080"], env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip
        return proc.returncode


@pytest.fixture
def bot(tmp_path: Path) -> Bot:
    return Bot(tmp_path)


def test_asks_live_not_health(bot: Bot) -> None:
    assert bot.check(live=True) == 0
    assert "http://10.0.0.1:8080/live" in (bot.tmp / "curl.log").read_text()


def test_a_planned_restart_is_not_a_failure(bot: Bot) -> None:
    assert bot.check(live=True, restarts=0) == 0
    assert bot.check(live=False, active="deactivating", sub="stop-sigterm") == 0
    assert bot.check(live=False, active="activating", sub="start-pre") == 0
    assert bot.check(live=False, active="active", started_ago=2) == 0  # not listening yet
    assert bot.check(live=True) == 0


@pytest.mark.parametrize("why", ["stopped", "hung"])
def test_a_running_bot_that_does_not_answer_fails(bot: Bot, why: str) -> None:
    assert bot.check(live=True) == 0
    assert bot.check(live=False, active="active", started_ago=3600) == 1


def test_a_killed_bot_fails_while_systemd_restarts_it_and_until_it_is_live(bot: Bot) -> None:
    assert bot.check(live=True, restarts=2) == 0
    assert bot.check(live=False, active="activating", sub="auto-restart", restarts=2) == 1
    # systemd has started it again (NRestarts 3): starting, then not listening yet, both still a failure
    assert bot.check(live=False, active="activating", sub="start-pre", restarts=3) == 1
    assert bot.check(live=False, active="active", started_ago=1, restarts=3) == 1
    assert bot.check(live=True, restarts=3) == 0
    assert bot.check(live=False, active="deactivating", sub="stop-sigterm", restarts=3) == 0  # then a planned one


def test_a_stopped_or_failed_unit_fails(bot: Bot) -> None:
    assert bot.check(live=False, active="inactive", sub="dead") == 1
    assert bot.check(live=False, active="failed", sub="failed") == 1


def test_a_promotion_under_way_is_not_a_failure(bot: Bot) -> None:
    (bot.run_dir / "promoting").write_text(f"{os.getpid()}\n")
    assert bot.check(live=False, active="inactive", sub="dead") == 0
