"""One frame through the model: capture → preprocess → invoke → postprocess, each stage timed.

``Pipeline(source, engine, clock, sink)``: parts are passed in; the CLI's builder chooses them.
Stage times come from ``clock`` (``time.perf_counter_ns`` by default), in nanoseconds.

Around a ~60 µs ``invoke()`` every microsecond shows, so the per-frame path avoids work that does
not change between frames: the engine's methods are bound once, the input tensor is reused,
and ranking reads the raw output once (``tolist``) and sorts its few values in Python, which
for ten classes is cheaper than any numpy call; only the k reported scores are dequantised.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from device.engine import Engine
from device.frames import Frame, FrameSource
from device.manifest import TensorSpec
from device.preprocess import Preprocessor

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
        self._into = preprocessor.into
        self._fast = all(hasattr(engine, a) for a in ("set_input", "invoke_only", "get_output"))
        if self._fast:
            eng: Any = engine
            self._set_input, self._invoke, self._get_output = eng.set_input, eng.invoke_only, eng.get_output
        n_out = int(np.prod(engine.output_spec.shape))
        self._names = tuple(self.labels[i] if i < len(self.labels) else str(i) for i in range(n_out))
        self._score = scorer(engine.output_spec)
        self.last_frame: Optional[Frame] = None  # what the last step read (the live page shows it)

    def step(self) -> Result:
        """Process one frame. Raises what the source raises (EndOfSource, SourceError, FrameError)."""
        clock = self.clock
        t0 = clock()
        frame: Frame = self.source.read()
        t1 = clock()
        self._into(frame.pixels, frame.fmt, frame.size, self._input, frame.colour_space)
        t2 = clock()
        if self._fast:
            self._set_input(self._input)
            self._invoke()
            t3 = clock()
            raw = self._get_output()
        else:
            raw = self.engine.run(self._input)
            t3 = clock()
        top = self._rank(raw)
        t4 = clock()
        self.last_frame = frame
        result = Result(
            frame.seq, frame.name, frame.timestamp_ns, top, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
            frame.label, self.preprocessor.last_inverted,
        )
        if self.sink is not None:
            self.sink(result)
        return result

    @property
    def input_tensor(self) -> np.ndarray:
        """The tensor the engine was last given (a reused buffer: copy it to keep it)."""
        return self._input

    def _rank(self, raw: np.ndarray) -> tuple[Prediction, ...]:
        # dequantisation is monotonic (scale > 0): rank the raw values, dequantise only the k reported
        names, score = self._names, self._score
        return tuple([Prediction(i, names[i], score(v)) for i, v in top_k_raw(raw, self.top_k)])


def scorer(spec: TensorSpec) -> Callable[[Any], float]:
    """``quant.to_score`` for one output spec, with its scale and zero point looked up once."""
    if not spec.quantized:
        return float
    zp, scale = int(spec.zero_point or 0), float(spec.scale or 0.0)
    return lambda value: (int(value) - zp) * scale


SMALL_OUTPUT = 64  # up to this many classes a Python sort of the values beats numpy's call overhead


def top_k_raw(raw: np.ndarray, k: int) -> list[tuple[int, Any]]:
    """(index, raw value) of the k largest raw outputs, best first; ties keep the lower index first.

    The same order as a stable ``argsort`` of the negated values. Small outputs are sorted in
    Python; large ones are cut down with ``np.partition`` first, so only candidates are sorted.
    """
    flat = raw.reshape(-1)
    n = flat.shape[0]
    k = max(1, min(k, n))
    if n <= SMALL_OUTPUT:
        vals = flat.tolist()
        idx = sorted(range(n), key=vals.__getitem__, reverse=True)[:k]  # sorted() is stable under reverse
        return [(i, vals[i]) for i in idx]
    keyed = flat.astype(np.int64) if flat.dtype.kind in "iub" else flat
    kth = np.partition(keyed, n - k)[n - k]  # the k-th largest value: everything above it is in
    cand = np.flatnonzero(keyed >= kth)  # ascending index, so ties stay in index order
    vals = flat[cand].tolist()
    order = sorted(range(len(vals)), key=vals.__getitem__, reverse=True)[:k]
    return [(int(cand[j]), vals[j]) for j in order]
