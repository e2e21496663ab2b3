"""Results rotation, sd_notify, hardware info from a fake root, fake camera quirks, the systemd unit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from device.errors import CameraTimeout, SourceError
from device.fake_picamera2 import FakePicamera2
from device.frames import CameraConfig, EndOfSource, FolderSource
from device.hardware import read_hardware
from device.pi_camera import PiCameraSource
from device.results import JsonLinesWriter
from device.sdnotify import Notifier
from device.service import render_unit


def test_results_rotate_by_size_and_keep_every_line(tmp_path: Path) -> None:
    w = JsonLinesWriter(tmp_path / "r.jsonl", max_bytes=500, backups=2)
    for i in range(30):
        w.write({"seq": i, "pad": "x" * 40})
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    assert all(f.stat().st_size <= 500 for f in files)
    seqs = [json.loads(ln)["seq"] for f in reversed(files) for ln in f.read_text().splitlines()]
    assert seqs == sorted(seqs) and seqs[-1] == 29 and w.rotations >= 2


def test_sd_notify_sends_datagrams_to_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval_s == 2.0
        assert n.ready() and n.watchdog() and n.stopping()
        got = [s.recv(100).decode() for _ in range(3)]
    assert got == ["READY=1", "WATCHDOG=1", "STOPPING=1"]
    assert not Notifier({}).ready()


def test_hardware_is_read_from_a_fake_root(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    gov = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    gov.parent.mkdir(parents=True)
    gov.write_text("ondemand\n")
    t = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    t.parent.mkdir(parents=True)
    t.write_text("61234\n")
    th = tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled"
    th.parent.mkdir(parents=True)
    th.write_text("50005\n")
    hw = read_hardware(tmp_path)
    assert hw.model == "Raspberry Pi 4 Model B Rev 1.4" and hw.governor == "ondemand"
    assert hw.temperature_c == pytest.approx(61.234)
    assert hw.throttled == 0x50005 and "under-voltage now" in hw.throttled_flags and "throttling has occurred" in hw.throttled_flags
    empty = read_hardware(tmp_path / "nothing")
    assert empty.model is None and empty.throttled is None


def test_fake_camera_quirks_and_pi_camera_source(manifest) -> None:  # type: ignore[no-untyped-def]
    images = np.load(manifest.golden_path())["images"][:4]
    cam = FakePicamera2(images=images)
    with pytest.raises(RuntimeError, match="busy"):
        FakePicamera2()
    cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "RGB888"}, lores={"size": (112, 84), "format": "YUV420"}))
    cam.start()
    main = cam.capture_array("main")
    lores = cam.capture_array("lores")
    cfg = cam.camera_configuration()
    assert cfg is not None
    assert main.shape == (480, 640, 3) and lores.shape == (126, cfg["lores"]["stride"])
    assert main[0, 0, 0] < main[0, 0, 2]  # warm tint: red is the last byte (B,G,R order)
    cam.close()
    src = PiCameraSource(CameraConfig(timeout_s=0.05), factory=lambda: FakePicamera2(images=images, stall_after=2))
    f1, f2 = src.read(), src.read()
    assert f1.fmt == "YUV420" and f1.size == (112, 84) and f2.seq == 2
    with pytest.raises(CameraTimeout):
        src.read()
    src.close()
    src.close()
    PiCameraSource(CameraConfig(), factory=lambda: FakePicamera2(images=images)).close()  # not left busy


def test_folder_source_reads_pgm_npy_png_once_and_skips_bad_files(tmp_path: Path) -> None:
    from PIL import Image

    img = np.zeros((40, 30), np.uint8)
    img[10:30, 5:25] = 200
    (tmp_path / "a.pgm").write_bytes(b"P5\n# c\n30 40\n255\n" + img.tobytes())
    np.save(tmp_path / "b.npy", img)
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "c.png")
    (tmp_path / "d.jpg").write_bytes(b"garbage")
    src = FolderSource(tmp_path)
    frames = [src.read() for _ in range(3)]
    assert [f.name for f in frames] == ["a.pgm", "b.npy", "c.png"] and frames[2].fmt == "RGB"
    np.testing.assert_array_equal(frames[0].pixels, img)
    from device.errors import FrameError

    with pytest.raises(FrameError, match=r"d\.jpg"):
        src.read()
    with pytest.raises(EndOfSource):
        src.read()
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path / "empty")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian package systemd)")
def test_systemd_unit_renders_and_verifies(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    text = render_unit(str(tmp_path / "manifest.json"), user="root", workdir=str(tmp_path), state_dir=str(state))
    for needle in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                   f"ReadWritePaths={state}", "SupplementaryGroups=video"):
        assert needle in text
    unit = tmp_path / "edgekit-device.service"
    unit.write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Type=notify", "Type=notifyy").replace("ExecStart=", "ExecStart=relative/"))
    p = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 or "notifyy" in p.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian package systemd)")
def test_the_rendered_unit_scores_at_most_3_in_systemds_own_security_analysis(tmp_path: Path) -> None:
    """``systemd-analyze security --offline=yes`` on the unit as deploy renders it for user pi (6.7 MEDIUM before hardening).

    Whether the daemon still runs and reaches the camera nodes under it is tests/vm/test_hardening.py."""
    import re

    unit = tmp_path / "edgekit-device.service"
    unit.write_text(render_unit("/home/pi/edgekit/m.json", user="pi", group="pi", workdir="/home/pi/edgekit",
                                state_dir="/home/pi/edgekit/state", python="/usr/bin/python3"))
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True,
                       text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= 3.0, p.stdout
    for needle in ("DevicePolicy=closed", "DeviceAllow=char-video4linux rw", "DeviceAllow=char-media rw",
                   "DeviceAllow=char-dma_heap rw"):  # the camera stays reachable
        assert needle in unit.read_text()


def test_top_k_on_raw_outputs_matches_a_stable_argsort() -> None:
    from device.pipeline import SMALL_OUTPUT, top_k_raw

    rng = np.random.default_rng(0)
    for n in (1, 3, 10, SMALL_OUTPUT, SMALL_OUTPUT + 1, 1000):
        for dtype in (np.int8, np.uint8, np.float32):
            for _ in range(30):
                raw = rng.integers(-3, 3 if dtype != np.uint8 else 5, size=(1, n)).astype(dtype)  # many ties
                if dtype == np.uint8:
                    raw = raw.astype(np.uint8)
                for k in (1, 3, 5):
                    want = np.argsort(-raw.reshape(-1).astype(np.float64), kind="stable")[:k].tolist()
                    got = top_k_raw(raw, k)
                    assert [i for i, _ in got] == want
                    assert [v for _, v in got] == raw.reshape(-1)[want].tolist()


def test_scorer_dequantises_like_quant_to_score() -> None:
    from device.manifest import TensorSpec
    from device.pipeline import scorer
    from device.quant import to_score

    for spec in (TensorSpec((1, 10), "int8", 0.00390625, -128), TensorSpec((1, 10), "uint8", 0.1, 3), TensorSpec((1, 10), "float32")):
        f = scorer(spec)
        values = range(-128, 128) if spec.dtype == "int8" else range(256) if spec.dtype == "uint8" else [0.0, 0.25, -1.5]
        for v in values:
            assert f(v) == to_score(v, spec)
