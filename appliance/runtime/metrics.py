"""Metrics of one process: counters, gauges and histograms, served to the api over IPC (SAMPLES).

Every service has one `Metrics`; the IPC server feeds it each request's duration by method,
and a service adds its own (the store's counts, the engine's tokens/s, the bridge's events).
The api gathers all five and renders Prometheus text (control/system.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.protocol.common import MetricFamily, MetricKind, MetricSample

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Labels = tuple[tuple[str, str], ...]


@dataclass
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class _Family:
    kind: MetricKind
    help: str
    values: dict[Labels, float] = field(default_factory=dict)
    histograms: dict[Labels, _Histogram] = field(default_factory=dict)
    buckets: tuple[float, ...] = LATENCY_BUCKETS


class Metrics:
    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._started = time.monotonic()

    def _family(self, name: str, kind: MetricKind, help_text: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, help_text)
        return family

    def inc(self, name: str, help_text: str, amount: float = 1.0, **labels: str) -> None:
        family = self._family(name, "counter", help_text)
        key = tuple(sorted(labels.items()))
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self._family(name, "gauge", help_text).values[tuple(sorted(labels.items()))] = value

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge read when the metrics are collected."""
        self._gauges[name] = (help_text, read)

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        family = self._family(name, "histogram", help_text)
        key = tuple(sorted(labels.items()))
        family.histograms.setdefault(key, _Histogram(family.buckets)).observe(value)

    def observe_ipc(self, method: str, seconds: float, status: int) -> None:
        self.observe("appliance_ipc_request_seconds", "time to serve an IPC request, by method", seconds,
                     method=method)
        if status >= 400:
            self.inc("appliance_ipc_errors_total", "IPC requests answered with an error", method=method,
                     status=str(status))

    def families(self) -> list[MetricFamily]:
        out = [MetricFamily(name="appliance_uptime_seconds", kind="gauge", help="seconds since the process started",
                            samples=[MetricSample(value=round(time.monotonic() - self._started, 3))])]
        for name, (help_text, read) in self._gauges.items():
            out.append(MetricFamily(name=name, kind="gauge", help=help_text, samples=[MetricSample(value=read())]))
        for name, family in self._families.items():
            samples = [MetricSample(labels=dict(key), value=value) for key, value in family.values.items()]
            for key, histogram in family.histograms.items():
                cumulative = 0
                for bound, count in zip(histogram.buckets, histogram.counts or [0] * len(histogram.buckets),
                                        strict=True):
                    cumulative += count
                    samples.append(MetricSample(suffix="_bucket", labels={**dict(key), "le": f"{bound:g}"},
                                                value=cumulative))
                samples.append(MetricSample(suffix="_bucket", labels={**dict(key), "le": "+Inf"},
                                            value=histogram.count))
                samples.append(MetricSample(suffix="_sum", labels=dict(key), value=round(histogram.total, 6)))
                samples.append(MetricSample(suffix="_count", labels=dict(key), value=histogram.count))
            out.append(MetricFamily(name=name, kind=family.kind, help=family.help, samples=samples))
        return out
