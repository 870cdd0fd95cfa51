"""The copy-trading engine: detect leader trades, decide, size, guard, order, record."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import signal
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from . import signing
from .config import Config, LeaderFeed, SizingMode, TradingMode
from .crypto import address_of
from .fence import KEY_MARGIN, Fence, Fenced, FenceError
from .httpclient import HttpError, JsonClient, RateLimiter
from .ledger import Ledger
from .metrics import Metrics
from .money import Money
from .secrets import Secret

log = logging.getLogger(__name__)

PAGE = 500                 # /activity page (documented maximum)
ACTIVITY_OFFSET_CAP = 5000  # /activity: an offset past this is a 400 (docs); deeper history is paged by start
PAGES_PER_LEADER = 2       # /activity pages per leader per poll: a backlog is caught up over several polls
PAGES_PER_POLL = 20        # /activity pages per poll for all leaders together, shared round robin
GLOBAL_PAGE = 1000
TRADES_OFFSET_CAP = 10000  # /trades: the overlap sweep of the global feed never pages deeper
# Published Data API limits (docs.polymarket.com/api-reference/rate-limits), each its own
# budget besides DATA_API_MAX_RPS: requests per 10 s sliding window.
DATA_API_PATH_LIMITS = {"/trades": 200, "/positions": 150, "/closed-positions": 150}
AUTO_GLOBAL_ABOVE = 5
MARKET_TTL = 300.0
MARKET_REFRESH_AFTER = 0.8 * MARKET_TTL  # refreshed off the hot path once this old, if still in use
MARKET_KEEP_UNUSED = 3600.0              # cache entries unused this long are dropped, not refreshed
MARKET_WARM_RPS = 2.0                    # market look-ups per second spent on warming (3 requests each)
DRY_RUN_BALANCE_USD = 1000.0
# Tests only: kill -9 this process at one step of the order path (see ``_crash_point``).
CRASH_ENV = "POLYMARKET_BOT_TEST_CRASH_AT"
CRASH_POINTS = ("before_decision_commit", "after_decision_commit", "after_answer")
RESOLVE_EVERY = 5.0  # seconds between attempts to resolve open decisions while the exchange can't say
# An order the exchange acknowledged ("Duplicated") but does not show yet is re-asked about for this
# long; past it the decision still stays open (never guessed), asked about at every resolve, counted
# on /health (open_decisions) and logged as an error for the operator.
ACK_HORIZON = 600.0
OPEN_AT_EXCHANGE = ("LIVE", "DELAYED", "UNMATCHED", "RETRYING")  # not final: followed to the fill
SIZE_TICK = 0.01     # shares: the CLOB's size precision; drift beyond it is corrected at reconcile
RECONCILE_SETTLE = 120.0  # an asset traded this recently is not reconciled (the Data API lags the fill)
RISK_REFRESH = 30.0  # seconds between marking open positions to the best bid (daily loss)
GEOBLOCK_EVERY = 3600.0  # seconds between geoblock checks of this host's IP


def check_geoblock(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """Polymarket's geoblock answer for this host's IP: {"blocked", "ip", "country", "region"};
    raises HttpError when it cannot be asked or answers another shape."""
    parts = url.split("/", 3)
    client = JsonClient("/".join(parts[:3]), timeout, retries=1, backoff=0.2)
    r = client.get("/" + (parts[3] if len(parts) > 3 else ""))
    if not isinstance(r, dict) or not isinstance(r.get("blocked"), bool):
        raise HttpError(f"GET {url}: not a geoblock answer", retryable=True)
    return {k: r.get(k) for k in ("blocked", "ip", "country", "region")}


class Malformed(HttpError):
    """A 200 answer whose shape is not the documented one."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"{what}: malformed answer ({exc.__class__.__name__}: {exc})", retryable=True)


class Unknown(Exception):
    """The exchange could not be asked about an order; its decision stays open."""


class StaleMarket(Exception):
    """The exchange refused an order for its tick size or minimum size: refresh, retry once."""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _tick_or_size_error(err: str) -> bool:
    e = err.lower()
    return "tick" in e or "invalid price" in e or "lower than the minimum" in e or "minimum size" in e


class Skip(Exception):
    """A business reason not to copy; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Market:
    condition_id: str
    slug: str
    tokens: tuple[str, ...]
    outcomes: tuple[str, ...]
    neg_risk: bool
    closed: bool
    tick: Decimal
    min_size: Decimal


@dataclass(frozen=True)
class Plan:
    side: signing.Side
    token: str
    condition_id: str
    neg_risk: bool
    price: Decimal        # worst acceptable price, on the tick grid
    shares: Decimal       # intended shares
    usd: Decimal          # intended USD (buy: to spend; sell: minimum to receive)
    maker_amount: int
    taker_amount: int


def dedupe_keys(trades: list[dict[str, Any]]) -> list[str]:
    """tx hash + wallet + asset + side + size + price + occurrence index within the tx."""
    seen: dict[str, int] = {}
    keys = []
    for t in trades:
        base = "|".join(str(t.get(k, "")) for k in ("transactionHash", "proxyWallet", "asset", "side",
                                                     "size", "price")).lower()
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys.append(f"{base}|{n}")
    return keys


def _dec(x: Any) -> Decimal:
    return Decimal(str(x))


def _num(x: Any, hi: float = 1e15, lo: float = 0.0) -> Decimal:
    """A number from the exchange (price, size, amount): finite and in [lo, hi], else ValueError (a malformed
    answer: one log line where it is read), never a NaN/Infinity nor a decimal.InvalidOperation."""
    try:
        d = Decimal(str(x).strip())
    except ArithmeticError:
        raise ValueError(f"not a number: {str(x)[:40]!r}") from None
    if not d.is_finite() or not Decimal(lo) <= d <= Decimal(hi):
        raise ValueError(f"out of range: {str(x)[:40]!r}")
    return d


def _fnum(x: Any, hi: float = 1e15) -> float:
    return float(_num(x, hi))


def _micro_usd(x: Any) -> float:
    """A /balance-allowance figure (integer micro-USDC): 0 to 10^18, else ValueError (never an OverflowError)."""
    try:
        n = int(x) if not isinstance(x, float) else int(_num(x, 1e18))
    except (OverflowError, ArithmeticError):
        raise ValueError("balance not a finite integer") from None
    if not 0 <= n <= 10**18:
        raise ValueError(f"balance out of range: {str(x)[:40]}")
    return n / 1e6


def _floor(x: Decimal, step: Decimal) -> Decimal:
    return (x / step).to_integral_value(ROUND_FLOOR) * step


def _ceil(x: Decimal, step: Decimal) -> Decimal:
    return (x / step).to_integral_value(ROUND_CEILING) * step


def _round(x: float) -> float | None:
    """For JSON: a figure rounded to cents, None when unknown (never NaN/Infinity)."""
    return round(x, 2) if math.isfinite(x) else None


def amount_decimals(tick: Decimal) -> int:
    return -tick.normalize().as_tuple().exponent + 2  # type: ignore[operator]


def market_amounts(side: signing.Side, amount: Decimal, price: Decimal, tick: Decimal) -> tuple[int, int]:
    """Maker/taker base units of a market order: a buy spends ``amount`` USD, a sell
    gives ``amount`` shares; the worst price is ``price``. Sizes to 2 decimals, the
    other leg to the tick's amount precision, as the CLOB requires."""
    step = Decimal(1).scaleb(-amount_decimals(tick))
    maker = _floor(amount, Decimal("0.01"))
    other = _floor(maker / price, step) if side == signing.Side.BUY else _floor(maker * price, step)
    return int(maker * 1_000_000), int(other * 1_000_000)


class Engine:
    def __init__(self, cfg: Config, ledger: Ledger, metrics: Metrics | None = None,
                 backoff: float = 0.2) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.metrics = metrics or Metrics()
        t = cfg.http_timeout

        def count(path: str, ok: bool) -> None:
            self.metrics.inc("polymarket_data_api_requests_total")

        self.data = JsonClient(cfg.data_api_url, t, backoff=backoff, limiter=RateLimiter(cfg.data_api_max_rps),
                               on_request=count, path_limiters={
                                   path: RateLimiter.window(n, 10.0) for path, n in DATA_API_PATH_LIMITS.items()})
        self.clob = JsonClient(cfg.clob_url, t, backoff=backoff)
        self.gamma = JsonClient(cfg.gamma_url, t, backoff=backoff)
        self.probe = JsonClient(cfg.clob_url, min(t, 3.0), retries=0)
        self.mode = cfg.mode
        self.address = address_of(cfg.private_key) if cfg.private_key else ""
        self.maker = cfg.wallet_address or self.address
        self.creds: signing.ApiCreds | None = None
        self.markets: dict[str, tuple[float, Market]] = {}
        self.market_used: dict[str, float] = {}
        self.to_warm: set[str] = set()  # condition ids seen in the leaders' activity, not yet cached
        self.warm_budget = RateLimiter(MARKET_WARM_RPS, burst=10)
        self.marks: dict[str, float] = {}  # high-water marks already written to the ledger
        # SQLite's automatic WAL checkpoint runs inside the commit that crosses 1000 pages and
        # fsyncs the database there: 15-25 ms on the order path. This connection checkpoints
        # between polls instead (``checkpoint``); other connections keep the default.
        with ledger.lock:
            ledger.db.execute("PRAGMA wal_autocheckpoint=0")
        self.wal_dirty = False
        self.leader_values: dict[str, tuple[float, float]] = {}
        self.recent: deque[str] = deque(maxlen=200_000)
        self.recent_set: set[str] = set()
        self.last_poll = 0.0
        self.last_global = 0.0
        # leaders whose /activity has more to read: (start, offset) of the next page, or None
        # for a read from the high-water mark minus the age window
        self.backlog: dict[str, tuple[int, int] | None] = {}
        self.rotate = 0
        self.sweep_offset = GLOBAL_PAGE   # the global feed's overlap sweep: next /trades offset
        self.poll_positions: dict[str, dict[str, float]] = {}  # leader -> asset -> size, this poll
        self.exchange_ok = False
        self.last_probe = 0.0
        self.last_stop_loss = 0.0
        self.passive = False
        # With FENCE_SOCKET (polymarket-ha's lease): each order's leader trade is recorded in etcd before it
        # leaves, and ``promote`` merges those records before the first order of every active period.
        self.fence = Fence(cfg.fence_socket) if cfg.fence_socket is not None else None
        self.synced = False      # ``promote`` done since this process last turned (or started) active
        self.caught_up = False
        self.stop = threading.Event()
        self.warmed = False
        self.open_decisions = 0       # pending/unknown decisions the exchange has not resolved yet
        self.last_resolve = 0.0
        self.crash_at = os.environ.get(CRASH_ENV, "")
        self.last_reconcile = 0.0
        self.drift_total = 0
        self.killed = False                      # KILL_SWITCH_FILE exists: no order at all
        self.order_errors = 0                    # consecutive order errors (circuit breaker)
        self.breaker_mono = 0.0                  # time.monotonic() until which the breaker holds orders
        self.unrealised = 0.0                    # open positions marked to the best bid, minus cost
        self.last_mark_to_market = 0.0
        # asset -> its last best bid (None: unknown, valued at 0); the marks a turn's budget left over are
        # taken at the next turn, the stalest first (mark_order)
        self.bids_seen: dict[str, Decimal | None] = {}
        self.mark_order: dict[str, float] = {}
        self.exit_retries: dict[int, tuple[float, dict[str, Any]]] = {}  # decision -> (trade ts, trade)
        self.geoblock: dict[str, Any] = {"checked": False}
        self.last_geoblock = 0.0
        for name, text, fn in (
                ("polymarket_open_decisions", "Orders whose outcome the exchange has not confirmed yet",
                 lambda: float(self.open_decisions)),
                ("polymarket_kill_switch", "1 while KILL_SWITCH_FILE exists", lambda: float(self.killed)),
                ("polymarket_circuit_breaker_open", "1 while the circuit breaker holds orders",
                 lambda: float(self.breaker_left() > 0)),
                ("polymarket_geoblocked", "1 while Polymarket's geoblock check blocks this host",
                 lambda: float(bool(self.geoblock.get("blocked"))))):
            self.metrics.gauge(name, text, fn)
        self.money = Money(self)  # balance, exposure, today's PnL and volume for /metrics (money.py)
        self.feed = cfg.leader_feed
        if self.feed is LeaderFeed.AUTO:
            self.feed = LeaderFeed.GLOBAL if len(cfg.leaders) > AUTO_GLOBAL_ABOVE else LeaderFeed.PER_LEADER

    @property
    def breaker_until(self) -> float:
        """Wall-clock end of the breaker's pause, for display only; the pause itself runs on
        time.monotonic() (an NTP step does not stretch or cut it)."""
        return time.time() + self.breaker_left()

    def breaker_left(self) -> float:
        return max(0.0, self.breaker_mono - time.monotonic())

    def kill_switch_on(self) -> bool:
        """KILL_SWITCH_FILE exists as anything, a dangling symlink or a loop included (lstat):
        refreshed before every order, one stat."""
        self.killed = os.path.lexists(self.cfg.kill_switch_file)
        return self.killed

    # ---- main loop ------------------------------------------------------------------
    def run(self) -> None:
        """Poll until stopped. An exchange that is down or answers nonsense is one log line per
        poll and is retried; any other exception ends the thread (and ``cli`` exits non-zero)."""
        log.info("engine started: mode=%s leaders=%d feed=%s", self.mode, len(self.cfg.leaders), self.feed)
        while not self.stop.is_set():
            started = time.monotonic()
            self.loop_at = started  # /live: the loop turns (liveness for HA, whatever the exchange answers)
            try:
                if not self.warmed:
                    self.warm_up()
                self.poll_once()
            except HttpError as exc:
                self.metrics.inc("polymarket_errors_total", kind="loop")
                log.warning("poll failed: %s", exc)
            self.stop.wait(max(0.0, self.cfg.poll_interval - (time.monotonic() - started)))

    def refresh_geoblock(self) -> None:
        """Ask Polymarket whether this host's IP may trade; shown on /health. Blocked: new buys
        are held (a close-only region may still sell; a fully blocked one is refused by the
        exchange). Unreachable: one log line, orders go on, retried in an hour."""
        self.last_geoblock = time.time()
        if not self.cfg.geoblock_url:
            self.geoblock = {"checked": False, "detail": "GEOBLOCK_URL empty"}
            return
        try:
            self.geoblock = {"checked": True, **check_geoblock(self.cfg.geoblock_url), "at": int(time.time())}
        except HttpError as exc:
            self.geoblock = {"checked": False, "detail": str(exc)[:200]}
            log.warning("geoblock check failed: %s", exc)
            return
        if self.geoblock["blocked"]:
            log.error("geoblock: Polymarket blocks orders from this host (%s, %s %s): new buys held",
                      self.geoblock.get("ip"), self.geoblock.get("country"), self.geoblock.get("region"))

    def _crash_point(self, point: str) -> None:
        """Tests only: ``POLYMARKET_BOT_TEST_CRASH_AT=<point>`` kills this process with SIGKILL
        at that step of the order path, to prove the restart resolves it with the exchange;
        ``raise:<point>`` raises there instead (an unexpected error in the engine thread)."""
        if self.crash_at == point:
            log.warning("test crash point %s: kill -9", point)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.crash_at == "raise:" + point:
            raise RuntimeError(f"test crash point {point}")

    def poll_once(self) -> int:
        """One detection round; returns how many new leader trades were handled."""
        was_passive = self.passive
        self.passive = self.cfg.passive_file.exists() or not self.lease_ok()[0]
        self.kill_switch_on()
        if not self.warmed:
            self.warm_up()
        handled = 0
        self.poll_positions.clear()
        if self.passive:
            self.synced = False
        elif not self.synced:  # promoted (or started active): the lease's records and the exchange first
            self.passive = not self.promote(was_passive)
        if self.open_decisions and time.monotonic() - self.last_resolve >= RESOLVE_EVERY:
            self.resolve_open()
        if time.time() - self.last_reconcile >= self.cfg.reconcile_interval:
            self.reconcile("interval")
        if time.time() - self.last_geoblock >= GEOBLOCK_EVERY:
            self.refresh_geoblock()
        self.mark_to_market()
        self.retry_exits()
        try:
            try:
                trades = self.fetch_new_trades()
            except (KeyError, TypeError, ValueError) as exc:
                raise Malformed("leader poll", exc) from None
        except HttpError as exc:
            self.metrics.inc("polymarket_errors_total", kind="data_api")
            log.warning("leader poll failed: %s", exc)
            trades = []
        else:
            self.last_poll = time.time()
        visible_at = time.monotonic()
        # exits first: a sell of something we hold goes before any buy of this poll
        held = {p.asset for p in self.ledger.positions(str(self.mode))} if trades else set()
        trades.sort(key=lambda kt: 0 if str(kt[1].get("side", "")).upper() == "SELL"
                    and str(kt[1].get("asset")) in held else 1)
        for key, t in trades:
            if self.handle(key, t, visible_at):
                handled += 1
        self.maintain_markets()
        self.checkpoint(handled > 0)
        self.probe_exchange()
        if self.cfg.stop_loss_pct > 0 and time.time() - self.last_stop_loss >= 5:
            self.last_stop_loss = time.time()
            self.check_stop_loss()
        return handled

    def promote(self, was_passive: bool) -> bool:
        """Before the first order of an active period. Without a fence: the exchange's view (open orders
        resolved, positions reconciled) when the node was passive before. With FENCE_SOCKET (issue 11):
        the keys etcd holds as copied by either node are merged into the ledger first (a trade copied
        there is never copied again here, however old this ledger is: a replica adopted at promotion,
        a restored backup); then open orders are resolved and positions reconciled with the exchange;
        then the leader trades this node saw while passive (or without the lease) that no holder copied
        and that are younger than MAX_TRADE_AGE_SECONDS are decided afresh, i.e. copied once. False,
        and the node stays passive, while etcd's records cannot be read."""
        if self.fence is None:
            if was_passive:
                log.info("node turned active: resolving open orders and reconciling positions")
                self.resolve_open()
                self.reconcile("promotion")
            self.synced = True
            return True
        try:
            copied, generation = self.fence.copied()
        except FenceError as exc:
            self.metrics.inc("polymarket_errors_total", kind="fence")
            log.warning("node holds the lease, but the trades copied under it can't be read (%s): "
                        "no order until they can", exc)
            return False
        self.passive = False
        own = self._own_unsent(copied)
        copied = {k: v for k, v in copied.items() if k not in own}
        decided = self.ledger.merge_copied(copied, generation)
        log.warning("node turned active (lease generation %d, %.1f ms): %d leader trade(s) recorded as copied "
                    "under the lease, %d decision(s) here now copied_by_peer; resolving open orders and "
                    "reconciling positions", generation, self.fence.last_ms, len(copied), decided)
        self.resolve_open()
        self.reconcile("promotion")
        if self.mode is TradingMode.LIVE:
            reopened = self.ledger.reopen_unsent(time.time() - self.cfg.max_trade_age)
            if reopened:
                log.warning("promotion: %d leader trade(s) seen while passive and copied by neither node: "
                            "deciding them now", reopened)
                self.resolve_open()
        self.synced = True
        return True

    def _own_unsent(self, copied: dict[str, dict[str, Any]]) -> set[str]:
        """Keys this node recorded (holder LEASE_NODE) for an order this ledger holds as not sent: the fence's
        answer came after its timeout though etcd had written, so the order was held. Not a peer's copy: the
        exchange is asked about that order (its hash); one it does not show leaves the key out of the merge, and
        the trade is decided afresh (reopen_unsent). An error or an order it shows: the key stays (never twice)."""
        own: set[str] = set()
        if self.mode is not TradingMode.LIVE:
            return own
        for key, info in copied.items():
            order_hash = str(info.get("order") or "")
            if str(info.get("holder") or "") != self.cfg.lease_node or not order_hash:
                continue
            rows = self.ledger.rows("SELECT request, created_at FROM orders WHERE order_hash=? AND status='not_sent'",
                                    (order_hash,))
            if not rows:
                continue
            try:
                payload = json.loads(rows[0]["request"])
                found = self.lookup_order(order_hash, str(payload["order"]["tokenId"]),
                                          float(rows[0]["created_at"]), payload)
            except (HttpError, KeyError, TypeError, ValueError) as exc:
                log.warning("promotion: %s recorded here, order %s not sent; the exchange can't say (%s): "
                            "kept as copied", key, order_hash, exc)
                continue
            if found is None:
                own.add(key)
                log.warning("promotion: %s recorded here (the fence answered late), order %s never sent nor at "
                            "the exchange: decided afresh", key, order_hash)
            else:
                log.error("promotion: order %s held as not sent is at the exchange (%s): check it", order_hash,
                          found[0])
        return own

    def warm_up(self) -> None:
        """Before the first poll: what the first copied trade would otherwise wait for.

        The CLOB API key (an L1-signed request), and the markets of our open positions
        (a leader's sell is copied against them). Markets in the leaders' recent activity
        are warmed by ``maintain_markets`` once the start-up catch-up has read it."""
        if self.mode is TradingMode.LIVE and self.cfg.private_key:
            self.api_creds()  # an HttpError leaves ``warmed`` False: retried at the next poll
        self.to_warm.update(p.condition_id for p in self.ledger.positions(str(self.mode)) if p.condition_id)
        self.warmed = True
        self.refresh_geoblock()
        if self.fence is None:  # with the lease's fence, ``promote`` does both, after merging etcd's records
            self.resolve_open()
            self.reconcile("start")

    def maintain_markets(self) -> None:
        """Between polls, off the hot path: look up markets the leaders traded recently, and
        refresh cached ones before they expire, so a copied trade finds its market (tokens,
        tick size, neg-risk) cached. Bounded by ``MARKET_WARM_RPS`` against the Gamma and
        CLOB limits; entries unused for ``MARKET_KEEP_UNUSED`` are dropped instead."""
        now = time.time()
        due = [cid for cid, (at, _) in self.markets.items() if now - at >= MARKET_REFRESH_AFTER]
        for cid in due:
            if now - self.market_used.get(cid, 0.0) > MARKET_KEEP_UNUSED:
                del self.markets[cid]
                self.market_used.pop(cid, None)
        todo = [cid for cid in due if cid in self.markets] + sorted(self.to_warm - self.markets.keys())
        self.to_warm.clear()
        for i, cid in enumerate(todo):
            if self.stop.is_set() or not self.warm_budget.try_acquire():
                self.to_warm.update(c for c in todo[i:] if c not in self.markets)
                break
            try:
                self.market(cid, refresh=True)
            except Skip:
                pass  # unknown market: the trade (if any) will say so
            except HttpError as exc:
                log.debug("market warm-up of %s failed: %s", cid, exc)
        if len(self.to_warm) > 10_000:  # bounded memory even if Gamma is down for long
            self.to_warm.clear()

    def checkpoint(self, wrote: bool) -> None:
        """Copy the WAL into the database off the hot path, after a poll that wrote orders."""
        self.wal_dirty = self.wal_dirty or wrote
        if not self.wal_dirty:
            return
        try:
            with self.ledger.lock:
                self.ledger.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.wal_dirty = False
        except sqlite3.Error as exc:
            log.debug("WAL checkpoint deferred: %s", exc)

    def probe_exchange(self) -> None:
        if time.time() - max(self.last_probe, self.clob.last_ok) < self.cfg.health_check_interval:
            self.exchange_ok = self.exchange_ok or self.clob.last_ok > 0
            return
        self.last_probe = time.time()
        try:
            self.probe.get("/time")
            self.exchange_ok = True
        except HttpError:
            self.exchange_ok = False

    # ---- detection ----------------------------------------------------------------------
    def _start_mark(self, leader: str) -> int:
        mark = self.ledger.get_mark(f"hwm:{leader}")
        if mark is None:
            mark = self.ledger.get_mark("hwm:global")
        now = time.time()
        if mark is None:
            mark = now - self.cfg.max_trade_age
        # look back over the age window so that trades the API publishes late are still seen
        return int(min(mark, now) - self.cfg.max_trade_age)

    def _activity_page(self, leader: str, start: int, offset: int) -> list[dict[str, Any]]:
        rows = self.data.get("/activity", {"user": leader, "type": "TRADE", "start": start,
                                           "sortBy": "TIMESTAMP", "sortDirection": "ASC",
                                           "limit": PAGE, "offset": offset})
        if not isinstance(rows, list):
            raise HttpError("GET /activity: not a list", retryable=True)
        return rows

    def fetch_leader(self, leader: str, pages: int = PAGES_PER_LEADER) -> list[dict[str, Any]]:
        """Up to ``pages`` pages of one leader's fills, oldest first, from where the last poll
        stopped (a backlog) or from the high-water mark minus the age window. A full page leaves
        the leader in ``backlog`` for the next poll. The offset never passes the documented
        cap: the next page starts at the last timestamp read (skipping the rows read there)."""
        out: list[dict[str, Any]] = []
        for _ in range(pages):
            cursor = self.backlog.get(leader)
            start, offset = cursor if cursor is not None else (self._start_mark(leader), 0)
            rows = self._activity_page(leader, start, offset)
            out += [r for r in rows if r.get("type", "TRADE") == "TRADE"]
            if len(rows) < PAGE:
                self.backlog.pop(leader, None)
                break
            last = int(rows[-1]["timestamp"])
            at_last = sum(1 for r in rows if int(r["timestamp"]) == last)
            nxt = (last, at_last) if last > start else (start, offset + len(rows))
            if nxt[1] + PAGE > ACTIVITY_OFFSET_CAP:  # thousands of fills in one second
                log.warning("leader %s: over %d fills at timestamp %d; the rest of that second is skipped",
                            leader, ACTIVITY_OFFSET_CAP, nxt[0])
                self.metrics.inc("polymarket_errors_total", kind="activity_offset_cap")
                nxt = (nxt[0] + 1, 0)
            self.backlog[leader] = nxt
        return out

    def _read_leaders(self, leaders: list[str]) -> tuple[list[dict[str, Any]], int, int]:
        """Page ``leaders`` fairly within PAGES_PER_POLL: (rows, requests ok, requests failed).
        One leader's error (a 400, a timeout) is logged and does not stop the others."""
        rows: list[dict[str, Any]] = []
        ok = failed = 0
        if not leaders:
            return rows, ok, failed
        budget = max(PAGES_PER_POLL, len(leaders))
        per = max(1, min(PAGES_PER_LEADER, budget // len(leaders)))
        self.rotate = (self.rotate + 1) % len(leaders)
        for leader in leaders[self.rotate:] + leaders[:self.rotate]:
            if budget <= 0 or self.stop.is_set():
                break
            try:
                got = self.fetch_leader(leader, min(per, budget))
                ok += 1
            except HttpError as exc:
                failed += 1
                self.metrics.inc("polymarket_errors_total", kind="data_api")
                log.warning("leader %s poll failed: %s", leader, exc)
                if exc.status == 400:  # a request the API refuses: start this leader afresh
                    self.backlog.pop(leader, None)
                continue
            budget -= max(1, -(-len(got) // PAGE))
            rows += got
        return rows, ok, failed

    def fetch_new_trades(self) -> list[tuple[str, dict[str, Any]]]:
        leaders = set(self.cfg.leaders)
        rows: list[dict[str, Any]] = []
        ok = failed = 0
        more: list[dict[str, Any]] = []
        if self.feed is LeaderFeed.PER_LEADER:
            rows, ok, failed = self._read_leaders(list(self.cfg.leaders))
        else:
            if not self.caught_up:  # start-up: each leader's history since its mark, a bounded share per poll
                self.backlog.update({leader: None for leader in self.cfg.leaders if leader not in self.backlog})
                self.caught_up = True
            try:
                rows = self._global_page(leaders)
                ok += 1
            except HttpError as exc:
                failed += 1
                self.metrics.inc("polymarket_errors_total", kind="data_api")
                log.warning("global feed poll failed: %s", exc)
            behind = [leader for leader in self.cfg.leaders if leader in self.backlog]
            more, ok2, failed2 = self._read_leaders(behind)
            ok, failed = ok + ok2, failed + failed2
        if failed and not ok:
            raise HttpError(f"every Data API read of this poll failed ({failed})", retryable=True)
        # keys per source (the occurrence index within a transaction is only meaningful within
        # one feed); the same fill read from both feeds has the same key and is handled once
        keyed: dict[str, dict[str, Any]] = {}
        for source in (rows, more):
            by_tx: dict[str, list[dict[str, Any]]] = {}
            for r in sorted(source, key=lambda r: int(r["timestamp"])):
                by_tx.setdefault(str(r.get("transactionHash")), []).append(r)
            for group in by_tx.values():
                for key, r in zip(dedupe_keys(group), group, strict=True):
                    if key not in self.recent_set:
                        keyed.setdefault(key, r)
        rows = rows + more
        fresh = sorted(keyed.items(), key=lambda kr: int(kr[1]["timestamp"]))
        newest: dict[str, int] = {}
        for r in rows:
            who, ts = str(r["proxyWallet"]).lower(), int(r["timestamp"])
            newest[who] = max(ts, newest.get(who, ts))
            cid = str(r.get("conditionId") or "")
            if cid and cid not in self.markets:
                self.to_warm.add(cid)
        for who, ts in newest.items():  # one write per leader that moved, not one per row
            if ts > self.marks.get(who, -math.inf):
                self.ledger.set_mark(f"hwm:{who}", ts)
                self.marks[who] = ts
                self.wal_dirty = True
        return fresh

    def _trades_page(self, offset: int) -> list[dict[str, Any]]:
        page = self.data.get("/trades", {"limit": GLOBAL_PAGE, "offset": offset, "takerOnly": "false"})
        if not isinstance(page, list):
            raise HttpError("GET /trades: not a list", retryable=True)
        return page

    def _global_page(self, leaders: set[str]) -> list[dict[str, Any]]:
        """The newest page of the global feed, plus one page of an overlap sweep per poll that
        re-reads the feed back to MAX_TRADE_AGE_SECONDS, so a fill published late (inserted
        below the newest page) is still seen. If the sweep cannot reach that far within
        the offset cap, the leaders are caught up from their own /activity (bounded)."""
        page = self._trades_page(0)
        prev = self.ledger.get_mark("hwm:global")
        mine = [r for r in page if str(r.get("proxyWallet", "")).lower() in leaders]
        if not page:
            return mine
        horizon = time.time() - self.cfg.max_trade_age - 2 * self.cfg.poll_interval
        oldest = min(int(r["timestamp"]) for r in page)
        newest = max(int(r["timestamp"]) for r in page)
        if prev is not None and len(page) >= GLOBAL_PAGE and oldest > prev and not self.backlog:
            log.info("global feed moved more than one page since the last poll; the sweep re-reads it")
        if len(page) >= GLOBAL_PAGE and oldest > horizon:
            try:
                more = self._trades_page(self.sweep_offset)
            except HttpError as exc:
                if exc.retryable:
                    raise
                more = []  # past the API's offset cap: restart the sweep, catch up per leader
                self._feed_gap(leaders, f"/trades offset {self.sweep_offset} refused: {exc}")
            mine += [r for r in more if str(r.get("proxyWallet", "")).lower() in leaders]
            reached = not more or len(more) < GLOBAL_PAGE or min(int(r["timestamp"]) for r in more) <= horizon
            self.sweep_offset += GLOBAL_PAGE
            if reached:
                self.sweep_offset = GLOBAL_PAGE
            elif self.sweep_offset >= TRADES_OFFSET_CAP:
                self.sweep_offset = GLOBAL_PAGE
                self._feed_gap(leaders, f"more than {TRADES_OFFSET_CAP} fills in MAX_TRADE_AGE_SECONDS")
        else:
            self.sweep_offset = GLOBAL_PAGE
        self.ledger.set_mark("hwm:global", newest)
        return mine

    def _feed_gap(self, leaders: set[str], why: str) -> None:
        log.warning("global feed: %s; catching up per leader", why)
        self.metrics.inc("polymarket_errors_total", kind="feed_gap")
        for leader in sorted(leaders):
            self.backlog.setdefault(leader, None)

    def _remember(self, key: str) -> None:
        if len(self.recent) == self.recent.maxlen:
            self.recent_set.discard(self.recent[0])
        self.recent.append(key)
        self.recent_set.add(key)

    # ---- one trade ------------------------------------------------------------------------
    def handle(self, key: str, t: dict[str, Any], visible_at: float) -> bool:
        self._remember(key)
        self._crash_point("before_decision_commit")
        did = self.ledger.record_trade(key, t)
        if did is None:
            return False
        self._crash_point("after_trade_recorded")  # the decision is open, no order signed yet
        self.metrics.inc("polymarket_trades_seen_total")
        if self.fence is not None and self.ledger.copied_elsewhere(key):  # merged at the last promotion
            self.ledger.decide(did, "skipped", "copied_by_peer")
            self.metrics.inc("polymarket_trades_skipped_total", reason="copied_by_peer")
            log.info("skip %s: copied under the lease by the other node", key)
            return True
        try:
            plan = self.decide(t)
            try:
                self.execute(did, plan, visible_at)
            except StaleMarket as exc:
                # the market's tick size or minimum size changed: look it up again, re-plan, once
                log.warning("order refused (%s): refreshing market %s and retrying once", exc, plan.condition_id)
                self.metrics.inc("polymarket_market_refresh_retries_total")
                self.market(plan.condition_id, refresh=True)
                try:
                    self.execute(did, self.decide(t), visible_at, kind_reason="retried after market refresh",
                                 reopen=("rejected",))
                except StaleMarket as again:
                    log.warning("order refused again after the market refresh: %s", again)
        except Skip as s:
            self.ledger.decide(did, "skipped", s.reason + (f": {s.detail}" if s.detail else ""))
            self.metrics.inc("polymarket_trades_skipped_total", reason=s.reason)
            log.info("skip %s %s %s: %s %s", t["proxyWallet"], t["side"], t["asset"], s.reason, s.detail)
            if s.reason in ("slippage", "kill_switch", "circuit_breaker") and str(t["side"]).upper() == "SELL":
                self.exit_retries[did] = (float(t["timestamp"]), t)  # an exit: tried again next polls
        except HttpError as exc:
            self.ledger.decide(did, "failed", str(exc))
            self.metrics.inc("polymarket_errors_total", kind="exchange")
            log.warning("trade %s failed: %s", key, exc)
        except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as exc:  # a malformed trade or answer
            self.ledger.decide(did, "failed", f"malformed: {exc.__class__.__name__}: {exc}")
            self.metrics.inc("polymarket_errors_total", kind="malformed")
            log.warning("trade %s failed: malformed data (%s: %s)", key, exc.__class__.__name__, exc)
        except Unknown as exc:
            self.open_decisions += 1
            self._order_outcome(error=True)
            self.metrics.inc("polymarket_errors_total", kind="order_unknown")
            log.warning("trade %s: order outcome unknown, stays open: %s", key, exc)
        return True

    def market(self, condition_id: str, refresh: bool = False) -> Market:
        """Tokens, tick size and neg-risk of a market, cached for ``MARKET_TTL``; ``refresh``
        (warm-up) looks it up anyway and does not count as a use."""
        if not refresh or condition_id not in self.market_used:
            self.market_used[condition_id] = time.time()
        hit = self.markets.get(condition_id)
        if hit and not refresh and time.time() - hit[0] < MARKET_TTL:
            return hit[1]
        rows = self.gamma.get("/markets", {"condition_ids": condition_id})
        if not isinstance(rows, list) or not rows:
            raise Skip("unknown_market", condition_id)
        m = rows[0]
        tokens = tuple(str(x) for x in (json.loads(m["clobTokenIds"]) if isinstance(m["clobTokenIds"], str)
                                        else m["clobTokenIds"]))
        outcomes = tuple(json.loads(m["outcomes"]) if isinstance(m.get("outcomes"), str) else m.get("outcomes", []))
        tick = self.clob.get("/tick-size", {"token_id": tokens[0]})["minimum_tick_size"]
        neg = self.clob.get("/neg-risk", {"token_id": tokens[0]})["neg_risk"]
        market = Market(condition_id=condition_id, slug=str(m.get("slug", "")), tokens=tokens, outcomes=outcomes,
                        neg_risk=bool(neg), closed=bool(m.get("closed")) or not m.get("active", True),
                        tick=_dec(tick), min_size=_dec(m.get("orderMinSize", 5)))
        self.markets[condition_id] = (time.time(), market)
        return market

    def _day_start(self) -> float:
        now = time.time()
        return now - now % 86400

    def _book(self, token: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        b = self.clob.get("/book", {"token_id": token})
        # every level finite and in range (a price in [0, 1]), else the whole book is malformed (ValueError)
        bids = sorted(((_num(x["price"], 1), _num(x["size"])) for x in b.get("bids", [])), reverse=True)
        asks = sorted((_num(x["price"], 1, 1e-6), _num(x["size"])) for x in b.get("asks", []))
        return bids, asks

    def _leader_value(self, leader: str) -> float:
        hit = self.leader_values.get(leader)
        if hit and time.time() - hit[0] < 60:
            return hit[1]
        rows = self.data.get("/value", {"user": leader})
        value = _fnum(rows[0]["value"]) if rows else 0.0
        self.leader_values[leader] = (time.time(), value)
        return value

    def _leader_positions(self, leader: str) -> dict[str, float]:
        """A leader's positions (asset -> shares), read from /positions once per poll."""
        hit = self.poll_positions.get(leader)
        if hit is not None:
            return hit
        out: dict[str, float] = {}
        for page in range(10):
            rows = self.data.get("/positions", {"user": leader, "sizeThreshold": 0, "limit": PAGE,
                                                "offset": page * PAGE})
            if not isinstance(rows, list):
                raise HttpError("GET /positions: not a list", retryable=True)
            for r in rows:
                out[str(r.get("asset"))] = out.get(str(r.get("asset")), 0.0) + _fnum(r["size"])
            if len(rows) < PAGE:
                break
        self.poll_positions[leader] = out
        return out

    def _usdc_balance(self) -> float:
        if self.mode is TradingMode.DRY_RUN:
            spent = self.ledger.volume_since("dry-run", 0)
            return DRY_RUN_BALANCE_USD - spent
        r = self._l2_get("/balance-allowance", {"asset_type": "COLLATERAL",
                                                "signature_type": self.cfg.signature_type})
        return _micro_usd(r["balance"])

    def _token_balance(self, token: str) -> float | None:
        if self.mode is TradingMode.DRY_RUN:
            return None
        r = self._l2_get("/balance-allowance", {"asset_type": "CONDITIONAL", "token_id": token,
                                                "signature_type": self.cfg.signature_type})
        return _micro_usd(r["balance"])

    def lease_ok(self) -> tuple[bool, str]:
        """With LEASE_FILE (polymarket-ha): whether the lease names LEASE_NODE, is of this boot, and its
        deadline is ahead on CLOCK_BOOTTIME. BOOTTIME, not MONOTONIC: it also runs while the machine is
        suspended, and a process that was stopped (SIGSTOP, a frozen cgroup, a long pause) reads the
        real elapsed time when it wakes, so it finds the deadline passed. Absent, unreadable, another
        holder, expired: no lease, no order."""
        path = self.cfg.lease_file
        if path is None:
            return True, "no lease configured"
        try:
            with open(path, "rb") as f:
                lease = json.loads(f.read(65536))
            deadline = float(lease["deadline"])
            holder, clock, boot = lease["holder"], lease["clock"], lease["boot_id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return False, f"no valid lease file {path} ({exc.__class__.__name__})"
        if holder != self.cfg.lease_node:
            return False, f"the lease is held by {holder or 'nobody'}"
        # The unit's ProcSubset=pid hides /proc/sys (boot_id unreadable, ""): then /run, a tmpfs emptied
        # at every boot, is what keeps a lease of an earlier boot away.
        here = _boot_id()
        if clock != "CLOCK_BOOTTIME" or (here and boot != here):
            return False, "the lease is not of this boot"
        left = deadline - time.clock_gettime(time.CLOCK_BOOTTIME)
        if left <= 0:
            return False, f"the lease expired {-left:.1f}s ago"
        return True, f"{left:.1f}s left"

    def check_orders_allowed(self) -> None:
        """The account-level stops that hold every order, sells included."""
        if self.kill_switch_on():
            self.metrics.inc("polymarket_risk_blocked_total", limit="kill_switch")
            raise Skip("kill_switch", str(self.cfg.kill_switch_file))
        if self.breaker_left() > 0:
            self.metrics.inc("polymarket_risk_blocked_total", limit="circuit_breaker")
            raise Skip("circuit_breaker", f"{self.breaker_left():.0f}s left")

    def _order_outcome(self, error: bool) -> None:
        """Count order errors in a row; MAX_CONSECUTIVE_ORDER_ERRORS of them pause trading."""
        if not error:
            self.order_errors = 0
            return
        self.order_errors += 1
        if self.order_errors >= self.cfg.max_consecutive_order_errors:
            self.breaker_mono = time.monotonic() + self.cfg.circuit_breaker_seconds
            self.order_errors = 0
            self.metrics.inc("polymarket_circuit_breaker_trips_total")
            log.error("circuit breaker: %d order errors in a row; no order for %.0f s",
                      self.cfg.max_consecutive_order_errors, self.cfg.circuit_breaker_seconds)

    def mark_to_market(self) -> None:
        """Between polls (off the order path), at most every RISK_REFRESH seconds: the open
        positions at the best bid minus their cost, for MAX_DAILY_LOSS_USD and the money metrics."""
        if time.time() - self.last_mark_to_market < RISK_REFRESH:
            return
        positions = self.ledger.positions(str(self.mode))
        deadline = time.monotonic() + self.phase_budget()
        done = True
        for n, p in enumerate(sorted(positions, key=lambda p: self.mark_order.get(p.asset, 0.0))):
            if time.monotonic() > deadline:  # the rest at the next turn: a turn stays well under /live's bound
                done = False
                log.warning("mark to market: %d positions left to the next turn (a slow /book)", len(positions) - n)
                break
            self.mark_order[p.asset] = time.time()
            try:
                bids, _ = self._book(p.asset)
                self.bids_seen[p.asset] = bids[0][0] if bids else None
            except HttpError:
                self.bids_seen[p.asset] = None  # no bid known: valued at 0 (conservative: the loss is never lowered)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.bids_seen[p.asset] = None
                self.metrics.inc("polymarket_errors_total", kind="malformed")
                log.warning("mark of %s: %s; valued at 0", p.asset, Malformed("GET /book", exc))
        if done:
            self.last_mark_to_market = time.time()
        value = 0.0
        for p in positions:
            bid = self.bids_seen.get(p.asset)
            value += (float(bid) * p.shares if bid is not None else 0.0) - p.cost
        held = {p.asset for p in positions}
        for gone in [a for a in self.bids_seen if a not in held]:
            self.bids_seen.pop(gone, None)
            self.mark_order.pop(gone, None)
        self.unrealised = value
        self.money.refresh()

    def phase_budget(self) -> float:
        """Seconds a turn may spend on one per-position phase (mark to market, exit retries, stop loss): 10 x
        HTTP_TIMEOUT within 2..60 s; what is left is taken at the next turn, so a hanging /book never makes one
        loop turn outlast /live's bound, whatever the count of positions."""
        return min(60.0, max(2.0, 10 * self.cfg.http_timeout))

    def daily_loss(self) -> float:
        """Realised loss since 00:00 UTC plus the unrealised loss of open positions (as of the
        last ``mark_to_market``): positive is a loss."""
        return -(self.ledger.realised_since(str(self.mode), self._day_start()) + self.unrealised)

    def _risk_room(self, leader: str) -> tuple[float, str]:
        """USD a new buy may still add under the account limits, and the binding limit's name."""
        cfg = self.cfg
        room, limit = math.inf, ""
        if self.geoblock.get("blocked"):
            return 0.0, "geoblocked"
        if cfg.max_daily_loss > 0:
            loss = self.daily_loss()
            if not math.isfinite(loss):  # fail closed: a loss that can't be computed holds every buy
                log.warning("daily loss unknown (%r): buys held", loss)
                return 0.0, "daily_loss_unknown"
            if loss >= cfg.max_daily_loss:
                return 0.0, "max_daily_loss"
        if cfg.max_total_exposure > 0:
            r = cfg.max_total_exposure - self.ledger.exposure(str(self.mode))
            if r < room:
                room, limit = r, "max_total_exposure"
        if cfg.max_leader_exposure > 0:
            r = cfg.max_leader_exposure - self.ledger.exposure(str(self.mode), leader)
            if r < room:
                room, limit = r, "max_leader_exposure"
        return room, limit

    def risk_status(self) -> dict[str, Any]:
        """For /system and /health: the limits, where the account stands, what blocks orders."""
        cfg, mode = self.cfg, str(self.mode)
        return {
            "kill_switch": {"file": str(cfg.kill_switch_file), "active": self.killed},
            "circuit_breaker": {"max_consecutive_order_errors": cfg.max_consecutive_order_errors,
                                "pause_seconds": cfg.circuit_breaker_seconds, "errors_in_a_row": self.order_errors,
                                "open_for_seconds": round(self.breaker_left(), 1)},
            "max_daily_loss_usd": cfg.max_daily_loss or None, "daily_loss_usd": _round(
                -(self.ledger.realised_since(mode, self._day_start()) + self.unrealised)),
            "max_total_exposure_usd": cfg.max_total_exposure or None,
            "total_exposure_usd": round(self.ledger.exposure(mode), 2),
            "max_leader_exposure_usd": cfg.max_leader_exposure or None,
            "reconcile_interval_seconds": cfg.reconcile_interval, "position_drift_corrections": self.drift_total,
            "exits_awaiting_retry": len(self.exit_retries), "geoblock": self.geoblock,
        }

    def decide(self, t: dict[str, Any]) -> Plan:
        cfg = self.cfg
        if self.passive:
            raise Skip("passive")
        age = time.time() - int(t["timestamp"])
        if age > cfg.max_trade_age:
            raise Skip("too_old", f"{age:.0f}s")
        side = {"BUY": signing.Side.BUY, "SELL": signing.Side.SELL}.get(str(t["side"]).upper())
        if side is None:
            raise Skip("bad_trade", f"side {t['side']!r}")
        self.check_orders_allowed()
        m = self.market(str(t["conditionId"]))
        names = {m.condition_id.lower(), m.slug.lower(), str(t.get("eventSlug", "")).lower()} - {""}
        if cfg.allowlist and not names & cfg.allowlist:
            raise Skip("not_allowlisted")
        if names & cfg.denylist:
            raise Skip("denylisted")
        if m.closed:
            raise Skip("market_closed")
        idx = int(t.get("outcomeIndex", -1))
        asset = str(t["asset"])
        if not 0 <= idx < len(m.tokens) or m.tokens[idx] != asset or (
                t.get("outcome") and m.outcomes and m.outcomes[idx] != t["outcome"]):
            raise Skip("outcome_mismatch", f"asset {asset} is not outcome {idx} of the market")
        leader_price = _num(t["price"], 1)  # the Data API's numbers too: finite and in range, else malformed
        tol = _dec(cfg.slippage_tolerance)
        bids, asks = self._book(asset)
        if side == signing.Side.BUY:
            return self._plan_buy(t, m, asset, leader_price, tol, asks)
        return self._plan_sell(t, m, asset, leader_price, tol, bids)

    def _plan_buy(self, t: dict[str, Any], m: Market, asset: str, leader_price: Decimal, tol: Decimal,
                  asks: list[tuple[Decimal, Decimal]]) -> Plan:
        cfg = self.cfg
        leader_usd = _fnum(t["size"]) * _fnum(t["price"], 1)
        if cfg.sizing_mode is SizingMode.FIXED:
            usd = cfg.fixed_amount_usd
        elif cfg.sizing_mode is SizingMode.RATIO:
            usd = leader_usd * cfg.size_ratio
        else:
            value = self._leader_value(str(t["proxyWallet"]).lower())
            if value <= 0:
                raise Skip("sizing", "leader portfolio value unknown")
            usd = leader_usd * self._usdc_balance() / value
        limited = ""
        if usd > cfg.max_order_size:
            usd, limited = cfg.max_order_size, "max_order_size"
        risk_room, risk_limit = self._risk_room(str(t["proxyWallet"]).lower())
        if risk_room <= 0.01:
            self.metrics.inc("polymarket_risk_blocked_total", limit=risk_limit)
            raise Skip(risk_limit)
        if usd > risk_room:
            usd, limited = risk_room, risk_limit
        pos = self.ledger.position(str(self.mode), asset)
        room = cfg.max_position_size - (pos.cost if pos else 0.0)
        if room <= 0.01:
            raise Skip("max_position_size")
        if usd > room:
            usd, limited = room, "max_position_size"
        day_room = cfg.max_daily_volume - self.ledger.volume_since(str(self.mode), self._day_start())
        if day_room <= 0.01:
            raise Skip("max_daily_volume")
        if usd > day_room:
            usd, limited = day_room, "max_daily_volume"
        price = min(_floor(leader_price * (1 + tol), m.tick), 1 - m.tick)
        if not asks:
            raise Skip("no_liquidity")
        if asks[0][0] > price:
            raise Skip("slippage", f"best ask {asks[0][0]} above {price}")
        balance = self._usdc_balance()
        if balance < usd:
            usd, limited = balance, "balance"
        amount = _floor(_dec(usd), Decimal("0.01"))
        if amount <= 0 or amount / price < m.min_size:
            reason = "insufficient_balance" if limited == "balance" else (limited or "below_min_size")
            raise Skip(reason, f"{amount} USD at {price} is under the minimum of {m.min_size} shares")
        maker, taker = market_amounts(signing.Side.BUY, amount, price, m.tick)
        return Plan(signing.Side.BUY, asset, m.condition_id, m.neg_risk, price, _dec(taker) / 1_000_000,
                    amount, maker, taker)

    def _plan_sell(self, t: dict[str, Any], m: Market, asset: str, leader_price: Decimal, tol: Decimal,
                   bids: list[tuple[Decimal, Decimal]]) -> Plan:
        pos = self.ledger.position(str(self.mode), asset)
        if pos is None or pos.shares <= 0:
            raise Skip("no_position")
        sold = _fnum(t["size"])
        after = self._leader_positions(str(t["proxyWallet"]).lower()).get(asset, 0.0)
        fraction = min(1.0, sold / (after + sold)) if after + sold > 0 else 1.0
        shares = pos.shares * fraction
        held = self._token_balance(asset)
        if held is not None:
            shares = min(shares, held)
        amount = _floor(_dec(shares), Decimal("0.01"))
        price = max(_ceil(leader_price * (1 - tol), m.tick), m.tick)
        if not bids:
            raise Skip("no_liquidity")
        if bids[0][0] < price:
            raise Skip("slippage", f"best bid {bids[0][0]} below {price}")
        if amount <= 0 or amount < m.min_size:
            raise Skip("below_min_size", f"{amount} shares under the minimum of {m.min_size}")
        maker, taker = market_amounts(signing.Side.SELL, amount, price, m.tick)
        return Plan(signing.Side.SELL, asset, m.condition_id, m.neg_risk, price, amount,
                    _dec(taker) / 1_000_000, maker, taker)

    # ---- orders ---------------------------------------------------------------------------
    def _l2_get(self, path: str, params: dict[str, Any]) -> Any:
        creds = self.api_creds()
        return self.clob.get(path, params, sign=lambda: signing.l2_headers(
            self.address, creds, int(time.time()), "GET", path))

    def api_creds(self) -> signing.ApiCreds:
        if self.creds is None:
            def l1() -> dict[str, str]:
                return signing.l1_headers(self.cfg.private_key, self.cfg.chain_id, int(time.time()))
            try:
                r = self.clob.post("/auth/api-key", None, sign=l1)
            except HttpError as exc:
                if exc.retryable:
                    raise
                r = self.clob.get("/auth/derive-api-key", sign=l1)
            try:
                self.creds = signing.ApiCreds(str(r["apiKey"]), Secret(str(r["secret"])),
                                              Secret(str(r["passphrase"])))
            except (KeyError, TypeError) as exc:
                raise Malformed("POST /auth/api-key", exc) from None
        return self.creds

    def _simulate(self, plan: Plan) -> tuple[float, float]:
        """Paper fill against the book: (shares, usd)."""
        bids, asks = self._book(plan.token)
        got, spent = Decimal(0), Decimal(0)
        if plan.side == signing.Side.BUY:
            budget = _dec(plan.maker_amount) / 1_000_000
            for p, q in asks:
                if p > plan.price or spent >= budget:
                    break
                take = min(q, (budget - spent) / p)
                got, spent = got + take, spent + take * p
        else:
            want = _dec(plan.maker_amount) / 1_000_000
            for p, q in bids:
                if p < plan.price or got >= want:
                    break
                take = min(q, want - got)
                got, spent = got + take, spent + take * p
        return float(got), float(spent)

    def execute(self, did: int, plan: Plan, visible_at: float, kind_reason: str = "",
                reopen: tuple[str, ...] = ()) -> None:
        cfg = self.cfg
        side = "BUY" if plan.side == signing.Side.BUY else "SELL"
        common: dict[str, Any] = dict(mode=str(self.mode), token_id=plan.token, side=side,
                                      order_type=str(cfg.order_type), price=float(plan.price),
                                      size=float(plan.shares), usd=float(plan.usd), condition_id=plan.condition_id)
        if self.mode is TradingMode.DRY_RUN:
            shares, usd = self._simulate(plan)
            if shares <= 0:
                self.ledger.record_order(did, **common, order_hash=None, request=None, status="dry_run",
                                         response={"simulated": "no fill"}, filled_shares=0, filled_usd=0,
                                         latency_ms=None, decision="skipped", reason="no_liquidity")
                self.metrics.inc("polymarket_trades_skipped_total", reason="no_liquidity")
                return
            self.ledger.record_order(did, **common, order_hash=None, request=None, status="dry_run",
                                     response={"simulated": True}, filled_shares=shares, filled_usd=usd,
                                     latency_ms=(time.monotonic() - visible_at) * 1000, decision="copied",
                                     reason=kind_reason or "dry-run")
            self.metrics.inc("polymarket_trades_copied_total")
            self.metrics.inc("polymarket_orders_total", status="dry_run")
            return
        creds = self.api_creds()
        order = signing.Order(
            salt=secrets.randbelow(2**53), maker=self.maker,
            # a deposit wallet signs as itself (ERC-1271); its owner's key makes the signature
            signer=self.maker if cfg.signature_type == signing.SignatureType.POLY_1271 else self.address,
            token_id=int(plan.token),
            maker_amount=plan.maker_amount, taker_amount=plan.taker_amount, side=plan.side,
            signature_type=signing.SignatureType(cfg.signature_type), timestamp=time.time_ns() // 1_000_000)
        sig = signing.sign_order(order, cfg.private_key, cfg.chain_id, plan.neg_risk)
        payload = signing.order_payload(order, sig, creds.api_key, str(cfg.order_type))
        order_hash = "0x" + order.digest(cfg.chain_id, plan.neg_risk).hex()
        # The order's identity is committed before it leaves: after a crash or a lost answer the
        # exchange is asked about this hash, and the very same signed order is what may be re-sent.
        # Stored only while the decision is still open and has no order at the exchange (checked in
        # the write transaction): one decision, one signed order, whatever another process did.
        oid = self.ledger.prepare_order(did, **common, order_hash=order_hash, request=payload, reopen=reopen)
        if oid is None:
            log.warning("decision %d was resolved meanwhile (another process?): order %s not sent", did, order_hash)
            return
        self._crash_point("after_decision_commit")
        self._send(oid, order_hash, payload, plan.side, float(plan.shares), float(plan.usd), visible_at,
                   kind_reason)

    def _send(self, oid: int, order_hash: str, payload: dict[str, Any], side: signing.Side, want_shares: float,
              want_usd: float, visible_at: float | None, kind_reason: str = "") -> None:
        """POST the signed order and record the answer. A lost or late answer, or a
        "Duplicated" one, is resolved by asking the exchange (``resolve_order``)."""
        creds = self.api_creds()
        body = signing.dumps(payload)
        held, why = self.lease_ok()
        if not held:  # the lease is checked last, right before the order leaves (issue 11)
            self._no_lease(oid, order_hash, why)
            return
        if self.kill_switch_on():  # one lstat before every order: a switch made mid-poll holds the rest
            if visible_at is None:  # a re-send of an order the exchange may have: stays open
                raise Unknown(f"order {order_hash}: not re-sent, kill switch {self.cfg.kill_switch_file}")
            self.ledger.finish_order(oid, status="not_sent", response={"kill_switch": str(self.cfg.kill_switch_file)},
                                     filled_shares=0, filled_usd=0, latency_ms=None, decision="skipped",
                                     reason=f"kill_switch: {self.cfg.kill_switch_file}")
            self.metrics.inc("polymarket_risk_blocked_total", limit="kill_switch")
            log.warning("order %s not sent: kill switch %s", order_hash, self.cfg.kill_switch_file)
            raise Skip("kill_switch", str(self.cfg.kill_switch_file))  # counted; an exit is retried
        fence_ms = None
        if self.fence is not None:
            # Recorded in etcd under the lease before it leaves: refused once another node holds the key
            # (a node that cannot record cannot send), and what the next holder reads at its promotion.
            key = self.ledger.fence_key(oid, order_hash)
            try:
                self.fence.record(key, int(self.cfg.max_trade_age) + KEY_MARGIN, order_hash)
            except FenceError as exc:
                self.synced = False
                self._no_lease(oid, order_hash, f"fence: {exc}" if isinstance(exc, Fenced) else
                               f"fence unavailable: {exc}")
                if not isinstance(exc, Fenced) and visible_at is not None:  # etcd may have written it (late)
                    with contextlib.suppress(FenceError):  # else promote asks the exchange (_own_unsent)
                        self.fence.forget(key)
                return
            fence_ms = self.fence.last_ms
            held, why = self.lease_ok()  # again after the fence's round trip
            if not held:
                self._no_lease(oid, order_hash, why)
                if visible_at is None:  # a re-send: an earlier send of this order may be at the exchange
                    return
                try:  # recorded but not sent: taken back, or the next holder would skip the trade
                    self.fence.forget(key)
                except FenceError as exc:
                    log.error("order %s: its trade stays recorded as copied in etcd, but it was not sent (%s): "
                              "the next holder will not copy it", order_hash, exc)
                return
        try:
            answer = self.clob.post("/order", body, sign=lambda: signing.l2_headers(
                self.address, creds, int(time.time()), "POST", "/order", body))
        except HttpError as exc:
            err = exc.body.get("error") if isinstance(exc.body, dict) else str(exc)
            dup = "duplicated" in str(err).lower() or "already" in str(err).lower()
            if exc.retryable or dup:
                # the exchange may have the order ("Duplicated": it HAS it): never guess, ask it;
                # while its reads lag, the decision stays open and is asked about again
                log.warning("order %s: %s; asking the exchange", order_hash, err)
                if dup:
                    self.ledger.mark_unknown(oid, f"the exchange answered {err!r}: it has the order",
                                             status="acknowledged")
                self.resolve_order(oid, order_hash, payload, side, allow_send=False, acknowledged=dup,
                                   order_created=time.time())
                return
            latency = (time.monotonic() - visible_at) * 1000 if visible_at is not None else None
            self._crash_point("after_answer")
            business = any(k in str(err).lower() for k in ("fok", "fak", "no orders found", "fully filled"))
            self._order_outcome(error=not business)
            self.ledger.finish_order(oid, status="rejected", response=exc.body, filled_shares=0, filled_usd=0,
                                     latency_ms=latency, decision="rejected", reason=str(err))
            self.metrics.inc("polymarket_orders_total", status="rejected")
            self.metrics.inc("polymarket_trades_skipped_total", reason="rejected")
            log.warning("order %s rejected: %s", order_hash, err)
            if _tick_or_size_error(str(err)):
                raise StaleMarket(str(err)) from None
            return
        self._crash_point("after_answer")
        latency = (time.monotonic() - visible_at) * 1000 if visible_at is not None else None
        if latency is not None:
            self.metrics.observe_latency(latency / 1000)
        try:
            making, taking = _fnum(answer.get("makingAmount") or 0), _fnum(answer.get("takingAmount") or 0)
            ok = bool(answer.get("success", True))
        except (AttributeError, TypeError, ValueError) as exc:
            log.warning("order %s: malformed answer (%s); asking the exchange", order_hash, exc)
            self.resolve_order(oid, order_hash, payload, side, allow_send=False)
            return
        shares, usd = (taking, making) if side == signing.Side.BUY else (making, taking)
        status = str(answer.get("status", "")).upper()
        if ok and status in OPEN_AT_EXCHANGE:
            # accepted but not final (a DELAYED marketable order, a resting one): the decision stays
            # open and resolve_open follows it to its fill
            self._order_outcome(error=False)
            self.ledger.mark_unknown(oid, f"the exchange holds the order ({status.lower()}); followed to its fill",
                                     status="live" if status == "LIVE" else "delayed")
            self.open_decisions += 1
            log.info("order %s %s: accepted, %s; followed to its fill", order_hash, side.name, status.lower())
            return
        self._order_outcome(error=not ok)
        if side == signing.Side.BUY:
            partial = usd + 0.005 < want_usd
        else:
            partial = shares + 1e-6 < want_shares
        reason = kind_reason or ("partial fill" if partial else str(answer.get("status", "")))
        if not self.ledger.finish_order(oid, status="accepted" if ok else "rejected", response=answer,
                                        filled_shares=shares if ok else 0, filled_usd=usd if ok else 0,
                                        latency_ms=latency, decision="copied" if ok else "rejected",
                                        reason=reason if ok else str(answer.get("errorMsg"))):
            log.warning("order %s: answer ignored, the order was resolved already (another process?)", order_hash)
            return
        self.metrics.inc("polymarket_orders_total", status="accepted" if ok else "rejected")
        if ok:
            self.metrics.inc("polymarket_trades_copied_total")
        log.info("order %s %s %s: %s shares for %s USD (%s ms%s)", order_hash, side.name,
                 payload["order"]["tokenId"], shares, usd, "-" if latency is None else f"{latency:.1f}",
                 "" if fence_ms is None else f", fence {fence_ms:.1f} ms")

    def _no_lease(self, oid: int, order_hash: str, why: str) -> None:
        """The order is not sent: no lease (or the fence refused it). Recorded ``skipped: no_lease``, which a
        later promotion of this node decides afresh unless the other node copied the trade meanwhile."""
        self.passive = True
        self.ledger.finish_order(oid, status="not_sent", response={"lease": why}, filled_shares=0,
                                 filled_usd=0, latency_ms=None, decision="skipped", reason=f"no_lease: {why}")
        self.metrics.inc("polymarket_trades_skipped_total", reason="no_lease")
        log.warning("order %s not sent: no trading lease (%s)", order_hash, why)

    # ---- what the exchange knows about our orders ---------------------------------------
    def _paged(self, path: str, params: dict[str, Any], pages: int = 20) -> list[dict[str, Any]]:
        """An L2 list endpoint (``data``/``next_cursor``; "LTE=" marks the end)."""
        out: list[dict[str, Any]] = []
        cursor = "MA=="
        for _ in range(pages):
            r = self._l2_get(path, {**params, "next_cursor": cursor})
            try:
                rows, cursor = list(r["data"]), str(r.get("next_cursor") or "LTE=")
            except (KeyError, TypeError) as exc:
                raise Malformed(f"GET {path}", exc) from None
            out += [x for x in rows if isinstance(x, dict)]
            if cursor == "LTE=":
                return out
        raise HttpError(f"GET {path}: more than {pages} pages", retryable=True)

    def lookup_order(self, order_hash: str, token: str, since: float,
                     payload: dict[str, Any] | None = None) -> tuple[str, float, float] | None:
        """(status, filled shares, filled USD) of our order, or None if the exchange does not show
        it. Asks: the order by its hash, our trades in its token, our open orders in its token.
        Raises HttpError if the exchange can't be asked, Malformed (an HttpError: the decision
        stays open) for an answer about another order or a fill beyond the signed order."""
        try:
            o = self._l2_get(f"/data/order/{order_hash}", {})
        except HttpError as exc:
            if exc.retryable or exc.status not in (400, 404):
                raise
            o = None
        what = f"GET /data/order/{order_hash}"
        if o is not None and not isinstance(o, dict):  # never read an odd answer as "not found"
            raise Malformed(what, TypeError(type(o).__name__))
        if isinstance(o, dict) and o.get("id") and str(o["id"]).lower() != order_hash.lower():
            raise Malformed(what, ValueError(f"the answer is about another order, {str(o['id'])[:80]}"))
        after = int(since) - 60
        mine = [t for t in self._paged("/data/trades", {"asset_id": token, "after": after})
                if str(t.get("taker_order_id", "")).lower() == order_hash.lower()
                or any(str(m.get("order_id", "")).lower() == order_hash.lower()
                       for m in t.get("maker_orders") or [] if isinstance(m, dict))]
        # FAILED: the settlement was given up, nothing delivered. RETRYING: not final yet.
        trades = [t for t in mine if str(t.get("status", "")).upper() != "FAILED"]
        retrying = any(str(t.get("status", "")).upper() == "RETRYING" for t in mine)
        try:
            shares = sum(_fnum(t["size"]) for t in trades)
            usd = sum(_fnum(t["size"]) * _fnum(t["price"], 1) for t in trades)
            failed = sum(_fnum(t["size"]) for t in mine) - shares
            cap_shares, cap_usd = self._order_caps(payload)
            if shares > cap_shares + SIZE_TICK or usd > cap_usd + 0.01:
                raise ValueError(f"trades of {shares:g} shares for {usd:g} USD: beyond the signed order")
            if isinstance(o, dict) and o.get("id"):
                status = str(o.get("status", "")).upper().removeprefix("ORDER_STATUS_")
                original = _fnum(o.get("original_size") or 0, 1e18)
                matched = _fnum(o.get("size_matched") or 0, 1e18)
                if max(original, matched) > cap_shares + SIZE_TICK:
                    # the API reference gives sizes in fixed-point 1e6 units ("100000000"); the live
                    # venue and the SDKs in shares ("100"): read as units only when shares cannot be
                    original, matched = original / 1e6, matched / 1e6
                # (a market buy's original_size is its shares at the limit price: a better price
                # matches more, so only a sell is also held to its original_size)
                if matched > cap_shares + SIZE_TICK or (str(o.get("side", "")).upper() == "SELL"
                                                        and original > 0 and matched > original + SIZE_TICK):
                    raise ValueError(f"size_matched {o.get('size_matched')!r} beyond the signed order")
                matched = max(0.0, matched - failed)
                if matched > shares + 1e-6:  # trades not listed yet: the order's own count, at its
                    # price (a buy's limit: an upper bound of what it cost, never above its maker USD)
                    usd = min(cap_usd, usd + (matched - shares) * _fnum(o.get("price") or 0, 1))
                    shares = matched
                return "RETRYING" if retrying else (status or "MATCHED"), shares, usd
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("order %s: the exchange's answer is malformed (%s); the decision stays open", order_hash, exc)
            raise Malformed(what, exc) from None
        if trades:
            return "RETRYING" if retrying else "MATCHED", shares, usd
        if retrying:
            return "RETRYING", 0.0, 0.0
        resting = [x for x in self._paged("/data/orders", {"asset_id": token})
                   if str(x.get("id", "")).lower() == order_hash.lower()]
        if resting:
            return "LIVE", 0.0, 0.0
        return None

    @staticmethod
    def _order_caps(payload: dict[str, Any] | None) -> tuple[float, float]:
        """The most a signed order can fill: (shares, USD). A buy spends at most its maker amount,
        at no less than the smallest tick (0.001) a share; a sell gives at most its maker amount."""
        if payload is None:
            return math.inf, math.inf
        o = payload["order"]
        maker = int(o["makerAmount"]) / 1e6
        if str(o.get("side", "BUY")).upper() in ("BUY", "0"):
            return maker / 0.001, maker
        return maker, maker

    def resolve_order(self, oid: int, order_hash: str, payload: dict[str, Any], side: signing.Side,
                      allow_send: bool, trade_ts: float | None = None, acknowledged: bool = False,
                      order_created: float | None = None) -> None:
        """Record what the exchange says about a sent (or maybe sent) order. Raises Unknown, and
        the decision stays open, while the exchange cannot be asked, answers oddly, holds the order
        open (LIVE, DELAYED, a settlement RETRYING), or does not show an order it acknowledged
        ("Duplicated") or whose answer was lost: its reads lag its writes. Only an order that was
        never acknowledged is sent again (the same signed order, never a new one) while
        ``allow_send`` and the leader trade is younger than MAX_TRADE_AGE_SECONDS, else recorded
        as expired."""
        token = str(payload["order"]["tokenId"])
        try:
            found = self.lookup_order(order_hash, token, trade_ts or time.time() - 3600, payload)
        except HttpError as exc:
            self.ledger.mark_unknown(oid, str(exc))
            raise Unknown(f"order {order_hash}: the exchange can't be asked: {exc}") from None
        if found is None:
            if acknowledged:
                waited = time.time() - (order_created or time.time())
                why = "the exchange answered Duplicated (it has the order) but does not show it yet"
                if waited > ACK_HORIZON:
                    why += f" after {waited:.0f}s: check the order with the exchange"
                    log.error("order %s: %s; the decision stays open", order_hash, why)
                self.ledger.mark_unknown(oid, why, status="acknowledged")
                raise Unknown(f"order {order_hash}: {why}")
            if not allow_send:
                self.ledger.mark_unknown(oid, "the answer was lost and the exchange does not show the order yet")
                raise Unknown(f"order {order_hash}: the answer was lost; not shown by the exchange yet")
            age = time.time() - trade_ts if trade_ts is not None else math.inf
            if age <= self.cfg.max_trade_age and (self.passive or self.kill_switch_on()):
                raise Unknown(f"order {order_hash}: never seen by the exchange, and orders are held "
                              f"({'passive' if self.passive else 'kill switch'})")
            if age <= self.cfg.max_trade_age:
                log.warning("order %s: the exchange never saw it; sending it now (trade %.0fs old)",
                            order_hash, age)
                self._send(oid, order_hash, payload, side, float(payload["order"]["takerAmount"] if side ==
                                                                  signing.Side.BUY else payload["order"]
                                                                  ["makerAmount"]) / 1e6,
                           float(payload["order"]["makerAmount"] if side == signing.Side.BUY else
                                 payload["order"]["takerAmount"]) / 1e6, None, "resent")
                return
            reason = "the exchange never saw the order and the trade is older than MAX_TRADE_AGE_SECONDS"
            if self.ledger.finish_order(oid, status="not_sent", response={"exchange": "order not found"},
                                        filled_shares=0, filled_usd=0, latency_ms=None, decision="expired",
                                        reason=reason):
                self.metrics.inc("polymarket_trades_skipped_total", reason="expired")
                log.warning("order %s: %s; recorded as expired", order_hash, reason)
            return
        status, shares, usd = found
        if status in OPEN_AT_EXCHANGE:
            self.ledger.mark_unknown(oid, f"the exchange holds the order ({status.lower()}); followed to its fill",
                                     status="live" if status == "LIVE" else "delayed")
            raise Unknown(f"order {order_hash}: {status.lower()} at the exchange, not final yet")
        filled = shares > 0
        self._order_outcome(error=False)
        if not self.ledger.finish_order(oid, status=status.lower(),
                                        response={"exchange": status, "size_matched": shares},
                                        filled_shares=shares, filled_usd=usd, latency_ms=None,
                                        decision="copied" if filled else "rejected",
                                        reason=status.lower() if filled else f"{status.lower()}: nothing filled"):
            log.info("order %s was resolved already (another process?): nothing applied", order_hash)
            return
        self.metrics.inc("polymarket_orders_total", status="accepted" if filled else "rejected")
        if filled:
            self.metrics.inc("polymarket_trades_copied_total")
        log.info("order %s resolved with the exchange: %s, %s shares for %s USD", order_hash, status, shares, usd)

    def resolve_open(self) -> None:
        """Every decision a crash or a lost answer left pending/unknown, resolved by asking the
        exchange; those it cannot answer now stay open (``open_decisions``, shown on /health)."""
        self.last_resolve = time.monotonic()
        if self.mode is not TradingMode.LIVE:
            for d in self.ledger.open_decisions():
                self.ledger.decide(int(d["decision_id"]), "failed", "interrupted (dry-run: nothing was sent)")
            self.open_decisions = 0
            return
        still = 0
        for d in self.ledger.open_decisions():
            did = int(d["decision_id"])
            trade = json.loads(d["raw"]) if d["raw"] else None
            trade_ts = float(d["trade_ts"]) if d["trade_ts"] is not None else None
            try:
                if d["order_id"] is None or d["status"] == "not_sent":
                    # nothing was signed, so nothing was sent: decide again while the trade is fresh
                    if trade is not None and trade_ts is not None and \
                            time.time() - trade_ts <= self.cfg.max_trade_age:
                        try:
                            self.execute(did, self.decide(trade), time.monotonic())
                        except Skip as sk:
                            self.ledger.decide(did, "skipped", sk.reason + (f": {sk.detail}" if sk.detail else ""))
                            self.metrics.inc("polymarket_trades_skipped_total", reason=sk.reason)
                    else:
                        self.ledger.decide(did, "expired", "interrupted before an order was signed")
                        self.metrics.inc("polymarket_trades_skipped_total", reason="expired")
                    continue
                payload = json.loads(d["request"])
                side = signing.Side.BUY if d["side"] == "BUY" else signing.Side.SELL
                self.resolve_order(int(d["order_id"]), str(d["order_hash"]), payload, side, allow_send=True,
                                   trade_ts=trade_ts if trade is not None else float(d["order_created"]),
                                   acknowledged=d["status"] in ("acknowledged", "delayed", "live"),
                                   order_created=float(d["order_created"]))
            except StaleMarket as exc:  # recorded rejected; the market is refreshed on its next use
                self.markets.pop(str(d.get("condition_id") or ""), None)
                log.warning("decision %d: order refused: %s", did, exc)
            except (Unknown, HttpError) as exc:
                still += 1
                log.warning("decision %d stays open: %s", did, exc)
            except (KeyError, TypeError, ValueError) as exc:
                self.ledger.decide(did, "failed", f"malformed: {exc.__class__.__name__}: {exc}")
                log.warning("decision %d failed: malformed data (%s: %s)", did, exc.__class__.__name__, exc)
        self.open_decisions = still

    # ---- reconcile -----------------------------------------------------------------------
    def reconcile(self, why: str) -> int:
        """Compare the ledger's positions with the Data API /positions of our own wallet; a
        drift beyond one tick of size is logged, counted (polymarket_position_drift) and the
        ledger set to the exchange's figure with an audit row. Assets traded in the last
        RECONCILE_SETTLE seconds or with an open decision are left for the next round.
        Returns the number of corrections; an unreachable API is one log line."""
        self.last_reconcile = time.time()
        if self.mode is not TradingMode.LIVE or not self.maker or self.passive:
            return 0  # a passive node's ledger is the primary's replica: reconciled on promotion
        mode = str(self.mode)
        try:
            exchange: dict[str, tuple[float, str]] = {}
            for page in range(20):
                rows = self.data.get("/positions", {"user": self.maker.lower(), "sizeThreshold": 0,
                                                    "limit": PAGE, "offset": page * PAGE})
                if not isinstance(rows, list):
                    raise HttpError("GET /positions: not a list", retryable=True)
                for r in rows:
                    size, cid = float(r["size"]), str(r.get("conditionId") or "")
                    exchange[str(r["asset"])] = (exchange.get(str(r["asset"]), (0.0, cid))[0] + size, cid)
                if len(rows) < PAGE:
                    break
        except (HttpError, KeyError, TypeError, ValueError) as exc:
            self.metrics.inc("polymarket_errors_total", kind="reconcile")
            log.warning("reconcile (%s) failed, retried in %.0f s: %s", why, self.cfg.reconcile_interval, exc)
            return 0
        ledger = {p.asset: p for p in self.ledger.positions(mode)}
        busy = self.ledger.busy_assets(mode, time.time() - RECONCILE_SETTLE)
        fixed = 0
        for asset in sorted((ledger.keys() | exchange.keys()) - busy):
            ours = ledger[asset].shares if asset in ledger else 0.0
            theirs, cid = exchange.get(asset, (0.0, ledger[asset].condition_id if asset in ledger else ""))
            if abs(ours - theirs) <= SIZE_TICK + 1e-9:
                continue
            self.ledger.correct_position(mode, asset, cid or (ledger[asset].condition_id if asset in ledger else ""),
                                         theirs, f"reconcile ({why}): ledger {ours:g}, exchange {theirs:g}")
            self.metrics.inc("polymarket_position_drift")
            self.drift_total += 1
            fixed += 1
            log.warning("position drift on %s: ledger %g shares, exchange %g; ledger corrected (%s)",
                        asset, ours, theirs, why)
        return fixed

    def retry_exits(self) -> None:
        """Exits skipped for slippage (or while orders were held) are tried again each poll
        until the leader's trade is older than MAX_TRADE_AGE_SECONDS."""
        deadline = time.monotonic() + self.phase_budget()
        for did, (ts, t) in list(self.exit_retries.items()):
            if time.monotonic() > deadline:
                log.warning("exit retries: %d left to the next turn", len(self.exit_retries))
                break
            if time.time() - ts > self.cfg.max_trade_age:
                del self.exit_retries[did]
                continue
            try:
                plan = self.decide(t)
            except Skip as sk:
                if sk.reason not in ("slippage", "kill_switch", "circuit_breaker"):
                    del self.exit_retries[did]
                continue
            except HttpError as exc:
                log.debug("exit retry of decision %d: %s", did, exc)
                continue
            except (KeyError, TypeError, ValueError, IndexError) as exc:  # a malformed book: tried again
                self.metrics.inc("polymarket_errors_total", kind="malformed")
                log.warning("exit retry of decision %d: %s", did, Malformed("GET /book", exc))
                continue
            del self.exit_retries[did]
            log.info("exit of decision %d retried: now within the slippage tolerance", did)
            try:
                self.execute(did, plan, time.monotonic(), kind_reason="exit retried", reopen=("skipped",))
            except Skip as sk:   # held at the send (kill switch made meanwhile): tried again
                if sk.reason in ("slippage", "kill_switch", "circuit_breaker"):
                    self.exit_retries[did] = (ts, t)
            except StaleMarket as exc:
                self.markets.pop(plan.condition_id, None)
                log.warning("exit retry of decision %d refused: %s", did, exc)
            except Unknown as exc:
                self.open_decisions += 1
                log.warning("exit retry of decision %d: %s", did, exc)
            except (HttpError, KeyError, TypeError, ValueError, IndexError) as exc:
                self.metrics.inc("polymarket_errors_total", kind="malformed")
                log.warning("exit retry of decision %d failed: %s", did, exc)

    # ---- stop loss ------------------------------------------------------------------------
    def check_stop_loss(self) -> None:
        if self.passive or self.kill_switch_on() or self.breaker_left() > 0:
            return
        deadline = time.monotonic() + self.phase_budget()
        for pos in self.ledger.positions(str(self.mode)):
            if time.monotonic() > deadline:
                log.warning("stop loss check: the rest of the positions at the next check")
                self.last_stop_loss = 0.0
                break
            try:
                bids, _ = self._book(pos.asset)
                if not bids or pos.avg_price <= 0:
                    continue
                best = bids[0][0]
                if float(best) > pos.avg_price * (1 - self.cfg.stop_loss_pct / 100):
                    continue
                m = self.market(pos.condition_id)
                amount = _floor(_dec(pos.shares), Decimal("0.01"))
                held = self._token_balance(pos.asset)
                if held is not None:
                    amount = min(amount, _floor(_dec(held), Decimal("0.01")))
                if amount <= 0:
                    continue
                price = max(_floor(best * (1 - _dec(self.cfg.slippage_tolerance)), m.tick), m.tick)
                maker, taker = market_amounts(signing.Side.SELL, amount, price, m.tick)
                plan = Plan(signing.Side.SELL, pos.asset, pos.condition_id, m.neg_risk, price, amount,
                            _dec(taker) / 1_000_000, maker, taker)
                did = self.ledger.new_decision("stop_loss")
                log.warning("stop loss on %s: best bid %s vs average %.4f", pos.asset, best, pos.avg_price)
                self.execute(did, plan, time.monotonic(), kind_reason="stop_loss")
            except (HttpError, Skip, Unknown, StaleMarket, KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, StaleMarket):
                    self.markets.pop(pos.condition_id, None)
                self.metrics.inc("polymarket_errors_total", kind="stop_loss")
                log.warning("stop loss check on %s failed: %s", pos.asset, exc)

    # ---- health ---------------------------------------------------------------------------
    def poll_age(self) -> float:
        return time.time() - self.last_poll if self.last_poll else math.inf
