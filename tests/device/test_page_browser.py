"""The device page in a real browser (Debian's Chromium through Playwright) against a real daemon process."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_helpers import artifact, need_browser
from PIL import Image

from deploy.headless import chromium
from device.pipeline import STAGES
from device.testing import DaemonProcess

pytestmark = pytest.mark.slow

# Reads the pixels the browser decoded from an <img>, through a canvas.
PIXELS_JS = """(id) => {
  const img = document.getElementById(id);
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  return {w: c.width, h: c.height, src: img.src, rgba: Array.from(g.getImageData(0, 0, c.width, c.height).data)};
}"""


@pytest.fixture
def daemon(device_artifacts: Path, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A real daemon on a fake board: SoC at 48.5 °C, under-voltage now, under qemu-user (declared)."""
    root = tmp_path / "root"
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("48500\n")
    (root / "sys/devices/platform/soc/soc:firmware").mkdir(parents=True)
    (root / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("50005\n")
    (root / "sys/devices/system/cpu/cpu0/cpufreq").mkdir(parents=True)
    (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").write_text("ondemand\n")
    d = DaemonProcess.start(device_artifacts, extra=("--fps", "8", "--hardware-root", str(root)), workdir=tmp_path,
                            env={"EDGEKIT_EMULATED": "qemu-user-aarch64"})
    yield d
    d.stop()


def texts(page: Any, ids: list[str]) -> list[str]:
    return [page.text_content("#" + i) for i in ids]


def test_device_page_live_in_chromium(daemon: DaemonProcess) -> None:
    need_browser()
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(daemon.url + "/")
        page.wait_for_function("document.getElementById('frame-img').naturalWidth > 0 && "
                               "document.getElementById('input-img').naturalWidth > 0", timeout=15000)

        # the label shown is the daemon's own answer for the frame shown (/latest keeps the last 10 frames)
        for _ in range(40):
            # one evaluate: the page's JS thread cannot render an event between these reads
            seq, label, shown_top = page.evaluate("""() => [Number(document.getElementById("seq").textContent),
                document.getElementById("label").textContent,
                Array.from(document.querySelectorAll("#top .lbl")).map((e) => e.textContent)]""")
            frame = next((f for f in daemon.get_json("/latest")["frames"] if f["seq"] == seq), None)
            if frame is not None:
                break
            time.sleep(0.1)
        assert frame is not None, "the frame shown was never among /latest's"
        assert label == frame["top"][0]["label"] and shown_top == [p["label"] for p in frame["top"]]

        # latency figures change between two reads
        ids = [f"{q}-{s}" for s in STAGES for q in ("p50", "p99")]
        first = texts(page, ids)
        frames1 = int(page.text_content("#frames") or 0)
        time.sleep(2.0)
        second = texts(page, ids)
        assert all(t and t != "\u2013" for t in first + second)
        assert first != second and int(page.text_content("#frames") or 0) > frames1

        # what Chromium decoded is exactly what the device encoded, an 8x nearest-neighbour enlargement
        got = page.evaluate(PIXELS_JS, "input-img")
        assert (got["w"], got["h"]) == (224, 224)
        rgba = np.asarray(got["rgba"], np.uint8).reshape(224, 224, 4)
        with Image.open(io.BytesIO(base64.b64decode(got["src"].split(",", 1)[1]))) as im:
            pil = np.asarray(im.convert("L"))
        assert np.array_equal(rgba[..., 0], pil) and np.array_equal(rgba[..., 0], rgba[..., 2])
        blocks = pil.reshape(28, 8, 28, 8)
        assert (blocks == blocks[:, :1, :, :1]).all() and pil.max() > 200 and pil.min() < 30
        frame_px = page.evaluate(PIXELS_JS, "frame-img")
        assert (frame_px["w"], frame_px["h"]) == (112, 84)

        # hardware state and the EMULATED mark
        assert page.text_content("#hw-temp") == "48.5 \u00b0C"
        assert "under-voltage now" in (page.text_content("#hw-throttled") or "")
        assert page.text_content("#hw-governor") == "ondemand"
        assert page.is_visible("#emulated") and "qemu-user-aarch64" in (page.text_content("#hw-emulated") or "")
        assert page.get_attribute("#health", "class") == "pill ok"
        for sel, want in (("#variant", "int8"), ("#sha", daemon.get_json("/stats")["sha256"][:12])):
            assert page.text_content(sel) == want
        time.sleep(4.5)  # a few history samples, so the screenshot shows the chart
        page.screenshot(path=str(artifact("device-page.png")), full_page=True)

        # a stopped daemon: the page says so instead of showing stale figures as live
        daemon.stop()
        page.wait_for_function("document.getElementById('conn').textContent.includes('not answering')", timeout=5000)
        assert page.get_attribute("#health", "class") == "pill bad"
    assert not errors, errors
    assert json.loads(json.dumps(errors)) == []
