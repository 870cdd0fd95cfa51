"""The SQLite ledger (WAL): leader trades seen, decisions, orders, positions, marks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leader_trades (
    id INTEGER PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    leader TEXT NOT NULL, tx_hash TEXT NOT NULL, asset TEXT NOT NULL, condition_id TEXT NOT NULL,
    side TEXT NOT NULL, size REAL NOT NULL, price REAL NOT NULL, outcome TEXT, outcome_index INTEGER,
    trade_ts INTEGER NOT NULL, seen_at REAL NOT NULL, raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leader_trades_seen ON leader_trades (seen_at);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    leader_trade_id INTEGER REFERENCES leader_trades (id) ON DELETE CASCADE,
    kind TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_created ON decisions (created_at);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    decision_id INTEGER NOT NULL REFERENCES decisions (id) ON DELETE CASCADE,
    mode TEXT NOT NULL, token_id TEXT NOT NULL, side TEXT NOT NULL, order_type TEXT NOT NULL,
    price REAL NOT NULL, size REAL NOT NULL, usd REAL NOT NULL, order_hash TEXT,
    request TEXT, status TEXT NOT NULL, response TEXT,
    filled_shares REAL NOT NULL DEFAULT 0, filled_usd REAL NOT NULL DEFAULT 0,
    latency_ms REAL, created_at REAL NOT NULL, condition_id TEXT NOT NULL DEFAULT '',
    realised_usd REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS orders_created ON orders (created_at);
CREATE INDEX IF NOT EXISTS orders_decision ON orders (decision_id);
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (decision) WHERE decision IN ('pending', 'unknown');
CREATE TABLE IF NOT EXISTS position_audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, mode TEXT NOT NULL, asset TEXT NOT NULL,
    ledger_shares REAL NOT NULL, exchange_shares REAL NOT NULL, ledger_cost REAL NOT NULL,
    new_cost REAL NOT NULL, reason TEXT NOT NULL
);
-- Leader trades recorded in etcd as copied by a holder of polymarket-ha's lease (issue 11), merged here at
-- each promotion: never copied again by this node, whatever the age of its ledger.
CREATE TABLE IF NOT EXISTS peer_copied (
    dedupe_key TEXT PRIMARY KEY, holder TEXT NOT NULL, order_hash TEXT NOT NULL DEFAULT '', at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    mode TEXT NOT NULL, asset TEXT NOT NULL, condition_id TEXT NOT NULL,
    shares REAL NOT NULL, cost REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (mode, asset)
);
"""


# Order statuses that may still change at the exchange: the decision stays open. ``acknowledged``:
# the exchange answered "Duplicated" (it HAS the order) but its reads do not show it yet.
OPEN_ORDER = ("sending", "unknown", "acknowledged", "delayed", "live")
_OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN_ORDER) + ")"


class LedgerBusy(Exception):
    """Another process owns the ledger (its lock file is locked)."""


_RO_INIT = threading.Lock()  # creates a ledger's read-only ping connection's lock once


@dataclass(frozen=True)
class Position:
    mode: str
    asset: str
    condition_id: str
    shares: float
    cost: float

    @property
    def avg_price(self) -> float:
        return self.cost / self.shares if self.shares > 0 else 0.0


class Ledger:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.lock = threading.RLock()
        self.owner_fd: int | None = None
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(orders)").fetchall()}
            if cols and "condition_id" not in cols:  # a ledger written before order identities
                self.db.execute("ALTER TABLE orders ADD COLUMN condition_id TEXT NOT NULL DEFAULT ''")
            if cols and "realised_usd" not in cols:
                self.db.execute("ALTER TABLE orders ADD COLUMN realised_usd REAL NOT NULL DEFAULT 0")
            self.db.executescript(SCHEMA)
            # Decisions left ``pending`` (or ``unknown`` by an older version) by a crash are not
            # touched here: the engine resolves each by asking the exchange about the order's
            # hash (``open_decisions``). Opening the ledger (validate-config) changes nothing.

    def claim(self) -> None:
        """Make this process the ledger's only writer for its lifetime: an exclusive flock on
        ``<DB_PATH>.lock`` (opened O_NOFOLLOW: a planted symlink is refused), released by the
        kernel when the process ends, however it ends. A second ``run`` on the same ledger, even
        while the first is frozen (SIGSTOP), raises LedgerBusy with the holder's pid."""
        if self.path == ":memory:" or self.owner_fd is not None:
            return
        lock = self.path + ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LedgerBusy(f"cannot open the ledger lock {lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise LedgerBusy(f"the ledger {self.path} is in use by another polymarket-bot (pid {holder}); "
                             "only one process may trade on it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.owner_fd = fd

    def close(self) -> None:
        with self.lock:
            self.db.close()
            if self.owner_fd is not None:
                os.close(self.owner_fd)
                self.owner_fd = None

    def ping(self) -> bool:
        try:
            with self.lock:
                self.db.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def ping_readonly(self, timeout: float = 0.2) -> bool:
        """ping for /health: its own read-only connection (opened once: no descriptor needed when
        the process has none left), never the engine's lock, which the engine holds while SQLite
        waits up to 10 s for another process's write lock; a WAL reader does not wait for a writer."""
        if self.path == ":memory:":
            if not self.lock.acquire(timeout=timeout):
                return False
            self.lock.release()
            return self.ping()
        with _RO_INIT:
            ro_lock = self.__dict__.setdefault("_ro_lock", threading.Lock())
        if not ro_lock.acquire(timeout=timeout):
            return False
        try:
            ro: sqlite3.Connection | None = self.__dict__.get("_ro")
            if ro is None:
                ro = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True, timeout=timeout,
                                     isolation_level=None, check_same_thread=False)
                self.__dict__["_ro"] = ro
            ro.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return True
        except sqlite3.Error:
            ro = self.__dict__.pop("_ro", None)
            if ro is not None:
                ro.close()
            return False
        finally:
            ro_lock.release()

    # ---- marks ---------------------------------------------------------------------
    def get_mark(self, key: str) -> float | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return float(row[0]) if row else None

    def set_mark(self, key: str, value: float) -> None:
        with self.lock:
            self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                            "SET value=excluded.value WHERE CAST(excluded.value AS REAL) > "
                            "CAST(meta.value AS REAL)", (key, str(value)))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Under the lock, one write transaction: BEGIN IMMEDIATE, then COMMIT when the block ends (a
        ``return`` inside it included), or ROLLBACK and re-raise when it (or the COMMIT) raises."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # ---- trades and decisions --------------------------------------------------------
    def record_trade(self, key: str, t: dict[str, Any], kind: str = "copy") -> int | None:
        """Insert a leader trade with a pending decision; None if it was seen before."""
        now = time.time()
        with self._transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO leader_trades (dedupe_key, leader, tx_hash, asset, condition_id, "
                "side, size, price, outcome, outcome_index, trade_ts, seen_at, raw) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, t["proxyWallet"].lower(), t.get("transactionHash", ""), str(t["asset"]),
                 t.get("conditionId", ""), t["side"], float(t["size"]), float(t["price"]),
                 t.get("outcome"), t.get("outcomeIndex"), int(t["timestamp"]), now,
                 json.dumps(t, separators=(",", ":"))))
            if cur.rowcount == 0:
                return None
            cur = self.db.execute(
                "INSERT INTO decisions (leader_trade_id, kind, decision, created_at, updated_at) "
                "VALUES (?, ?, 'pending', ?, ?)", (cur.lastrowid, kind, now, now))
        return cur.lastrowid

    def seen(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM leader_trades WHERE dedupe_key=?", (key,)).fetchone() is not None

    def new_decision(self, kind: str) -> int:
        now = time.time()
        with self.lock:
            cur = self.db.execute("INSERT INTO decisions (kind, decision, created_at, updated_at) "
                                  "VALUES (?, 'pending', ?, ?)", (kind, now, now))
        return int(cur.lastrowid or 0)

    def decide(self, decision_id: int, decision: str, reason: str = "") -> None:
        with self.lock:
            self.db.execute("UPDATE decisions SET decision=?, reason=?, updated_at=? WHERE id=?",
                            (decision, reason, time.time(), decision_id))

    def prepare_order(self, decision_id: int, *, mode: str, token_id: str, side: str, order_type: str,
                      price: float, size: float, usd: float, order_hash: str, request: Any,
                      condition_id: str, reopen: tuple[str, ...] = ()) -> int | None:
        """The signed order (hash, salt and all) committed with its decision BEFORE it is sent:
        status ``sending``, the decision stays ``pending`` until ``finish_order``.

        Re-checked in the write transaction: None (nothing stored, nothing to send) unless the
        decision is still open (or in one of ``reopen``: an exit retried, a retry after the
        market's refresh) and no order of it may be at the exchange. One decision, one signed
        order: a process thawed after another resolved the decision sends nothing."""
        now = time.time()
        with self._transaction():
            row = self.db.execute("SELECT decision FROM decisions WHERE id=?", (decision_id,)).fetchone()
            sent = self.db.execute("SELECT COUNT(*) FROM orders WHERE decision_id=? AND status NOT IN "
                                   "('not_sent', 'rejected')", (decision_id,)).fetchone()[0]
            if row is None or row[0] not in ("pending", "unknown", *reopen) or sent:
                return None
            order_id = self._insert_order((decision_id, mode, token_id, side, order_type, price, size, usd,
                                           order_hash, json.dumps(request)), now, condition_id)
            self.db.execute("UPDATE decisions SET reason=?, updated_at=? WHERE id=?",
                            (f"order {order_hash} signed, sending", now, decision_id))
        return order_id

    def _insert_order(self, sent: tuple[Any, ...], now: float, condition_id: str,
                      answer: tuple[Any, ...] = ("sending", None, 0, 0, None)) -> int:
        """One row of ``orders``, in the caller's transaction: ``sent`` is (decision_id, mode, token_id, side,
        order_type, price, size, usd, order_hash, request JSON), ``answer`` (status, response JSON,
        filled_shares, filled_usd, latency_ms): by default an order signed and not yet answered. Its id."""
        cur = self.db.execute(
            "INSERT INTO orders (decision_id, mode, token_id, side, order_type, price, size, usd, order_hash, "
            "request, status, response, filled_shares, filled_usd, latency_ms, created_at, condition_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (*sent, *answer, now, condition_id))
        return int(cur.lastrowid or 0)

    def finish_order(self, order_id: int, *, status: str, response: Any, filled_shares: float,
                     filled_usd: float, latency_ms: float | None, decision: str,
                     reason: str = "") -> bool:
        """The exchange's answer (or what the exchange said when asked), the position and the
        final decision in one transaction, applied only while the order is still open
        (``OPEN_ORDER``): False, and nothing changed, when another process (or an earlier
        answer) resolved it already. A fill is applied once."""
        now = time.time()
        with self._transaction():
            row = self.db.execute("SELECT decision_id, mode, token_id, side, condition_id FROM orders "
                                  "WHERE id=?", (order_id,)).fetchone()
            decision_id, mode, token_id, side, condition_id = row
            cur = self.db.execute("UPDATE orders SET status=?, response=?, filled_shares=?, filled_usd=?, "
                                  f"latency_ms=? WHERE id=? AND status IN {_OPEN_SQL}",
                                  (status, json.dumps(response), filled_shares, filled_usd, latency_ms,
                                   order_id))
            if cur.rowcount == 0:
                return False
            realised = self._apply_fill(mode, token_id, side, condition_id, filled_shares, filled_usd, now)
            self.db.execute("UPDATE orders SET realised_usd=? WHERE id=?", (realised, order_id))
            self.db.execute("UPDATE decisions SET decision=?, reason=?, updated_at=? WHERE id=?",
                            (decision, reason, now, decision_id))
        return True

    def _apply_fill(self, mode: str, token_id: str, side: str, condition_id: str, filled_shares: float,
                    filled_usd: float, now: float) -> float:
        """Apply a fill to the position; returns the realised P&L of a sell (0 for a buy)."""
        if filled_shares <= 0:
            return 0.0
        row = self.db.execute("SELECT shares, cost FROM positions WHERE mode=? AND asset=?",
                              (mode, token_id)).fetchone()
        shares, cost = (row[0], row[1]) if row else (0.0, 0.0)
        realised = 0.0
        if side == "BUY":
            shares, cost = shares + filled_shares, cost + filled_usd
        else:
            frac = min(1.0, filled_shares / shares) if shares > 0 else 1.0
            realised = filled_usd - cost * frac
            shares, cost = max(0.0, shares - filled_shares), cost * (1 - frac)
            if shares < 1e-9:
                shares, cost = 0.0, 0.0
        self.db.execute(
            "INSERT INTO positions (mode, asset, condition_id, shares, cost, updated_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(mode, asset) DO UPDATE SET shares=excluded.shares, "
            "cost=excluded.cost, updated_at=excluded.updated_at",
            (mode, token_id, condition_id, shares, cost, now))
        return realised

    def mark_unknown(self, order_id: int, why: str, status: str = "unknown") -> None:
        """A sent order whose outcome is not known yet: the decision stays open. ``status``:
        ``unknown`` (not asked yet), ``acknowledged`` (the exchange said "Duplicated": it has
        it; never downgraded), ``delayed``/``live`` (the exchange's own open states)."""
        with self._transaction():
            self.db.execute(f"UPDATE orders SET status=? WHERE id=? AND status IN {_OPEN_SQL} "
                                  "AND (status != 'acknowledged' OR ? != 'unknown')",
                                  (status, order_id, status))
            self.db.execute("UPDATE decisions SET decision='unknown', reason=?, updated_at=? WHERE id="
                            "(SELECT decision_id FROM orders WHERE id=?) AND decision IN ('pending', 'unknown') "
                            f"AND (SELECT status FROM orders WHERE id=?) IN {_OPEN_SQL}",
                            (f"order outcome unknown: {why}"[:500], time.time(), order_id, order_id))

    def open_decisions(self) -> list[dict[str, Any]]:
        """Decisions a crash or a lost answer left open, with their leader trade (if any) and
        their last order row (if one was signed): what the engine must ask the exchange about."""
        return self.rows(
            "SELECT d.id AS decision_id, d.kind, d.created_at, t.raw, t.trade_ts, o.id AS order_id, "
            "o.order_hash, o.request, o.status, o.side, o.token_id, o.price, o.size, o.usd, o.mode, "
            "o.created_at AS order_created, o.condition_id "
            "FROM decisions d LEFT JOIN leader_trades t ON t.id = d.leader_trade_id "
            "LEFT JOIN orders o ON o.id = (SELECT MAX(id) FROM orders WHERE decision_id = d.id) "
            "WHERE d.decision IN ('pending', 'unknown') ORDER BY d.id")

    def record_order(self, decision_id: int, *, mode: str, token_id: str, side: str, order_type: str,
                     price: float, size: float, usd: float, order_hash: str | None, request: Any,
                     status: str, response: Any, filled_shares: float, filled_usd: float,
                     latency_ms: float | None, condition_id: str, decision: str, reason: str = "") -> None:
        """Order, exchange answer, position and final decision in one transaction."""
        now = time.time()
        with self._transaction():
            order_id = self._insert_order(
                (decision_id, mode, token_id, side, order_type, price, size, usd, order_hash, json.dumps(request)),
                now, condition_id, (status, json.dumps(response), filled_shares, filled_usd, latency_ms))
            realised = self._apply_fill(mode, token_id, side, condition_id, filled_shares, filled_usd, now)
            self.db.execute("UPDATE orders SET realised_usd=? WHERE id=?", (realised, order_id))
            self.db.execute("UPDATE decisions SET decision=?, reason=?, updated_at=? WHERE id=?",
                            (decision, reason, now, decision_id))

    def correct_position(self, mode: str, asset: str, condition_id: str, exchange_shares: float,
                         reason: str) -> tuple[float, float]:
        """Set a position to the exchange's figure, with an audit row; returns (old, new) shares.
        The cost keeps the average price (a position unknown to the ledger costs 0)."""
        now = time.time()
        with self._transaction():
            row = self.db.execute("SELECT shares, cost FROM positions WHERE mode=? AND asset=?",
                                  (mode, asset)).fetchone()
            shares, cost = (row[0], row[1]) if row else (0.0, 0.0)
            new_cost = cost * exchange_shares / shares if shares > 0 else 0.0
            self.db.execute(
                "INSERT INTO positions (mode, asset, condition_id, shares, cost, updated_at) VALUES "
                "(?,?,?,?,?,?) ON CONFLICT(mode, asset) DO UPDATE SET shares=excluded.shares, "
                "cost=excluded.cost, updated_at=excluded.updated_at",
                (mode, asset, condition_id, exchange_shares, new_cost, now))
            self.db.execute("INSERT INTO position_audit (at, mode, asset, ledger_shares, exchange_shares, "
                            "ledger_cost, new_cost, reason) VALUES (?,?,?,?,?,?,?,?)",
                            (now, mode, asset, shares, exchange_shares, cost, new_cost, reason))
        return shares, exchange_shares

    def audit(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM position_audit ORDER BY id")

    def busy_assets(self, mode: str, since: float) -> set[str]:
        """Assets with an order sent after ``since`` or still open: not reconciled (the Data API
        may not show the fill yet, or the open decision will apply it)."""
        with self.lock:
            rows = self.db.execute("SELECT DISTINCT token_id FROM orders WHERE mode=? AND (created_at >= ? OR "
                                   f"status IN {_OPEN_SQL})", (mode, since)).fetchall()
        return {str(r[0]) for r in rows}

    def exposure(self, mode: str, leader: str | None = None) -> float:
        """Cost of open positions; for one leader, per asset: the cost bought after their trades
        minus the cost their copied sells released, never more than what the position costs now
        (a position reconciled to 0 after its market resolved releases the leader's exposure;
        stop-loss sells are not attributed: conservative)."""
        with self.lock:
            if leader is None:
                row = self.db.execute("SELECT COALESCE(SUM(cost), 0) FROM positions WHERE mode=?",
                                      (mode,)).fetchone()
            else:
                row = self.db.execute(
                    "SELECT COALESCE(SUM(MIN(MAX(l.net, 0), COALESCE(p.cost, 0))), 0) FROM ("
                    "SELECT o.token_id AS asset, SUM(CASE WHEN o.side='BUY' THEN o.filled_usd "
                    "ELSE -(o.filled_usd - o.realised_usd) END) AS net FROM orders o JOIN decisions d ON "
                    "d.id = o.decision_id JOIN leader_trades t ON t.id = d.leader_trade_id "
                    "WHERE o.mode=? AND t.leader=? GROUP BY o.token_id) l "
                    "LEFT JOIN positions p ON p.mode=? AND p.asset=l.asset",
                    (mode, leader.lower(), mode)).fetchone()
        return max(0.0, float(row[0]))

    def realised_since(self, mode: str, since: float) -> float:
        with self.lock:
            row = self.db.execute("SELECT COALESCE(SUM(realised_usd), 0) FROM orders WHERE mode=? AND "
                                  "created_at >= ?", (mode, since)).fetchone()
        return float(row[0])

    # ---- the lease's fence (polymarket-ha, issue 11) -----------------------------------------
    def fence_key(self, order_id: int, order_hash: str) -> str:
        """What the fence records before an order leaves: the dedupe key of the order's leader trade, or
        ``order:<hash>`` for an order of no leader trade (a stop loss)."""
        with self.lock:
            row = self.db.execute("SELECT t.dedupe_key FROM orders o JOIN decisions d ON d.id = o.decision_id "
                                  "JOIN leader_trades t ON t.id = d.leader_trade_id WHERE o.id=?",
                                  (order_id,)).fetchone()
        return str(row[0]) if row else f"order:{order_hash}"

    def merge_copied(self, copied: dict[str, dict[str, Any]], generation: int) -> int:
        """At a promotion: the keys etcd holds as copied (by either node) go into ``peer_copied``, and every
        decision of this ledger about one of them that has no order at the exchange (pending without an
        order, or skipped while passive or without the lease) is decided ``skipped: copied_by_peer``. An
        order this ledger holds as sent, or maybe sent, is left to ``open_decisions`` (asked about by its
        hash). The lease's generation is kept in ``meta`` (it only grows). Returns the decisions changed."""
        now = time.time()
        changed = 0
        with self._transaction():
            self.db.execute("DELETE FROM peer_copied WHERE at < ?", (now - 2 * 86400,))
            for key, info in copied.items():
                holder = str(info.get("holder") or "?")
                at = info.get("at")
                self.db.execute("INSERT INTO peer_copied (dedupe_key, holder, order_hash, at) VALUES (?,?,?,?) "
                                "ON CONFLICT(dedupe_key) DO UPDATE SET holder=excluded.holder, "
                                "order_hash=excluded.order_hash, at=excluded.at",
                                (key, holder, str(info.get("order") or ""),
                                 float(at) if isinstance(at, (int, float)) else now))
                changed += self.db.execute(
                    "UPDATE decisions SET decision='skipped', reason=?, updated_at=? WHERE leader_trade_id = "
                    "(SELECT id FROM leader_trades WHERE dedupe_key=?) AND (decision IN ('pending', 'unknown') "
                    "OR (decision='skipped' AND (reason='passive' OR reason LIKE 'no_lease%'))) AND NOT EXISTS "
                    "(SELECT 1 FROM orders o WHERE o.decision_id=decisions.id AND o.status NOT IN "
                    "('not_sent', 'rejected'))", (f"copied_by_peer: {holder}", now, key)).rowcount
            self.db.execute("INSERT INTO meta (key, value) VALUES ('lease_generation', ?) ON CONFLICT(key) DO "
                            "UPDATE SET value=excluded.value WHERE CAST(excluded.value AS INTEGER) > "
                            "CAST(meta.value AS INTEGER)", (str(int(generation)),))
        return changed

    def copied_elsewhere(self, key: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM peer_copied WHERE dedupe_key=?", (key,)).fetchone() is not None

    def reopen_unsent(self, since: float) -> int:
        """At a promotion, after ``merge_copied``: leader trades of ``since`` or later that this node decided
        not to copy only because it was passive or had no lease, and that no holder recorded as copied,
        are pending again (``open_decisions`` decides them afresh). Returns how many."""
        now = time.time()
        with self._transaction():
            return self.db.execute(
                "UPDATE decisions SET decision='pending', reason='seen while passive, copied by neither node', "
                "updated_at=? WHERE decision='skipped' AND (reason='passive' OR reason LIKE 'no_lease%') AND "
                "leader_trade_id IN (SELECT id FROM leader_trades WHERE trade_ts >= ? AND dedupe_key NOT IN "
                "(SELECT dedupe_key FROM peer_copied))", (now, since)).rowcount

    # ---- queries -----------------------------------------------------------------------
    def position(self, mode: str, asset: str) -> Position | None:
        with self.lock:
            row = self.db.execute("SELECT mode, asset, condition_id, shares, cost FROM positions "
                                  "WHERE mode=? AND asset=?", (mode, asset)).fetchone()
        return Position(*row) if row else None

    def positions(self, mode: str) -> list[Position]:
        with self.lock:
            rows = self.db.execute("SELECT mode, asset, condition_id, shares, cost FROM positions "
                                   "WHERE mode=? AND shares > 0 ORDER BY asset", (mode,)).fetchall()
        return [Position(*r) for r in rows]

    def volume_since(self, mode: str, since: float) -> float:
        with self.lock:
            row = self.db.execute("SELECT COALESCE(SUM(filled_usd), 0) FROM orders WHERE mode=? AND "
                                  "created_at >= ?", (mode, since)).fetchone()
        return float(row[0])

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of a query, each a dict by column name."""
        with self.lock:
            cur = self.db.execute(sql, params)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def decisions(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.rows("SELECT d.id, d.kind, d.decision, d.reason, d.created_at, t.leader, t.side, t.asset, "
                         "t.size, t.price FROM decisions d LEFT JOIN leader_trades t ON t.id = d.leader_trade_id "
                         "ORDER BY d.id DESC LIMIT ?", (limit,))

    def counts(self) -> dict[str, int]:
        with self.lock:
            rows = self.db.execute("SELECT decision, COUNT(*) FROM decisions GROUP BY decision").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def orders(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM orders ORDER BY id")

    def prune(self, days: float) -> dict[str, int]:
        """Delete trades, decisions and orders older than ``days``; positions and marks stay."""
        cutoff = time.time() - days * 86400
        with self._transaction():
            o = self.db.execute("DELETE FROM orders WHERE created_at < ?", (cutoff,)).rowcount
            d = self.db.execute("DELETE FROM decisions WHERE created_at < ? AND decision != 'pending'",
                                (cutoff,)).rowcount
            t = self.db.execute("DELETE FROM leader_trades WHERE seen_at < ? AND id NOT IN "
                                "(SELECT leader_trade_id FROM decisions WHERE leader_trade_id IS NOT NULL)",
                                (cutoff,)).rowcount
        return {"orders": o, "decisions": d, "leader_trades": t}
