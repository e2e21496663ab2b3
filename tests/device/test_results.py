"""The results log under real faults: a file-size limit, a full tmpfs, a failed rotation, a torn
last line after a power cut, a disk too slow to drain at shutdown; and its Prometheus names."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from tmpfs import small_tmpfs

from device.daemon import Daemon, DaemonConfig
from device.engine import open_engine
from device.frames import CameraConfig, Frame, SyntheticSource
from device.manifest import Manifest
from device.pipeline import Pipeline
from device.preprocess import Preprocessor
from device.results import JsonLinesWriter, read_all_results, read_results, result_files

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# ------------------------------------------------------------------------------------ torn lines


@pytest.mark.parametrize(
    ("tail", "kept"),
    [
        (b'{"seq":3,"frame":"fr', False),  # cut mid-record
        (b"\0\0\0\0\0\0", False),  # zeros: the size reached the disk, the data did not
        (b'{"seq":3}', True),  # a whole record that only lost its newline
    ],
)
def test_a_torn_last_line_is_skipped_by_readers_and_never_glued_to(tmp_path: Path, tail: bytes, kept: bool) -> None:
    p = tmp_path / "results.jsonl"
    p.write_bytes(b'{"seq":1}\n{"seq":2}\n' + tail)
    log = read_results(p)
    assert [r["seq"] for r in log.records] == ([1, 2, 3] if kept else [1, 2])
    assert log.torn == (0 if kept else 1) and log.corrupt == 0
    w = JsonLinesWriter(p)  # reopening for append repairs the tail first
    assert w.torn_lines == (0 if kept else 1)
    w.write({"seq": 4})
    w.close()
    assert _lines(p)[-1] == b'{"seq":4}\n'
    log = read_results(p)
    assert [r["seq"] for r in log.records] == ([1, 2, 3, 4] if kept else [1, 2, 4])
    assert log.torn == 0 and log.corrupt == 0


def test_readers_skip_and_count_corrupt_lines_and_overlong_ones(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"seq":1}\n\0\0\0\n[1,2]\n' + b"x" * (2 << 20) + b'\n{"seq":2}\n{"seq":3,')
    log = read_results(p)
    assert [r["seq"] for r in log.records] == [1, 2] and log.corrupt == 3 and log.torn == 1


# ------------------------------------------------------------------------------------ write errors

_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # Python ignores SIGXFSZ: writes past it fail with EFBIG
from device.results import JsonLinesWriter
w = JsonLinesWriter(sys.argv[1], max_bytes=1_000_000, backups=5, retry_s=0)
for i in range(60):
    w.write({"seq": i, "pad": "x" * 60})
    w.flush()
w.close()
print(json.dumps({k: getattr(w, k) for k in ("lines", "rotations", "write_errors", "lost", "last_error")}))
"""


def test_a_file_size_limit_rotates_early_and_loses_nothing(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    out = subprocess.run([sys.executable, "-c", _CHILD, str(p)], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["write_errors"] >= 1 and "too large" in doc["last_error"]  # EFBIG: "File too large"
    assert doc["rotations"] >= 1 and doc["lost"] == 0 and doc["lines"] == 60
    assert all(f.read_bytes().endswith(b"\n") and f.stat().st_size <= 3000 for f in result_files(p))
    log = read_all_results(p)
    assert [r["seq"] for r in log.records] == list(range(60)) and log.torn == log.corrupt == 0


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_rotation_that_fails_keeps_appending_and_rotates_once_it_can(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    blocker = tmp_path / "r.jsonl.1"
    blocker.mkdir()
    (blocker / "x").write_text("a folder where the backup goes: os.replace fails")
    clock = Clock()
    w = JsonLinesWriter(p, max_bytes=300, backups=1, retry_s=5.0, clock=clock)
    for i in range(20):
        w.write({"seq": i, "pad": "y" * 20})
        assert w.flush()  # every record still reaches the current file
    assert w.write_errors >= 1 and w.rotations == 0 and w.lines == 20 and p.stat().st_size > 300
    shutil.rmtree(blocker)
    clock.t += 10
    w.write({"seq": 20})
    assert w.flush() and w.rotations == 1
    w.close()
    log = read_all_results(p)
    assert [r["seq"] for r in log.records] == list(range(21)) and w.lost == 0


def test_records_wait_in_memory_while_the_file_cannot_be_opened_and_the_oldest_are_given_up(tmp_path: Path) -> None:
    clock = Clock()
    p = tmp_path / "r.jsonl"
    w = JsonLinesWriter(p, max_bytes=10_000, backups=0, retry_s=1.0, max_pending_bytes=400, clock=clock)
    w.write({"seq": 0, "pad": "z" * 150})
    assert w.flush()
    p.unlink()
    p.mkdir()  # the file is gone and a folder is in its place: nothing can be opened there
    for i in range(1, 10):
        w.write({"seq": i, "pad": "z" * 60})
        clock.t += 2
        assert not w.flush()
    assert w.write_errors >= 1 and w.pending > 0 and w.lost > 0 and w.pending + w.lost == 9
    p.rmdir()
    clock.t += 2
    assert w.flush() and w.pending == 0
    w.close()
    seqs = [r["seq"] for r in read_results(p).records]
    assert seqs == sorted(seqs) and seqs[-1] == 9 and len(seqs) == 9 - w.lost


# ------------------------------------------------------------------------------------ the real daemon


def _fill(folder: Path, leave_bytes: int) -> Path:
    st = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave_bytes))
    return filler


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return dict(json.load(r))


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full_disk", "file_size_limit"])
def test_the_daemon_classifies_on_through_write_errors_counts_them_and_recovers(device_artifacts: Path, tmp_path: Path, fault: str) -> None:
    with contextlib.ExitStack() as stack:
        if fault == "full_disk":
            folder = stack.enter_context(small_tmpfs(tmp_path / "small"))
            filler = _fill(folder, 8192)
            preexec = None
        else:
            folder = tmp_path

            def preexec() -> None:  # this child's files may not grow past 40 kB (EFBIG, SIGXFSZ ignored)
                resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
        results = folder / "results.jsonl"
        status = tmp_path / "status.json"
        cmd = [sys.executable, "-m", "device", "run", "--manifest", str(device_artifacts), "--source", "synthetic",
               "--fps", "60", "--port", "0", "--status-file", str(status), "--results", str(results), "--threads", "1"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=preexec, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            _until(lambda: status.exists() or p.poll() is not None, 60)
            assert p.poll() is None, p.communicate()[1][-2000:]
            url = json.loads(status.read_text())["url"]
            _until(lambda: _get_json(url + "/stats")["results"]["write_errors"] > 0)
            errors_seen = _get_json(url + "/stats")
            assert _metric(url, "edgekit_results_write_errors_total") >= 1
            frames = errors_seen["frames"]
            _until(lambda: _get_json(url + "/stats")["frames"] > frames + 30)  # classification goes on
            with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
                assert r.status == 200
            if fault == "full_disk":
                assert _get_json(url + "/stats")["results"]["pending"] > 0  # waiting in memory
                filler.unlink()  # space returns
            lines = _get_json(url + "/stats")["results"]["lines"]
            _until(lambda: (s := _get_json(url + "/stats")["results"])["lines"] > lines + 30 and s["pending"] < 5)
            final = _get_json(url + "/stats")
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, err[-2000:]
        assert "cannot write results" in err and "classification goes on" in err
        assert final["results"]["lost"] == 0
        log = read_all_results(results)
        assert log.torn == 0 and log.corrupt == 0
        seqs = [r["seq"] for r in log.records]
        if fault == "full_disk":  # every frame is in the file, none twice, none missing
            assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= final["frames"]
        else:  # rotated (and the oldest backups deleted, as configured): what is kept is contiguous
            assert final["results"]["rotations"] >= 1
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_shutdown_waits_for_a_writer_still_writing_instead_of_closing_the_file_under_it(manifest: Manifest, tmp_path: Path) -> None:
    """The results go to a FIFO whose reader stalls for 1.8 s: a disk that is slow to drain."""
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            time.sleep(1.8)
            got.extend(f.read().splitlines(keepends=True))

    rt = threading.Thread(target=reader, daemon=True)
    rt.start()
    images = np.load(manifest.golden_path())["images"][:8]

    class Burst:
        """600 frames as fast as they come, then stop."""

        def __init__(self) -> None:
            self.inner = SyntheticSource(images, None, CameraConfig())
            self.n = 0

        def read(self) -> Frame:
            self.n += 1
            if self.n == 600:
                d.request_stop()
            return self.inner.read()

        def close(self) -> None:
            pass

    engine = open_engine(manifest, "int8", threads=1)
    pre = Preprocessor(manifest.preprocess, engine.input_spec)
    d = Daemon(Burst, lambda s: Pipeline(s, engine, pre, manifest.labels), {"variant": "int8"},
               DaemonConfig(port=0, results_path=fifo))
    assert d.run() == 0
    rt.join(10)
    assert d.writer is not None and d._writer_thread is not None and not d._writer_thread.is_alive()
    assert d.stats.frames == 600 and d.queue.dropped > 0  # the writer was blocked: the queue dropped the oldest
    assert len(got) == d.writer.lines == 600 - d.queue.dropped and d.writer.write_errors == 0
    seqs = [json.loads(line)["seq"] for line in got]  # every line whole
    assert all(line.endswith(b"\n") for line in got) and seqs == sorted(seqs) and seqs[-1] == 600


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian package prometheus)")
def test_metrics_follow_prometheus_naming(manifest: Manifest, tmp_path: Path) -> None:
    engine = open_engine(manifest, "int8", threads=1)
    pre = Preprocessor(manifest.preprocess, engine.input_spec)
    d = Daemon(lambda: SyntheticSource(np.zeros((1, 28, 28), np.uint8)), lambda s: Pipeline(s, engine, pre, manifest.labels),
               {"variant": "int8"}, DaemonConfig(port=0, results_path=tmp_path / "r.jsonl"))
    d.writer = JsonLinesWriter(tmp_path / "r.jsonl")
    text = d.metrics()
    d.writer.close()
    assert "# TYPE edgekit_results_write_errors_total counter" in text and "edgekit_results_write_errors_total 0" in text
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
