from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "packages" / "polymarket-bot"))

from polymarket_bot import config, crypto  # noqa: E402
from polymarket_bot.engine import Engine  # noqa: E402
from polymarket_bot.fake_exchange import FakeServer  # noqa: E402
from polymarket_bot.ledger import Ledger, Position  # noqa: E402
from polymarket_bot.secrets import Secret  # noqa: E402

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ME = crypto.address_of(Secret(KEY))
LEADERS = ["0x" + f"{i:040x}" for i in range(1, 121)]
COND = "0x" + "c1" * 32
NEG_COND = "0x" + "d2" * 32
YES, NO = "1001", "1002"
NYES, NNO = "2001", "2002"


class Harness:
    def __init__(self, tmp: Path, server: FakeServer) -> None:
        self.tmp = tmp
        self.fake = server
        self.ex = server.exchange
        self.engines: list[Engine] = []
        self.ex.add_market({"conditionId": COND, "slug": "will-it-rain", "tokens": [YES, NO]})
        self.ex.add_market({"conditionId": NEG_COND, "slug": "who-wins", "tokens": [NYES, NNO],
                            "negRisk": True, "tickSize": "0.001"})
        for tok in (YES, NO, NYES, NNO):
            self.ex.set_book(tok, [[0.49, 10000]], [[0.50, 10000]])
        self.ex.set_balance(ME, 10000)

    def env(self, **over: Any) -> dict[str, str]:
        url = self.fake.url
        env = {
            "PRIVATE_KEY": KEY, "TRADING_MODE": "live", "COPY_LEADERS": ",".join(LEADERS[:2]),
            "POLYMARKET_DATA_API_URL": url, "POLYMARKET_CLOB_URL": url, "POLYMARKET_GAMMA_URL": url,
            "DB_PATH": str(self.tmp / "ledger.db"), "PASSIVE_FILE": str(self.tmp / "passive"),
            "KILL_SWITCH_FILE": str(self.tmp / "kill-switch"), "GEOBLOCK_URL": url + "/api/geoblock",
            "API_SECRET_KEY": "s3cret-token", "POLL_INTERVAL": "0.05", "HTTP_TIMEOUT": "2",
            "DATA_API_MAX_RPS": "100", "STOP_LOSS_PERCENTAGE": "0", "FIXED_AMOUNT_USD": "10",
        }
        env.update({k: str(v) for k, v in over.items()})
        return env

    def engine(self, **over: Any) -> Engine:
        cfg = config.load(None, self.env(**over))
        e = Engine(cfg, Ledger(cfg.db_path), backoff=0.01)
        self.engines.append(e)
        return e

    def trade(self, leader: int = 0, side: str = "BUY", asset: str = YES, size: float = 100,
              price: float = 0.5, ago: float = 1, **kw: Any) -> dict[str, Any]:
        delay = float(kw.pop("visible_after", 0))
        trade: dict[str, Any] = self.ex.add_trade({"proxyWallet": LEADERS[leader], "side": side, "asset": asset,
                                                   "size": size, "price": price,
                                                   "timestamp": int(time.time() - ago), **kw}, delay)
        return trade

    def decisions(self, e: Engine) -> list[tuple[str, str]]:
        return [(d["decision"], d["reason"]) for d in reversed(e.ledger.decisions(1000))]


def held(e: Engine, asset: str, mode: str = "live") -> Position:
    """The ledger's position in ``asset``; a test that expects one fails here, by name, when there is none."""
    pos = e.ledger.position(mode, asset)
    assert pos is not None, f"no {mode} position in {asset}"
    return pos


@pytest.fixture(autouse=True)
def state_directory_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DB_PATH directly in a test's tmp_path: validate-config (in this process or a child) takes tmp_path for
    /var/lib/polymarket. Tests of that rule (test_db_path.py) and of other directories set their own."""
    monkeypatch.setenv("POLYMARKET_STATE_DIRECTORY", str(tmp_path))


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    srv = FakeServer(0).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def h(tmp_path: Path, fake: FakeServer) -> Iterator[Harness]:
    harness = Harness(tmp_path, fake)
    yield harness
    for e in harness.engines:
        e.ledger.close()
