"""A stand-in for ``picamera2.Picamera2`` with its API surface and quirks, for tests and host runs.

Quirks reproduced: ``RGB888`` arrays are B,G,R in memory (``XBGR8888`` R,G,B,X); ``YUV420``
arrays are [height*3/2, stride] with padded rows (Y, then U and V at half resolution with
half the stride), encoded in the configuration's colour space (``colour_space``, as
picamera2's ``create_video_configuration`` picks it: SMPTE170M below 1280x720, Rec709 above,
limited range; settled and reported back by ``camera_configuration()``); every stream is
scaled from the same field of view (main's), so a lores stream of another aspect ratio is
stretched; ``capture_array`` raises ``TimeoutError`` now and then (``timeout_every``); a
camera not closed stays busy for the next opener. Frames are pre-rendered once from the
given images (grey garments [N, H, W] or colour photos [N, H, W, 3], ``device.scene``) and
cycled, so timing measures the consumer.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np

from device import scene
from device.colour import video_colour_space


class FakeColorSpace:
    """Stands in for ``libcamera.ColorSpace``: its ``str()`` is libcamera's name for it."""

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name

    __repr__ = __str__


class FakePicamera2:
    """Mirrors Picamera2: create_video_configuration, configure, start, capture_array, stop, close."""

    _busy: set[int] = set()
    _busy_lock = threading.Lock()

    def __init__(self, camera_num: int = 0, images: Optional[np.ndarray] = None, timeout_every: int = 0, seed: int = 0,
                 platform: str = "vc4"):
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
        self.platform = platform  # "vc4" (Pi 4: lores must be YUV) or "pisp" (Pi 5)
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
        colour_space: Any = None,
        **_: Any,
    ) -> dict[str, Any]:
        """A configuration dict shaped like picamera2's (main defaults to 1280x720 XBGR8888; lores to main's size)."""
        m = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        lo = None if lores is None else {"format": "YUV420", "size": m["size"], **lores}
        if colour_space is None:  # picamera2 chooses by the video resolution
            colour_space = video_colour_space(tuple(m["size"]))
        return {"use_case": "video", "buffer_count": buffer_count, "main": m, "lores": lo, "raw": raw,
                "controls": dict(controls or {}), "colour_space": FakeColorSpace(str(colour_space))}

    def configure(self, config: dict[str, Any]) -> None:
        """Accept a configuration: align sizes to even numbers, fill in strides, pre-render frames."""
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
        lores = cfg.get("lores")
        if self.platform == "vc4" and lores and lores.get("format") not in ("YUV420", "YVU420"):
            raise RuntimeError("lores stream must be YUV")  # picamera2's check on the Pi 4's ISP
        rng = np.random.default_rng(self.seed)
        self._frames = {}
        cs = cfg.get("colour_space")
        cs_name = "SMPTE170M" if cs is None else str(cs)
        cfg["colour_space"] = FakeColorSpace(cs_name)
        fov = tuple(int(x) & ~1 for x in cfg["main"]["size"])
        for name in ("main", "lores"):
            s = cfg.get(name)
            if not s:
                continue
            w, h = (int(s["size"][0]) & ~1, int(s["size"][1]) & ~1)
            s["size"] = (w, h)
            fmt = s["format"]
            photos = [self._render(i, w, h, rng, fov) for i in self.images]
            if fmt == "YUV420":
                s["stride"] = scene.yuv420_stride(w)
                self._frames[name] = [scene.to_yuv420(f, s["stride"], cs_name) for f in photos]
            elif fmt in ("RGB888", "BGR888", "XBGR8888", "XRGB8888"):
                bgr = [scene.to_bgr888(f) for f in photos]
                if fmt == "BGR888":
                    frames = [b[:, :, ::-1].copy() for b in bgr]  # R,G,B in memory
                elif fmt == "XBGR8888":  # R,G,B,X in memory
                    frames = [np.concatenate([b[:, :, ::-1], np.full((h, w, 1), 255, np.uint8)], axis=2) for b in bgr]
                elif fmt == "XRGB8888":  # B,G,R,X in memory
                    frames = [np.concatenate([b, np.full((h, w, 1), 255, np.uint8)], axis=2) for b in bgr]
                else:
                    frames = bgr
                s["stride"] = w * frames[0].shape[2]
                self._frames[name] = frames  # capture_array copies padding away: contiguous [h, w, C]
            else:
                raise RuntimeError(f"FakePicamera2 renders RGB888, BGR888, XBGR8888, XRGB8888 and YUV420 only. Got: {fmt}")
        if cfg.get("lores") and cfg.get("main"):
            lw, lh = cfg["lores"]["size"]
            mw, mh = cfg["main"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        self._config = cfg

    @staticmethod
    def _render(image: np.ndarray, w: int, h: int, rng: np.random.Generator, fov: tuple[int, ...]) -> np.ndarray:
        """One image as a w x h stream of the main stream's field of view sees it (grey photo or R,G,B)."""
        f = (int(fov[0]), int(fov[1]))
        return scene.render(image, w, h, rng, f) if np.ndim(image) == 3 else scene.render_gray(image, w, h, rng, f)

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
