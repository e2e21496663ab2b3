"""One frame through the model: capture → preprocess → invoke → postprocess, each stage timed.

``Pipeline(source, engine, clock, sink)``: parts are passed in; the CLI's builder chooses them.
Stage times come from ``clock`` (``time.perf_counter_ns`` by default), in nanoseconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from device.engine import Engine
from device.frames import Frame, FrameSource
from device.preprocess import Preprocessor
from device.quant import to_score

STAGES = ("capture", "preprocess", "invoke", "postprocess", "total")


class Prediction(NamedTuple):
    """One class the model voted for: index, label, dequantised score (immutable, cheap to make)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: it is the class index
    label: str
    score: float


@dataclass(frozen=True)
class Result:
    """What the pipeline made of one frame, with per-stage latency in nanoseconds."""

    seq: int
    name: str
    timestamp_ns: int
    top: tuple[Prediction, ...]
    stage_ns: tuple[int, int, int, int, int]  # capture, preprocess, invoke, postprocess, total
    truth: Optional[int] = None
    inverted: bool = False

    @property
    def correct(self) -> Optional[bool]:
        """Whether top-1 matches the known label (None when the frame has no label)."""
        return None if self.truth is None else self.top[0].index == self.truth

    def to_json(self) -> dict[str, Any]:
        """A JSON-lines record: the frame, its top predictions and stage latencies in ms."""
        d: dict[str, Any] = {
            "seq": self.seq,
            "frame": self.name,
            "timestamp": self.timestamp_ns / 1e9,
            "top": [{"index": p.index, "label": p.label, "score": round(p.score, 5)} for p in self.top],
            "latency_ms": {s: round(ns / 1e6, 4) for s, ns in zip(STAGES, self.stage_ns)},
            "inverted": self.inverted,
        }
        if self.truth is not None:
            d["truth"] = self.truth
        return d


class Pipeline:
    """Reads a frame, preprocesses it into the engine's input, runs it, ranks the output."""

    def __init__(
        self,
        source: FrameSource,
        engine: Engine,
        preprocessor: Preprocessor,
        labels: Sequence[str],
        clock: Callable[[], int] = time.perf_counter_ns,
        sink: Optional[Callable[[Result], None]] = None,
        top_k: int = 3,
    ):
        self.source = source
        self.engine = engine
        self.preprocessor = preprocessor
        self.labels = tuple(labels)
        self.clock = clock
        self.sink = sink
        self.top_k = max(1, min(top_k, len(self.labels)))
        spec = engine.input_spec
        self._input = np.zeros(spec.shape, dtype=np.dtype(spec.dtype))
        self._fast = all(hasattr(engine, a) for a in ("set_input", "invoke_only", "get_output"))

    def step(self) -> Result:
        """Process one frame. Raises what the source raises (EndOfSource, SourceError, FrameError)."""
        clock = self.clock
        t0 = clock()
        frame: Frame = self.source.read()
        t1 = clock()
        self.preprocessor.into(frame.pixels, frame.fmt, frame.size, self._input)
        t2 = clock()
        if self._fast:
            eng: Any = self.engine
            eng.set_input(self._input)
            eng.invoke_only()
            t3 = clock()
            raw = eng.get_output()
        else:
            raw = self.engine.run(self._input)
            t3 = clock()
        top = self._rank(raw)
        t4 = clock()
        result = Result(
            frame.seq, frame.name, frame.timestamp_ns, top, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
            frame.label, self.preprocessor.last_inverted,
        )
        if self.sink is not None:
            self.sink(result)
        return result

    def _rank(self, raw: np.ndarray) -> tuple[Prediction, ...]:
        # dequantisation is monotonic (scale > 0), so rank the raw values and dequantise k of them
        flat = raw.reshape(-1)
        labels, spec = self.labels, self.engine.output_spec
        out = []
        for i in np.argsort(-flat.astype(np.int32) if flat.dtype.kind in "iu" else -flat, kind="stable")[: self.top_k].tolist():
            out.append(Prediction(i, labels[i] if i < len(labels) else str(i), to_score(flat[i], spec)))
        return tuple(out)
