"""The money metrics as Prometheus scrapes them: the bot against the fake exchange, /metrics read over
HTTP. After a buy, a price move and a sell, every figure is the ledger's (and the exchange's)
arithmetic; past 00:00 UTC (the money module's clock moved) the day's figures start from zero while
the open position's figures stay."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LEADERS, ME, NO, YES, Harness, held
from polymarket_bot.engine import Engine
from polymarket_bot.money import day_start
from polymarket_bot.server import DashboardServer, start_servers

SAMPLE = re.compile(r'^(polymarket_[a-z_]+)(\{leader="(0x[0-9a-f]{40})"\})? (\S+)$')


METRICS_TOKEN = "prometheus-scrape-token-0123456789abcdef"


@pytest.fixture
def scrape(h: Harness, tmp_path: Path) -> Iterator[tuple[Engine, list[DashboardServer]]]:
    token = tmp_path / "metrics-token"      # the money series are served to the token only (METRICS_TOKEN_FILE)
    token.write_text(METRICS_TOKEN + "\n")
    token.chmod(0o640)
    e = h.engine(MAX_DAILY_LOSS_USD="4.5", MAX_DAILY_VOLUME="100", MAX_TOTAL_EXPOSURE_USD="500",
                 MAX_LEADER_EXPOSURE_USD="250", METRICS_TOKEN_FILE=token)
    servers = list(start_servers(e, 0, 0))
    yield e, servers
    for s in servers:
        s.shutdown()
        s.server_close()


def metrics(servers: list[DashboardServer]) -> dict[str, float]:
    """/metrics over HTTP as Prometheus reads it: name (name:leader for the per-leader series) -> value."""
    url = f"http://127.0.0.1:{servers[1].server_address[1]}/metrics"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (":" + m.group(3) if m.group(3) else "")] = float(m.group(4))
    return out


def remark(e: Engine) -> None:
    """The next poll marks the positions again (RISK_REFRESH is 30 s) and takes the money figures."""
    e.last_mark_to_market = 0
    e.poll_once()


def exchange_balance(h: Harness) -> float:
    return float(h.ex.s.balances[ME.lower()]) / 1e6


def test_buy_price_move_and_sell_as_the_ledger_counts_them(h: Harness,
                                                           scrape: tuple[Engine, list[DashboardServer]]) -> None:
    e, servers = scrape
    m = metrics(servers)
    assert m["polymarket_max_daily_loss_usd"] == 4.5 and m["polymarket_max_daily_volume_usd"] == 100
    assert m["polymarket_max_total_exposure_usd"] == 500 and m["polymarket_max_leader_exposure_usd"] == 250
    assert "polymarket_daily_loss_usd" not in m            # not taken yet: no made-up zero
    h.trade(ago=5, transactionHash="0x1")                # leader 0 buys; we copy 10 USD at 0.50
    e.poll_once()
    h.ex.set_book(YES, [[0.30, 10000]], [[0.31, 10000]])  # the price moves down
    remark(e)
    m = metrics(servers)
    pos = held(e, YES)
    (buy,) = e.ledger.orders()
    assert buy["side"] == "BUY" and buy["filled_usd"] == pytest.approx(10) and pos.cost == pytest.approx(10)
    assert m["polymarket_usdc_balance_usd"] == pytest.approx(exchange_balance(h)) == pytest.approx(10000 - 10)
    assert m["polymarket_exposure_usd"] == pytest.approx(pos.cost)
    assert m[f"polymarket_leader_exposure_usd:{LEADERS[0]}"] == pytest.approx(buy["filled_usd"])
    assert m[f"polymarket_leader_exposure_usd:{LEADERS[1]}"] == 0
    for leader in LEADERS[:2]:                              # the figure MAX_LEADER_EXPOSURE_USD counts
        assert m[f"polymarket_leader_exposure_usd:{leader}"] == pytest.approx(e.ledger.exposure("live", leader))
    assert m["polymarket_daily_volume_usd"] == pytest.approx(buy["filled_usd"])
    assert m["polymarket_realised_pnl_today_usd"] == 0
    unrealised = 0.30 * pos.shares - pos.cost               # 20 shares at the best bid, minus 10 USD
    assert unrealised == pytest.approx(-4)
    assert m["polymarket_unrealised_pnl_usd"] == pytest.approx(unrealised)
    assert m["polymarket_daily_loss_usd"] == pytest.approx(-unrealised)
    assert m["polymarket_daily_loss_usd"] == pytest.approx(e.daily_loss())   # what the limit itself counts
    assert e.metrics.get("polymarket_orders_total", status="accepted") == 1

    h.trade(side="SELL", size=100, price=0.30, ago=2, transactionHash="0x2")   # the leader exits; so do we
    e.poll_once()
    remark(e)
    m = metrics(servers)
    buy, sell = e.ledger.orders()
    assert sell["side"] == "SELL" and sell["filled_usd"] == pytest.approx(6)
    assert m["polymarket_realised_pnl_today_usd"] == pytest.approx(sell["realised_usd"]) == pytest.approx(-4)
    assert m["polymarket_unrealised_pnl_usd"] == 0 and m["polymarket_exposure_usd"] == 0
    assert m[f"polymarket_leader_exposure_usd:{LEADERS[0]}"] == 0
    assert m["polymarket_daily_volume_usd"] == pytest.approx(buy["filled_usd"] + sell["filled_usd"])
    assert m["polymarket_usdc_balance_usd"] == pytest.approx(exchange_balance(h)) == pytest.approx(10000 - 4)
    assert m["polymarket_daily_loss_usd"] == pytest.approx(4)
    # PolymarketDailyLossNearLimit's expression on these very samples: 4 > 0.8 * 4.5, limit set
    assert m["polymarket_daily_loss_usd"] > 0.8 * m["polymarket_max_daily_loss_usd"] > 0
    assert e.metrics.get("polymarket_orders_total", status="accepted") == 2


def test_day_figures_start_from_zero_after_midnight_utc(h: Harness,
                                                       scrape: tuple[Engine, list[DashboardServer]]) -> None:
    e, servers = scrape
    h.trade(ago=5, transactionHash="0x1")
    h.trade(leader=1, asset=NO, ago=5, transactionHash="0x2")   # two buys, 10 USD each
    e.poll_once()
    h.trade(side="SELL", size=100, price=0.49, ago=2, transactionHash="0x3")   # leader 0 exits
    e.poll_once()
    h.ex.set_book(NO, [[0.40, 10000]], [[0.41, 10000]])
    orders = e.ledger.orders()
    when = max(o["created_at"] for o in orders)
    e.money.clock = lambda: when                           # the day the orders were sent
    remark(e)
    today = metrics(servers)
    pos = held(e, NO)
    assert held(e, YES).shares == 0
    realised = sum(o["realised_usd"] for o in orders)
    assert today["polymarket_daily_volume_usd"] == pytest.approx(sum(o["filled_usd"] for o in orders))
    assert today["polymarket_realised_pnl_today_usd"] == pytest.approx(realised) and realised < 0
    assert today["polymarket_unrealised_pnl_usd"] == pytest.approx(0.40 * pos.shares - pos.cost)
    assert today["polymarket_money_timestamp_seconds"] == pytest.approx(when)
    for leader in LEADERS[:2]:
        assert today[f"polymarket_leader_exposure_usd:{leader}"] == pytest.approx(e.ledger.exposure("live", leader))
    assert today[f"polymarket_leader_exposure_usd:{LEADERS[1]}"] == pytest.approx(10)

    midnight = day_start(when) + 86400
    e.money.clock = lambda: midnight + 1                   # 00:00:01 UTC the next day
    remark(e)
    m = metrics(servers)
    assert m["polymarket_daily_volume_usd"] == 0 and m["polymarket_realised_pnl_today_usd"] == 0
    assert m["polymarket_unrealised_pnl_usd"] == pytest.approx(today["polymarket_unrealised_pnl_usd"])
    assert m["polymarket_daily_loss_usd"] == pytest.approx(-m["polymarket_unrealised_pnl_usd"])
    for key in ("polymarket_exposure_usd", f"polymarket_leader_exposure_usd:{LEADERS[1]}",
                "polymarket_usdc_balance_usd"):
        assert m[key] == pytest.approx(today[key]) and m[key] > 0, key
    assert m["polymarket_money_timestamp_seconds"] == pytest.approx(midnight + 1)

    e.money.clock = lambda: midnight - 1                   # 23:59:59: still the day of the orders
    remark(e)
    assert metrics(servers)["polymarket_daily_volume_usd"] == pytest.approx(today["polymarket_daily_volume_usd"])


def test_balance_unreadable_keeps_the_last_figure(h: Harness, scrape: tuple[Engine, list[DashboardServer]]) -> None:
    e, servers = scrape
    e.poll_once()
    assert metrics(servers)["polymarket_usdc_balance_usd"] == pytest.approx(10000)
    h.ex.add_fault("/balance-allowance", "500", count=20)
    remark(e)
    m = metrics(servers)
    assert m["polymarket_usdc_balance_usd"] == pytest.approx(10000)
    assert e.metrics.get("polymarket_errors_total", kind="balance") == 1


def test_every_bot_metric_the_alert_rules_use_is_exported(h: Harness,
                                                          scrape: tuple[Engine, list[DashboardServer]]) -> None:
    """polymarket-monitoring's rules name the bot's series (job="polymarket-bot"): each is on /metrics after a
    poll, so no rule waits on a name the bot never exports. (Found: polymarket_position_drift had no sample
    until the first drift, so PolymarketPositionDrift's increase() could never see that first one.)"""
    rules = (Path(__file__).resolve().parents[2] / "packages" / "polymarket-monitoring"
             / "polymarket_monitoring.py").read_text()
    used = set(re.findall(r'(polymarket_[a-z_]+)\{\{\{BOT\}\}\}', rules))
    assert {"polymarket_daily_loss_usd", "polymarket_max_daily_loss_usd", "polymarket_passive"} <= used
    e, servers = scrape
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()
    m = metrics(servers)
    exported = {name.split(":")[0] for name in m}
    assert used - exported == set()
    # a counter the rules take increase() of is there at 0 before its first event (else that event is unseen)
    assert m["polymarket_position_drift"] == 0


def test_the_bots_own_samples_fire_the_daily_loss_alert(h: Harness, scrape: tuple[Engine, list[DashboardServer]],
                                                       tmp_path: Path) -> None:
    """The samples /metrics gives after a 4 USD loss against MAX_DAILY_LOSS_USD=4.5, fed to promtool with the
    rules polymarket-monitoring renders: PolymarketDailyLossNearLimit fires; at 3 USD (under 80%) it does not."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: make test-deps (the Makefile's TEST_DEPS has prometheus)")
    path = Path(__file__).resolve().parents[2] / "packages" / "polymarket-monitoring" / "polymarket_monitoring.py"
    spec = importlib.util.spec_from_file_location("polymarket_monitoring_rules", path)
    assert spec is not None and spec.loader is not None
    mon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mon)
    (tmp_path / "rules.yml").write_text(mon.render({q: d for q, (_, d) in mon.QUESTIONS.items()})["rules.yml"])
    rule = {r["alert"]: r for g in mon.rules()["groups"] for r in g["rules"]}["PolymarketDailyLossNearLimit"]
    e, servers = scrape
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()
    labels = 'job="polymarket-bot",instance="10.0.0.1:9090",node="primary"'

    def promtool_agrees(bid: float, fires: bool) -> None:
        """promtool exits 0 only when the alert does exactly what ``fires`` says."""
        h.ex.set_book(YES, [[bid, 10000]], [[bid + 0.01, 10000]])
        remark(e)
        m = metrics(servers)
        series = [{"series": f"{name}{{{labels}}}", "values": f"{m[name]!r}x3"}
                  for name in ("polymarket_daily_loss_usd", "polymarket_max_daily_loss_usd")]
        alert = {"exp_labels": {"job": "polymarket-bot", "instance": "10.0.0.1:9090", "node": "primary",
                                "severity": "critical"},
                 "exp_annotations": {k: v.replace("{{ $labels.node }}", "primary")
                                     for k, v in rule["annotations"].items()}}
        test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
            "interval": "1m", "input_series": series, "alert_rule_test": [
                {"eval_time": "2m", "alertname": "PolymarketDailyLossNearLimit",
                 "exp_alerts": [alert] if fires else []}]}]}
        (tmp_path / "test.yml").write_text(json.dumps(test))
        proc = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, f"bid {bid}, daily loss {m['polymarket_daily_loss_usd']}: {proc.stdout}"

    promtool_agrees(0.30, fires=True)     # 20 shares at 0.30 for 10 USD: 4 USD down, over 0.8 * 4.5
    promtool_agrees(0.35, fires=False)    # 3 USD down: under 80% of 4.5
