"""A stalled camera: picamera2's own timeout, /healthz going stale, SIGTERM getting through.

The fake camera stalls the way picamera2 does (see device/fake_picamera2.py): a capture with
``wait=None`` waits for ever, one with a number raises ``TimeoutError`` and stays queued, and
``stop()`` waits behind it until ``cancel_all_and_flush()``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from device.daemon import Daemon, DaemonConfig, default_stale_after_s
from device.engine import open_engine
from device.errors import CameraTimeout
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig, Frame, SyntheticSource
from device.manifest import Manifest
from device.pi_camera import PiCameraSource
from device.pipeline import Pipeline
from device.preprocess import Preprocessor

CONFIG = {"main": {"size": (640, 480), "format": "RGB888"}, "lores": {"size": (112, 84), "format": "YUV420"}}


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn in a daemon thread; the dict gets 'result' or 'error' when it returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _camera(**kw: Any) -> FakePicamera2:
    cam = FakePicamera2(**kw)
    cam.configure(cam.create_video_configuration(**CONFIG))
    cam.start()
    return cam


def test_the_fake_camera_stalls_and_times_out_as_picamera2_does() -> None:
    cam = _camera(stall_after=1)
    try:
        assert cam.capture_array("lores", wait=1.0).shape[0] == 126  # one frame, then the cable comes loose
        t, out = _in_thread(lambda: cam.capture_array("lores"))  # wait=None: for ever
        t.join(0.3)
        assert t.is_alive() and cam.pending_jobs == 1
        cam.resume()  # the frame arrives: the waiting capture gets it
        t.join(2)
        assert not t.is_alive() and out["result"].shape[0] == 126
        cam.stall()
        t0 = time.monotonic()
        with pytest.raises(concurrent.futures.TimeoutError):
            cam.capture_array("lores", wait=0.1)
        assert time.monotonic() - t0 >= 0.1
        assert cam.pending_jobs == 1  # the timed-out job stays queued
        job = cam.capture_array("lores", wait=False)
        with pytest.raises(concurrent.futures.TimeoutError):
            cam.wait(job, 0.05)
        t, out = _in_thread(cam.stop)  # the stop job waits behind the queued captures
        t.join(0.3)
        assert t.is_alive()
        cam.cancel_all_and_flush()  # cancels every queued job, the stop job too
        t.join(2)
        assert not t.is_alive() and isinstance(out.get("error"), concurrent.futures.CancelledError)
        with pytest.raises(concurrent.futures.CancelledError):
            job.get_result(0)
        cam.stop()  # with the queue flushed, stop runs at once
        assert not cam.started
    finally:
        cam.cancel_all_and_flush()
        cam.close()


def test_pi_camera_source_uses_picamera2_timeout_and_closes_a_stalled_camera() -> None:
    cams: list[FakePicamera2] = []

    def factory() -> FakePicamera2:
        cams.append(FakePicamera2(stall_after=2))
        return cams[-1]

    src = PiCameraSource(CameraConfig(timeout_s=0.2), factory=factory)
    assert src.read().seq == 1 and src.read().seq == 2
    t0 = time.monotonic()
    t, out = _in_thread(src.read)
    t.join(5)
    assert not t.is_alive(), "capture_array was called without a timeout: it waits for ever"
    assert isinstance(out.get("error"), CameraTimeout), out
    assert 0.2 <= time.monotonic() - t0 < 3
    msg = str(out["error"])
    assert "0.2 s" in msg and "\n" not in msg
    t, _ = _in_thread(src.close)  # stop() would wait behind the timed-out job without cancel_all_and_flush
    t.join(5)
    assert not t.is_alive() and cams[0].closed
    PiCameraSource(CameraConfig(), factory=FakePicamera2).close()  # not left busy


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_picamera2_would_misread_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):  # wait=0 returns a Job instead of a frame
        CameraConfig(timeout_s=timeout_s)


def _daemon(manifest: Manifest, factory: Callable[[], Any], tmp_path: Path, **cfg: Any) -> Daemon:
    engine = open_engine(manifest, "int8", threads=1)
    pre = Preprocessor(manifest.preprocess, engine.input_spec)
    conf = DaemonConfig(port=0, results_path=tmp_path / "results.jsonl", backoff_s=0.01, backoff_max_s=0.02, **cfg)
    return Daemon(factory, lambda s: Pipeline(s, engine, pre, manifest.labels), {"variant": "int8"}, conf)


def _healthz(d: Daemon) -> tuple[int, dict[str, Any]]:
    assert d.server is not None
    try:
        with urllib.request.urlopen(d.server.url + "/healthz", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _until(cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_healthz_goes_unhealthy_when_frames_stop_and_recovers(manifest: Manifest, tmp_path: Path) -> None:
    """A read that blocks without failing (a hung driver or mount no timeout covers) turns /healthz 503."""
    images = np.load(manifest.golden_path())["images"][:4]
    gate = threading.Event()
    gate.set()

    class Hanging:
        def __init__(self) -> None:
            self.inner = SyntheticSource(images, None, CameraConfig(), fps=100)

        def read(self) -> Frame:
            gate.wait()
            return self.inner.read()

        def close(self) -> None:
            gate.set()

    d = _daemon(manifest, Hanging, tmp_path, stale_after_s=0.5)
    t, out = _in_thread(d.run)
    try:
        _until(lambda: d.server is not None and d.stats.frames > 5)
        assert _healthz(d)[0] == 200
        gate.clear()
        _until(lambda: _healthz(d)[0] == 503, 10)
        code, doc = _healthz(d)
        assert code == 503 and doc["reason"].startswith("stalled: no frame classified for") and "limit 0.5 s" in doc["reason"]
        assert d.stats_doc()["last_frame_age_s"] > 0.5
        with urllib.request.urlopen(d.server.url + "/metrics", timeout=5) as r:  # type: ignore[union-attr]
            assert "edgekit_healthy 0.0" in r.read().decode()
        gate.set()
        _until(lambda: _healthz(d)[0] == 200, 10)
    finally:
        d.request_stop()
        gate.set()
        t.join(10)
    assert not t.is_alive() and out.get("result") == 0


def test_the_default_stall_limit_follows_timeout_and_frame_rate() -> None:
    assert default_stale_after_s(CameraConfig()) == pytest.approx(2 * 2.0 + 10 / 30, abs=1e-3)
    assert default_stale_after_s(CameraConfig(timeout_s=5.0, frame_rate=2.0)) == pytest.approx(15.0)
    assert DaemonConfig().stale_after_s == default_stale_after_s(CameraConfig())


def test_a_camera_that_stalls_now_and_then_times_out_and_is_reopened(manifest: Manifest, tmp_path: Path) -> None:
    """Each camera delivers 6 frames and then stalls: the capture times out, the daemon reopens it."""
    images = np.load(manifest.golden_path())["images"][:8]
    cams: list[FakePicamera2] = []

    def factory() -> PiCameraSource:
        def cam() -> FakePicamera2:
            cams.append(FakePicamera2(images=images, stall_after=6))
            return cams[-1]

        return PiCameraSource(CameraConfig(timeout_s=0.1), factory=cam)

    d = _daemon(manifest, factory, tmp_path, max_failures=2)
    t, out = _in_thread(d.run)
    try:
        _until(lambda: d.stats.counters()[1].get("camera_timeout", 0) >= 3 and d.stats.frames >= 20)
        frames = d.stats.frames
        _until(lambda: d.stats.frames > frames)  # still classifying after the timeouts
    finally:
        d.request_stop()
        t.join(10)
    assert not t.is_alive() and out.get("result") == 0
    errors = d.stats.snapshot()["errors"]
    assert errors["camera_timeout"] >= 3 and set(errors) == {"camera_timeout"}
    assert len(cams) >= 4 and all(c.closed for c in cams)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == d.stats.frames


def _start(cmd: list[str], status: Path) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not status.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise AssertionError(f"daemon did not start: {p.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return p, json.loads(status.read_text())["url"]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.slow
def test_sigterm_gets_through_while_the_camera_stalls(device_artifacts: Path, tmp_path: Path) -> None:
    """The real daemon on a fake camera that stalls after 20 frames, with a 60 s capture timeout."""
    status = tmp_path / "status.json"
    cmd = [sys.executable, "-m", "device", "run", "--manifest", str(device_artifacts), "--source", "fake-picamera2:stall-after=20",
           "--camera-timeout", "60", "--stale-after", "1", "--port", "0", "--status-file", str(status),
           "--results", str(tmp_path / "results.jsonl"), "--threads", "1"]
    p, url = _start(cmd, status)
    try:
        end = time.monotonic() + 60
        while True:  # healthy first, then stalled: the capture is now blocked in picamera2's wait
            code, doc = _get(url + "/healthz")
            if code == 503 and doc["reason"].startswith("stalled"):
                break
            assert time.monotonic() < end, doc
            time.sleep(0.1)
        assert _get(url + "/stats")[1]["frames"] == 20
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, err[-2000:]
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.1f} s while the capture waited"
    assert "Camera closed successfully." in err  # picamera2's own message, from close() after the flush
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 20
    assert not status.exists()
