"""What a tuning sweep reports, and the choice made from it: the fastest configuration within an accuracy gate.

A configuration is a variant, an interpreter thread count and XNNPACK on or off. ``device.sweep``
measures them on the device and prints a ``SweepReport`` as JSON; ``deploy tune`` reads it back
(``SweepReport.from_json``) and calls ``choose``, so the rule lives here once:

* **the gate**: a configuration's top-1 accuracy on the golden set is at most ``gate_points``
  points below the float32 reference's (``passes_gate``, decided on the device);
* **the fastest**: the lowest p50 of ``total``, the daemon's whole per-frame pipeline;
* **the budget** (optional): with one, only configurations whose p99 of ``total`` is within it
  compete; when none is, the choice is the same as without one (and is reported as not meeting it);
* **ties**: configurations within ``tie_pct`` % of the fastest p50 count as tied, a difference
  the noise of a shared CPU makes, and the tie goes to the least CPU per frame (a second thread
  that saves 1 % of latency and costs 80 % more CPU is not faster in any way that matters).
  ``tie_pct=0`` takes the fastest, full stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from device.runtime import XNNPACK_SETTINGS
from device.stats import Summary

DEFAULT_THREADS = (1, 2, 4)
REFERENCE = "float32"
GATE_POINTS = 0.3
TIE_PCT = 3.0


@dataclass(frozen=True)
class Config:
    """One way to run the model: variant, interpreter threads, XNNPACK on or off."""

    variant: str
    threads: int
    xnnpack: str

    @property
    def label(self) -> str:
        """``int8, 2 threads, XNNPACK off``."""
        return f"{self.variant}, {self.threads} thread{'s' if self.threads != 1 else ''}, XNNPACK {self.xnnpack}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"variant": self.variant, "threads": self.threads, "xnnpack": self.xnnpack}


def parse_threads(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` → (1, 2, 4); ValueError with what was wrong."""
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"expected thread counts separated by commas, e.g. 1,2,4. Got: {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected thread counts of at least 1, e.g. 1,2,4. Got: {text!r}")
    return tuple(dict.fromkeys(values))


def parse_xnnpack(text: str) -> tuple[str, ...]:
    """``"on,off"`` → ("on", "off"); ValueError with what was wrong."""
    values = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not values or any(x not in XNNPACK_SETTINGS for x in values):
        raise ValueError(f"expected {', '.join(XNNPACK_SETTINGS)} or both separated by a comma. Got: {text!r}")
    return values


def passes(accuracy: Optional[float], reference: Optional[float], gate_points: float) -> Optional[bool]:
    """True when ``accuracy`` is at most ``gate_points`` points below ``reference`` (None when either is unknown)."""
    if accuracy is None or reference is None:
        return None
    return accuracy >= reference - gate_points / 100.0 - 1e-12


@dataclass(frozen=True)
class ConfigResult:
    """What one configuration measured (or why it could not run)."""

    config: Config
    error: Optional[str] = None
    invoke: Optional[Summary] = None
    total: Optional[Summary] = None
    cpu_per_frame_ms: Optional[float] = None
    frames: int = 0
    golden_accuracy: Optional[float] = None
    float32_agreement: Optional[float] = None
    golden_count: int = 0
    delegate_nodes: Optional[int] = None
    worker_threads: Optional[int] = None
    load_ms: float = 0.0
    passes_gate: Optional[bool] = None

    @property
    def ok(self) -> bool:
        """True when it ran and was timed."""
        return self.error is None and self.total is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; latencies in ms."""
        return {
            **self.config.to_json(), "ok": self.ok, "error": self.error,
            "invoke_ms": self.invoke.to_json() if self.invoke else None,
            "total_ms": self.total.to_json() if self.total else None,
            "cpu_per_frame_ms": None if self.cpu_per_frame_ms is None else round(self.cpu_per_frame_ms, 5),
            "frames": self.frames, "golden_accuracy": self.golden_accuracy, "float32_agreement": self.float32_agreement,
            "golden_count": self.golden_count, "delegate_nodes": self.delegate_nodes, "worker_threads": self.worker_threads,
            "load_ms": round(self.load_ms, 3), "passes_gate": self.passes_gate,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConfigResult:
        """The inverse of ``to_json``."""

        def summary(s: Any) -> Optional[Summary]:
            return Summary(**s) if isinstance(s, dict) else None

        return cls(Config(str(d["variant"]), int(d["threads"]), str(d["xnnpack"])), d.get("error"), summary(d.get("invoke_ms")),
                   summary(d.get("total_ms")), d.get("cpu_per_frame_ms"), int(d.get("frames") or 0), d.get("golden_accuracy"),
                   d.get("float32_agreement"), int(d.get("golden_count") or 0), d.get("delegate_nodes"),
                   d.get("worker_threads"), float(d.get("load_ms") or 0.0), d.get("passes_gate"))


@dataclass(frozen=True)
class SweepReport:
    """Every configuration's figures, the float32 reference and its gate, and the machine they come from."""

    runtime: str
    runtime_version: str
    results: tuple[ConfigResult, ...]
    reference: str
    reference_accuracy: Optional[float]
    gate_points: float
    golden_count: int
    frames: int
    rounds: int
    hardware: dict[str, Any]
    xnnpack_off_supported: bool
    notes: tuple[str, ...] = ()
    off_vs_on: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def emulated(self) -> Optional[str]:
        """What emulated the device (``device.hardware``), or None."""
        return self.hardware.get("emulated") or None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what ``python -m device sweep --json`` prints)."""
        return {
            "runtime": self.runtime, "runtime_version": self.runtime_version, "reference": self.reference,
            "reference_accuracy": self.reference_accuracy, "gate_points": self.gate_points,
            "golden_count": self.golden_count, "frames": self.frames, "rounds": self.rounds, "hardware": self.hardware,
            "xnnpack_off_supported": self.xnnpack_off_supported, "notes": list(self.notes),
            "off_vs_on": self.off_vs_on, "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepReport:
        """The inverse of ``to_json``; a KeyError or TypeError when ``d`` is not a sweep report."""
        return cls(str(d["runtime"]), str(d["runtime_version"]), tuple(ConfigResult.from_json(r) for r in d["results"]),
                   str(d["reference"]), d.get("reference_accuracy"), float(d["gate_points"]), int(d["golden_count"]),
                   int(d["frames"]), int(d["rounds"]), dict(d.get("hardware") or {}), bool(d.get("xnnpack_off_supported")),
                   tuple(d.get("notes") or ()), dict(d.get("off_vs_on") or {}))


@dataclass(frozen=True)
class Choice:
    """The configuration ``choose`` picked, its figures, and why."""

    config: Config
    result: ConfigResult
    reason: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**self.config.to_json(), "reason": self.reason}


def choose(report: SweepReport, tie_pct: float = TIE_PCT, budget_ms: Optional[float] = None) -> Optional[Choice]:
    """The fastest configuration within the gate (see the module docstring); None when none passes or there is no gate.

    With ``budget_ms``, only the configurations whose p99 of ``total`` is within it compete (a low
    p50 with a long tail misses frames); when none is, the choice is made as without a budget, and
    the caller reports the budget as not met.
    """
    ok = [r for r in report.results if r.ok and r.passes_gate and r.total is not None]
    if not ok:
        return None
    within = [r for r in ok if budget_ms is not None and r.total is not None and r.total.p99_ms <= budget_ms]
    budgeted = bool(within) and len(within) < len(ok)
    if within:
        ok = within
    fastest = min(ok, key=lambda r: r.total.p50_ms if r.total else float("inf"))
    assert fastest.total is not None
    limit = fastest.total.p50_ms * (1 + max(0.0, tie_pct) / 100.0)
    tied = [r for r in ok if r.total is not None and r.total.p50_ms <= limit]
    pick = min(tied, key=lambda r: (float("inf") if r.cpu_per_frame_ms is None else r.cpu_per_frame_ms,
                                    r.total.p50_ms if r.total else 0.0))
    assert pick.total is not None
    if pick is fastest:
        why = f"the fastest p50 of total ({pick.total.p50_ms:.3f} ms) within the accuracy gate"
    else:
        why = (f"within {tie_pct:g} % of the fastest p50 of total ({pick.total.p50_ms:.3f} ms against "
               f"{fastest.total.p50_ms:.3f} ms for {fastest.config.label}) with less CPU per frame "
               f"({pick.cpu_per_frame_ms or 0:.3f} ms against {fastest.cpu_per_frame_ms or 0:.3f} ms)")
    if budgeted:
        why += f", among the {len(within)} whose p99 of total is within the {budget_ms:g} ms budget"
    return Choice(pick.config, pick, why)


def _ms(s: Optional[Summary], stat: str) -> str:
    return "-" if s is None else f"{getattr(s, stat):.3f}"


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def table_rows(report: SweepReport, choice: Optional[Choice] = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the tuning table; the chosen row is marked ``*``."""
    head = ["", "variant", "threads", "XNNPACK", "delegated", "workers", "invoke p50", "invoke p99", "total p50", "total p99",
            "CPU/frame", "golden %", f"vs {REFERENCE}", f"agree {REFERENCE} %", "gate"]
    ref = report.reference_accuracy
    rows = []
    for r in report.results:
        c = r.config
        mark = "*" if choice is not None and c == choice.config else ""
        if not r.ok:
            rows.append([mark, c.variant, str(c.threads), c.xnnpack, *["-"] * 10, "failed"])
            continue
        delta = "-" if ref is None or r.golden_accuracy is None else f"{100 * (r.golden_accuracy - ref):+.2f}"
        gate = {True: "pass", False: "FAIL", None: "-"}[r.passes_gate]
        rows.append([mark, c.variant, str(c.threads), c.xnnpack, "-" if r.delegate_nodes is None else str(r.delegate_nodes),
                     "-" if r.worker_threads is None else str(r.worker_threads), _ms(r.invoke, "p50_ms"), _ms(r.invoke, "p99_ms"),
                     _ms(r.total, "p50_ms"), _ms(r.total, "p99_ms"),
                     "-" if r.cpu_per_frame_ms is None else f"{r.cpu_per_frame_ms:.3f}", _pct(r.golden_accuracy), delta,
                     _pct(r.float32_agreement), gate])
    return head, rows


def format_table(report: SweepReport, choice: Optional[Choice] = None) -> str:
    """The tuning table (times in ms), what the columns mean, the notes, and the choice."""
    head, rows = table_rows(report, choice)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = []
    if report.emulated:
        lines.append(f"EMULATED ({report.emulated}): these timings come from an emulator on another CPU, not the device's")
    hw = report.hardware
    lines.append(f"runtime {report.runtime} {report.runtime_version} on {hw.get('model') or hw.get('cpu_model') or 'unknown'} "
                 f"({hw.get('machine')}, {hw.get('cpu_count')} CPUs); {report.frames} timed frames per configuration in "
                 f"{report.rounds} interleaved rounds; golden set {report.golden_count} images, {REFERENCE} reference: "
                 f"{report.reference} ({_pct(report.reference_accuracy)} %), gate {report.gate_points:g} points")
    lines.append("  ".join(x.ljust(w) for x, w in zip(head, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("times in ms; CPU/frame: process CPU time (all threads) per frame; delegated: XNNPACK nodes in the "
                 "interpreter's plan (0: builtin kernels ran); workers: OS threads the runtime started for it")
    for v, d in report.off_vs_on.items():
        unit = " levels" if d.get("raw_unit") == "levels" else ""
        lines.append(f"XNNPACK off vs on, {v} at {d.get('threads')} thread(s): outputs "
                     f"{'differ' if d.get('outputs_differ') else 'identical'} (largest raw difference "
                     f"{float(d.get('max_raw_diff') or 0):.3g}{unit}, top-1 changed on {d.get('top1_changed')} images), invoke p50 "
                     f"{float(d.get('invoke_p50_ms_on') or 0):.3f} ms on, {float(d.get('invoke_p50_ms_off') or 0):.3f} ms off")
    lines += [f"failed: {r.config.label}: {r.error}" for r in report.results if not r.ok]
    lines += [f"note: {n}" for n in report.notes]
    if choice is not None:
        lines.append(f"chosen: {choice.config.label}: {choice.reason}")
    return "\n".join(lines)
