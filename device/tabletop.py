"""A table-top scene with one known object, rendered as a camera would see it frame after frame.

The fake camera (``--source fake-picamera2:scene=FILE``) shows this scene, so the collect →
train → push loop can be proven without a Pi. The scene file is JSON that the test (or a
person) rewrites to put another object in view::

    {"object": "ball" | "box" | "star" | null, "seed": 7}

Three kinds that differ in shape, colour and texture: a red **ball** (a shaded sphere with a
highlight), a blue **box** (a square with stripes), a green **star** (five points, dotted).
Every frame draws a new pose from ``(seed, frame index)``: position, size, rotation, the
object's own tint, the lighting (brightness, direction, colour cast), the table's colour, the
shadow and the sensor noise, so no two frames are alike and frames from another seed are new
ones. The picture is analytic: each stream samples the same field of view at its own size
(2x2 supersampled when small), so ``main`` and ``lores`` of one request show the same moment,
as the ISP's two outputs of one sensor image do. ``lighting`` gives the exposure figures the
fake camera reports as picamera2 metadata (Lux, ExposureTime, AnalogueGain, ColourGains,
ColourTemperature).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

OBJECTS = ("ball", "box", "star")
_BASE_RGB = {"ball": (0.86, 0.16, 0.12), "box": (0.16, 0.32, 0.86), "star": (0.22, 0.72, 0.18)}


@dataclass(frozen=True)
class Scene:
    """What is on the table: one of ``OBJECTS`` (or nothing) and the seed of the frame-to-frame variation."""

    object: Optional[str] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.object is not None and self.object not in OBJECTS:
            raise ValueError(f"scene object must be one of {', '.join(OBJECTS)} or null. Got: {self.object!r}")


def read_scene(path: Path | str) -> Scene:
    """The scene a JSON file describes; ValueError in one line when it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the scene file {path}: {e}; write JSON like {{\"object\": \"ball\", \"seed\": 1}}") from e
    if not isinstance(doc, dict):
        raise ValueError(f"the scene file {path} must hold a JSON object. Got: {type(doc).__name__}")
    try:
        return Scene(doc.get("object"), int(doc.get("seed", 0)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"the scene file {path}: {e}") from e


@dataclass(frozen=True)
class Pose:
    """Everything that varies from frame to frame (fractions of the field of view's height for sizes)."""

    cx: float
    cy: float
    size: float
    angle: float
    tint: tuple[float, float, float]
    gain: float  # overall light
    light_angle: float  # where the light comes from
    cast: tuple[float, float, float]  # white-balance error: R, G, B multipliers
    table: tuple[float, float, float]
    noise_std: float


def pose(scene: Scene, index: int) -> Pose:
    """The pose of frame ``index`` (deterministic in seed, object and index)."""
    kind = OBJECTS.index(scene.object) + 1 if scene.object else 0
    rng = np.random.default_rng([abs(int(scene.seed)), int(index), kind])
    warm = rng.uniform(-1.0, 1.0)
    return Pose(
        cx=float(rng.uniform(0.36, 0.64)),
        cy=float(rng.uniform(0.36, 0.64)),
        size=float(rng.uniform(0.34, 0.58)),
        angle=float(rng.uniform(0.0, 2.0 * math.pi)),
        tint=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),  # type: ignore[arg-type]
        gain=float(rng.uniform(0.6, 1.25)),
        light_angle=float(rng.uniform(0.0, 2.0 * math.pi)),
        cast=(1.0 + 0.12 * warm, 1.0, 1.0 - 0.12 * warm),
        table=tuple(float(x) for x in (rng.uniform(0.55, 0.75) + rng.uniform(-0.05, 0.05, 3))),  # type: ignore[arg-type]
        noise_std=float(rng.uniform(1.0, 4.0)),
    )


def lighting(p: Pose, frame_rate: float = 30.0) -> dict[str, Any]:
    """The exposure picamera2 would report for this light: Lux, ExposureTime (µs), gains, colour temperature."""
    lux = 700.0 * p.gain**2
    frame_us = 1e6 / frame_rate
    exposure = min(frame_us * 0.9, 12000.0 / p.gain**2)
    again = max(1.0, 12000.0 / (p.gain**2 * exposure))
    return {"Lux": round(lux, 1), "ExposureTime": int(exposure), "AnalogueGain": round(again, 3), "DigitalGain": 1.0,
            "ColourGains": (round(1.9 / p.cast[0], 4), round(1.6 / p.cast[2], 4)),
            "ColourTemperature": int(5000 - 1800 * (p.cast[0] - 1.0) / 0.12)}


def _shape(kind: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage 0/1, shading) of an object in its own coordinates (u, v in [-1, 1])."""
    if kind == "ball":
        r2 = u * u + v * v
        inside = r2 <= 1.0
        z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
        return inside, z
    if kind == "box":
        inside = (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
        stripes = np.where(np.sin(u * 5.0 * math.pi) > 0.0, 1.0, 0.55)
        return inside, stripes
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    edge = 0.42 + 0.58 * ((1.0 + np.cos(5.0 * theta)) / 2.0) ** 2
    inside = r <= edge
    dots = np.where((np.sin(u * 9.0 * math.pi) * np.sin(v * 9.0 * math.pi)) > 0.55, 0.5, 1.0)
    return inside, dots


def render(scene: Scene, index: int, width: int, height: int, fov: tuple[int, int]) -> np.ndarray:
    """float32 [height, width, 3] R,G,B (0..255) of frame ``index`` as a ``width`` x ``height`` stream of ``fov`` sees it."""
    p = pose(scene, index)
    fw, fh = float(fov[0]), float(fov[1])
    ss = 2 if width * height <= 100_000 else 1  # small streams are supersampled 2x2 (area-like), large ones are fine
    h, w = height * ss, width * ss
    ys = (np.arange(h, dtype=np.float32) + 0.5) * np.float32(fh / h)
    xs = (np.arange(w, dtype=np.float32) + 0.5) * np.float32(fw / w)
    half = p.size * fh / 2.0
    # the table: its colour, lit from one side, with the object's soft shadow towards the other
    lx, ly = math.cos(p.light_angle), math.sin(p.light_angle)
    gy = (ly * 0.24 * (ys / fh - 0.5))[:, None]
    gx = (lx * 0.24 * (xs / fw - 0.5))[None, :]
    sy = ((ys - p.cy * fh) / half + 0.25 * ly)[:, None]
    sx = ((xs - p.cx * fw) / half + 0.25 * lx)[None, :]
    light = (1.0 + gx + gy) * (1.0 - 0.35 * np.exp(-(sx * sx + sy * sy) * 1.6))
    rgb = light[:, :, None] * (np.asarray(p.table, np.float32) * np.asarray(p.cast, np.float32) * np.float32(255.0 * p.gain))
    if scene.object is not None:
        # only the object's bounding box is shaded: a 640x480 frame costs what the object covers
        reach = half * 1.45
        r0, r1 = (int(np.searchsorted(ys, p.cy * fh + d)) for d in (-reach, reach))
        c0, c1 = (int(np.searchsorted(xs, p.cx * fw + d)) for d in (-reach, reach))
        if r1 > r0 and c1 > c0:
            dy = ((ys[r0:r1] - p.cy * fh) / half)[:, None]
            dx = ((xs[c0:c1] - p.cx * fw) / half)[None, :]
            ca, sa = math.cos(p.angle), math.sin(p.angle)
            u, v = ca * dx + sa * dy, -sa * dx + ca * dy
            inside, shade = _shape(scene.object, u, v)
            base = np.asarray(_BASE_RGB[scene.object], np.float32) * np.asarray(p.tint, np.float32)
            lu, lv = ca * lx + sa * ly, -sa * lx + ca * ly  # the light's direction in the object's frame
            toward = lu * u + lv * v
            if scene.object == "ball":
                lit = np.clip(0.35 + 0.65 * (0.5 * toward + 0.8 * shade), 0.2, 1.0)
                spec = np.clip(1.0 - ((u - 0.45 * lu) ** 2 + (v - 0.45 * lv) ** 2) * 12.0, 0.0, 1.0) ** 2 * 0.6
                obj = base * lit[:, :, None] + spec[:, :, None]
            else:
                obj = base * (shade * np.clip(0.75 + 0.25 * toward, 0.45, 1.0))[:, :, None]
            obj = obj * (np.asarray(p.cast, np.float32) * np.float32(255.0 * p.gain))
            box = rgb[r0:r1, c0:c1]
            box[...] = np.where(inside[:, :, None], obj, box)
    if ss > 1:
        rgb = rgb.reshape(height, ss, width, ss, 3).mean(axis=(1, 3))
    noise = np.random.default_rng([abs(int(scene.seed)), int(index), width, height]).standard_normal(rgb.shape, np.float32)
    rgb = rgb.astype(np.float32, copy=False) + noise * np.float32(p.noise_std)
    return np.clip(rgb, 0.0, 255.0, out=rgb)
