"""The dashboard's pages for a browser: /, /system, /ha, /compliance and /metrics as HTML, and the login session.

The JSON of each page (``?format=json`` or ``Accept: application/json``) is what server.py gathers; the HTML
shows the same data, plus what the bot itself knows (positions, today's PnL, the last orders, the lease).
Every value that comes from the exchange, the ledger or a file goes through ``esc()``: HTML-escaped, and
control characters shown as ``\\xNN``. A figure this node does not have is shown as ``unknown``, never as 0.

No JavaScript, no external resource (the Content-Security-Policy forbids both), inline CSS, readable on a
phone. A browser logs in once with the dashboard token (a form POSTed to /login) and gets a session cookie:
a random session id kept in this process's memory with its expiry, signed with an HMAC key of this process,
never the token. A restart ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

from .engine import Engine

log = logging.getLogger(__name__)

SESSION_COOKIE = "pm_session"
LOGIN_COOKIE = "pm_login"        # the login form's CSRF value (double submit), for /login only
SESSION_SECONDS = 8 * 3600       # a session's lifetime, from the login
MAX_SESSIONS = 64                # sessions kept; the oldest is dropped for a new one
MAX_FORM = 4096                  # bytes of a POSTed form (read by the listener like the head)
LAST_ORDERS = 20
TEXTFILE_LIMIT = 1 << 20         # bytes read of one textfile-collector file

NAV = (("/", "Summary"), ("/system", "System"), ("/ha", "HA"), ("/compliance", "Compliance"),
       ("/metrics", "Metrics"))
PAGES = frozenset(p for p, _ in NAV)

# The browser runs nothing and loads nothing but this page and its inline style; forms post here only.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1b2a41;color:#fff;padding:.5em .8em}
header a{color:#fff;margin-right:.8em;text-decoration:none;display:inline-block;padding:.2em 0}
header a.on{border-bottom:2px solid #7fb2ff}
header form{display:inline;float:right}
main{padding:.5em .8em;max-width:60em}
h1{font-size:1.3em;margin:.4em 0}
h2{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.92em}
.scroll{overflow-x:auto}
th,td{border:1px solid #d8dce2;padding:.25em .4em;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere;min-width:4em}
th{background:#eef1f5;font-weight:600;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;min-width:0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em .8em;background:#fff;padding:.5em;
margin:0;border:1px solid #d8dce2}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
.bad{color:#b00020;font-weight:600}
.ok{color:#146c2e;font-weight:600}
.unknown{color:#6b7280;font-style:italic}
pre{background:#fff;border:1px solid #d8dce2;padding:.5em;overflow-x:auto;font-size:.8em}
footer{color:#6b7280;font-size:.8em;padding:.8em}
input,button{font:inherit;padding:.3em}
"""

# control characters, and the invisible ones a browser obeys: zero-width (U+200B-200F: ZWSP, ZWNJ, ZWJ, LRM, RLM),
# bidi embeddings/overrides/isolates (U+202A-202E, U+2066-2069, U+061C), line/paragraph separators, the BOM
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def esc(value: Any) -> str:
    """Text for HTML: None is ``unknown``; control characters become ``\\xNN``, bidi and zero-width ones
    ``\\uNNNN`` (shown, never obeyed); then HTML-escaped (quotes too)."""
    if value is None:
        return "<span class='unknown'>unknown</span>"
    return html.escape(_CONTROL.sub(_visible, str(value)), quote=True)


def esc_block(text: str) -> str:
    """For a <pre>: lines kept, every other control character made visible, HTML-escaped."""
    return "\n".join(esc(line) for line in text.split("\n"))


def usd(value: float | None) -> str:
    return esc(None) if value is None else esc(f"{value:,.2f}")


def age(seconds: float | None) -> str:
    """A duration for a human: 42 s, 5 min, 3 h 2 min, 2 d 4 h; None is unknown."""
    if seconds is None or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return esc(None)
    s = max(0, int(seconds))
    if s < 120:
        text = f"{s} s"
    elif s < 7200:
        text = f"{s // 60} min"
    elif s < 172800:
        text = f"{s // 3600} h {s % 3600 // 60} min"
    else:
        text = f"{s // 86400} d {s % 86400 // 3600} h"
    return esc(text)


def when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    try:
        return esc(datetime.fromtimestamp(ts, UTC).strftime(fmt))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):  # None, NaN, 1e300, not a number: unknown
        return esc(None)


def _iso_age(text: Any) -> float | None:
    """Seconds since an ISO 8601 time (polymarket-ha writes ``2026-01-01T00:00:00Z``), None when not one."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return time.time() - at.timestamp()


def flag(good: bool | None, yes: str, no: str) -> str:
    if good is None:
        return esc(None)
    return f"<span class='ok'>{esc(yes)}</span>" if good else f"<span class='bad'>{esc(no)}</span>"


def dl(rows: Iterable[tuple[str, str]]) -> str:
    """A definition list; labels are ours (escaped anyway), values already HTML."""
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def table(head: Iterable[str], rows: Iterable[Iterable[str]], empty: str = "none") -> str:
    """A table; cells already HTML (a cell starting with '\\0n' is a number, right-aligned)."""
    body = ""
    for row in rows:
        cells = ""
        for cell in row:
            cells += f"<td class='n'>{cell[2:]}</td>" if cell.startswith("\0n") else f"<td>{cell}</td>"
        body += f"<tr>{cells}</tr>"
    if not body:
        return f"<p class='unknown'>{esc(empty)}</p>"
    return ("<div class='scroll'><table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + body + "</tbody></table></div>")


def num(html_text: str) -> str:
    return "\0n" + html_text


def document(path: str, title: str, body: str, *, nav: bool = True) -> bytes:
    links = "".join(f"<a href='{p}'{' class=on' if p == path else ''}>{esc(name)}</a>" for p, name in NAV)
    header = ("<header><nav>" + links + "<form method='post' action='/logout'><button type='submit'>Log out"
              "</button></form></nav></header>") if nav else "<header>polymarket-bot</header>"
    json_link = f" · <a href='{path}?format=json'>JSON</a>" if nav else ""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)} · polymarket-bot</title><style>{CSS}</style></head><body>{header}<main>"
            f"<h1>{esc(title)}</h1>{body}</main><footer>{esc(os.uname().nodename)} · "
            f"{when(time.time())}{json_link}</footer></body></html>").encode()


# ---- content negotiation --------------------------------------------------------------------
def negotiate(query: str, accept: str) -> str | None:
    """'json' or 'html' for a page request; None for a ``format`` that is neither.

    ``?format=json`` or an Accept that names application/json: JSON (what the page answered before);
    ``?format=html`` or anything else (a browser's text/html): HTML."""
    fmt = urllib.parse.parse_qs(query).get("format")
    if fmt:
        return fmt[-1] if fmt[-1] in ("json", "html") else None
    return "json" if "application/json" in accept else "html"


# ---- sessions -------------------------------------------------------------------------------
class Sessions:
    """Live sessions of this process: id -> (expiry, binding to the token). The cookie is ``id.HMAC(id)``."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._live: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def _mac(self, sid: str) -> str:
        return hmac.new(self._key, b"session\0" + sid.encode(), hashlib.sha256).hexdigest()

    def _bind(self, token: bytes) -> bytes:
        # a session opened with one token is no longer valid once the configured token differs
        return hmac.new(self._key, b"token\0" + token, hashlib.sha256).digest()

    def open(self, token: bytes) -> str:
        sid = secrets.token_hex(16)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (exp, _) in self._live.items() if exp <= now]:
                del self._live[old]
            while len(self._live) >= MAX_SESSIONS:
                del self._live[next(iter(self._live))]
            self._live[sid] = (now + SESSION_SECONDS, self._bind(token))
        return f"{sid}.{self._mac(sid)}"

    def valid(self, cookie: str, token: bytes) -> bool:
        sid, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(sid).encode()):
            return False
        with self._lock:
            entry = self._live.get(sid)
            if entry is None:
                return False
            if entry[0] <= time.monotonic():
                del self._live[sid]
                return False
        return hmac.compare_digest(entry[1], self._bind(token))

    def close(self, cookie: str) -> None:
        sid, _, mac = cookie.partition(".")
        if hmac.compare_digest(mac.encode(), self._mac(sid).encode()):
            with self._lock:
                self._live.pop(sid, None)


SESSIONS = Sessions()


def cookies(header: str) -> dict[str, str]:
    """Cookie: a=1; b=2 -> {a: 1, b: 2}; the first of a name wins, anything malformed is skipped."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def cookie_header(name: str, value: str, max_age: int, path: str, secure: bool) -> str:
    """HttpOnly, SameSite=Strict; Secure only when a TLS front end says so (X-Forwarded-Proto: https)."""
    return (f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def same_origin(headers: Message) -> bool:
    """The login POST came from our own form: Origin (when sent) is this Host, Sec-Fetch-Site (when sent) too."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if origin is None:
        return True
    host = headers.get("Host", "")
    return origin in (f"http://{host}", f"https://{host}")


def safe_next(value: str) -> str:
    """Where a login returns to: one of our pages, never another site."""
    return value if value in PAGES else "/"


def login_page(csrf: str, next_path: str, error: str = "") -> bytes:
    msg = f"<p class='bad'>{esc(error)}</p>" if error else ""
    body = (f"{msg}<form method='post' action='/login'><p><label>Dashboard token (API_SECRET_KEY)<br>"
            "<input type='password' name='token' autocomplete='current-password' required autofocus></label></p>"
            f"<input type='hidden' name='csrf' value='{esc(csrf)}'>"
            f"<input type='hidden' name='next' value='{esc(safe_next(next_path))}'>"
            "<p><button type='submit'>Log in</button></p></form>"
            "<p>Machines: <code>Authorization: Bearer TOKEN</code> and <code>?format=json</code>.</p>")
    return document("/login", "Log in", body, nav=False)


def parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


Answer = tuple[int, bytes, list[tuple[str, str]]]


def _secure(headers: Message) -> bool:
    return (headers.get("X-Forwarded-Proto") or "").strip().lower() == "https"


def login_form(status: int, headers: Message, next_path: str = "/", error: str = "") -> Answer:
    """The login page with a fresh CSRF value, in the form and in a cookie sent back to /login only."""
    csrf = secrets.token_hex(16)
    return status, login_page(csrf, next_path, error), [
        ("Set-Cookie", cookie_header(LOGIN_COOKIE, csrf, 3600, "/login", _secure(headers)))]


def login(token: bytes | None, body: bytes, headers: Message, peer: str) -> Answer:
    """POST /login: token, csrf, next. A session cookie and 303 to ``next``; the form again otherwise."""
    form = parse_form(body)
    nxt = safe_next(form.get("next", "/"))
    sent = cookies(headers.get("Cookie") or "").get(LOGIN_COOKIE, "")
    if not (sent and hmac.compare_digest(sent.encode(), form.get("csrf", "").encode()) and same_origin(headers)):
        log.warning("dashboard login from %s refused: not from the login form", peer)
        return login_form(403, headers, nxt, "The form expired or came from another site: log in again.")
    if token is None or not hmac.compare_digest(form.get("token", "").encode(), token):
        log.warning("dashboard login from %s refused: wrong token", peer)
        return login_form(401, headers, nxt, "Wrong token." if token else "No dashboard token is configured.")
    secure = _secure(headers)
    return 303, b"", [("Location", nxt),
                      ("Set-Cookie", cookie_header(SESSION_COOKIE, SESSIONS.open(token), SESSION_SECONDS, "/", secure)),
                      ("Set-Cookie", cookie_header(LOGIN_COOKIE, "", 0, "/login", secure))]


def logout(headers: Message) -> Answer:
    """POST /logout: the session ends here (SameSite=Strict: another site's form carries no cookie)."""
    session = cookies(headers.get("Cookie") or "").get(SESSION_COOKIE)
    if session:
        SESSIONS.close(session)
    return 303, b"", [("Location", "/login"),
                      ("Set-Cookie", cookie_header(SESSION_COOKIE, "", 0, "/", _secure(headers)))]


def session_ok(headers: Message, token: bytes) -> bool:
    session = cookies(headers.get("Cookie") or "").get(SESSION_COOKIE)
    return bool(session) and SESSIONS.valid(session or "", token)


# ---- what the bot knows: the ledger ---------------------------------------------------------
def _raw_fields(raw: Any) -> dict[str, Any]:
    try:
        data = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def market_names(engine: Engine, assets: Iterable[str]) -> dict[str, str]:
    """asset -> 'title (outcome)' from the newest leader trade in it, as the Data API named it."""
    wanted = sorted(set(assets))
    if not wanted:
        return {}
    ledger = engine.ledger
    with ledger.lock:
        rows = ledger.db.execute(
            f"SELECT asset, raw FROM leader_trades WHERE id IN (SELECT MAX(id) FROM leader_trades WHERE asset IN "
            f"({','.join('?' * len(wanted))}) GROUP BY asset)", wanted).fetchall()
    out: dict[str, str] = {}
    for asset, raw in rows:
        f = _raw_fields(raw)
        name = str(f.get("title") or f.get("slug") or "")
        outcome = f.get("outcome")
        out[str(asset)] = f"{name} ({outcome})" if name and outcome else name
    return out


def last_orders(engine: Engine, limit: int = LAST_ORDERS) -> list[dict[str, Any]]:
    rows = engine.ledger.rows(
        "SELECT o.id, o.created_at, o.mode, o.side, o.token_id, o.price, o.usd, o.status, o.filled_usd, "
        "t.leader, t.raw FROM orders o LEFT JOIN decisions d ON d.id = o.decision_id "
        "LEFT JOIN leader_trades t ON t.id = d.leader_trade_id ORDER BY o.id DESC LIMIT ?", (limit,))
    for r in rows:
        f = _raw_fields(r.pop("raw"))
        r["leader_name"] = f.get("name") or f.get("pseudonym") or None
        r["market"] = f.get("title") or f.get("slug") or None
    return rows


def pnl_today(engine: Engine) -> dict[str, float | None]:
    """The money figures the engine took last (money.py: after marking the positions to the best bid, every
    RISK_REFRESH seconds; the same as /metrics on METRICS_PORT); all unknown before the first."""
    snap = engine.money.snapshot
    if snap is None:
        return dict.fromkeys(("realised_usd", "unrealised_usd", "total_usd", "balance_usd", "exposure_usd",
                              "volume_usd", "as_of", "age_seconds"))

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {"realised_usd": r(snap.realised_today), "unrealised_usd": r(snap.unrealised),
            "total_usd": r(snap.realised_today + snap.unrealised), "balance_usd": r(snap.balance),
            "exposure_usd": r(snap.exposure), "volume_usd": r(snap.volume_today), "as_of": snap.at,
            "age_seconds": round(max(0.0, time.time() - snap.at), 1)}


def _money_rows(pnl: Mapping[str, Any], exposure: bool = True) -> list[tuple[str, str]]:
    """The snapshot's figures; /system shows the live exposure of the risk limits instead."""
    rows = [
        ("PnL today", usd(pnl["total_usd"])),
        ("realised · unrealised", usd(pnl["realised_usd"]) + " · " + usd(pnl["unrealised_usd"])),
        ("USDC balance", usd(pnl["balance_usd"])),
        ("exposure", usd(pnl["exposure_usd"])),
        ("volume today", usd(pnl["volume_usd"])),
        ("money figures from", age(pnl["age_seconds"]) + (esc(" ago") if pnl["age_seconds"] is not None else "")),
    ]
    return rows if exposure else [r for r in rows if r[0] != "exposure"]


def lease(engine: Engine) -> dict[str, Any]:
    """This node's view of the trading lease (LEASE_FILE, set by polymarket-ha)."""
    if engine.cfg.lease_file is None:
        return {"configured": False, "held": None, "detail": "no lease configured (single node)"}
    held, detail = engine.lease_ok()
    return {"configured": True, "held": held, "node": engine.cfg.lease_node, "detail": detail}


# ---- textfile metrics (the node exporter's directory) ----------------------------------------
def textfile_metrics(directory: Path, names: Iterable[str]) -> dict[str, float]:
    """The newest value of each metric name found in ``directory``/*.prom (regular files only, each read up to
    1 MiB, never blocking on a FIFO); a name in no file is absent from the answer."""
    wanted = set(names)
    out: dict[str, float] = {}
    try:
        entries = sorted(directory.glob("*.prom"))
    except OSError:
        return out
    for path in entries:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            text = os.read(fd, TEXTFILE_LIMIT).decode("utf-8", "replace")
        except OSError:
            continue
        finally:
            os.close(fd)
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            name = name.split("{", 1)[0]
            if name in wanted:
                try:
                    value = float(rest.split()[0])
                except (IndexError, ValueError):
                    continue
                if not math.isfinite(value):  # NaN/+Inf: an unknown figure, never a time or an age
                    continue
                out[name] = max(value, out.get(name, value))
    return out


BACKUP_METRICS = ("polymarket_backup_last_success_timestamp_seconds", "polymarket_backup_last_verify_ok",
                  "polymarket_backup_last_offsite_timestamp_seconds")


def backup_status(directory: Path) -> dict[str, Any]:
    m = textfile_metrics(directory, BACKUP_METRICS)
    now = time.time()
    last, offsite = m.get(BACKUP_METRICS[0]), m.get(BACKUP_METRICS[2])
    verify = m.get(BACKUP_METRICS[1])
    return {"source": str(directory),
            "last_success": last, "age_seconds": None if last is None else round(now - last, 1),
            "last_verify_ok": None if verify is None else verify == 1,
            "last_offsite": offsite, "offsite_age_seconds": None if offsite is None else round(now - offsite, 1)}


# ---- the pages ------------------------------------------------------------------------------
def _cluster(ha: Mapping[str, Any]) -> dict[str, Any]:
    cluster = ha.get("cluster")
    return cluster if isinstance(cluster, dict) else {}


def _replication(cluster: Mapping[str, Any]) -> tuple[float | None, Any]:
    last = cluster.get("last_replication")
    if not isinstance(last, dict):
        return None, None
    return _iso_age(last.get("at")), last.get("result")


def _failing(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    controls = report.get("controls")
    if not isinstance(controls, list):
        return []
    return [c for c in controls if isinstance(c, dict) and c.get("status") == "fail"]


def _score(report: Mapping[str, Any]) -> tuple[Any, Any]:
    score, threshold = report.get("score"), report.get("threshold")
    ok = None
    if isinstance(score, int | float) and isinstance(threshold, int | float):
        ok = score >= threshold and not report.get("critical_failures")
    return score, ok


def summary(engine: Engine, health: Mapping[str, Any], ha: Mapping[str, Any], compliance: Mapping[str, Any],
            backup: Mapping[str, Any]) -> dict[str, Any]:
    """The data of ``/``: what an operator looks at first."""
    mode = str(engine.mode)
    positions = engine.ledger.positions(mode)
    names = market_names(engine, (p.asset for p in positions))
    cluster = _cluster(ha)
    rep_age, rep_result = _replication(cluster)
    score, compliant = _score(compliance)
    return {
        "node": os.uname().nodename, "mode": mode, "health": dict(health),
        "positions": [{"asset": p.asset, "market": names.get(p.asset) or None, "shares": p.shares, "cost_usd": p.cost,
                       "avg_price": round(p.avg_price, 4)} for p in positions],
        "pnl_today": pnl_today(engine),
        "last_orders": last_orders(engine, 10),
        "lease": lease(engine),
        "ha": {"vrrp_state": cluster.get("vrrp_state"), "lease": cluster.get("lease"),
               "replication_age_seconds": None if rep_age is None else round(rep_age, 1),
               "replication_result": rep_result, "split_brain": cluster.get("split_brain")},
        "backup": dict(backup),
        "compliance": {"score": score, "compliant": compliant,
                       "failing": [c.get("id") for c in _failing(compliance)]},
    }


def _positions_html(rows: list[dict[str, Any]]) -> str:
    return table(("market", "asset", "shares", "cost USD", "avg price"),
                 ([esc(r["market"]), esc(r["asset"]), num(esc(f"{r['shares']:,.2f}")), num(usd(r["cost_usd"])),
                   num(esc(r["avg_price"]))] for r in rows), "no open position")


def _orders_html(rows: list[dict[str, Any]]) -> str:
    return table(("UTC", "side", "market", "leader", "price", "USD", "filled", "status"),
                 ([when(r["created_at"], "%m-%d %H:%M:%S"), esc(r["side"]), esc(r["market"] or r["token_id"]),
                   esc(r["leader_name"] or r["leader"]), num(esc(r["price"])), num(usd(r["usd"])),
                   num(usd(r["filled_usd"])), esc(r["status"])] for r in rows), "no order yet")


def _lease_html(info: Mapping[str, Any]) -> str:
    if not info.get("configured"):
        return esc(info.get("detail"))
    held = bool(info.get("held"))
    who = f"this node ({info.get('node')})" if held else "not this node"
    return f"{flag(held, who, who)} · {esc(info.get('detail'))}"


def render_summary(data: Mapping[str, Any]) -> bytes:
    h, pnl, ha, backup, comp = data["health"], data["pnl_today"], data["ha"], data["backup"], data["compliance"]
    failing = comp["failing"]
    body = dl([
        ("status", flag(h.get("status") == "ok", "ok", str(h.get("status")))),
        ("mode · role", esc(f"{data['mode']} · {h.get('role')}")),
        ("exchange", flag(h.get("exchange") == "reachable", "reachable", "unreachable")),
        ("last poll", age(h.get("last_poll_age_seconds"))),
        *_money_rows(pnl),
        ("lease holder", _lease_html(data["lease"])),
        ("VRRP state", esc(ha["vrrp_state"])),
        ("last replication", age(ha["replication_age_seconds"]) + (f" ({esc(ha['replication_result'])})"
                                                                  if ha["replication_result"] else "")),
        ("last backup", age(backup["age_seconds"])),
        ("compliance", (esc(f"{comp['score']}%") if comp["score"] is not None else esc(None))
         + (" · " + flag(comp["compliant"], "compliant", "not compliant") if comp["compliant"] is not None else "")),
        ("failing controls", esc(", ".join(str(f) for f in failing)) if failing else esc("none")
         if comp["score"] is not None else esc(None)),
    ])
    body += "<h2>Positions</h2>" + _positions_html(data["positions"])
    body += "<h2>Last orders</h2>" + _orders_html(data["last_orders"])
    return document("/", "Summary", body)


def render_system(data: Mapping[str, Any], engine: Engine) -> bytes:
    h, risk = data.get("health", {}), data.get("risk", {})
    load = data.get("load") or ()
    cb = risk.get("circuit_breaker", {})
    body = dl([
        ("status", flag(h.get("status") == "ok", "ok", str(h.get("status")))),
        ("database", flag(h.get("database") == "ok", "ok", str(h.get("database")))),
        ("exchange", flag(h.get("exchange") == "reachable", "reachable", "unreachable")),
        ("last poll", age(h.get("last_poll_age_seconds"))),
        ("mode · role", esc(f"{h.get('mode')} · {h.get('role')}")),
        ("leaders", esc(h.get("leaders"))),
        ("open decisions", esc(h.get("open_decisions"))),
        ("pid", esc(data.get("pid"))),
        ("memory", esc(f"{int(data.get('rss_kb') or 0) / 1024:.1f} MiB")),
        ("load", esc(" ".join(f"{x:.2f}" for x in load))),
        ("uptime", age(data.get("uptime_seconds"))),
    ])
    body += "<h2>Risk</h2>" + dl([
        ("kill switch", flag(not risk.get("kill_switch", {}).get("active"), "off", "ON: no order is sent")),
        ("circuit breaker", flag(not cb.get("open_for_seconds"), "closed",
                                 f"open {cb.get('open_for_seconds')} s")),
        ("order errors in a row", esc(cb.get("errors_in_a_row"))),
        *_money_rows(pnl_today(engine), exposure=False),
        ("daily loss / limit", esc(f"{risk.get('daily_loss_usd')} / {risk.get('max_daily_loss_usd') or 'no limit'}")),
        ("exposure / limit", esc(f"{risk.get('total_exposure_usd')} / "
                                 f"{risk.get('max_total_exposure_usd') or 'no limit'}")),
        ("position drift corrections", esc(risk.get("position_drift_corrections"))),
        ("geoblock", esc(json.dumps(risk.get("geoblock"), default=str))),
    ])
    return document("/system", "System", body)


def render_ha(data: Mapping[str, Any], engine: Engine, backup: Mapping[str, Any]) -> bytes:
    cluster = _cluster(data)
    rep_age, rep_result = _replication(cluster)
    cl_lease, peer = cluster.get("lease"), cluster.get("peer")
    cl_lease = cl_lease if isinstance(cl_lease, dict) else None
    peer = peer if isinstance(peer, dict) else {}
    rows = [
        ("this node", esc(f"{data.get('hostname')} · {data.get('role')}")),
        ("lease holder", _lease_html(lease(engine))),
        ("lease (heartbeat)", esc(None) if cl_lease is None
         else flag(bool(cl_lease.get("held")), "held", "not held") + " · " + esc(cl_lease.get("detail"))),
        ("VRRP state", esc(cluster.get("vrrp_state"))),
        ("virtual IP", esc(cluster.get("virtual_ip"))
         + (" · " + flag(bool(cluster.get("vip_held")), "held here", "not here") if "vip_held" in cluster else "")),
        ("peer", esc(peer.get("address")) + (f" · /health {esc(peer.get('http'))} · {esc(peer.get('role'))}"
                                             if peer else "")),
        ("last replication", age(rep_age) + (f" ({esc(rep_result)})" if rep_result else "")),
        ("replica here from", esc(cluster.get("replica_at"))),
        ("split brain", esc(None) if "split_brain" not in cluster
         else flag(not cluster.get("split_brain"), "no", "YES: both nodes active")),
        ("heartbeat at", esc(cluster.get("checked_at"))),
    ]
    if data.get("detail"):
        rows.append(("detail", esc(data.get("detail"))))
    body = dl(rows)
    backends = cluster.get("backends")
    if isinstance(backends, dict):
        body += "<h2>Backends</h2>" + table(("address", "/health", "role"), (
            [esc(a), esc(b.get("http") if isinstance(b, dict) else None),
             esc(b.get("role") if isinstance(b, dict) else None)] for a, b in backends.items()))
    body += "<h2>Backup</h2>" + render_backup(backup)
    return document("/ha", "HA status", body)


def render_backup(backup: Mapping[str, Any]) -> str:
    return dl([
        ("last backup", age(backup.get("age_seconds")) + " · " + when(backup.get("last_success"))),
        ("last verify", flag(backup.get("last_verify_ok"), "passed", "FAILED")),
        ("last off-site copy", age(backup.get("offsite_age_seconds"))),
    ])


def render_compliance(data: Mapping[str, Any]) -> bytes:
    score, compliant = _score(data)
    if data.get("report", "") is None:
        body = dl([("score", esc(None)), ("detail", esc(data.get("detail")))])
        return document("/compliance", "Compliance", body)
    failing = _failing(data)
    body = dl([
        ("host", esc(data.get("host"))),
        ("audited at", esc(data.get("time"))),
        ("score", esc(f"{score}%") if score is not None else esc(None)),
        ("threshold", esc(data.get("threshold"))),
        ("compliant", flag(compliant, "yes", "no")),
        ("critical failures", esc(", ".join(str(x) for x in data.get("critical_failures") or []) or "none")),
    ])
    body += "<h2>Failing controls</h2>" + table(
        ("control", "name", "expected", "actual"),
        ([esc(c.get("id")) + (" <span class='bad'>critical</span>" if c.get("critical") else ""),
          esc(c.get("name")), esc(c.get("expected")), esc(c.get("actual"))] for c in failing), "none")
    controls = [c for c in data.get("controls") or [] if isinstance(c, dict)]
    body += "<h2>All controls</h2>" + table(("control", "status"), (
        [esc(c.get("id")), flag(c.get("status") != "fail", str(c.get("status")), "fail")] for c in controls))
    return document("/compliance", "Compliance", body)


def render_metrics(data: Mapping[str, Any]) -> bytes:
    counts = data.get("decisions") or {}
    body = "<h2>Decisions</h2>" + table(("decision", "count"), ([esc(k), num(esc(v))] for k, v in counts.items()))
    body += "<h2>Recent decisions</h2>" + table(("time", "decision", "reason", "leader", "side", "asset"), (
        [when(d.get("created_at")), esc(d.get("decision")), esc(d.get("reason")), esc(d.get("leader")),
         esc(d.get("side")), esc(d.get("asset"))] for d in data.get("recent") or []))
    body += "<h2>Prometheus</h2><pre>" + esc_block("\n".join(data.get("prometheus") or [])) + "</pre>"
    return document("/metrics", "Application metrics", body)


def render(path: str, data: Mapping[str, Any], engine: Engine) -> bytes:
    """The HTML of a page from the data its JSON has."""
    if path == "/":
        return render_summary(data)
    if path == "/system":
        return render_system(data, engine)
    if path == "/ha":
        return render_ha(data, engine, backup_status(engine.cfg.textfile_dir))
    if path == "/compliance":
        return render_compliance(data)
    return render_metrics(data)
