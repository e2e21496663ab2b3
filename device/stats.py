"""Latency statistics: a sliding window for percentiles, cumulative histograms for Prometheus."""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from device.pipeline import STAGES, Result

# Histogram upper bounds in seconds: 25 µs … 1 s, covering invoke on x86 up to a stalled camera.
BUCKETS_S = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Summary:
    """count / min / max / mean / std / p50 / p90 / p99 of a set of latencies, in milliseconds."""

    count: int
    min_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, rounded to 0.1 µs."""
        return {k: (v if k == "count" else round(v, 4)) for k, v in self.__dict__.items()}


def summarize(values_ns: Sequence[int] | np.ndarray) -> Summary:
    """Summary of latencies given in nanoseconds."""
    a = np.asarray(values_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return Summary(int(a.size), float(a.min()), float(a.max()), float(a.mean()), float(a.std()), float(p50), float(p90), float(p99))


class Histogram:
    """A cumulative-bucket histogram of seconds (Prometheus semantics); not thread-safe alone."""

    def __init__(self, bounds_s: Sequence[float] = BUCKETS_S):
        self.bounds_s = tuple(bounds_s)
        self.counts = [0] * (len(self.bounds_s) + 1)  # last: above every bound (+Inf only)
        self.sum_s = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds_s, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, ending with +Inf == count."""
        out, running = [], 0
        for bound, c in zip(self.bounds_s, self.counts):
            running += c
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self.count))
        return out


class Stats:
    """Thread-safe running statistics of a pipeline: totals, a sliding window, histograms."""

    def __init__(self, window: int = 1000, clock: Any = time.monotonic):
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self.started_s = clock()
        self._recent: deque[tuple[float, tuple[int, ...]]] = deque(maxlen=window)
        self.histograms = {s: Histogram() for s in STAGES}
        self.frames = 0
        self.labelled = 0
        self.correct = 0
        self.errors: dict[str, int] = {}

    def add(self, result: Result) -> None:
        """Record one processed frame."""
        now = self._clock()
        with self._lock:
            self.frames += 1
            self._recent.append((now, result.stage_ns))
            for s, ns in zip(STAGES, result.stage_ns):
                self.histograms[s].observe(ns / 1e9)
            if result.truth is not None:
                self.labelled += 1
                self.correct += int(bool(result.correct))

    def error(self, kind: str) -> None:
        """Count one error of a kind (bad_frame, camera_timeout, ...)."""
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Frames, fps and per-stage summaries over the window, as a JSON-ready dict."""
        with self._lock:
            recent = list(self._recent)
            frames, labelled, correct, errors = self.frames, self.labelled, self.correct, dict(self.errors)
        now = self._clock()
        fps = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            fps = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
        per_stage = np.asarray([r[1] for r in recent], dtype=np.int64).reshape(-1, len(STAGES))
        return {
            "frames": frames,
            "fps": round(fps, 2),
            "uptime_s": round(now - self.started_s, 3),
            "window": len(recent),
            "latency_ms": {s: summarize(per_stage[:, i]).to_json() for i, s in enumerate(STAGES)},
            "accuracy": None if not labelled else round(correct / labelled, 4),
            "labelled_frames": labelled,
            "errors": errors,
        }

    def counters(self) -> tuple[int, dict[str, int]]:
        """Frames classified and errors by kind, without summarising the window."""
        with self._lock:
            return self.frames, dict(self.errors)

    def histogram_copy(self) -> dict[str, Histogram]:
        """A consistent copy of the histograms for exposition."""
        with self._lock:
            out = {}
            for s, h in self.histograms.items():
                c = Histogram(h.bounds_s)
                c.counts, c.sum_s, c.count = list(h.counts), h.sum_s, h.count
                out[s] = c
            return out


def prometheus_text(
    stats: Stats,
    info: dict[str, str],
    gauges: Optional[dict[str, tuple[str, float]]] = None,
    counters: Optional[dict[str, tuple[str, float]]] = None,
) -> str:
    """Prometheus text exposition (format 0.0.4): latency histograms, counters and gauges.

    ``gauges`` and ``counters`` map a name (after ``edgekit_``; counters end in ``_total``) to
    (help text, value).
    """
    frames, errors = stats.counters()  # not snapshot(): /metrics needs no window percentiles
    lines = [
        "# HELP edgekit_info Model and runtime of this daemon.",
        "# TYPE edgekit_info gauge",
        "edgekit_info{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(info.items())) + "} 1",
        "# HELP edgekit_frames_total Frames classified.",
        "# TYPE edgekit_frames_total counter",
        f"edgekit_frames_total {frames}",
        "# HELP edgekit_errors_total Errors by kind (bad frames skipped, camera timeouts, ...).",
        "# TYPE edgekit_errors_total counter",
    ]
    for kind, n in sorted(errors.items()):
        lines.append(f'edgekit_errors_total{{kind="{_escape(kind)}"}} {n}')
    lines += [
        "# HELP edgekit_stage_latency_seconds Per-frame latency of each pipeline stage.",
        "# TYPE edgekit_stage_latency_seconds histogram",
    ]
    for stage, h in stats.histogram_copy().items():
        for le, c in h.cumulative():
            lines.append(f'edgekit_stage_latency_seconds_bucket{{stage="{stage}",le="{le}"}} {c}')
        lines.append(f'edgekit_stage_latency_seconds_sum{{stage="{stage}"}} {h.sum_s:.9f}')
        lines.append(f'edgekit_stage_latency_seconds_count{{stage="{stage}"}} {h.count}')
    for kind, family in (("counter", counters), ("gauge", gauges)):
        for name, (help_text, value) in sorted((family or {}).items()):
            lines += [f"# HELP edgekit_{name} {help_text}", f"# TYPE edgekit_{name} {kind}", f"edgekit_{name} {value}"]
    return "\n".join(lines) + "\n"


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
