"""Outside review of the bot's surface landed on 2026-11-30 (pages, /live, config get, money metrics, the fence).

Each test states what an outsider observes when the defect is there: the fake exchange's order log, the bytes
``polymarket-bot config get`` prints, the HTTP answer of the dashboard or of METRICS_PORT. They are marked
``xfail(strict=True)`` until the product is fixed: a fix turns them into XPASS, which fails the run, so the
marker must then be removed (the test becomes the regression test).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import LEADERS, ME, NO, NYES, ROOT, YES, Harness
from polymarket_bot.errors import ConfigError
from polymarket_bot.server import start_servers
from test_lease import write_lease
from test_pages import TOKEN, Bot, login, request
from test_service import free_port, start, stop, wait_for

PKG = ROOT / "packages" / "polymarket-bot"


def cli(env_file: Path, *args: str, state: Path) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(PKG), "LC_ALL": "C.UTF-8",
           "POLYMARKET_STATE_DIRECTORY": str(state)}
    return subprocess.run([sys.executable, "-m", "polymarket_bot", "--config", str(env_file), *args],
                          capture_output=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


def write_env(path: Path, text: bytes) -> Path:
    path.write_bytes(text)
    path.chmod(0o600)
    return path


def scrape(port: int) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [(line.split(" ")[0], line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")]


def _scrape_or_nothing(port: int) -> list[tuple[str, str]]:
    try:
        return scrape(port)
    except OSError:
        return []


# ---- money: a malformed exchange answer -----------------------------------------------------------------------
def _loss_then_a_buy(h: Harness, yes_bid: Any) -> tuple[int, dict[str, str]]:
    """Two buys; NO's price falls 8 USD (over MAX_DAILY_LOSS_USD 4.5), YES's best bid is ``yes_bid``, then a new
    leader buy: how many orders the fake exchange received, and the non-finite samples /metrics exported."""
    e = h.engine(MAX_DAILY_LOSS_USD="4.5")
    servers = list(start_servers(e, 0, 0))
    try:
        h.trade(leader=0, asset=YES, ago=5, transactionHash="0x1")
        h.trade(leader=1, asset=NO, ago=5, transactionHash="0x2")
        e.poll_once()
        assert len(h.ex.s.orders) == 2                              # 10 USD each, 20 shares each at 0.50
        h.ex.set_book(NO, [[0.10, 10000]], [[0.11, 10000]])         # NO loses 8 USD: over the 4.5 USD limit
        h.ex.set_book(YES, [[yes_bid, 10000]], [[0.50, 10000]])
        h.trade(leader=0, asset=NYES, ago=2, transactionHash="0x3")  # a new buy the limit must hold
        e.last_mark_to_market = 0                                    # mark now (RISK_REFRESH is 30 s)
        e.poll_once()
        samples = dict(scrape(servers[1].server_address[1]))
        return len(h.ex.s.orders), {k: v for k, v in samples.items()
                                    if k.startswith("polymarket_") and v.lower() in ("nan", "inf", "-inf")}
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_control_the_daily_loss_limit_holds_a_buy_with_a_sane_book(h: Harness) -> None:
    assert _loss_then_a_buy(h, 0.49) == (2, {})


@pytest.mark.parametrize("bid", ["NaN", "Infinity"])
def test_a_nan_best_bid_lifts_the_daily_loss_limit(h: Harness, bid: str) -> None:
    orders, bad = _loss_then_a_buy(h, bid)                           # the venue's book for YES is garbage
    assert orders == 2, f"the daily loss limit let order 3 out; exported {bad}"
    assert not bad, bad


def test_a_balance_too_large_for_a_float_kills_the_bot(h: Harness, tmp_path: Path) -> None:
    h.ex.s.balances[ME.lower()] = 10 ** 400                          # a malformed/huge collateral figure
    port, mport = free_port(), free_port()
    env = h.env(DASHBOARD_PORT=port, METRICS_PORT=mport, POLL_INTERVAL="0.1", LOG_FILE="")
    env_file = write_env(tmp_path / "bot.env", "".join(f"{k}={v}\n" for k, v in env.items()).encode())
    p = start(env_file)
    try:
        # dead, or alive with the money figures taken (the first mark, where the balance is read): never a timeout
        wait_for(lambda: p.poll() is not None or any(n == "polymarket_money_timestamp_seconds"
                                                     for n, _ in _scrape_or_nothing(mport)), 60)
        died = p.poll() is not None
        live = request(port, "/live").status if not died else 0
        assert not died and live == 200, f"exit {p.returncode}: " + (p.stderr.read()[-1500:] if died and p.stderr
                                                                      else "")
    finally:
        if p.poll() is None:
            stop(p)


class _BookWith:
    """The engine's CLOB client, with GET /book for one token answered by ``book`` (the rest passed through)."""

    def __init__(self, inner: Any, token: str, book: dict[str, Any]) -> None:
        self.inner, self.token, self.book = inner, token, book

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        if path == "/book" and (params or {}).get("token_id") == self.token:
            return self.book
        return self.inner.get(path, params, **kw)


def test_a_nan_level_among_several_in_a_book_does_not_stop_the_engine(h: Harness) -> None:
    e = h.engine()
    h.trade(leader=0, asset=YES, ago=5, transactionHash="0x1")
    e.poll_once()
    assert len(h.ex.s.orders) == 1
    e.clob = _BookWith(  # type: ignore[assignment]
        e.clob, YES, {"market": "0x" + "c1" * 32, "asset_id": YES,
                                     "bids": [{"price": "0.30", "size": "10"}, {"price": "NaN", "size": "10"}],
                                     "asks": [{"price": "0.50", "size": "10000"}], "tick_size": "0.01",
                                     "min_order_size": "5", "neg_risk": False})
    e.last_mark_to_market = 0
    try:
        e.poll_once()
    except Exception as exc:  # what ends Engine.run (and the process) is the finding
        pytest.fail(f"the engine loop would end: {exc.__class__.__module__}.{exc.__class__.__name__}")


def test_the_money_metrics_are_not_served_without_the_token(h: Harness) -> None:
    e = h.engine()
    servers = list(start_servers(e, 0, 0))
    try:
        h.trade(leader=0, asset=YES, ago=5, transactionHash="0x1")
        e.poll_once()
        assert len(h.ex.s.orders) == 1
        assert request(servers[0].server_address[1], "/metrics", headers={"Accept": "text/plain"}).status == 401
        samples = scrape(servers[1].server_address[1])                   # no Authorization header
        leaked = [name for name, _ in samples if name.startswith(("polymarket_usdc_balance_usd",
                                                                   "polymarket_realised_pnl_today_usd"))
                  or LEADERS[0] in name]
        assert not leaked, leaked
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


# ---- /live (liveness for HA) ------------------------------------------------------------------------------------
def test_a_hanging_book_endpoint_keeps_one_loop_turn_under_the_live_threshold(h: Harness) -> None:
    tokens = []
    for i in range(8):                                                   # 16 open positions
        pair = [str(5000 + 2 * i), str(5001 + 2 * i)]
        h.ex.add_market({"conditionId": "0x" + f"{i + 1:064x}", "slug": f"market-{i}", "tokens": pair})
        for t in pair:
            h.ex.set_book(t, [[0.49, 10000]], [[0.50, 10000]])
        tokens += pair
    timeout = 0.1                                                        # the turn scales with it, as live()'s bound
    e = h.engine(HTTP_TIMEOUT=timeout, MAX_DAILY_VOLUME="100000", MAX_POSITION_SIZE="1000")
    for n, t in enumerate(tokens):
        h.trade(leader=n % 2, asset=t, ago=3, transactionHash=f"0x{n + 1:x}")
    e.poll_once()
    assert len(e.ledger.positions("live")) == len(tokens) == len(h.ex.s.orders)
    h.ex.add_fault("/book", "timeout", count=10**6, delay=1)             # the CLOB's book endpoint hangs
    e.last_mark_to_market = 0                                            # the turn that marks the positions
    started = time.monotonic()
    e.poll_once()
    took = time.monotonic() - started
    bound = 60 * timeout                                                 # server.live's bound above the 300 s floor
    assert took < bound, (f"one loop turn took {took:.1f} s = {took / timeout:.0f} x HTTP_TIMEOUT > 60 x: at "
                          f"HTTP_TIMEOUT=5 that is {took / timeout * 5:.0f} s, /live 503 after 300 s")


# ---- the fence -------------------------------------------------------------------------------------------------
class _Keeper:
    """polymarket-ha's lease keeper as the bot sees it (FENCE_SOCKET's JSON lines: copied, record, forget), with
    etcd's copied keys in a dict; the first ``slow`` records are written, then answered after ``delay`` seconds."""

    def __init__(self, path: Path, slow: int, delay: float) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.slow, self.delay = slow, delay
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            req = json.loads(conn.recv(65536))
            answer: dict[str, Any] = {"ok": True}
            if req["op"] == "copied":
                answer = {"ok": True, "keys": dict(self.keys), "generation": 1}
            elif req["op"] == "record":
                self.keys[req["key"]] = {"holder": "primary", "order": req.get("order", "")}
                if self.slow > 0:
                    self.slow -= 1
                    time.sleep(self.delay)          # etcd applied the transaction; its answer comes late
            elif req["op"] == "forget":
                self.keys.pop(req["key"], None)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")


def test_a_fence_answer_that_times_out_after_etcd_wrote_does_not_lose_the_trade(h: Harness, tmp_path: Path) -> None:
    write_lease(tmp_path / "lease", "primary", 3600)
    keeper = _Keeper(tmp_path / "fence.sock", slow=1, delay=3.0)
    try:
        e = h.engine(LEASE_FILE=tmp_path / "lease", LEASE_NODE="primary", FENCE_SOCKET=tmp_path / "fence.sock")
        h.trade(leader=0, asset=YES, ago=1, transactionHash="0x1")
        deadline = time.monotonic() + 8     # the 2 s fence timeout, then polls
        while not h.ex.s.orders and time.monotonic() < deadline:
            e.poll_once()
            time.sleep(0.2)
        assert len(h.ex.s.orders) == 1, (f"orders at the exchange: {len(h.ex.s.orders)}; etcd keys "
                                         f"{list(keeper.keys)}; decisions {h.decisions(e)}")
    finally:
        keeper.sock.close()


# ---- config get (issue 8) -------------------------------------------------------------------------------------
def test_config_get_db_path_refuses_a_ledger_that_is_a_link_out_of_the_state_directory(tmp_path: Path) -> None:
    state, outside = tmp_path / "state", tmp_path / "elsewhere"
    state.mkdir()
    outside.mkdir()
    target = outside / "shadow"
    target.write_bytes(b"root:$6$secret:19000:0:99999:7:::\n")
    (state / "trade_history.db").symlink_to(target)
    f = write_env(tmp_path / "env", f"DB_PATH={state}/trade_history.db\n".encode())
    r = cli(f, "config", "get", "DB_PATH", state=state)
    assert r.returncode == 1 and r.stdout == b"", (r.returncode, r.stdout, r.stderr)
    assert cli(f, "validate-config", state=state).returncode == 1


def test_config_get_never_prints_a_control_character(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    f = write_env(tmp_path / "env", f"DB_PATH={state}/a\x1b]2;owned\x07\x1b[8m.db\n".encode())
    r = cli(f, "config", "get", "DB_PATH", state=state)
    shown = r.stdout + r.stderr
    assert not any(c < 0x20 and c != 0x0A for c in shown), (r.returncode, shown)


# ---- the dashboard: node files another user writes ---------------------------------------------------------------
def test_a_nan_backup_metric_does_not_take_the_summary_page_down(h: Harness, tmp_path: Path) -> None:
    b = Bot(h, tmp_path)
    try:
        (b.textfiles / "polymarket-backup.prom").write_text(
            "polymarket_backup_last_success_timestamp_seconds NaN\npolymarket_backup_last_verify_ok 1\n")
        answers: dict[str, int | str] = {}
        for path in ("/", "/ha"):
            try:
                answers[path] = request(b.port, path, headers={"Authorization": f"Bearer {TOKEN}",
                                                               "Accept": "text/html"}).status
            except (OSError, ValueError) as exc:  # http.client.RemoteDisconnected: no answer at all
                answers[path] = f"{exc.__class__.__name__}"
        assert answers == {"/": 200, "/ha": 200}, answers
    finally:
        stop(b.proc)


def test_a_bidi_override_in_a_market_title_is_shown_not_obeyed(h: Harness, tmp_path: Path) -> None:
    b = Bot(h, tmp_path)
    try:
        h.trade(leader=0, asset=YES, title="Will it rain \u202e?oN seY\u202c", outcome="Yes",
                name="whale\u2066\u200b")
        assert wait_for(lambda: len(h.ex.s.orders) == 1, 20)
        page = ""

        def shown() -> bool:
            nonlocal page
            page = request(b.port, "/", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"}).text
            return "Will it rain" in page
        assert wait_for(shown, 10), page[-2000:]
        raw = sorted({f"U+{ord(c):04X}" for c in page if c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068"
                      "\u2069\u200b\u200e\u200f"})
        assert not raw, f"obeyed by the browser, not shown: {raw}"
    finally:
        stop(b.proc)


def test_repeated_wrong_logins_from_one_peer_are_throttled(h: Harness) -> None:
    e = h.engine()
    servers = list(start_servers(e, 0, 0))
    try:
        port = servers[0].server_address[1]
        started = time.monotonic()
        statuses = [login(port, f"guess-{n:04d}").status for n in range(100)]
        took = time.monotonic() - started
        assert any(st == 429 for st in statuses) or took > 30, (
            f"100 guesses in {took:.1f} s, answered {sorted(set(statuses))}")
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def test_a_compliance_report_that_is_not_an_object_leaves_the_pages_up(h: Harness, tmp_path: Path) -> None:
    b = Bot(h, tmp_path)
    try:
        b.report.write_text("[]\n")
        answers: dict[str, int | str] = {}
        for path in ("/", "/compliance"):
            try:
                answers[path] = request(b.port, path, headers={"Authorization": f"Bearer {TOKEN}",
                                                               "Accept": "text/html"}).status
            except (OSError, ValueError) as exc:
                answers[path] = f"{exc.__class__.__name__}"
        assert answers == {"/": 200, "/compliance": 200}, answers
    finally:
        stop(b.proc)



def test_a_page_that_fails_to_render_answers_500_not_a_closed_connection(h: Harness, tmp_path: Path) -> None:
    """A compliance report that is an object whose fields have odd types (critical_failures a number): whatever
    the page makes of it, the browser gets an answer (200 with the figure unknown, or a 500 page), never a
    connection closed without one."""
    b = Bot(h, tmp_path)
    try:
        b.report.write_text('{"score": 90, "threshold": 80, "critical_failures": 5, "controls": 7}\n')
        try:
            status: object = request(b.port, "/compliance", headers={"Authorization": f"Bearer {TOKEN}",
                                                                     "Accept": "text/html"}).status
        except (OSError, ValueError) as exc:
            status = exc.__class__.__name__
        assert status in (200, 500), status
        assert request(b.port, "/live").status == 200                    # the listener still answers
    finally:
        stop(b.proc)


def test_config_get_never_prints_the_api_key_of_an_rpc_url(tmp_path: Path) -> None:
    """An Infura/Alchemy-style POLYGON_RPC_URL carries its API key in the path: config get shows the host only,
    and an invalid one is never echoed in the error either."""
    state = tmp_path / "state"
    state.mkdir()
    key = "k3yS3cr3tAlchemy0123456789"
    f = write_env(tmp_path / "env", f"POLYGON_RPC_URL=https://polygon-mainnet.g.alchemy.com/v2/{key}\n".encode())
    r = cli(f, "config", "get", "POLYGON_RPC_URL", state=state)
    assert r.returncode == 0 and r.stdout == b"https://polygon-mainnet.g.alchemy.com/<redacted>\n", r
    bad = write_env(tmp_path / "bad", f"POLYGON_RPC_URL=https://polygon.infura.io/v3/{key} x\n".encode())
    for args in (("config", "get", "POLYGON_RPC_URL"), ("validate-config",)):
        r = cli(bad, *args, state=state)
        assert r.returncode == 1 and key.encode() not in r.stdout + r.stderr, (args, r)


class _KeeperForgetFails(_Keeper):
    """As _Keeper, but etcd can't be reached for the bot's ``forget`` (the key it wrote late stays)."""

    def _one(self, conn: socket.socket) -> None:
        peek = conn.recv(65536, socket.MSG_PEEK)
        if b'"forget"' in peek:
            with conn:
                conn.recv(65536)
                conn.sendall(b'{"ok": false, "error": "etcd unavailable"}\n')
            return
        super()._one(conn)


def test_a_late_fence_record_that_cannot_be_forgotten_is_resolved_with_the_exchange(h: Harness,
                                                                                    tmp_path: Path) -> None:
    """The late record stays in etcd under this node's name: the promotion asks the exchange about that order
    (it never saw it) and copies the trade once, instead of taking its own key for a peer's copy."""
    write_lease(tmp_path / "lease", "primary", 3600)
    keeper = _KeeperForgetFails(tmp_path / "fence.sock", slow=1, delay=3.0)
    try:
        e = h.engine(LEASE_FILE=tmp_path / "lease", LEASE_NODE="primary", FENCE_SOCKET=tmp_path / "fence.sock")
        h.trade(leader=0, asset=YES, ago=1, transactionHash="0x1")
        deadline = time.monotonic() + 8
        while not h.ex.s.orders and time.monotonic() < deadline:
            e.poll_once()
            time.sleep(0.2)
        assert len(keeper.keys) == 1, keeper.keys                        # the late record was not taken back
        assert len(h.ex.s.orders) == 1, (f"orders at the exchange: {len(h.ex.s.orders)}; decisions "
                                         f"{h.decisions(e)}")
        for _ in range(3):                                               # and never a second time
            e.poll_once()
        assert len(h.ex.s.orders) == 1
    finally:
        keeper.sock.close()


def test_the_fence_timeout_bounds_the_whole_answer_not_each_read(tmp_path: Path) -> None:
    """A keeper that trickles its answer a byte at a time: the bot's fence gives up after its timeout."""
    from polymarket_bot.fence import Fence, FenceError
    path = tmp_path / "fence.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def trickle() -> None:
        conn, _ = srv.accept()
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            for c in b'{"ok": true, "pad": "' + b"x" * 100:
                conn.sendall(bytes([c]))
                time.sleep(0.2)
    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(FenceError):
            Fence(path, timeout=1.0).record("k", 60, "0xabc")
        assert time.monotonic() - started < 3, time.monotonic() - started
    finally:
        srv.close()


def test_with_a_metrics_token_file_metrics_port_serves_everything_to_the_token_only(h: Harness,
                                                                                   tmp_path: Path) -> None:
    """METRICS_TOKEN_FILE: no header or a wrong token is 401 (throttled after 10 wrong ones), the token gets
    every series, the money ones included (what Prometheus's authorization credentials_file sends)."""
    from polymarket_bot import config
    token = "m" * 40
    f = tmp_path / "metrics-token"
    f.write_text(token + "\n")
    f.chmod(0o640)
    e = h.engine(METRICS_TOKEN_FILE=f)
    servers = list(start_servers(e, 0, 0))
    try:
        h.trade(leader=0, asset=YES, ago=5, transactionHash="0x1")
        e.poll_once()
        port = servers[1].server_address[1]

        def get(auth: str | None) -> tuple[int, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": auth} if auth else {})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()
        status, text = get(None)
        assert status == 401 and "polymarket_" not in text, (status, text[:200])
        status, text = get(f"Bearer {token}")
        assert status == 200 and "polymarket_usdc_balance_usd" in text and LEADERS[0].lower() in text.lower()
        statuses = [get(f"Bearer wrong-{n}")[0] for n in range(14)]
        assert statuses[:10] == [401] * 10 and 429 in statuses, statuses
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    f.chmod(0o644)                                                   # readable by every local user: refused
    with pytest.raises(ConfigError) as refused:
        config.load(None, h.env(METRICS_TOKEN_FILE=f))
    assert any(p.startswith("METRICS_TOKEN_FILE:") and token not in p for p in refused.value.problems), refused



def test_a_nan_leader_portfolio_value_is_malformed_not_fatal(h: Harness) -> None:
    """SIZING_MODE=balance divides by the leader's /value: a NaN there is one failed decision (malformed), no
    order, and the engine goes on (a NaN USD amount reached Decimal comparisons: InvalidOperation ended it)."""
    e = h.engine(SIZING_MODE="balance")
    h.ex.s.leader_values[LEADERS[0].lower()] = float("nan")
    h.trade(leader=0, asset=YES, ago=5, transactionHash="0x1")
    try:
        e.poll_once()
    except Exception as exc:
        pytest.fail(f"the engine loop would end: {exc.__class__.__module__}.{exc.__class__.__name__}")
    assert h.ex.s.orders == [] and [d for d, _ in h.decisions(e)] == ["failed"], h.decisions(e)
