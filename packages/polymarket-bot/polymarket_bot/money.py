"""Where the account stands, for Prometheus: balance, exposure, today's PnL and volume, the limits.

The figures are taken by the engine thread, between polls, right after it marks the open positions
to the best bid (``Engine.mark_to_market``, every RISK_REFRESH seconds): ledger queries and one
balance request, never on the order path. The metrics listener only reads the last snapshot (one
attribute, swapped whole), so a scrape never waits for the ledger or the exchange.

"Today" is the UTC day of ``clock()`` (00:00 UTC to now), as for MAX_DAILY_VOLUME and
MAX_DAILY_LOSS_USD.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .httpclient import HttpError
from .metrics import Labels

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

DAY = 86400.0

# Ledger.exposure(mode, leader) for every leader in one pass over the orders (per leader it is one pass
# each: 120 leaders over 90 days of orders took 2.5 s on the engine thread, this takes a few ms).
LEADER_EXPOSURE_SQL = (
    "SELECT l.leader, COALESCE(SUM(MIN(MAX(l.net, 0), COALESCE(p.cost, 0))), 0) FROM ("
    "SELECT t.leader AS leader, o.token_id AS asset, SUM(CASE WHEN o.side='BUY' THEN o.filled_usd "
    "ELSE -(o.filled_usd - o.realised_usd) END) AS net FROM orders o JOIN decisions d ON d.id = o.decision_id "
    "JOIN leader_trades t ON t.id = d.leader_trade_id WHERE o.mode=? GROUP BY t.leader, o.token_id) l "
    "LEFT JOIN positions p ON p.mode=? AND p.asset=l.asset GROUP BY l.leader")


def day_start(now: float) -> float:
    """00:00 UTC of the day ``now`` (Unix time) falls in."""
    return now - now % DAY


@dataclass(frozen=True)
class Snapshot:
    at: float                           # clock() when it was taken
    balance: float | None               # USDC collateral (dry-run: the paper balance); None: never known
    exposure: float                     # cost of the open positions
    leader_exposure: dict[str, float] = field(default_factory=dict)
    realised_today: float = 0.0         # realised PnL of the orders sent since 00:00 UTC
    unrealised: float = 0.0             # open positions at the best bid, minus their cost
    volume_today: float = 0.0           # USD filled since 00:00 UTC

    @property
    def daily_loss(self) -> float:
        """Positive is a loss: the figure MAX_DAILY_LOSS_USD is compared with."""
        return -(self.realised_today + self.unrealised)


NONE: Labels = ()


class Money:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self.snapshot: Snapshot | None = None
        cfg = engine.cfg

        def one(fn: Callable[[Snapshot], float | None]) -> Callable[[], dict[Labels, float]]:
            def series() -> dict[Labels, float]:
                snap = self.snapshot
                value = fn(snap) if snap is not None else None
                return {} if value is None else {NONE: value}
            return series

        def limit(value: float) -> Callable[[], dict[Labels, float]]:
            return lambda: {NONE: value}

        def leaders() -> dict[Labels, float]:
            snap = self.snapshot
            return {} if snap is None else {(("leader", k),): v for k, v in snap.leader_exposure.items()}

        # without METRICS_TOKEN_FILE, METRICS_PORT leaves these out (the wallet, the PnL, the leaders copied);
        # the daily loss (the alert's figure), the limits and the snapshot's time stay
        private = {"polymarket_usdc_balance_usd", "polymarket_exposure_usd", "polymarket_leader_exposure_usd",
                   "polymarket_realised_pnl_today_usd", "polymarket_unrealised_pnl_usd", "polymarket_daily_volume_usd"}
        for name, text, fn in (
            ("polymarket_usdc_balance_usd", "USDC collateral of the wallet (dry-run: the paper balance)",
             one(lambda s: s.balance)),
            ("polymarket_exposure_usd", "Cost of the open positions", one(lambda s: s.exposure)),
            ("polymarket_leader_exposure_usd", "Cost of the open positions bought after each leader's trades",
             leaders),
            ("polymarket_realised_pnl_today_usd", "Realised PnL of the orders sent since 00:00 UTC",
             one(lambda s: s.realised_today)),
            ("polymarket_unrealised_pnl_usd", "Open positions at the best bid minus their cost",
             one(lambda s: s.unrealised)),
            ("polymarket_daily_loss_usd", "Realised + unrealised loss since 00:00 UTC (negative: a gain)",
             one(lambda s: s.daily_loss)),
            ("polymarket_daily_volume_usd", "USD filled since 00:00 UTC", one(lambda s: s.volume_today)),
            ("polymarket_money_timestamp_seconds", "Unix time the money figures were taken",
             one(lambda s: s.at)),
            ("polymarket_max_daily_loss_usd", "MAX_DAILY_LOSS_USD (0: no limit)", limit(cfg.max_daily_loss)),
            ("polymarket_max_daily_volume_usd", "MAX_DAILY_VOLUME", limit(cfg.max_daily_volume)),
            ("polymarket_max_total_exposure_usd", "MAX_TOTAL_EXPOSURE_USD (0: no limit)",
             limit(cfg.max_total_exposure)),
            ("polymarket_max_leader_exposure_usd", "MAX_LEADER_EXPOSURE_USD (0: no limit)",
             limit(cfg.max_leader_exposure)),
        ):
            engine.metrics.gauge_series(name, text, fn, private=name in private)

    def _balance(self) -> float | None:
        """The wallet's USDC; on an exchange error the last known figure (None before the first)."""
        try:
            return self.engine._usdc_balance()
        except (HttpError, KeyError, TypeError, ValueError, ArithmeticError) as exc:  # malformed: one line
            self.engine.metrics.inc("polymarket_errors_total", kind="balance")
            log.warning("USDC balance not read (the metric keeps its last value): %s", exc)
            return self.snapshot.balance if self.snapshot is not None else None

    def leader_exposure(self, mode: str) -> dict[str, float]:
        """Each leader of COPY_LEADERS -> what Ledger.exposure(mode, leader) says, in one query."""
        ledger = self.engine.ledger
        with ledger.lock:
            rows = ledger.db.execute(LEADER_EXPOSURE_SQL, (mode, mode)).fetchall()
        found = {str(leader): max(0.0, float(v)) for leader, v in rows}
        return {leader.lower(): found.get(leader.lower(), 0.0) for leader in self.engine.cfg.leaders}

    def refresh(self) -> Snapshot:
        """Take the figures now (engine thread); ``engine.unrealised`` is the mark just taken."""
        e = self.engine
        ledger, mode, now = e.ledger, str(e.mode), self.clock()
        since = day_start(now)
        snap = Snapshot(
            at=now, balance=self._balance(), exposure=ledger.exposure(mode),
            leader_exposure=self.leader_exposure(mode),
            realised_today=ledger.realised_since(mode, since), unrealised=e.unrealised,
            volume_today=ledger.volume_since(mode, since))
        self.snapshot = snap
        return snap
