"""Collection: the running daemon collects on POST /collect without stopping classification; one-shot when it does not run.

Both through the fake camera's table-top scene (``fake-picamera2:scene=FILE``), which, like a
real camera, only one process can open at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from device.framestore import read_index
from device.testing import DaemonProcess

pytestmark = pytest.mark.slow
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(d: DaemonProcess, path: str, body: Any, ctype: str = "application/json", host: str = "") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(d.url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": ctype})
    if host:
        req.add_header("Host", host)
    try:
        with _OPENER.open(req, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), json.loads(e.read())


def _scene(tmp_path: Path, obj: str, seed: int = 1) -> Path:
    p = tmp_path / "scene.json"
    p.write_text(json.dumps({"object": obj, "seed": seed}))
    return p


def _decode(path: Path) -> np.ndarray:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        return np.asarray(im)


def _check_folder(folder: Path, n: int, main_size: tuple[int, int] = (320, 240)) -> list[dict[str, Any]]:
    records, skipped = read_index(folder)
    assert skipped == 0 and len(records) == n
    for rec in records:
        for kind, info in rec["files"].items():
            data = (folder / info["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == info["sha256"] and len(data) == info["bytes"], (kind, info)
        assert _decode(folder / rec["files"]["frame"]["path"]).shape == (main_size[1], main_size[0], 3)  # main, downscaled
        assert _decode(folder / rec["files"]["model"]["path"]).shape == (28, 28)  # what this grey model sees
        cam = rec["camera"]  # the request's own metadata
        assert isinstance(cam["ExposureTime"], int) and len(cam["ColourGains"]) == 2 and cam["Lux"] > 0
        assert rec["time"] > 0 and rec["source"].startswith("fake-picamera2:scene=")
    return records


def test_the_daemon_collects_while_it_classifies(device_artifacts: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path, "ball")
    data = tmp_path / "data"
    with DaemonProcess.start(device_artifacts, source=f"fake-picamera2:scene={scene}", extra=("--data-dir", str(data)),
                             workdir=tmp_path) as d:
        assert d.get_json("/collect")["state"] == "idle"
        assert _post(d, "/collect", {"label": "red/ball", "count": 3})[0] == 400
        assert _post(d, "/collect", {"label": "red ball", "count": 0})[0] == 400
        assert _post(d, "/collect", {"label": "red ball", "count": 3}, ctype="text/plain")[0] == 415  # no cross-site form posts
        assert _post(d, "/collect", {"label": "red ball", "count": 3}, host="evil.example:80")[0] == 403
        frames0 = d.get_json("/stats")["frames"]
        code, doc = _post(d, "/collect", {"label": "red ball", "count": 12, "interval_s": 0.1, "view_px": 160})
        assert code == 202 and doc["state"] == "running"
        assert _post(d, "/collect", {"label": "other", "count": 1})[0] == 409  # one job at a time
        healthy = []
        t0 = time.monotonic()
        while (st := d.get_json("/collect"))["state"] == "running" and time.monotonic() - t0 < 60:
            healthy.append(d.get("/healthz")[0] == 200)
            time.sleep(0.1)
        assert st["state"] == "done" and st["saved"] == 12 and st["failed"] == 0, st
        stats = d.get_json("/stats")
        assert all(healthy) and stats["frames"] - frames0 > 24  # classification went on meanwhile, never unhealthy
        assert stats["collect"]["saved_total"] == 12 and stats["collect"]["write_errors_total"] == 0
        assert "edgekit_collect_saved_total 12.0" in d.get("/metrics")[1].decode()
        records = _check_folder(data / "red ball", 12, (160, 120))
        assert all(r["collected_by"] == "daemon" and len(r["prediction"]) == 3 for r in records)
        assert len({r["files"]["frame"]["sha256"] for r in records}) == 12  # twelve different frames
        # the camera is the daemon's: a one-shot collection cannot open it meanwhile, and says so in one line
        p = subprocess.run([sys.executable, "-m", "device", "collect", "--manifest", str(device_artifacts), "--source",
                            f"fake-picamera2:scene={scene}", "--label", "x", "--count", "1", "--data-dir", str(data)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and "Device or resource busy" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_one_shot_collects_through_the_same_camera_configuration(device_artifacts: Path, tmp_path: Path) -> None:
    scene = _scene(tmp_path, "star", 2)
    data = tmp_path / "data"
    status = tmp_path / "status.json"
    p = subprocess.run([sys.executable, "-m", "device", "collect", "--manifest", str(device_artifacts), "--source",
                        f"fake-picamera2:scene={scene}", "--label", "green star", "--count", "5", "--interval-s", "0.05",
                        "--data-dir", str(data), "--status-file", str(status), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    final = json.loads(p.stdout)
    assert final["state"] == "done" and final["saved"] == 5 and json.loads(status.read_text())["saved"] == 5
    records = _check_folder(data / "green star", 5)
    assert all(r["collected_by"] == "one-shot" and r["stream"]["size"] == [112, 84] for r in records)  # the daemon's lores
    bad = subprocess.run([sys.executable, "-m", "device", "collect", "--manifest", str(device_artifacts), "--source", "synthetic",
                          "--label", ".hidden", "--count", "1", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a valid file name on the Pi" in bad.stderr and "Traceback" not in bad.stderr


def test_a_daemon_without_a_data_dir_says_how_to_collect(device_artifacts: Path, tmp_path: Path) -> None:
    with DaemonProcess.start(device_artifacts, workdir=tmp_path) as d:
        code, doc = _post(d, "/collect", {"label": "a", "count": 1})
        assert code == 404 and "--data-dir" in doc["error"]
