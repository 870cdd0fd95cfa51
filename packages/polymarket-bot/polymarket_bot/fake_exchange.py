"""A fake Polymarket on loopback: Data API v1, Gamma markets and CLOB V2.

It answers with the real field names and types, checks L1 (ClobAuth) and L2 (HMAC)
headers and the EIP-712 signature of every order, matches FOK/FAK orders against its
books, and can inject faults. Control endpoints live under ``/_control/``.

Run: ``python3 -m polymarket_bot.fake_exchange --port 8900``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import crypto, signing

log = logging.getLogger(__name__)

TRADE_FIELDS = ("title", "slug", "icon", "eventSlug", "name", "pseudonym", "bio",
                "profileImage", "profileImageOptimized")


@dataclass
class Fault:
    path: str
    # "429" | "500" | "503" | "timeout" | "malformed" | "empty" | "unexpected" | "close": instead of acting;
    # "reset_after": act, then reset the connection without an answer (a lost answer);
    # "hold": act, then answer only after ``delay`` seconds (a late answer, or a window in
    # which a test kills the client after the exchange has the order).
    kind: str
    count: int
    delay: float = 0.0


@dataclass
class State:
    chain_id: int = 137
    trades: list[dict[str, Any]] = field(default_factory=list)
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)   # conditionId -> market
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)    # token -> book/meta
    balances: dict[str, int] = field(default_factory=dict)             # address -> USDC base units
    holdings: dict[tuple[str, str], int] = field(default_factory=dict)  # (address, token) -> units
    leader_positions: dict[tuple[str, str], float] = field(default_factory=dict)
    leader_values: dict[str, float] = field(default_factory=dict)
    creds: dict[str, dict[str, str]] = field(default_factory=dict)     # apiKey -> creds + address
    orders: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)   # order hash -> response
    faults: list[Fault] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    geoblocked: bool = False
    # the CLOB's matching delay: a marketable order is answered "delayed" (success, no amounts),
    # shows as DELAYED with size_matched 0 and no trades until ``release_delayed``
    delay_matching: bool = False
    request_log: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=200_000))  # (time, path)
    lock: threading.RLock = field(default_factory=threading.RLock)


def _units(x: Decimal | float | str) -> int:
    return int((Decimal(str(x)) * 1_000_000).to_integral_value())


def _human(units: int | Decimal) -> str:
    return format((Decimal(units) / 1_000_000).normalize(), "f")


class Rejection(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class Exchange:
    """The fake's behaviour, independent of HTTP (tests may also call it directly)."""

    def __init__(self, chain_id: int = 137) -> None:
        self.s = State(chain_id=chain_id)

    # ---- control ---------------------------------------------------------------
    def add_market(self, m: dict[str, Any]) -> None:
        """m: conditionId, slug, tokens [yes, no], outcomes, negRisk, tickSize, minSize, closed."""
        with self.s.lock:
            tokens = [str(t) for t in m["tokens"]]
            outcomes = m.get("outcomes", ["Yes", "No"])
            self.s.markets[m["conditionId"]] = {
                "id": str(len(self.s.markets) + 1),
                "question": m.get("question", m.get("slug", "")),
                "conditionId": m["conditionId"],
                "slug": m.get("slug", m["conditionId"][:10]),
                "outcomes": json.dumps(outcomes),
                "outcomePrices": json.dumps(["0.5", "0.5"]),
                "clobTokenIds": json.dumps(tokens),
                "active": not m.get("closed", False),
                "closed": bool(m.get("closed", False)),
                "enableOrderBook": True,
                "negRisk": bool(m.get("negRisk", False)),
                "orderMinSize": float(m.get("minSize", 5)),
                "orderPriceMinTickSize": float(m.get("tickSize", 0.01)),
            }
            for i, t in enumerate(tokens):
                self.s.tokens.setdefault(t, {"bids": [], "asks": []}).update({
                    "market": m["conditionId"], "outcome": outcomes[i], "outcomeIndex": i,
                    "tick_size": str(m.get("tickSize", "0.01")), "min_order_size": str(m.get("minSize", 5)),
                    "neg_risk": bool(m.get("negRisk", False)),
                })

    def set_book(self, token: str, bids: list[list[float]], asks: list[list[float]]) -> None:
        with self.s.lock:
            book = self.s.tokens.setdefault(token, {})
            book["bids"] = [[Decimal(str(p)), Decimal(str(q))] for p, q in bids]
            book["asks"] = [[Decimal(str(p)), Decimal(str(q))] for p, q in asks]

    def set_balance(self, address: str, usd: float, token: str | None = None) -> None:
        with self.s.lock:
            if token is None:
                self.s.balances[address.lower()] = _units(usd)
            else:
                self.s.holdings[(address.lower(), token)] = _units(usd)

    def add_trade(self, t: dict[str, Any], visible_after: float = 0.0) -> dict[str, Any]:
        """A leader's fill; ``visible_after`` seconds delays its appearance (a late trade)."""
        with self.s.lock:
            tok = self.s.tokens.get(str(t["asset"]), {})
            trade = {
                "proxyWallet": t["proxyWallet"].lower(),
                "side": t["side"],
                "asset": str(t["asset"]),
                "conditionId": t.get("conditionId", tok.get("market", "")),
                "size": float(t["size"]),
                "price": float(t["price"]),
                "timestamp": int(t.get("timestamp", time.time())),
                "outcome": t.get("outcome", tok.get("outcome", "Yes")),
                "outcomeIndex": int(t.get("outcomeIndex", tok.get("outcomeIndex", 0))),
                "transactionHash": t.get("transactionHash") or "0x" + hashlib.sha256(
                    json.dumps([t, len(self.s.trades)], sort_keys=True, default=str).encode()).hexdigest(),
            }
            market = self.s.markets.get(trade["conditionId"], {})
            for k in TRADE_FIELDS:
                trade[k] = t.get(k, market.get("slug", "") if k in ("slug", "eventSlug") else "")
            trade["_visible_at"] = time.time() + visible_after
            trade["_seq"] = len(self.s.trades)
            self.s.trades.append(trade)
            key = (trade["proxyWallet"], trade["asset"])
            delta = trade["size"] if trade["side"] == "BUY" else -trade["size"]
            self.s.leader_positions[key] = self.s.leader_positions.get(key, 0.0) + delta
            return {k: v for k, v in trade.items() if not k.startswith("_")}

    def set_leader_position(self, leader: str, asset: str, size: float) -> None:
        with self.s.lock:
            self.s.leader_positions[(leader.lower(), asset)] = size

    def add_fault(self, path: str, kind: str, count: int = 1, delay: float = 0.0) -> None:
        with self.s.lock:
            self.s.faults.append(Fault(path, kind, count, delay))

    def take_fault(self, path: str) -> Fault | None:
        with self.s.lock:
            for f in self.s.faults:
                if path.startswith(f.path) and f.count > 0:
                    f.count -= 1
                    if f.count == 0:
                        self.s.faults.remove(f)
                    return f
        return None

    # ---- Data API -----------------------------------------------------------------
    def _visible(self) -> list[dict[str, Any]]:
        now = time.time()
        return [t for t in self.s.trades if t["_visible_at"] <= now]

    @staticmethod
    def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]

    def trades(self, q: dict[str, str]) -> list[dict[str, Any]]:
        with self.s.lock:
            rows = self._visible()
        if q.get("user"):
            rows = [r for r in rows if r["proxyWallet"] == q["user"].lower()]
        if q.get("market"):
            markets = set(q["market"].split(","))
            rows = [r for r in rows if r["conditionId"] in markets]
        if q.get("side"):
            rows = [r for r in rows if r["side"] == q["side"]]
        rows = sorted(rows, key=lambda r: (r["timestamp"], r["_seq"]), reverse=True)
        limit = min(int(q.get("limit", 100)), 10000)
        offset = int(q.get("offset", 0))
        if offset > 10000:
            raise Rejection(400, "offset must be at most 10000")
        return self._public(rows[offset:offset + limit])

    def activity(self, q: dict[str, str]) -> list[dict[str, Any]]:
        user = q.get("user", "").lower()
        if not user:
            raise Rejection(400, "user is required")
        with self.s.lock:
            rows = [r for r in self._visible() if r["proxyWallet"] == user]
        if q.get("start"):
            rows = [r for r in rows if r["timestamp"] >= int(q["start"])]
        if q.get("end"):
            rows = [r for r in rows if r["timestamp"] <= int(q["end"])]
        desc = q.get("sortDirection", "DESC").upper() != "ASC"
        rows = sorted(rows, key=lambda r: (r["timestamp"], r["_seq"]), reverse=desc)
        limit = min(int(q.get("limit", 100)), 500)
        offset = int(q.get("offset", 0))
        if offset > 5000:  # documented: past the cap is a 400, never clamped
            raise Rejection(400, "offset must be at most 5000; page deeper history with start/end")
        out = []
        for r in rows[offset:offset + limit]:
            a = {k: v for k, v in r.items() if not k.startswith("_")}
            a["type"] = "TRADE"
            a["usdcSize"] = round(r["size"] * r["price"], 6)
            out.append(a)
        return out

    def positions(self, q: dict[str, str]) -> list[dict[str, Any]]:
        user = q.get("user", "").lower()
        with self.s.lock:
            rows = [(a, s) for (u, a), s in self.s.leader_positions.items() if u == user and s > 0]
            # a trading wallet's own positions: what it holds at the exchange
            rows += [(a, n / 1_000_000) for (u, a), n in self.s.holdings.items() if u == user and n > 0]
            toks = dict(self.s.tokens)
        if q.get("market"):
            rows = [(a, s) for a, s in rows if toks.get(a, {}).get("market") in q["market"].split(",")]
        return [{"proxyWallet": user, "asset": a, "conditionId": toks.get(a, {}).get("market", ""),
                 "size": s, "outcomeIndex": toks.get(a, {}).get("outcomeIndex", 0)} for a, s in rows]

    def value(self, q: dict[str, str]) -> list[dict[str, Any]]:
        user = q.get("user", "").lower()
        with self.s.lock:
            return [{"user": user, "value": self.s.leader_values.get(user, 0.0)}]

    # ---- Gamma ---------------------------------------------------------------------
    def gamma_markets(self, q: dict[str, list[str]]) -> list[dict[str, Any]]:
        with self.s.lock:
            ms = list(self.s.markets.values())
        if "condition_ids" in q:
            wanted = {c for v in q["condition_ids"] for c in v.split(",")}
            ms = [m for m in ms if m["conditionId"] in wanted]
        if "clob_token_ids" in q:
            wanted = {c for v in q["clob_token_ids"] for c in v.split(",")}
            ms = [m for m in ms if wanted & set(json.loads(m["clobTokenIds"]))]
        if "slug" in q:
            ms = [m for m in ms if m["slug"] in q["slug"]]
        return ms

    # ---- CLOB ------------------------------------------------------------------------
    def _token(self, q: dict[str, str]) -> dict[str, Any]:
        tok = self.s.tokens.get(q.get("token_id", ""))
        if tok is None or "market" not in tok:
            raise Rejection(404, "No orderbook exists for the requested token id")
        return tok

    def book(self, q: dict[str, str]) -> dict[str, Any]:
        with self.s.lock:
            tok = self._token(q)
            bids = sorted(tok["bids"], key=lambda x: x[0])           # best bid last, as the CLOB does
            asks = sorted(tok["asks"], key=lambda x: x[0], reverse=True)
            return {
                "market": tok["market"], "asset_id": q["token_id"], "timestamp": str(int(time.time() * 1000)),
                "hash": hashlib.sha1(repr((bids, asks)).encode()).hexdigest(),
                "bids": [{"price": format(p, "f"), "size": format(s, "f")} for p, s in bids],
                "asks": [{"price": format(p, "f"), "size": format(s, "f")} for p, s in asks],
                "min_order_size": tok["min_order_size"], "tick_size": tok["tick_size"],
                "neg_risk": tok["neg_risk"], "last_trade_price": "0.5",
            }

    def tick_size(self, q: dict[str, str]) -> dict[str, Any]:
        with self.s.lock:
            return {"minimum_tick_size": float(self._token(q)["tick_size"])}

    def neg_risk(self, q: dict[str, str]) -> dict[str, Any]:
        with self.s.lock:
            return {"neg_risk": self._token(q)["neg_risk"]}

    def _check_l1(self, h: dict[str, str]) -> str:
        try:
            addr, ts, nonce = h["POLY_ADDRESS"], int(h["POLY_TIMESTAMP"]), int(h.get("POLY_NONCE", "0"))
            sig = bytes.fromhex(h["POLY_SIGNATURE"].removeprefix("0x"))
            digest = signing.clob_auth_digest(addr, ts, nonce, self.s.chain_id)
            ok = crypto.recover_address(digest, sig).lower() == addr.lower()
        except (KeyError, ValueError):
            ok = False
        if not ok or abs(time.time() - ts) > 300:
            raise Rejection(401, "Unauthorized/Invalid api key")
        return addr

    def auth(self, h: dict[str, str]) -> dict[str, str]:
        addr = self._check_l1(h)
        seed = hashlib.sha256(f"{addr.lower()}:{h.get('POLY_NONCE', '0')}".encode()).digest()
        api_key = f"{seed[:4].hex()}-{seed[4:6].hex()}-{seed[6:8].hex()}-{seed[8:10].hex()}-{seed[10:16].hex()}"
        creds = {"apiKey": api_key, "secret": base64.urlsafe_b64encode(seed).decode(),
                 "passphrase": hashlib.sha256(seed).hexdigest()}
        with self.s.lock:
            self.s.creds[api_key] = {**creds, "address": addr}
        return creds

    def _check_l2(self, h: dict[str, str], method: str, path: str, body: str | None) -> dict[str, str]:
        with self.s.lock:
            c = self.s.creds.get(h.get("POLY_API_KEY", ""))
        if c is None or h.get("POLY_PASSPHRASE") != c["passphrase"] \
                or h.get("POLY_ADDRESS", "").lower() != c["address"].lower():
            raise Rejection(401, "Unauthorized/Invalid api key")
        try:
            ts = int(h["POLY_TIMESTAMP"])
        except (KeyError, ValueError):
            raise Rejection(401, "Unauthorized/Invalid api key") from None
        msg = f"{ts}{method}{path}" + (body or "")
        want = base64.urlsafe_b64encode(hmac.new(base64.urlsafe_b64decode(c["secret"]), msg.encode(),
                                                 hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(want, h.get("POLY_SIGNATURE", "")) or abs(time.time() - ts) > 300:
            raise Rejection(401, "Unauthorized/Invalid api key")
        return c

    def balance_allowance(self, h: dict[str, str], q: dict[str, str]) -> dict[str, Any]:
        c = self._check_l2(h, "GET", "/balance-allowance", None)
        addr = c["address"].lower()
        with self.s.lock:
            if q.get("asset_type", "COLLATERAL") == "CONDITIONAL":
                bal = self.s.holdings.get((addr, q.get("token_id", "")), 0)
            else:
                bal = self.s.balances.get(addr, 0)
        return {"balance": str(bal), "allowances": {signing.EXCHANGE_V2[137]: str(2**256 - 1)}}

    def post_order(self, h: dict[str, str], raw: str) -> dict[str, Any]:
        c = self._check_l2(h, "POST", "/order", raw)
        try:
            body = json.loads(raw)
            order, sig = signing.order_from_payload(body)
            order_type = body["orderType"]
        except (ValueError, KeyError, TypeError):
            raise Rejection(400, "Invalid order payload") from None
        if body.get("owner") != c["apiKey"]:
            raise Rejection(400, "the order owner has to be the owner of the API KEY")
        if order_type not in ("FOK", "FAK", "GTC", "GTD"):
            raise Rejection(400, "Invalid order payload")
        with self.s.lock:
            tok = self.s.tokens.get(str(order.token_id))
            if tok is None or "market" not in tok:
                raise Rejection(400, "invalid token id")
            digest = order.digest(self.s.chain_id, bool(tok["neg_risk"]))
            order_hash = "0x" + digest.hex()
            if order_hash in self.s.answers:  # a retried POST of the same signed order
                raise Rejection(400, f"order {order_hash} is invalid. Duplicated. Same order has already "
                                     "been placed")
            try:
                key_digest, raw_sig = signing.order_signer_key_digest(order, sig, self.s.chain_id,
                                                                      bool(tok["neg_risk"]))
                signer = crypto.recover_address(key_digest, raw_sig)
            except (ValueError, crypto.SignatureError):
                signer = ""
            if order.signature_type == signing.SignatureType.POLY_1271:
                # the deposit wallet (maker = signer) accepts its owner's ERC-7739 signature
                ok = signer.lower() == c["address"].lower() and order.maker.lower() == order.signer.lower()
            else:
                ok = signer.lower() == order.signer.lower() == c["address"].lower() and (
                    order.signature_type != signing.SignatureType.EOA or order.maker.lower() == signer.lower())
            if not ok:
                raise Rejection(400, "invalid signature")
            try:
                answer = self._match(order, order_type, tok)
            except Rejection as r:
                # the CLOB knows a killed FOK/FAK order by its hash too: unmatched, cancelled
                self.s.answers[order_hash] = {"error": r.error}
                self.s.orders.append({"hash": order_hash, "order": body["order"], "orderType": order_type,
                                      "answer": None, "neg_risk": tok["neg_risk"], "owner": c["apiKey"],
                                      "status": "CANCELED", "size_matched": "0", "fills": [],
                                      "created_at": int(time.time())})
                raise
            shares, fills = answer.pop("_shares"), answer.pop("_fills")
            if self.s.delay_matching:
                self.s.answers[order_hash] = {"success": True, "errorMsg": "", "orderID": order_hash,
                                              "status": "delayed", "makingAmount": "", "takingAmount": "",
                                              "transactionsHashes": []}
                self.s.orders.append({"hash": order_hash, "order": body["order"], "orderType": order_type,
                                      "answer": self.s.answers[order_hash], "neg_risk": tok["neg_risk"],
                                      "owner": c["apiKey"], "status": "DELAYED", "size_matched": "0",
                                      "fills": [], "delayed": (shares, fills), "created_at": int(time.time())})
                return self.s.answers[order_hash]
            self.s.answers[order_hash] = {**answer, "orderID": order_hash}
            self.s.orders.append({"hash": order_hash, "order": body["order"], "orderType": order_type,
                                  "answer": self.s.answers[order_hash], "neg_risk": tok["neg_risk"],
                                  "owner": c["apiKey"], "status": "MATCHED", "size_matched": shares,
                                  "fills": fills, "created_at": int(time.time())})
            return self.s.answers[order_hash]

    def release_delayed(self) -> int:
        """The matching delay is over: every DELAYED order shows its match and its trades (the
        balances moved at acceptance). Returns how many."""
        n = 0
        with self.s.lock:
            for o in self.s.orders:
                if o["status"] == "DELAYED":
                    o["size_matched"], o["fills"] = o.pop("delayed")
                    o["status"] = "MATCHED"
                    n += 1
        return n

    # ---- CLOB, L2 reads: what the exchange knows about our orders -----------------------
    def _mine(self, c: dict[str, str]) -> list[dict[str, Any]]:
        return [o for o in self.s.orders if o.get("owner") == c["apiKey"]]

    def _open_order(self, o: dict[str, Any]) -> dict[str, Any]:
        body = o["order"]
        tok = self.s.tokens.get(str(body["tokenId"]), {})
        maker, taker = Decimal(body["makerAmount"]), Decimal(body["takerAmount"])
        shares = taker if body["side"] == "BUY" else maker
        price = maker / taker if body["side"] == "BUY" else taker / maker
        return {"id": o["hash"], "status": o["status"], "owner": o["owner"], "maker_address": body["maker"],
                "market": tok.get("market", ""), "asset_id": str(body["tokenId"]), "side": body["side"],
                "original_size": _human(shares), "size_matched": o["size_matched"],
                "price": format(price.quantize(Decimal("0.0001")).normalize(), "f"),
                "outcome": tok.get("outcome", ""), "expiration": "0", "order_type": o["orderType"],
                "associate_trades": [f["id"] for f in o["fills"]], "created_at": o["created_at"]}

    def get_order(self, h: dict[str, str], order_id: str) -> dict[str, Any] | None:
        """GET /data/order/{id}: the order by its hash, or null if the exchange never saw it."""
        c = self._check_l2(h, "GET", f"/data/order/{order_id}", None)
        with self.s.lock:
            for o in self._mine(c):
                if o["hash"].lower() == order_id.lower():
                    return self._open_order(o)
        return None

    @staticmethod
    def _paged(rows: list[dict[str, Any]], cursor: str, limit: int = 100) -> dict[str, Any]:
        start = 0 if cursor in ("", "MA==") else int(base64.b64decode(cursor).decode())
        page = rows[start:start + limit]
        nxt = start + len(page)
        return {"data": page, "limit": limit, "count": len(page),
                "next_cursor": "LTE=" if nxt >= len(rows) else base64.b64encode(str(nxt).encode()).decode()}

    def open_orders(self, h: dict[str, str], q: dict[str, str]) -> dict[str, Any]:
        """GET /data/orders: our resting orders (FOK/FAK never rest)."""
        c = self._check_l2(h, "GET", "/data/orders", None)
        with self.s.lock:
            rows = [self._open_order(o) for o in self._mine(c) if o["status"] == "LIVE"]
        rows = [r for r in rows if (not q.get("id") or r["id"] == q["id"])
                and (not q.get("asset_id") or r["asset_id"] == q["asset_id"])
                and (not q.get("market") or r["market"] == q["market"])]
        return self._paged(rows, q.get("next_cursor", ""))

    def user_trades(self, h: dict[str, str], q: dict[str, str]) -> dict[str, Any]:
        """GET /data/trades: our fills, each naming the taker order it belongs to."""
        c = self._check_l2(h, "GET", "/data/trades", None)
        with self.s.lock:
            rows = [f for o in self._mine(c) for f in o["fills"]]
        rows = [r for r in rows if (not q.get("id") or r["id"] == q["id"])
                and (not q.get("asset_id") or r["asset_id"] == q["asset_id"])
                and (not q.get("market") or r["market"] == q["market"])
                and (not q.get("after") or int(r["match_time"]) >= int(q["after"]))
                and (not q.get("before") or int(r["match_time"]) <= int(q["before"]))]
        return self._paged(rows, q.get("next_cursor", ""))

    def _match(self, order: signing.Order, order_type: str, tok: dict[str, Any]) -> dict[str, Any]:
        maker = order.maker.lower()
        tick = Decimal(tok["tick_size"])
        token = str(order.token_id)
        fills: list[tuple[Decimal, Decimal]] = []
        if order.side == signing.Side.BUY:
            usd, shares = Decimal(order.maker_amount), Decimal(order.taker_amount)
            if shares <= 0:
                raise Rejection(400, "invalid amounts")
            limit = usd / shares
            if shares / 1_000_000 < Decimal(tok["min_order_size"]):
                raise Rejection(400, f"Size ({_human(shares)}) lower than the minimum: {tok['min_order_size']}")
            if self.s.balances.get(maker, 0) < usd:
                raise Rejection(400, "not enough balance / allowance")
            levels = sorted(tok["asks"], key=lambda x: x[0])
            budget, spent, got = usd / 1_000_000, Decimal(0), Decimal(0)
            for lvl in levels:
                price, avail = lvl
                if price > limit or budget - spent <= 0:
                    break
                take = min(avail, (budget - spent) / price)
                spent += take * price
                got += take
                lvl[1] -= take
                fills.append((price, take))
            filled_all = budget - spent <= Decimal("0.000001")
        else:
            shares, usd = Decimal(order.maker_amount), Decimal(order.taker_amount)
            if shares <= 0:
                raise Rejection(400, "invalid amounts")
            limit = usd / shares
            if self.s.holdings.get((maker, token), 0) < shares:
                raise Rejection(400, "not enough balance / allowance")
            levels = sorted(tok["bids"], key=lambda x: x[0], reverse=True)
            want, spent, got = shares / 1_000_000, Decimal(0), Decimal(0)
            for lvl in levels:
                price, avail = lvl
                if price < limit or want - got <= 0:
                    break
                take = min(avail, want - got)
                got += take
                spent += take * price
                lvl[1] -= take
                fills.append((price, take))
            filled_all = want - got <= Decimal("0.000001")
        # the share leg is rounded to the tick's amount precision: the implied price moves by < 1e-5
        if limit < tick - Decimal("0.00001") or limit > 1 - tick + Decimal("0.00001"):
            raise Rejection(400, f"invalid price ({limit:.4f}), min: {tick} - max: {1 - tick}")
        tok["asks" if order.side == signing.Side.BUY else "bids"] = [lv for lv in (
            tok["asks"] if order.side == signing.Side.BUY else tok["bids"]) if lv[1] > 0]
        if got == 0:
            if order_type == "FOK":
                raise Rejection(400, "order couldn't be fully filled. FOK orders are fully filled or killed.")
            raise Rejection(400, "no orders found to match with FAK order. FAK orders are partially filled "
                                 "or killed if no match is found.")
        if order_type == "FOK" and not filled_all:
            raise Rejection(400, "order couldn't be fully filled. FOK orders are fully filled or killed.")
        got_u, spent_u = _units(got), _units(spent)
        if order.side == signing.Side.BUY:
            self.s.balances[maker] = self.s.balances.get(maker, 0) - spent_u
            self.s.holdings[(maker, token)] = self.s.holdings.get((maker, token), 0) + got_u
            making, taking = spent_u, got_u
        else:
            self.s.balances[maker] = self.s.balances.get(maker, 0) + spent_u
            self.s.holdings[(maker, token)] = self.s.holdings.get((maker, token), 0) - got_u
            making, taking = got_u, spent_u
        tx = "0x" + hashlib.sha256(repr((order, time.time())).encode()).hexdigest()
        order_id = "0x" + order.digest(self.s.chain_id, bool(tok["neg_risk"])).hex()
        side = "BUY" if order.side == signing.Side.BUY else "SELL"
        trades = [{"id": hashlib.md5(repr((order, i)).encode()).hexdigest(), "taker_order_id": order_id,
                   "market": tok["market"], "asset_id": token, "side": side, "size": _human(_units(q)),
                   "fee_rate_bps": "0", "price": format(p, "f"), "status": "CONFIRMED",
                   "match_time": str(int(time.time())), "last_update": str(int(time.time())),
                   "outcome": tok.get("outcome", ""), "owner": "", "maker_address": order.maker,
                   "transaction_hash": tx, "trader_side": "TAKER", "maker_orders": []}
                  for i, (p, q) in enumerate(fills)]
        return {"success": True, "errorMsg": "", "status": "matched",
                "makingAmount": _human(making), "takingAmount": _human(taking),
                "transactionsHashes": [tx], "tradeIDs": [t["id"] for t in trades],
                "_shares": _human(got_u), "_fills": trades}


class Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake: " + format, *args)

    def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> str:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode() if n else ""

    def _dispatch(self, method: str) -> None:
        ex = self.server.exchange
        parts = urlsplit(self.path)
        path = parts.path
        qs = parse_qs(parts.query)
        q = {k: v[-1] for k, v in qs.items()}
        body = self._body() if method == "POST" else ""
        with ex.s.lock:
            ex.s.requests[path] = ex.s.requests.get(path, 0) + 1
            ex.s.request_log.append((time.time(), path))
        fault = None
        if not path.startswith("/_control"):
            fault = ex.take_fault(path)
            if fault is not None and fault.kind in ("reset_after", "hold"):
                pass  # acts first, see below
            elif fault is not None:
                if fault.kind == "timeout":
                    time.sleep(fault.delay or 10)
                    self.close_connection = True
                    return
                if fault.kind == "close":
                    self.close_connection = True
                    return
                if fault.kind == "malformed":
                    self._send(200, None, raw=b'{"oops": [')
                    return
                if fault.kind == "empty":
                    self._send(200, [])
                    return
                if fault.kind == "unexpected":  # valid JSON, not the documented shape
                    self._send(200, {"unexpected": "shape"})
                    return
                status = int(fault.kind)
                self._send(status, {"error": "Too Many Requests" if status == 429 else "Internal Server Error"})
                return
        h = {k.upper(): v for k, v in self.headers.items()}
        try:
            result = self._route(method, path, q, qs, h, body)
        except Rejection as r:
            status, result = r.status, {"error": r.error}
        except (KeyError, ValueError, TypeError) as exc:
            status, result = 400, {"error": f"bad request: {exc}"}
        else:
            status = 200
        if fault is not None and fault.kind == "reset_after":  # acted on, the answer is lost
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if fault is not None and fault.kind == "hold":
            time.sleep(fault.delay or 10)
        try:
            self._send(status, result)
        except OSError:
            self.close_connection = True  # the client gave up waiting

    def _route(self, method: str, path: str, q: dict[str, str], qs: dict[str, list[str]],
               h: dict[str, str], body: str) -> Any:
        ex = self.server.exchange
        routes_get: dict[str, Callable[[], Any]] = {
            "/trades": lambda: ex.trades(q), "/activity": lambda: ex.activity(q),
            "/positions": lambda: ex.positions(q), "/value": lambda: ex.value(q),
            "/markets": lambda: ex.gamma_markets(qs), "/book": lambda: ex.book(q),
            "/tick-size": lambda: ex.tick_size(q), "/neg-risk": lambda: ex.neg_risk(q),
            "/auth/derive-api-key": lambda: ex.auth(h), "/balance-allowance": lambda: ex.balance_allowance(h, q),
            "/time": lambda: int(time.time()), "/": lambda: "OK",
            "/api/geoblock": lambda: {"blocked": ex.s.geoblocked, "ip": "127.0.0.1",
                                      "country": "US" if ex.s.geoblocked else "IE",
                                      "region": "NY" if ex.s.geoblocked else "L"},
            "/_control/orders": lambda: list(ex.s.orders), "/_control/requests": lambda: dict(ex.s.requests),
        }
        if method == "GET" and path in routes_get:
            return routes_get[path]()
        if method == "GET" and path.startswith("/data/order/"):
            return ex.get_order(h, path.removeprefix("/data/order/"))
        if method == "GET" and path == "/data/orders":
            return ex.open_orders(h, q)
        if method == "GET" and path == "/data/trades":
            return ex.user_trades(h, q)
        if method == "POST":
            if path == "/auth/api-key":
                return ex.auth(h)
            if path == "/order":
                return ex.post_order(h, body)
            if path.startswith("/_control/"):
                return self._control(path, json.loads(body or "{}"))
        raise Rejection(404, "not found")

    def _control(self, path: str, b: dict[str, Any]) -> Any:
        ex = self.server.exchange
        if path == "/_control/market":
            ex.add_market(b)
        elif path == "/_control/book":
            ex.set_book(str(b["token"]), b.get("bids", []), b.get("asks", []))
        elif path == "/_control/balance":
            ex.set_balance(b["address"], b["usd"], b.get("token"))
        elif path == "/_control/trade":
            return ex.add_trade(b, float(b.get("visible_after", 0)))
        elif path == "/_control/geoblock":
            ex.s.geoblocked = bool(b["blocked"])
        elif path == "/_control/fault":
            ex.add_fault(b["path"], str(b["kind"]), int(b.get("count", 1)), float(b.get("delay", 0)))
        elif path == "/_control/leader":
            if "value" in b:
                ex.s.leader_values[b["address"].lower()] = float(b["value"])
            if "asset" in b:
                ex.set_leader_position(b["address"], str(b["asset"]), float(b["size"]))
        else:
            raise Rejection(404, "not found")
        return {"ok": True}

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0, exchange: Exchange | None = None) -> None:
        self.exchange = exchange or Exchange()
        super().__init__(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-exchange",
                         daemon=True).start()
        return self


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m polymarket_bot.fake_exchange", description=__doc__)
    p.add_argument("--port", type=int, default=8900, help="port on 127.0.0.1 (default 8900)")
    p.add_argument("--chain-id", type=int, default=137)
    p.add_argument("--demo", action="store_true", help="preload one market with a book")
    a = p.parse_args(argv)
    srv = FakeServer(a.port, Exchange(a.chain_id))
    if a.demo:
        srv.exchange.add_market({"conditionId": "0x" + "ab" * 32, "slug": "demo", "tokens": ["1001", "1002"]})
        srv.exchange.set_book("1001", [[0.48, 1000]], [[0.5, 1000]])
        srv.exchange.set_book("1002", [[0.48, 1000]], [[0.5, 1000]])
    print(f"fake exchange listening on {srv.url}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
