"""Quantise inputs and dequantise outputs in one place, for int8 and float models alike.

The input formula is q = clip(round(real / scale) + zero_point, dtype range). ``to_input``
applies it to an array; ``input_affine`` gives the same formula as a multiply-add plus
bounds, for the preprocessing to fold into its own per-channel multiply-add.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from device.manifest import TensorSpec


def to_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Turn real-valued images into the model's input tensor (quantised when it is int8/uint8).

    ``x`` is [H, W(, C)] or [N, H, W(, C)] or already shaped; the result has ``spec.shape``
    (batch 1) or [N, *spec.shape[1:]].
    """
    x = np.asarray(x, dtype=np.float32)
    batch_shape = tuple(spec.shape[1:])
    x = x.reshape((1, *batch_shape)) if x.size == int(np.prod(batch_shape)) else x.reshape((-1, *batch_shape))
    if spec.quantized:
        info = np.iinfo(np.dtype(spec.dtype))
        q = np.round(x / np.float32(spec.scale)) + np.float32(spec.zero_point or 0)
        return np.clip(q, info.min, info.max).astype(spec.dtype)
    return x.astype(spec.dtype, copy=False)


def input_affine(spec: Optional[TensorSpec]) -> tuple[float, float, Optional[tuple[float, float]]]:
    """(multiplier, offset, integer bounds or None): q = real * multiplier + offset, rounded and clipped.

    For a float input (or no spec) it is the identity with no rounding (bounds None).
    """
    if spec is None or not spec.quantized:
        return 1.0, 0.0, None
    info = np.iinfo(np.dtype(spec.dtype))
    return 1.0 / float(spec.scale or 1.0), float(spec.zero_point or 0), (float(info.min), float(info.max))


def to_scores(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Dequantise a raw output tensor to float scores (int64 arithmetic, like pycoral)."""
    raw = np.asarray(raw)
    if spec.quantized:
        return ((raw.astype(np.int64) - int(spec.zero_point or 0)) * float(spec.scale or 0.0)).astype(np.float32)
    return raw.astype(np.float32, copy=False)


def to_score(value: float, spec: TensorSpec) -> float:
    """Dequantise one raw output value (the scalar twin of ``to_scores``, for top-k only)."""
    if spec.quantized:
        return (int(value) - int(spec.zero_point or 0)) * float(spec.scale or 0.0)
    return float(value)
