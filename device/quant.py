"""Quantise inputs and dequantise outputs in one place, for int8 and float models alike."""

from __future__ import annotations

import numpy as np

from device.manifest import TensorSpec


def to_input(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Turn float images in [0, 1] into the model's input tensor (quantised when it is int8/uint8).

    ``x`` is [H, W] or [N, H, W] or already shaped; the result has ``spec.shape`` (batch 1)
    or [N, *spec.shape[1:]].
    """
    x = np.asarray(x, dtype=np.float32)
    batch_shape = tuple(spec.shape[1:])
    x = x.reshape((1, *batch_shape)) if x.size == int(np.prod(batch_shape)) else x.reshape((-1, *batch_shape))
    if spec.quantized:
        info = np.iinfo(np.dtype(spec.dtype))
        q = np.round(x / np.float32(spec.scale)) + np.float32(spec.zero_point or 0)
        return np.clip(q, info.min, info.max).astype(spec.dtype)
    return x.astype(spec.dtype, copy=False)


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
