"""The CLI: help that explains, clear one-line errors, bench JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_run_flags() -> None:
    p = run("run", "--help")
    assert p.returncode == 0
    for flag in ("--manifest", "--variant", "--source", "--port", "--results", "--loop", "--runtime", "--threads", "--status-file"):
        assert flag in p.stdout


def test_missing_manifest_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    p = run("bench", "--manifest", str(tmp_path / "nope"))
    assert p.returncode == 1
    assert "no manifest" in p.stderr and "python -m host run" in p.stderr and "Traceback" not in p.stderr


def test_unknown_source_is_a_clear_error(device_artifacts: Path) -> None:
    p = run("run", "--manifest", str(device_artifacts), "--source", "webcam", "--port", "0")
    assert p.returncode == 1 and "unknown --source" in p.stderr and "Traceback" not in p.stderr


def test_bench_json_reports_every_stage_and_accuracy(device_artifacts: Path, tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    p = run("bench", "--manifest", str(device_artifacts), "--variant", "int8", "--runs", "100", "--warmup", "5",
            "--threads", "1", "--json", "--hardware-root", str(tmp_path))
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)["results"][0]
    assert r["hardware"]["model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert set(r["stages_ms"]) == {"capture", "preprocess", "invoke", "postprocess", "total"}
    assert r["stages_ms"]["total"]["count"] == 100 and r["labelled_frames"] == 100
    assert r["load_ms"] > 0 and r["peak_rss_kb"] > 0 and 0 < r["frame_accuracy"] <= 1
