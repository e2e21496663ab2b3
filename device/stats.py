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

# Histogram upper bounds in seconds: the E6 series (1, 1.5, 2.2, 3.3, 4.7, 6.8 per decade) from
# 10 µs to 680 ms, then 1, 2 and 5 s. Up to 1 s neighbouring bounds are at most 1.5x apart, so a
# quantile read from the histogram (Prometheus's histogram_quantile) is within that factor, from
# an int8 invoke on x86 (tens of µs) to a Pi Zero's (tens of ms); 2 and 5 s catch a camera
# stalling up to its 2 s timeout and beyond.
_E6 = (1.0, 1.5, 2.2, 3.3, 4.7, 6.8)
BUCKETS_S = (*(float(f"{m}e{e}") for e in range(-5, 0) for m in _E6), 1.0, 2.0, 5.0)


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

    def since(self, t_s: float) -> tuple[float, np.ndarray]:
        """(clock now, stage latencies in ns [n, stages]) of the frames in the window added after clock time ``t_s``."""
        rows: list[tuple[int, ...]] = []
        with self._lock:
            now = self._clock()
            for t, ns in reversed(self._recent):  # newest first: stops at the first old frame
                if t <= t_s:
                    break
                rows.append(ns)
        return now, np.asarray(rows[::-1], dtype=np.int64).reshape(-1, len(STAGES))

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
