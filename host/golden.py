"""golden.npz: the first official test images with the host interpreter's raw outputs, for device parity checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from device.manifest import Golden, sha256_bytes

GOLDEN_NAME = "golden.npz"
GOLDEN_COUNT = 1000


def write_golden(folder: Path, images: np.ndarray, labels: np.ndarray, raw: dict[str, np.ndarray]) -> Golden:
    """Write images uint8 [N,28,28], labels int64 [N] and raw_<variant> [N,10] (output dtype)."""
    images = np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28)
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
