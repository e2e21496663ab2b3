"""Accuracy on camera-like frames: official test images rendered as a camera sees a garment, through the device's preprocessing.

The frames come from ``device.camera_scene`` (off centre at 60-100 % of the frame height, both
polarities, tint, tone curve, vignetting, blur, noise; 640x480 B,G,R main frames and lores
YUV420 frames with padded rows at three sizes, in turn). Each goes through the manifest's own
preprocessing contract (``device.preprocess``) and the variant's interpreter, one invoke per
frame, exactly as on the device. The raw figure beside it is the same interpreter on the same
images as stored, so the gap is framing and imaging alone.

The renderer seed and image choice here were never used while the training recipe and the
framing were tuned (that used validation images and other seeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.camera_scene import DEFAULT_RANGES, FORMATS, CameraFrame, LookRanges, render_set
from device.engine import LiteRTEngine
from device.manifest import Preprocess
from device.preprocess import Preprocessor
from device.quant import to_input, to_scores
from device.runtime import Runtime

CAMERA_LIKE_COUNT = 1000
CAMERA_LIKE_SEED = 20_261_201


@dataclass(frozen=True)
class CameraSet:
    """Rendered frames, which official test images they show, and their preprocessed model images."""

    indices: np.ndarray  # into the official test split
    labels: np.ndarray
    frames: tuple[CameraFrame, ...]
    images: np.ndarray  # float32 [N, H, W(, C)] after the contract's preprocessing

    @property
    def formats(self) -> list[str]:
        """'main 640x480 BGR' etc. for each frame."""
        return [f"{f.stream} {f.resolution[0]}x{f.resolution[1]} {f.fmt}" for f in self.frames]


@dataclass(frozen=True)
class CameraEval:
    """One variant on the camera-like set, with the frame counts its gap rests on."""

    variant: str
    accuracy: float
    raw_accuracy: float  # the same interpreter on the same images as stored
    by_format: dict[str, float]
    by_polarity: dict[str, float]  # light_on_dark / dark_on_light
    frames: int = 0
    lost: int = 0  # right as stored, wrong through the camera
    gained: int = 0  # wrong as stored, right through the camera

    @classmethod
    def from_hits(
        cls, variant: str, hit: np.ndarray, raw_hit: np.ndarray, by_format: dict[str, float], by_polarity: dict[str, float]
    ) -> CameraEval:
        """From per-frame top-1 hits through the camera and on the same images as stored."""
        hit, raw_hit = np.asarray(hit, dtype=bool), np.asarray(raw_hit, dtype=bool)
        if len(hit) == 0 or len(hit) != len(raw_hit):
            raise ValueError(f"no camera-like frames to score (got {len(hit)} camera and {len(raw_hit)} raw hits)")
        return cls(variant, float(hit.mean()), float(raw_hit.mean()), by_format, by_polarity,
                   frames=len(hit), lost=int(np.sum(raw_hit & ~hit)), gained=int(np.sum(hit & ~raw_hit)))

    @property
    def gap_points(self) -> float:
        """Raw minus camera-like accuracy, in points."""
        return 100.0 * (self.raw_accuracy - self.accuracy)

    @property
    def gap_ci95_points(self) -> float:
        """Half-width of the gap's 95 % interval, in points (normal approximation for paired frames).

        Each image is scored twice, so only the frames that differ carry information: with ``b``
        lost and ``c`` gained of ``n``, the mean paired difference has standard deviation
        sqrt(b + c - (b - c)^2 / n) / n. 0 when the counts are not known.
        """
        n, b, c = self.frames, self.lost, self.gained
        if n == 0:
            return 0.0
        return 100.0 * 1.96 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n

    def to_json(self) -> dict[str, Any]:
        """The figures as the manifest's model.camera_like.variants entry (the report renders from it)."""
        return {"accuracy": self.accuracy, "raw_accuracy": self.raw_accuracy, "gap_points": self.gap_points,
                "gap_ci95_points": self.gap_ci95_points, "frames": self.frames, "lost": self.lost, "gained": self.gained,
                "by_format": dict(self.by_format), "by_polarity": dict(self.by_polarity)}


def camera_set(
    test_x: np.ndarray,
    test_y: np.ndarray,
    contract: Preprocess,
    count: int = CAMERA_LIKE_COUNT,
    seed: int = CAMERA_LIKE_SEED,
    ranges: LookRanges = DEFAULT_RANGES,
    formats: Sequence[tuple[str, str, int, int]] = FORMATS,
) -> CameraSet:
    """Render ``count`` official test images spread evenly over the split, and preprocess them once."""
    n = min(count, len(test_x))
    idx = np.linspace(0, len(test_x) - 1, n).round().astype(np.int64)
    frames = render_set(test_x[idx], [int(v) for v in np.asarray(test_y)[idx]], formats, ranges, seed)
    pre = Preprocessor(contract)
    images = np.stack([pre.image(f.pixels, f.fmt, f.size) for f in frames]).astype(np.float32)
    return CameraSet(idx, np.asarray(test_y)[idx], tuple(frames), images)


def evaluate_camera(variant: str, engine: LiteRTEngine, cams: CameraSet, raw_predictions: np.ndarray) -> CameraEval:
    """Accuracy of one variant on the camera-like frames; ``raw_predictions`` are its top-1 on the whole official split."""
    x = to_input(cams.images, engine.input_spec)
    x = x.reshape((len(x), *engine.input_spec.shape[1:]))
    top1 = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        top1[i] = int(np.argmax(to_scores(engine.run(x[i : i + 1]), engine.output_spec)))
    hit = top1 == cams.labels
    fmts = np.asarray(cams.formats)
    light = np.asarray([f.look.light_on_dark for f in cams.frames])
    return CameraEval.from_hits(
        variant, hit, np.asarray(raw_predictions)[cams.indices] == cams.labels,
        by_format={f: float(hit[fmts == f].mean()) for f in dict.fromkeys(cams.formats)},
        by_polarity={k: float(hit[light == v].mean()) for k, v in (("light_on_dark", True), ("dark_on_light", False)) if np.any(light == v)},
    )


def evaluate_camera_like(
    models: Mapping[str, Path],
    raw_outputs: Mapping[str, np.ndarray],
    test_x: np.ndarray,
    test_y: np.ndarray,
    contract: Preprocess,
    runtime: Runtime,
    count: int = CAMERA_LIKE_COUNT,
    seed: int = CAMERA_LIKE_SEED,
) -> dict[str, CameraEval]:
    """Every variant on the same camera-like frames (rendered and preprocessed once).

    ``raw_outputs`` are each variant's raw outputs on the whole official split, in its order.
    """
    cams = camera_set(test_x, test_y, contract, count, seed)
    out = {}
    for variant, path in models.items():
        engine = LiteRTEngine(Path(path).read_bytes(), runtime)
        raw = np.asarray(raw_outputs[variant])
        out[variant] = evaluate_camera(variant, engine, cams, raw.reshape(len(raw), -1).argmax(axis=1))
    return out
