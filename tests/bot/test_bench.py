"""The benchmark runs end to end (tiny sizes): fake exchange and bot service as two processes."""

from __future__ import annotations

import importlib.util

from conftest import ROOT


def test_bench_scenario_runs() -> None:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "packages/polymarket-bot/bench/bench.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.scenario(2, trades=3, poll=0.1, burst=10)
    assert r["copied"] == 3 and r["burst"] == 10 and r["p99"] < 2
    assert 0 < r["rss"] <= r["hwm"] < 200  # the service process's VmRSS / VmHWM, not the harness's
    assert r["rps"] > 0 and r["proc_p99"] <= r["p99"]
