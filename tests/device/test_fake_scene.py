"""The fake camera's table-top scene and metadata, mirroring picamera2: capture_arrays, capture_metadata, busy, timeouts."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from device import tabletop
from device.colour import yuv_to_rgb
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig
from device.pi_camera import PiCameraSource

CONFIG = {"main": {"size": (640, 480), "format": "RGB888"}, "lores": {"size": (112, 84), "format": "YUV420"},
          "controls": {"FrameRate": 30.0}, "colour_space": "sYCC"}


def _scene(path: Path, obj: str | None, seed: int) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"object": obj, "seed": seed}))
    tmp.replace(path)
    return path


def _camera(scene: Path) -> FakePicamera2:
    cam = FakePicamera2(scene_file=scene)
    cam.configure(cam.create_video_configuration(**CONFIG))
    cam.start()
    return cam


def _lores_rgb(buf: np.ndarray, w: int = 112, h: int = 84) -> np.ndarray:
    y = buf[:h, :w].astype(np.float64)
    stride = buf.shape[1]
    chroma = buf[h:].reshape(-1)
    half = (h // 2) * (stride // 2)
    u = chroma[:half].reshape(h // 2, stride // 2)[:, : w // 2].repeat(2, 0).repeat(2, 1)
    v = chroma[half : 2 * half].reshape(h // 2, stride // 2)[:, : w // 2].repeat(2, 0).repeat(2, 1)
    m, off = yuv_to_rgb("sYCC")
    return np.stack([y, u, v], -1) @ m.T + off


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean() / mask.shape[1]), float(ys.mean() / mask.shape[0])


def test_capture_arrays_gives_main_and_lores_of_one_moment_with_its_metadata(tmp_path: Path) -> None:
    cam = _camera(_scene(tmp_path / "scene.json", "ball", 3))
    try:
        (lores, main), md = cam.capture_arrays(["lores", "main"], wait=2.0)
        assert main.shape == (480, 640, 3) and lores.shape == (126, 128)
        red_main = (main[..., 2] > 120) & (main[..., 1] < 90)  # RGB888 is B,G,R in memory
        rgb = _lores_rgb(lores)
        red_lores = (rgb[..., 0] > 120) & (rgb[..., 1] < 90)
        assert red_main.mean() > 0.02
        cm, cl = _centroid(red_main), _centroid(red_lores)
        assert abs(cm[0] - cl[0]) < 0.03 and abs(cm[1] - cl[1]) < 0.03  # the same ball in the same place
        # picamera2's get_metadata(): control names → ints, floats, tuples
        assert isinstance(md["ExposureTime"], int) and isinstance(md["AnalogueGain"], float)
        assert isinstance(md["ColourGains"], tuple) and len(md["ColourGains"]) == 2
        assert isinstance(md["Lux"], float) and md["FrameDuration"] == 33333
        pose = tabletop.pose(cam.scene or tabletop.Scene(), 0)
        assert md["Lux"] == tabletop.lighting(pose)["Lux"]  # the scene's light, frame by frame
        before = cam.captures
        md2 = cam.capture_metadata()
        assert cam.captures == before + 1 and md2["SensorTimestamp"] > md["SensorTimestamp"]  # it uses up a frame
    finally:
        cam.close()


def test_frames_vary_the_scene_file_is_reread_and_a_broken_one_is_ignored(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "scene.json", "box", 1)
    cam = _camera(scene)
    try:
        a, b = cam.capture_array("main", wait=2.0), cam.capture_array("main", wait=2.0)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5  # a new pose every frame
        blue = lambda f: ((f[..., 0] > 100) & (f[..., 2] < 80)).mean()  # noqa: E731
        green = lambda f: ((f[..., 1] > 100) & (f[..., 0] < 80) & (f[..., 2] < 90)).mean()  # noqa: E731
        assert blue(a) > 0.02 and green(a) < 0.002
        _scene(scene, "star", 1)
        c = cam.capture_array("main", wait=2.0)
        assert green(c) > 0.01 and blue(c) < 0.002
        scene.write_text("{not json")
        d = cam.capture_array("main", wait=2.0)
        assert cam.scene == tabletop.Scene("star", 1) and green(d) > 0.01  # the last good scene stays
    finally:
        cam.close()


def test_seeds_give_new_frames_and_the_same_seed_the_same(tmp_path: Path) -> None:
    one = tabletop.render(tabletop.Scene("ball", 1), 5, 112, 84, (640, 480))
    again = tabletop.render(tabletop.Scene("ball", 1), 5, 112, 84, (640, 480))
    other = tabletop.render(tabletop.Scene("ball", 2), 5, 112, 84, (640, 480))
    assert np.array_equal(one, again) and np.abs(one - other).mean() > 5
    with pytest.raises(ValueError, match="one of ball, box, star"):
        tabletop.Scene("cat")


def test_scene_frames_are_paced_and_capture_arrays_times_out_like_capture_array(tmp_path: Path) -> None:
    cam = _camera(_scene(tmp_path / "scene.json", None, 0))
    try:
        t0 = time.monotonic()
        for _ in range(10):
            cam.capture_array("lores", wait=2.0)
        assert time.monotonic() - t0 >= 9 / 30.0 - 0.01  # a sensor delivers at its frame rate
        cam.stall()
        with pytest.raises((TimeoutError, concurrent.futures.TimeoutError)):
            cam.capture_arrays(["lores", "main"], wait=0.05)
        assert cam.pending_jobs == 1  # the timed-out request stays queued, as in picamera2
        cam.cancel_all_and_flush()
    finally:
        cam.close()


def test_a_scene_camera_is_busy_for_another_process_until_closed(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "scene.json", "ball", 0)
    probe = [sys.executable, "-c", f"from device.fake_picamera2 import FakePicamera2 as F; F(scene_file={str(scene)!r}).close(); print('opened')"]
    src = PiCameraSource(CameraConfig(), factory=lambda: FakePicamera2(scene_file=scene))
    try:
        p = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "Device or resource busy" in p.stderr
        src.want_extras()
        frame = src.read()
        assert frame.extras is not None and frame.extras.main is not None and frame.extras.main_fmt == "BGR"
        assert frame.extras.metadata["ColourGains"] == list(frame.extras.metadata["ColourGains"])  # JSON-ready
        assert src.read().extras is None  # only the frame asked for pays for main
    finally:
        src.close()
    p = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "opened" in p.stdout
