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
    """One variant on the camera-like set."""

    variant: str
    accuracy: float
    raw_accuracy: float  # the same interpreter on the same images as stored
    by_format: dict[str, float]
    by_polarity: dict[str, float]  # light_on_dark / dark_on_light

    @property
    def gap_points(self) -> float:
        """Raw minus camera-like accuracy, in points."""
        return 100.0 * (self.raw_accuracy - self.accuracy)

    def to_json(self) -> dict[str, Any]:
        """The figures as the manifest's model.camera_like.variants entry (the report renders from it)."""
        return {"accuracy": self.accuracy, "raw_accuracy": self.raw_accuracy, "gap_points": self.gap_points,
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
    return CameraEval(
        variant=variant,
        accuracy=float(hit.mean()),
        raw_accuracy=float(np.mean(np.asarray(raw_predictions)[cams.indices] == cams.labels)),
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
