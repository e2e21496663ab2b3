"""golden.npz: the first test images at model size with the host interpreter's raw outputs, for device parity checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from device.manifest import Golden, sha256_bytes

GOLDEN_NAME = "golden.npz"
GOLDEN_COUNT = 1000


def write_golden(folder: Path, images: np.ndarray, labels: np.ndarray, raw: dict[str, np.ndarray]) -> Golden:
    """Write images uint8 [N, H, W] (grey) or [N, H, W, 3] (R,G,B), labels int64 [N] and raw_<variant> [N, K] (output dtype)."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise ValueError(f"golden images must be [N, H, W] or [N, H, W, 1|3]. Got: shape {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    n = len(images)
    if len(labels) != n or any(len(r) != n for r in raw.values()):
        raise ValueError(f"golden arrays disagree in length: images {n}, labels {len(labels)}, " + ", ".join(f"{k} {len(r)}" for k, r in raw.items()))
    buf = io.BytesIO()
    arrays: dict[str, np.ndarray] = {"images": images, "labels": labels}
    arrays.update({f"raw_{k}": np.asarray(r) for k, r in raw.items()})
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    (Path(folder) / GOLDEN_NAME).write_bytes(data)
    return Golden(path=GOLDEN_NAME, sha256=sha256_bytes(data), count=n)
