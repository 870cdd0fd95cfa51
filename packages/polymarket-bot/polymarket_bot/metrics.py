"""Counters, gauges and a histogram, rendered in the Prometheus text format."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

Labels = tuple[tuple[str, str], ...]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    esc = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, esc, strict=True)) + "}"


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.help: dict[str, tuple[str, str]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.gauge_sets: dict[str, Callable[[], Mapping[Labels, float]]] = {}
        self.private: set[str] = set()  # the account's money series: exported only to a caller with the token
        self.hist_counts = [0] * len(BUCKETS)
        self.hist_sum = 0.0
        self.hist_n = 0
        for name, text in (
            ("polymarket_trades_seen_total", "Leader trades seen for the first time"),
            ("polymarket_trades_copied_total", "Leader trades copied (order accepted or paper-filled)"),
            ("polymarket_trades_skipped_total", "Leader trades skipped, by reason"),
            ("polymarket_orders_total", "Orders by final status"),
            ("polymarket_errors_total", "Errors by kind"),
            ("polymarket_data_api_requests_total", "Requests sent to the Data API"),
            ("polymarket_http_connections_dropped_total",
             "Connections to our listeners closed before a complete request: timeout (no full request head "
             "within the deadline), limit (connection bound reached), fd-limit (no descriptor left), oversize"),
            ("polymarket_position_drift", "Positions corrected to the exchange's figure at reconcile"),
            ("polymarket_risk_blocked_total", "Orders held by an account-level limit, by limit"),
            ("polymarket_circuit_breaker_trips_total", "Times consecutive order errors paused trading"),
            ("polymarket_market_refresh_retries_total", "Orders refused for tick/minimum size, market refreshed"),
        ):
            self.help[name] = ("counter", text)
            self.counters[name] = {}
        # The series known in advance start at 0: a counter born at 1 is invisible to increase() (the
        # first position drift would not alert, nor a rate of orders by result see the first order).
        for name in ("polymarket_trades_seen_total", "polymarket_trades_copied_total", "polymarket_position_drift",
                     "polymarket_data_api_requests_total", "polymarket_circuit_breaker_trips_total",
                     "polymarket_market_refresh_retries_total"):
            self.counters[name][()] = 0.0
        for status in ("accepted", "rejected", "dry_run"):
            self.counters["polymarket_orders_total"][(("status", status),)] = 0.0

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            series = self.counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def get(self, name: str, **labels: str) -> float:
        with self.lock:
            return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def observe_latency(self, seconds: float) -> None:
        with self.lock:
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    self.hist_counts[i] += 1
            self.hist_sum += seconds
            self.hist_n += 1

    def gauge(self, name: str, text: str, fn: Callable[[], float]) -> None:
        self.help[name] = ("gauge", text)
        self.gauges[name] = fn

    def gauge_series(self, name: str, text: str, fn: Callable[[], Mapping[Labels, float]],
                     private: bool = False) -> None:
        """A gauge with labels (or one whose value may be unknown): ``fn`` returns its series,
        labels -> value; a series it leaves out is not exported (no made-up value). ``private``: left out of
        ``render(private=False)`` (METRICS_PORT without METRICS_TOKEN_FILE)."""
        self.help[name] = ("gauge", text)
        self.gauge_sets[name] = fn
        if private:
            self.private.add(name)

    def render(self, private: bool = True) -> str:
        out: list[str] = []
        with self.lock:
            for name, series in self.counters.items():
                kind, text = self.help.get(name, ("counter", name))
                out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, v in sorted(series.items()):
                    out.append(f"{name}{_labels(labels)} {v:g}")
            name = "polymarket_order_latency_seconds"
            out += [f"# HELP {name} Leader trade visible to order answered", f"# TYPE {name} histogram"]
            for b, c in zip(BUCKETS, self.hist_counts, strict=True):
                out.append(f'{name}_bucket{{le="{b:g}"}} {c}')
            out += [f'{name}_bucket{{le="+Inf"}} {self.hist_n}', f"{name}_sum {self.hist_sum:.6f}",
                    f"{name}_count {self.hist_n}"]
        for name, fn in self.gauges.items():
            _, text = self.help[name]
            value = fn()
            out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"] + ([f"{name} {value:g}"]
                                                                          if math.isfinite(value) else [])
        for name, series_fn in self.gauge_sets.items():
            if name in self.private and not private:
                continue
            _, text = self.help[name]
            out += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
            # repr: every digit of a USD figure (":g" keeps six, 12345.67 would read 12345.7)
            out += [f"{name}{_labels(labels)} {float(v)!r}" for labels, v in sorted(series_fn().items())
                    if math.isfinite(v)]  # NaN/Infinity is an unknown figure: left out, never exported
        return "\n".join(out) + "\n"
