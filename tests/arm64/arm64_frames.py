"""Golden images as camera frames through the device's own preprocessing (host or emulated aarch64).

Runs on both sides with the same code: the device's ``SyntheticSource`` renders each official
test image as the daemon's default camera stream (the small ``lores`` YUV420 buffer with padded
rows), and the daemon's ``Preprocessor.into`` turns it into the model's input tensor. Python 3.9+
syntax, numpy and ``device`` only.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def frame_inputs(manifest: Any, spec: Any, images: np.ndarray,
                 labels: np.ndarray) -> tuple[Optional[np.ndarray], Optional[np.ndarray], str]:
    """(frame pixels [N, ...], input tensors [N, *spec.shape[1:]], note); None, None when unsupported."""
    try:
        from device.frames import CameraConfig, SyntheticSource
        from device.preprocess import Preprocessor
    except ImportError as e:
        return None, None, f"this device package has no synthetic frames ({e})"
    config = CameraConfig()
    source = SyntheticSource(images, [int(x) for x in labels], config, loop=False, seed=0)
    pre = Preprocessor(manifest.preprocess, spec, invert="auto")
    pixels = []
    inputs = np.zeros((len(images), *spec.shape[1:]), dtype=np.dtype(spec.dtype))
    for i in range(len(images)):
        frame = source.read()
        pixels.append(frame.pixels)
        pre.into(frame.pixels, frame.fmt, frame.size, inputs[i])
    source.close()
    w, h = config.lores_size if config.stream == "lores" else config.main_size
    return np.stack(pixels), inputs, f"{source.fmt} {w}x{h} {config.stream} frames, invert=auto"
