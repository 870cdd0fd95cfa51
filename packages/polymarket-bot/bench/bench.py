"""Latency and throughput of the bot against the fake exchange on loopback.

Prints, for 1, 10 and 100 leaders: p50/p99 from a leader trade becoming visible on the
Data API to our order being accepted (and the processing part alone, after detection),
trades per second handled in a burst, Data API requests per second, and resident memory.

Usage: python3 bench/bench.py [--trades 40] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from polymarket_bot import config, crypto  # noqa: E402
from polymarket_bot.engine import Engine  # noqa: E402
from polymarket_bot.ledger import Ledger  # noqa: E402
from polymarket_bot.secrets import Secret  # noqa: E402

KEY = "0x" + "5a" * 32
COND = "0x" + "b1" * 32


def post(url: str, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def get(url: str, path: str) -> Any:
    with urllib.request.urlopen(url + path, timeout=5) as r:
        return json.loads(r.read())


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario(n_leaders: int, trades: int, poll: float, burst: int = 200) -> dict[str, float]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    fake = subprocess.Popen([sys.executable, "-m", "polymarket_bot.fake_exchange", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert fake.stdout is not None
    fake.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    me = crypto.address_of(Secret(KEY))
    leaders = ["0x" + f"{i + 1:040x}" for i in range(n_leaders)]
    post(url, "/_control/market", {"conditionId": COND, "slug": "bench", "tokens": ["7001", "7002"]})
    post(url, "/_control/book", {"token": "7001", "bids": [[0.49, 1e9]], "asks": [[0.5, 1e9]]})
    post(url, "/_control/balance", {"address": me, "usd": 1e9})
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(None, {
            "PRIVATE_KEY": KEY, "TRADING_MODE": "live", "COPY_LEADERS": ",".join(leaders),
            "POLYMARKET_DATA_API_URL": url, "POLYMARKET_CLOB_URL": url, "POLYMARKET_GAMMA_URL": url,
            "DB_PATH": f"{tmp}/l.db", "PASSIVE_FILE": f"{tmp}/passive", "POLL_INTERVAL": str(poll),
            "STOP_LOSS_PERCENTAGE": "0", "MAX_DAILY_VOLUME": "1e9", "MAX_POSITION_SIZE": "1e8",
            "MAX_ORDER_SIZE": "1e7", "DATA_API_MAX_RPS": "15"})
        engine = Engine(cfg, Ledger(cfg.db_path))
        worker = threading.Thread(target=engine.run, daemon=True)
        worker.start()
        while engine.last_poll == 0:
            time.sleep(0.01)
        before = sum(get(url, "/_control/requests").get(p, 0) for p in ("/activity", "/trades"))
        t_start = time.time()
        visible: list[float] = []
        for i in range(trades):
            post(url, "/_control/trade", {"proxyWallet": leaders[i % n_leaders], "side": "BUY", "asset": "7001",
                                          "size": 20, "price": 0.5, "timestamp": int(time.time())})
            visible.append(time.time())
            time.sleep(poll * 0.37)
        while len(engine.ledger.orders()) < trades and time.time() - t_start < 60:
            time.sleep(0.02)
        orders = engine.ledger.orders()
        e2e = [o["created_at"] - v for o, v in zip(orders, visible, strict=False)]
        proc = [o["latency_ms"] / 1000 for o in orders if o["latency_ms"] is not None]
        duration = time.time() - t_start
        after = sum(get(url, "/_control/requests").get(p, 0) for p in ("/activity", "/trades"))
        # burst: many trades at once

        for i in range(burst):
            post(url, "/_control/trade", {"proxyWallet": leaders[i % n_leaders], "side": "BUY", "asset": "7001",
                                          "size": 20, "price": 0.5, "timestamp": int(time.time()),
                                          "transactionHash": f"0xburst{i}"})
        t0 = time.time()
        while len(engine.ledger.orders()) < trades + burst and time.time() - t0 < 60:
            time.sleep(0.01)
        tps = burst / (time.time() - t0)
        engine.stop.set()
        worker.join(5)
        engine.ledger.close()
    fake.terminate()
    fake.wait(5)
    return {"leaders": n_leaders, "p50": pct(e2e, 50), "p99": pct(e2e, 99), "proc_p50": pct(proc, 50),
            "proc_p99": pct(proc, 99), "tps": tps, "rps": (after - before) / duration, "rss": rss_mb(),
            "copied": len(orders)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trades", type=int, default=40)
    ap.add_argument("--poll", type=float, default=0.5)
    a = ap.parse_args()
    print(f"poll interval {a.poll}s, {a.trades} spaced trades + a burst of 200 per row")
    print(f"{'leaders':>7} {'e2e p50':>9} {'e2e p99':>9} {'proc p50':>9} {'proc p99':>9} {'trades/s':>9} "
          f"{'DataAPI rps':>11} {'RSS MB':>7}")
    for n in (1, 10, 100):
        r = scenario(n, a.trades, a.poll)
        print(f"{r['leaders']:>7} {r['p50'] * 1000:>7.0f}ms {r['p99'] * 1000:>7.0f}ms {r['proc_p50'] * 1000:>7.1f}ms "
              f"{r['proc_p99'] * 1000:>7.1f}ms {r['tps']:>9.0f} {r['rps']:>11.1f} {r['rss']:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
