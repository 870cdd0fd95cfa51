"""An independent double of the CLOB's order side, for the outside review (issue 9).

Written from Polymarket's published shapes, not from the project's fake: POST /order answers
(``success``/``orderID``/``status`` matched|live|delayed|unmatched, ``makingAmount``/
``takingAmount``), the "Duplicated" refusal, ``GET /data/order/{hash}`` (``ORDER_STATUS_*``,
``size_matched``, ``original_size``), ``GET /data/trades`` and ``GET /data/orders`` paginated
with ``next_cursor`` ("MA==" first, "LTE=" last), trade statuses MATCHED/MINED/CONFIRMED/
RETRYING/FAILED. It sits where the engine's CLOB client is (``Engine.clob``); every other CLOB
path (books, tick size, auth, balances) is passed through to the client it replaces.

What the real venue may do and the project's fake does not: its read side lags its write side
(an accepted order 404s on lookup, its trade is not listed yet), DELAYED orders that match
later, answers about another order, sizes in fixed-point units, trades that fail to settle.
Several engines (processes on one ledger) can share one ``AttackExchange``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from polymarket_bot import signing
from polymarket_bot.httpclient import HttpError


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


class AttackExchange:
    def __init__(self, fill_price: float = 0.5) -> None:
        self.lock = threading.Lock()
        self.fill_price = fill_price
        self.orders: dict[str, dict[str, Any]] = {}   # hash -> order record
        self.trades: list[dict[str, Any]] = []
        self.posts: list[str] = []                     # hash of every POST /order that reached us
        self.post_mode = "ok"        # ok | duplicated (accepted, answer lost, retry "Duplicated") | lost
                                     # (accepted, answer lost) | delayed | drop (never reaches us)
        self.fill_fraction = 1.0     # FAK: the rest is cancelled
        self.order_lag = 0.0         # GET /data/order/{hash} 404 for this long after acceptance
        self.trades_lag = 0.0        # /data/trades does not list the fill for this long
        self.page_size = 100
        self.trade_status = "MATCHED"
        self.units = "shares"        # or "micro": size_matched/original_size in 1e6 units
        self.order_answer: Callable[[str], Any] | None = None   # replaces GET /data/order/{hash}
        self.after_accept: Callable[[str], None] | None = None  # runs after acceptance, before the answer
        self.before_book: Callable[[], None] | None = None
        self.lookup_error: HttpError | None = None

    def attach(self, engine: Any) -> Proxy:
        proxy = Proxy(self, engine)
        engine.clob = proxy
        return proxy

    # ---- exchange state ------------------------------------------------------------------
    def accept(self, payload: dict[str, Any], chain_id: int, neg_risk: bool = False) -> str:
        order, _sig = signing.order_from_payload(payload)
        h = "0x" + order.digest(chain_id, neg_risk).hex()
        with self.lock:
            self.posts.append(h)
            if h in self.orders:
                raise HttpError("POST /order: HTTP 400", 400,
                                {"error": f"order {h} is invalid. Duplicated."})
            o = payload["order"]
            if o["side"] == "BUY":
                want = int(o["makerAmount"]) / 1e6 / self.fill_price
            else:
                want = int(o["makerAmount"]) / 1e6
            shares = round(want * self.fill_fraction, 6)
            delayed = self.post_mode == "delayed"
            now = time.time()
            self.orders[h] = {"id": h, "side": o["side"], "asset_id": o["tokenId"], "price": str(self.fill_price),
                              "original_size": want, "size_matched": 0.0 if delayed else shares,
                              "status": "ORDER_STATUS_DELAYED" if delayed else (
                                  "ORDER_STATUS_MATCHED" if self.fill_fraction >= 1 else "ORDER_STATUS_CANCELED"),
                              "order_type": payload.get("orderType", "FAK"), "created": now}
            if not delayed and shares > 0:
                self._trade(h, o, shares, now)
        return h

    def _trade(self, h: str, o: dict[str, Any], shares: float, now: float) -> None:
        self.trades.append({"id": f"t{len(self.trades)}", "taker_order_id": h, "asset_id": o["tokenId"],
                            "side": o["side"], "size": str(shares), "price": str(self.fill_price),
                            "status": self.trade_status, "match_time": str(int(now)), "maker_orders": [],
                            "created": now, "trader_side": "TAKER"})

    def match_delayed(self, h: str) -> None:
        """The matching delay is over: the DELAYED order fills."""
        with self.lock:
            rec = self.orders[h]
            shares = round(rec["original_size"] * self.fill_fraction, 6)
            rec.update(status="ORDER_STATUS_MATCHED", size_matched=shares)
            self._trade(h, {"tokenId": rec["asset_id"], "side": rec["side"]}, shares, time.time())

    def held(self, asset: str) -> float:
        """What the wallet holds of ``asset`` according to the settled trades."""
        n = 0.0
        for t in self.trades:
            if t["asset_id"] == asset and t["status"] != "FAILED":
                n += float(t["size"]) * (1 if t["side"] == "BUY" else -1)
        return n

    def _size(self, x: float) -> str:
        return str(round(x * 1e6)) if self.units == "micro" else f"{x:.6f}".rstrip("0").rstrip(".")

    # ---- the L2 reads --------------------------------------------------------------------
    def get_order(self, h: str) -> Any:
        if self.lookup_error is not None:
            raise self.lookup_error
        if self.order_answer is not None:
            return self.order_answer(h)
        rec = self.orders.get(h)
        if rec is None or time.time() < rec["created"] + self.order_lag:
            raise HttpError(f"GET /data/order/{h}: HTTP 404", 404, {"error": "order not found"})
        return {**{k: v for k, v in rec.items() if k != "created"}, "original_size": self._size(rec["original_size"]),
                "size_matched": self._size(rec["size_matched"]), "associate_trades": []}

    def page(self, rows: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        cursor = str(params.get("next_cursor") or "MA==")
        off = int(base64.b64decode(cursor).decode())
        chunk = rows[off:off + self.page_size]
        nxt = off + len(chunk)
        return {"data": chunk, "limit": self.page_size, "count": len(chunk),
                "next_cursor": "LTE=" if nxt >= len(rows) else _cursor(nxt)}

    def get_trades(self, params: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            rows = [{k: v for k, v in t.items() if k != "created"} for t in self.trades
                    if now >= t["created"] + self.trades_lag
                    and str(params.get("asset_id", t["asset_id"])) == t["asset_id"]]
        return self.page(rows, params)

    def get_open_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            rows = [{**r, "size_matched": self._size(r["size_matched"])} for r in self.orders.values()
                    if r["status"] == "ORDER_STATUS_LIVE"]
        return self.page(rows, params)


class Proxy:
    """Stands in for one engine's CLOB client."""

    def __init__(self, ex: AttackExchange, engine: Any) -> None:
        self.ex = ex
        self.engine = engine
        self.real = engine.clob

    def __getattr__(self, name: str) -> Any:   # last_ok and the like: the replaced client's
        return getattr(self.real, name)

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        params = dict(params or {})
        if path.startswith("/data/order/"):
            return self.ex.get_order(path.rsplit("/", 1)[1])
        if path == "/data/trades":
            return self.ex.get_trades(params)
        if path == "/data/orders":
            return self.ex.get_open_orders(params)
        if path == "/book" and self.ex.before_book is not None:
            self.ex.before_book()
        return self.real.get(path, params, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        if path != "/order":
            return self.real.post(path, body, **kw)
        payload = json.loads(body) if isinstance(body, str) else body
        mode = self.ex.post_mode
        if mode == "drop":
            raise HttpError("POST /order: connection reset", retryable=True)
        h = self.ex.accept(payload, self.engine.cfg.chain_id)   # the tests trade the non-neg-risk market
        if self.ex.after_accept is not None:
            self.ex.after_accept(h)
        if mode == "duplicated":   # the answer was lost; the client's retry got "Duplicated"
            raise HttpError("POST /order: HTTP 400", 400, {"error": f"order {h} is invalid. Duplicated."})
        if mode == "lost":
            raise HttpError("POST /order: connection reset by peer", retryable=True)
        rec = self.ex.orders[h]
        shares, usd = rec["size_matched"], rec["size_matched"] * self.ex.fill_price
        if mode == "delayed":      # marketable but held by the matching delay: no amounts yet
            return {"success": True, "errorMsg": "", "orderID": h, "status": "delayed",
                    "makingAmount": "", "takingAmount": "", "transactionsHashes": []}
        making, taking = (usd, shares) if rec["side"] == "BUY" else (shares, usd)
        return {"success": True, "errorMsg": "", "orderID": h, "status": "matched",
                "makingAmount": str(making), "takingAmount": str(taking), "transactionsHashes": ["0xabc"]}
