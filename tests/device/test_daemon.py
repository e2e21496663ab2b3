"""The daemon in-process (failures, bad frames, queues) and as a real process (signals, HTTP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from device.bench import run_bench
from device.daemon import EXIT_SOURCE_FAILED, Daemon, DaemonConfig, DropOldestQueue
from device.engine import open_engine
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig, Frame, SyntheticSource
from device.manifest import Manifest
from device.pi_camera import PiCameraSource
from device.pipeline import Pipeline
from device.preprocess import Preprocessor
from device.quant import to_input


def test_drop_oldest_queue_is_bounded_and_counts_drops() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(3)
    for i in range(10):
        q.put(i)
    assert len(q) == 3 and q.dropped == 7
    assert [q.get(0.01) for _ in range(3)] == [7, 8, 9]
    q.close()
    assert q.get(0.01) is None


def _daemon(manifest: Manifest, factory, tmp_path: Path, **cfg) -> Daemon:  # type: ignore[no-untyped-def]
    engine = open_engine(manifest, "int8", threads=1)
    pre = Preprocessor(manifest.preprocess, engine.input_spec)
    conf = DaemonConfig(port=0, results_path=tmp_path / "results.jsonl", backoff_s=0.01, backoff_max_s=0.02, **cfg)
    return Daemon(factory, lambda s: Pipeline(s, engine, pre, manifest.labels), {"variant": "int8"}, conf)


def test_camera_that_keeps_timing_out_makes_the_daemon_exit_non_zero(manifest: Manifest, tmp_path: Path) -> None:
    opened: list[FakePicamera2] = []

    def cam() -> FakePicamera2:
        opened.append(FakePicamera2(images=np.zeros((1, 28, 28), np.uint8), stall_after=0))
        return opened[-1]

    d = _daemon(manifest, lambda: PiCameraSource(CameraConfig(timeout_s=0.05), factory=cam), tmp_path, max_failures=4)
    t0 = time.monotonic()
    assert d.run() == EXIT_SOURCE_FAILED
    assert time.monotonic() - t0 < 5
    assert len(opened) == 4 and all(c.closed for c in opened)  # reopened each time, never left busy
    assert d.stats.snapshot()["errors"] == {"camera_timeout": 4}


def test_occasional_timeouts_are_survived_and_bad_frames_skipped(manifest: Manifest, tmp_path: Path) -> None:
    """Each camera stalls after 9 frames (its capture times out: picamera2's wait=), every 5th frame is cut short."""
    images = np.load(manifest.golden_path())["images"][:8]
    cams: list[FakePicamera2] = []
    delivered = [0]

    class Flaky:
        def __init__(self) -> None:
            cams.append(FakePicamera2(images=images, stall_after=9))
            self.inner = PiCameraSource(CameraConfig(timeout_s=0.05), factory=lambda: cams[-1])

        def read(self) -> Frame:
            f = self.inner.read()  # the 10th read of each camera raises CameraTimeout after 0.05 s
            delivered[0] += 1
            if delivered[0] == 45:  # the 9th frame of the 5th camera
                d.request_stop()
            if delivered[0] % 5 == 0:
                return Frame(f.pixels[:10], f.fmt, f.seq, f.timestamp_ns, f.name, size=f.size)
            return f

        def close(self) -> None:
            self.inner.close()

    d = _daemon(manifest, Flaky, tmp_path, max_failures=2)
    assert d.run() == 0
    snap = d.stats.snapshot()
    assert snap["errors"] == {"camera_timeout": 4, "bad_frame": 9} and snap["frames"] == 36
    assert len(cams) == 5 and all(c.closed for c in cams)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 36
    rec = json.loads(lines[0])
    assert rec["frame"].startswith("frame-") and len(rec["top"]) == 3 and set(rec["latency_ms"]) >= {"invoke", "total"}


@pytest.mark.slow
def test_daemon_process_serves_and_stops_cleanly_on_sigterm(device_artifacts: Path, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    results = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "device", "run", "--manifest", str(device_artifacts), "--variant", "int8",
           "--source", "synthetic", "--port", "0", "--status-file", str(status), "--results", str(results), "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not status.exists():
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        url = json.loads(status.read_text())["url"]
        assert url.startswith("http://127.0.0.1:")
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        with urllib.request.urlopen(url + "/stats", timeout=5) as r:
            stats = json.load(r)
        assert stats["frames"] > 0 and stats["runtime"] and stats["sha256"] and stats["uptime_s"] > 0
        assert 5 < stats["fps"] < 40  # paced like a 30 fps camera
        for stage in ("capture", "preprocess", "invoke", "postprocess", "total"):
            s = stats["latency_ms"][stage]
            assert 0 <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'edgekit_stage_latency_seconds_count{stage="total"}' in metrics
        with urllib.request.urlopen(url + "/latest", timeout=5) as r:
            latest = json.load(r)
        assert latest["frames"] and latest["frames"][0]["top"][0]["label"] in latest["labels"]
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=5)
        assert time.monotonic() - t0 < 2.0
        assert p.returncode == 0, p.stderr.read() if p.stderr else ""
        assert not status.exists()
        lines = results.read_text().splitlines()
        assert len(lines) >= stats["frames"] and json.loads(lines[-1])["seq"] >= 1
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["lores", "main"])
def test_accuracy_through_the_daemon_pipeline_matches_the_interpreter(manifest: Manifest, stream: str) -> None:
    limit = None if stream == "lores" else 300
    src = SyntheticSource.from_golden(manifest.golden_path(), CameraConfig(stream=stream), limit=limit, loop=True)
    r = run_bench(manifest, "int8", runs=len(src), warmup=0, threads=1, source_factory=lambda: src)
    assert r.labelled_frames == len(src)
    assert r.raw_accuracy is not None and r.frame_accuracy is not None
    if stream == "lores":
        assert r.golden_count == len(src) >= 500
        # with agreement >= 0.99 the accuracies differ by at most 0.01 (1e-9: 0.777 - 0.767 in floating point)
        assert abs(r.frame_accuracy - r.raw_accuracy) <= 0.01 + 1e-9, (r.frame_accuracy, r.raw_accuracy)
        assert r.host_agreement is not None and r.host_agreement >= 0.99
    else:  # full 640x480 frames (resampled twice, 28 → 480 → 28) for fewer images: their own raw accuracy
        engine = open_engine(manifest, "int8", threads=1)
        with np.load(manifest.golden_path()) as z:
            images, labels = z["images"][:limit], z["labels"][:limit]
        raw = np.mean([int(np.argmax(engine.run(to_input(im / 255.0, engine.input_spec)))) == y for im, y in zip(images, labels)])
        assert abs(r.frame_accuracy - float(raw)) <= 0.03, (r.frame_accuracy, raw)
