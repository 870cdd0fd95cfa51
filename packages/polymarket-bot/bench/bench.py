"""Latency, throughput and memory of the bot service against the fake exchange on loopback.

Three processes, as in production: this harness, the fake exchange
(``python3 -m polymarket_bot.fake_exchange --port N``) and the bot service itself
(``python3 -m polymarket_bot --config FILE run``). For 1, 10 and 100 leaders it prints:

* detection: a leader trade becoming visible on the Data API -> the bot's poll returning it
  (bounded by POLL_INTERVAL);
* processing: that poll returning -> our order accepted by the CLOB (the bot's own
  ``latency_ms`` in the ledger; includes queueing behind trades of the same poll);
* end to end: visible -> accepted (= detection + processing);
* trades/s handled in a burst of trades visible at the same instant;
* Data API requests per second during the run, against Polymarket's published limits;
* the service's resident memory (VmRSS now, VmHWM peak) from /proc/PID/status.

Figures only: nothing here passes or fails on timing. Usage:
``python3 bench/bench.py [--trades 40] [--burst 200] [--poll 0.5] [--leaders 1,10,100]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PKG = HERE.parent
sys.path.insert(0, str(PKG))

from polymarket_bot import crypto  # noqa: E402
from polymarket_bot.secrets import Secret  # noqa: E402

KEY = "0x" + "5a" * 32
WARM = ("0x" + "b1" * 32, "7001", "7002")   # a market the leaders traded before we start
COLD = ("0x" + "c7" * 32, "8001", "8002")   # a market nobody traded before: first lookup on the hot path

# Polymarket's published rate limits (https://docs.polymarket.com/api-reference/rate-limits,
# "Data API": General 1,000 req / 10s, /trades 200 req / 10s, /positions 150 req / 10s;
# enforced by Cloudflare over sliding windows, excess requests are throttled).
DATA_API_LIMIT_RPS = 1000 / 10
TRADES_LIMIT_RPS = 200 / 10
DATA_PATHS = ("/activity", "/trades", "/positions", "/value")


class Fake:
    """The fake exchange in its own process, driven over HTTP with one keep-alive connection."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "polymarket_bot.fake_exchange", "--port",
                                      str(self.port)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "listening on ..."
        self.url = f"http://127.0.0.1:{self.port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        return json.loads(self.conn.getresponse().read())

    def data_api_requests(self) -> dict[str, int]:
        counts = self.call("GET", "/_control/requests")
        return {p: int(counts.get(p, 0)) for p in DATA_PATHS}

    def close(self) -> None:
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accepted(db: Path) -> list[tuple[str, float, float]]:
    """(leader tx hash, accepted at, bot latency ms) of every accepted order, read-only."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return [(str(r[0]), float(r[1]), float(r[2])) for r in con.execute(
            # the decision's update time is the commit of the answer (orders.created_at is when the
            # signed order was committed, before it was sent)
            "SELECT t.tx_hash, d.updated_at, o.latency_ms FROM orders o JOIN decisions d ON d.id = o.decision_id "
            "JOIN leader_trades t ON t.id = d.leader_trade_id WHERE o.status = 'accepted' ORDER BY o.id")]
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            status: int = r.status  # typeshed types urlopen's answer as Any; for http:// it is an HTTPResponse
            return status == 200
    except (OSError, urllib.error.URLError):
        return False


def scenario(n_leaders: int, trades: int = 40, poll: float = 0.5, burst: int = 200,
             seed: int = 1) -> dict[str, Any]:
    rnd = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=str(PKG))
    env.pop("POLYMARKET_ENV_FILE", None)
    fake = Fake(env)
    bot: subprocess.Popen[bytes] | None = None
    me = crypto.address_of(Secret(KEY))
    leaders = ["0x" + f"{i + 1:040x}" for i in range(n_leaders)]
    try:
        for cond, yes, no in (WARM, COLD):
            fake.call("POST", "/_control/market", {"conditionId": cond, "slug": cond[2:10], "tokens": [yes, no]})
            fake.call("POST", "/_control/book", {"token": yes, "bids": [[0.49, 1e9]], "asks": [[0.5, 1e9]]})
        fake.call("POST", "/_control/balance", {"address": me, "usd": 1e9})
        # the leaders' recent history: one older trade each on the warm market (too old to copy)
        for leader in leaders:
            fake.call("POST", "/_control/trade", {"proxyWallet": leader, "side": "BUY", "asset": WARM[1],
                                                  "size": 20, "price": 0.5, "timestamp": int(time.time() - 90)})
        with tempfile.TemporaryDirectory(prefix="pmbench-") as tmp:
            db = Path(tmp) / "ledger.db"
            dash = free_port()
            settings = {
                "PRIVATE_KEY": KEY, "TRADING_MODE": "live", "COPY_LEADERS": ",".join(leaders),
                "POLYMARKET_DATA_API_URL": fake.url, "POLYMARKET_CLOB_URL": fake.url,
                "POLYMARKET_GAMMA_URL": fake.url, "DB_PATH": str(db), "PASSIVE_FILE": f"{tmp}/passive",
                "LOG_FILE": "", "COMPLIANCE_REPORT": f"{tmp}/compliance.json", "POLL_INTERVAL": str(poll),
                "DASHBOARD_PORT": str(dash), "METRICS_PORT": str(free_port()), "STOP_LOSS_PERCENTAGE": "0",
                "MAX_DAILY_VOLUME": "1e9", "MAX_POSITION_SIZE": "1e8", "MAX_ORDER_SIZE": "1e7",
                "DATA_API_MAX_RPS": "15", "HEALTH_CHECK_INTERVAL": "30", "GEOBLOCK_URL": fake.url + "/api/geoblock",
            }
            cfg_file = Path(tmp) / "bot.env"
            cfg_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
            log = open(Path(tmp) / "bot.log", "wb")  # noqa: SIM115 - closed below
            t_launch = time.monotonic()
            bot = subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(cfg_file), "run"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
            if not wait_for(lambda: healthy(dash) or bot.poll() is not None, 60):
                raise RuntimeError("the bot did not become healthy in 60 s")
            if bot.poll() is not None:
                raise RuntimeError("the bot exited: " + (Path(tmp) / "bot.log").read_text()[-2000:])
            ready = time.monotonic() - t_launch
            rss_idle = proc_status(bot.pid)

            # ---- spaced trades: random arrival, each on a random leader; one on a cold market
            before, t0 = fake.data_api_requests(), time.time()
            visible: dict[str, float] = {}
            cold_tx = ""
            for i in range(trades):
                cond, yes, _ = COLD if i == trades // 2 else WARM
                t = fake.call("POST", "/_control/trade", {
                    "proxyWallet": rnd.choice(leaders), "side": "BUY", "asset": yes, "size": 20, "price": 0.5,
                    "timestamp": int(time.time())})
                visible[t["transactionHash"]] = time.time()  # visible since just before this instant
                if cond == COLD[0]:
                    cold_tx = t["transactionHash"]
                time.sleep(rnd.uniform(0.2, 1.0) * poll)
            wait_for(lambda: len(accepted(db)) >= trades, 30)
            after, t1 = fake.data_api_requests(), time.time()
            rows = {tx: (at, ms / 1000) for tx, at, ms in accepted(db)}
            e2e, proc, det, polls = [], [], [], []
            for tx, vis in visible.items():
                if tx in rows and tx != cold_tx:
                    at, p = rows[tx]
                    e2e.append(at - vis)
                    proc.append(p)
                    det.append(at - vis - p)
                    polls.append(round(at - p, 3))
            cold_ms = rows[cold_tx][1] * 1000 if cold_tx in rows else float("nan")

            # ---- burst: `burst` trades become visible at the same instant
            t_vis = time.time() + 1.0 + burst * 0.004
            burst_tx = set()
            for i in range(burst):
                t = fake.call("POST", "/_control/trade", {
                    "proxyWallet": leaders[i % n_leaders], "side": "BUY", "asset": WARM[1], "size": 20,
                    "price": 0.5, "timestamp": int(time.time()), "transactionHash": f"0xburst{seed}x{i}",
                    "visible_after": max(0.0, t_vis - time.time())})
                burst_tx.add(t["transactionHash"])
            wait_for(lambda: len(accepted(db)) >= trades + burst, 60, 0.1)
            got = [(at, ms / 1000) for tx, at, ms in accepted(db) if tx in burst_tx]
            tps = float("nan")
            if got:
                start = min(at - p for at, p in got)  # the poll that returned the burst
                tps = len(got) / max(1e-6, max(at for at, _ in got) - start)
            rss = proc_status(bot.pid)
            bot.send_signal(signal.SIGTERM)
            bot.wait(15)
            log.close()
    finally:
        if bot is not None and bot.poll() is None:
            bot.kill()
            bot.wait(5)
        fake.close()
    span = max(1e-6, t1 - t0)
    return {
        "leaders": n_leaders, "copied": len(e2e) + (cold_tx in rows), "trades": trades,
        "det_p50": pct(det, 50), "det_p99": pct(det, 99), "proc_p50": pct(proc, 50), "proc_p99": pct(proc, 99),
        "p50": pct(e2e, 50), "p99": pct(e2e, 99), "cold_ms": cold_ms, "tps": tps, "burst": len(got),
        "rps": sum(after[p] - before[p] for p in DATA_PATHS) / span,
        "trades_rps": (after["/trades"] - before["/trades"]) / span,
        "rss": rss.get("VmRSS", 0.0), "hwm": rss.get("VmHWM", 0.0), "rss_idle": rss_idle.get("VmRSS", 0.0),
        "ready": ready, "proc_all": proc, "batch": [polls.count(x) for x in polls],
    }


def listener_load(idle: int = 2000, seconds: float = 8.0, nofile: int = 1024) -> dict[str, Any]:
    """The service (dry-run, one leader) under the unit's RLIMIT_NOFILE, while `idle` connections
    send a request head that never completes and a slowloris sends a byte a second: /health
    latency, descriptors held and CPU used by the service, and when the slowloris was cut."""
    import resource
    import selectors

    env = dict(os.environ, PYTHONPATH=str(PKG))
    env.pop("POLYMARKET_ENV_FILE", None)
    fake = Fake(env)
    bot: subprocess.Popen[bytes] | None = None
    socks: list[socket.socket] = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, idle + 1000)), hard))
    tick = os.sysconf("SC_CLK_TCK")

    def cpu(pid: int) -> float:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tick

    def health(port: int) -> float:
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            c.request("GET", "/health")
            c.getresponse().read()
            return time.monotonic() - t0
        except OSError:
            return float("inf")
        finally:
            c.close()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    try:
        with tempfile.TemporaryDirectory(prefix="pmbench-") as tmp:
            dash = free_port()
            settings = {
                "COPY_LEADERS": "0x" + "1" * 40, "POLYMARKET_DATA_API_URL": fake.url, "POLYMARKET_CLOB_URL": fake.url,
                "POLYMARKET_GAMMA_URL": fake.url, "DB_PATH": f"{tmp}/ledger.db", "PASSIVE_FILE": f"{tmp}/passive",
                "LOG_FILE": "", "DASHBOARD_PORT": str(dash), "METRICS_PORT": str(free_port()),
            }
            cfg_file = Path(tmp) / "bot.env"
            cfg_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
            bot = subprocess.Popen([sys.executable, "-m", "polymarket_bot", "--config", str(cfg_file), "run"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit)
            if not wait_for(lambda: healthy(dash), 60):
                raise RuntimeError("the bot did not become healthy in 60 s")
            quiet = [health(dash) for _ in range(20)]
            sel = selectors.DefaultSelector()
            t0 = time.monotonic()
            for _ in range(idle):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", dash))
                time.sleep(0.001)
                sel.register(s, selectors.EVENT_WRITE)
                socks.append(s)
            while sel.get_map() and time.monotonic() - t0 < 20:
                for key, _ in sel.select(0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    sel.unregister(sock)
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                        sock.send(b"GET /health HTTP/1.1\r\nHost: bot\r\n")
            sel.close()
            slow = socket.create_connection(("127.0.0.1", dash), timeout=5)
            slow.sendall(b"GET /health HTTP/1.1\r\n")
            t_slow, cut, loaded, fds = time.monotonic(), float("nan"), [], 0
            cpu0, w0 = cpu(bot.pid), time.monotonic()
            while time.monotonic() - w0 < seconds:
                loaded.append(health(dash))
                fds = max(fds, len(os.listdir(f"/proc/{bot.pid}/fd")))
                if cut != cut and time.monotonic() - t_slow >= len(loaded) * 0.2:
                    try:
                        slow.send(b"X")
                    except OSError:
                        cut = time.monotonic() - t_slow
                time.sleep(0.2)
            used, wall = cpu(bot.pid) - cpu0, time.monotonic() - w0
            while cut != cut and time.monotonic() - t_slow < 30:
                try:
                    slow.send(b"X")
                except OSError:
                    cut = time.monotonic() - t_slow
                time.sleep(0.5)
            slow.close()
            bot.send_signal(signal.SIGTERM)
            bot.wait(30)
    finally:
        for s in socks:
            s.close()
        if bot is not None and bot.poll() is None:
            bot.kill()
            bot.wait(5)
        fake.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    answered = [x for x in loaded if x != float("inf")]
    return {"idle": idle, "nofile": nofile, "quiet_p50": pct(quiet, 50), "quiet_max": max(quiet),
            "p50": pct(answered, 50) if answered else float("nan"),
            "p99": pct(answered, 99) if answered else float("nan"),
            "max": max(loaded), "answered": len(answered), "asked": len(loaded), "fds": fds,
            "cpu": used, "wall": wall, "cut": cut}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=40, help="spaced trades per row (default 40)")
    ap.add_argument("--burst", type=int, default=200, help="trades visible at once per row (default 200)")
    ap.add_argument("--poll", type=float, default=0.5, help="the bot's POLL_INTERVAL (default 0.5)")
    ap.add_argument("--leaders", default="1,10,100", help="comma-separated leader counts")
    ap.add_argument("--idle", type=int, default=2000,
                    help="idle connections for the listener-load row (default 2000; 0 skips it)")
    a = ap.parse_args()
    counts = [int(x) for x in a.leaders.split(",")]
    print(f"bot service, fake exchange and harness in 3 processes on 127.0.0.1; POLL_INTERVAL {a.poll}s; per row "
          f"{a.trades} trades at random gaps of 0.2-1.0 x poll (one on a never-seen market, reported apart), "
          f"then {a.burst} trades visible at one instant", flush=True)
    head = (f"{'leaders':>7} | {'detect p50/p99':>14} | {'process p50/p99':>15} | {'end-to-end p50/p99':>18} | "
            f"{'cold mkt':>8} | {'trades/s':>8} | {'Data API req/s':>14} | {'RSS/peak MB':>11} | {'ready':>5}")
    rows = []
    print(head)
    print("-" * len(head))
    for n in counts:
        r = scenario(n, a.trades, a.poll, a.burst, seed=n)
        rows.append(r)
        print(f"{n:>7} | {r['det_p50'] * 1000:>5.0f} /{r['det_p99'] * 1000:>5.0f} ms | "
              f"{r['proc_p50'] * 1000:>5.1f} /{r['proc_p99'] * 1000:>5.1f} ms | "
              f"{r['p50'] * 1000:>7.0f} /{r['p99'] * 1000:>6.0f} ms | {r['cold_ms']:>5.1f} ms | {r['tps']:>8.0f} | "
              f"{r['rps']:>5.1f} ({r['trades_rps']:.1f} /trades) | {r['rss']:>4.1f}/{r['hwm']:>4.1f} | "
              f"{r['ready']:>4.1f}s", flush=True)
        if r["copied"] < r["trades"] or r["burst"] < a.burst:
            print(f"        note: only {r['copied']}/{r['trades']} spaced and {r['burst']}/{a.burst} burst "
                  "trades were copied in time")
    print()
    print(f"Data API published limits (docs.polymarket.com/api-reference/rate-limits): general 1,000 req/10s "
          f"= {DATA_API_LIMIT_RPS:.0f} req/s, /trades 200 req/10s = {TRADES_LIMIT_RPS:.0f} req/s.")
    print(f"Polling each leader's /activity every {a.poll}s would need {1 / a.poll:.0f} req/s per leader: "
          f"{100 / a.poll:.0f} req/s for 100 leaders, over the {DATA_API_LIMIT_RPS:.0f} req/s general limit; "
          f"above 5 leaders the bot reads the global /trades feed instead ({1 / a.poll:.0f} req/s for any "
          f"number of leaders, {100 / TRADES_LIMIT_RPS * (1 / a.poll):.0f}% of the /trades limit).")
    print("detect = visible on the Data API -> the bot's poll returned it; process = poll returned -> order "
          "accepted (the ledger's latency_ms, queueing behind earlier trades of the same poll included); "
          "cold mkt = processing of the first trade on a market absent from the leaders' recent activity "
          "(market, tick size and neg-risk looked up on the hot path); ready = service start -> /health 200 "
          "(includes the per-leader catch-up at DATA_API_MAX_RPS=15); RSS = VmRSS/VmHWM of the service "
          "process after the burst.")
    print("Goals (issue 3): process p99 < 50 ms; 100 leaders detected < 2 s inside the published limits; "
          "RSS < 80 MB. Figures only, no pass/fail.")
    if a.idle:
        r = listener_load(a.idle)
        print()
        print(f"Listener under load (issue 7): {r['idle']} idle half-sent connections + a slowloris on the dashboard "
              f"port, the service under RLIMIT_NOFILE={r['nofile']} (the unit's LimitNOFILE):")
        print(f"  /health quiet p50 {r['quiet_p50'] * 1000:.1f} ms (max {r['quiet_max'] * 1000:.1f}); under load "
              f"{r['answered']}/{r['asked']} answered within 1 s, p50 {r['p50'] * 1000:.1f} ms, "
              f"p99 {r['p99'] * 1000:.1f} ms, max {r['max'] * 1000:.1f} ms")
        print(f"  service: {r['fds']} descriptors held, {r['cpu']:.2f} s CPU in {r['wall']:.1f} s; "
              f"slowloris cut after {r['cut']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
