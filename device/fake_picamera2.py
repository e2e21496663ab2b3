"""A stand-in for ``picamera2.Picamera2`` with its API surface and quirks, for tests and host runs.

Quirks reproduced: ``RGB888`` arrays are B,G,R in memory; ``YUV420`` arrays are
[height*3/2, stride] with padded rows; ``capture_array`` raises ``TimeoutError`` now and then
(``timeout_every``); a camera not closed stays busy for the next opener. Frames are
pre-rendered once from the given garments and cycled, so timing measures the consumer.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np

from device import scene


class FakePicamera2:
    """Mirrors Picamera2: create_video_configuration, configure, start, capture_array, stop, close."""

    _busy: set[int] = set()
    _busy_lock = threading.Lock()

    def __init__(self, camera_num: int = 0, images: Optional[np.ndarray] = None, timeout_every: int = 0, seed: int = 0):
        with FakePicamera2._busy_lock:
            if camera_num in FakePicamera2._busy:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            FakePicamera2._busy.add(camera_num)
        self.camera_num = camera_num
        self.camera_properties = {"Model": "fake_imx708", "PixelArraySize": (4608, 2592), "Location": 2}
        self.sensor_resolution = (4608, 2592)
        self.images = images if images is not None else np.zeros((1, 28, 28), np.uint8)
        self.timeout_every = timeout_every
        self.seed = seed
        self.started = False
        self.closed = False
        self.captures = 0
        self._config: Optional[dict[str, Any]] = None
        self._frames: dict[str, list[np.ndarray]] = {}

    def create_video_configuration(
        self,
        main: Optional[dict[str, Any]] = None,
        lores: Optional[dict[str, Any]] = None,
        raw: Optional[dict[str, Any]] = None,
        buffer_count: int = 6,
        controls: Optional[dict[str, Any]] = None,
        **_: Any,
    ) -> dict[str, Any]:
        """A configuration dict shaped like picamera2's (main defaults to 1280x720 XBGR8888)."""
        m = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        lo = None if lores is None else {"format": "YUV420", "size": (320, 240), **lores}
        return {"use_case": "video", "buffer_count": buffer_count, "main": m, "lores": lo, "raw": raw,
                "controls": dict(controls or {})}

    def configure(self, config: dict[str, Any]) -> None:
        """Accept a configuration: align sizes to even numbers, fill in strides, pre-render frames."""
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        rng = np.random.default_rng(self.seed)
        self._frames = {}
        for name in ("main", "lores"):
            s = cfg.get(name)
            if not s:
                continue
            w, h = (int(s["size"][0]) & ~1, int(s["size"][1]) & ~1)
            s["size"] = (w, h)
            fmt = s["format"]
            if fmt == "YUV420":
                s["stride"] = scene.yuv420_stride(w)
                self._frames[name] = [scene.to_yuv420(scene.render_gray(i, w, h, rng), s["stride"]) for i in self.images]
            elif fmt in ("RGB888", "BGR888"):
                s["stride"] = w * 3
                frames = [scene.to_bgr888(scene.render_gray(i, w, h, rng)) for i in self.images]
                self._frames[name] = frames if fmt == "RGB888" else [f[:, :, ::-1].copy() for f in frames]
            else:
                raise RuntimeError(f"FakePicamera2 renders RGB888, BGR888 and YUV420 only. Got: {fmt}")
        if cfg.get("lores") and cfg.get("main"):
            lw, lh = cfg["lores"]["size"]
            mw, mh = cfg["main"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self._config = cfg

    def camera_configuration(self) -> Optional[dict[str, Any]]:
        """The configuration in force, with the strides filled in."""
        return self._config

    def start(self) -> None:
        """Start streaming."""
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        if self.closed:
            raise RuntimeError("Camera closed")
        self.started = True

    def capture_array(self, name: str = "main", wait: Optional[float] = None) -> np.ndarray:
        """The next frame of a stream, as picamera2 lays it out in memory."""
        if not self.started:
            raise RuntimeError("Camera not started")
        if name not in self._frames:
            raise RuntimeError(f"Stream {name!r} is not defined")
        self.captures += 1
        if self.timeout_every and self.captures % self.timeout_every == 0:
            raise TimeoutError("Frame request timed out")
        frames = self._frames[name]
        return frames[(self.captures - 1) % len(frames)]

    def stop(self) -> None:
        """Stop streaming."""
        self.started = False

    def close(self) -> None:
        """Release the camera for the next opener."""
        self.started = False
        if not self.closed:
            self.closed = True
            with FakePicamera2._busy_lock:
                FakePicamera2._busy.discard(self.camera_num)
