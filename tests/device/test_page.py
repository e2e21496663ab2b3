"""The live page's server side on a real daemon: frames kept only for watchers, events, history, hosts."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from device.daemon import Daemon, DaemonConfig
from device.engine import open_engine
from device.frames import CameraConfig, SyntheticSource
from device.manifest import Manifest
from device.page import PageConfig
from device.pipeline import STAGES, Pipeline
from device.preprocess import Preprocessor
from device.testing import DaemonProcess

FAST = PageConfig(frame_interval_s=0.1, push_interval_s=0.1, watch_grace_s=0.6, sample_s=0.3)


def wait_for(cond: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def start_daemon(manifest: Manifest) -> Iterator[Callable[..., Daemon]]:
    """Factory: a real Daemon (int8 model, synthetic camera) running in a thread, stopped after the test."""
    running: list[tuple[Daemon, threading.Thread]] = []

    def start(page: PageConfig = FAST, fps: float = 60.0) -> Daemon:
        engine = open_engine(manifest, "int8", threads=1)
        pre = Preprocessor(manifest.preprocess, engine.input_spec)
        d = Daemon(lambda: SyntheticSource.from_golden(manifest.golden_path(), CameraConfig(), limit=60, loop=True, fps=fps),
                   lambda s: Pipeline(s, engine, pre, manifest.labels), {"variant": "int8", "labels": list(manifest.labels)},
                   DaemonConfig(port=0, page=page))
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        running.append((d, t))
        wait_for(lambda: d.server is not None and d.stats.frames > 5, what="the daemon to classify frames")
        return d

    yield start
    for d, t in running:
        d.request_stop()
        t.join(5)


def get(d: Daemon, path: str, host: str | None = None) -> tuple[int, str, bytes]:
    assert d.server is not None
    req = urllib.request.Request(d.server.url + path, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


class EventStream:
    """A real HTTP client reading /events, parsing ``state`` events."""

    def __init__(self, d: Daemon):
        assert d.server is not None
        self.conn = http.client.HTTPConnection("127.0.0.1", d.server.port, timeout=10)
        self.conn.request("GET", "/events")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.headers["Content-Type"].startswith("text/event-stream")

    def next(self) -> dict[str, Any]:
        event, data = "", ""
        while True:
            line = self.resp.fp.readline().decode()
            if line == "":
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if event == "state":
                    return dict(json.loads(data))
                event, data = "", ""
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]

    def close(self) -> None:
        self.resp.close()  # the response owns the socket of an HTTP/1.0 stream
        self.conn.close()


def test_frames_are_kept_and_encoded_only_while_someone_watches(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    page = d.page
    for path in ("/stats", "/metrics", "/healthz", "/latest", "/page.json?images=0", "/"):
        code, _, _ = get(d, path)
        assert code == 200, path
    frames0 = d.stats.frames
    time.sleep(0.8)
    assert d.stats.frames > frames0 + 20  # classifying all along
    assert page.kept_frames == 0 and page.encoded_images == 0 and not page.wanted

    a, b = EventStream(d), EventStream(d)  # two open pages
    try:
        docs = [a.next() for _ in range(6)]
        b.next()
        with_images = [doc for doc in docs if doc["shown"] and doc["shown"]["images"]]
        assert with_images, "no event carried the frame"
        imgs = with_images[-1]["shown"]["images"]
        assert imgs["frame"]["src"].startswith("data:image/png;base64,") and imgs["frame"]["note"] == "112x84 YUV420"
        assert imgs["input"]["src"].startswith("data:image/png;base64,") and "28x28 grey int8" in imgs["input"]["note"]
        assert page.viewers == 2 and page.kept_frames > 0
        assert page.encoded_images <= 2 * page.kept_frames  # each kept frame encoded once, shared by both pages
        # events after the first with a frame repeat no image until a new frame is kept
        seqs = [doc["shown"]["seq"] for doc in docs if doc["shown"]]
        assert len(with_images) <= len(set(seqs))
    finally:
        a.close()
        b.close()
    wait_for(lambda: page.viewers == 0, 5, "the streams to close on the server")
    wait_for(lambda: not page.wanted, FAST.watch_grace_s + 2, "the page to stop wanting frames")
    kept = page.kept_frames
    time.sleep(0.6)
    assert page.kept_frames == kept and page.encoded_images <= 2 * kept

    # a request for a picture keeps frames for watch_grace_s, and gets a current one
    code, ctype, png = get(d, "/frame.png")
    assert code == 200 and ctype == "image/png" and png.startswith(b"\x89PNG")
    code, ctype, png = get(d, "/input.png")
    assert code == 200 and png.startswith(b"\x89PNG")
    assert page.kept_frames > kept
    wait_for(lambda: not page.wanted, FAST.watch_grace_s + 2, "the grace period to end")


def test_page_json_is_one_answer_with_history_and_the_shown_frame(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    time.sleep(1.5)  # a few history samples of 0.3 s
    code, _, body = get(d, "/page.json?images=frame")
    assert code == 200
    doc = json.loads(body)
    assert doc["health"]["ok"] and doc["stages"] == list(STAGES)
    assert "labels" not in doc["stats"] and doc["stats"]["frames"] > 0
    shown = doc["shown"]
    assert shown["top"][0]["label"] in d.info["labels"] and set(shown["images"]) == {"frame"}
    assert shown["frame_name"].startswith("synthetic-")
    points = [p for p in doc["history"] if p["n"]]
    assert len(points) >= 3
    invoke = STAGES.index("invoke")
    window = doc["stats"]["latency_ms"]["invoke"]
    for p in points:
        assert all(a <= b for a, b in zip(p["p50_ms"], p["p99_ms"]))
        assert window["min_ms"] * 0.5 <= p["p50_ms"][invoke] <= window["max_ms"] * 2
    # without history and images it is a light status document
    doc = json.loads(get(d, "/page.json?images=0&history=0")[2])
    assert "history" not in doc and (doc["shown"] is None or doc["shown"]["images"] == {})


def test_the_page_answers_only_requests_for_localhost(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    for path in ("/", "/events", "/page.json", "/frame.png"):
        code, _, body = get(d, path, host="camera.attacker.example")
        assert code == 403 and b"SSH tunnel" in body, path
    assert get(d, "/stats", host="camera.attacker.example")[0] == 200  # the JSON endpoints are unchanged
    assert d.page.kept_frames == 0
    code, ctype, body = get(d, "/", host=f"localhost:{d.server.port if d.server else 0}")
    assert code == 200 and ctype.startswith("text/html") and b"EventSource" in body
    assert b"http://" not in body and b"https://" not in body  # no external assets


def test_metrics_export_the_hardware_state(start_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("48500\n")
    (root / "sys/devices/platform/soc/soc:firmware").mkdir(parents=True)
    (root / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("50005\n")
    d = start_daemon(PageConfig(hardware_root=root))
    text = get(d, "/metrics")[2].decode()
    assert "edgekit_cpu_temperature_celsius 48.5" in text
    assert 'edgekit_throttled{condition="under_voltage",when="now"} 1' in text
    assert 'edgekit_throttled{condition="throttled",when="since_boot"} 1' in text
    assert 'edgekit_throttled{condition="frequency_capped",when="now"} 0' in text
    assert "\nedgekit_emulated " in text
    hw = json.loads(get(d, "/page.json?images=0")[2])["hardware"]
    assert hw["temperature_c"] == 48.5 and "under-voltage now" in hw["throttled_flags"]


def test_stopping_the_daemon_ends_open_event_streams(start_daemon: Callable[..., Daemon]) -> None:
    d = start_daemon()
    stream = EventStream(d)
    stream.next()
    threads_before = threading.active_count()
    d.request_stop()
    wait_for(lambda: d.state == "stopping" and d.server is not None and d.server.stopping.is_set(), 5, "the daemon to stop")
    # this process lives on, so an end of stream means the server ended it
    with pytest.raises(EOFError):
        for _ in range(20):
            stream.next()
    stream.close()
    wait_for(lambda: threading.active_count() < threads_before, 5, "the stream's handler thread to end")


@pytest.mark.slow
def test_sigterm_with_a_page_open_still_exits_within_2_s(device_artifacts: Path, tmp_path: Path) -> None:
    d = DaemonProcess.start(device_artifacts, workdir=tmp_path)  # classifying: the synthetic frames are rendered
    try:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        conn.request("GET", "/events")
        resp = conn.getresponse()
        assert resp.fp.readline().startswith(b"retry:")
        wait_for(lambda: b"event: state" in resp.fp.readline(), 10, "a state event")
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=10) == 0, d.log.read_text()[-2000:]
        assert time.monotonic() - t0 < 2.0
        resp.close()
        conn.close()
    finally:
        d.stop()
