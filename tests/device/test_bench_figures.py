"""The bench scripts behind the device figures run in their quick modes and report what they claim to measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(*args: str, timeout: int = 600) -> dict:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_grey_pipeline_bench_quick_compares_with_a_git_revision(device_artifacts: Path) -> None:
    r = _run("bench/device_pipeline.py", "--manifest", str(device_artifacts), "--quick", "--json", "--baseline-rev", "HEAD")
    assert r["baseline_rev"] == "HEAD" and r["lores_size"] == [112, 84] and r["machine"]["cpu"]
    for key in ("pipeline_lores_over_invoke", "preprocess_over_invoke", "preprocess_now_over_before", "pipeline_now_over_before"):
        assert r["ratios"][key] > 0
    assert r["cpu_us_per_frame"]["preprocess alone"] > 0 and "preprocess alone, HEAD" in r["cpu_us_per_frame"]


@pytest.mark.slow
def test_rgb_bench_quick_builds_a_96x96_int8_model_and_times_the_daemons_stream(tmp_path: Path) -> None:
    out = tmp_path / "rgb"
    r = _run("bench/rgb_pipeline.py", "--quick", "--json", "--out", str(out))
    assert r["input"]["shape"] == [1, 96, 96, 3] and r["input"]["dtype"] == "int8"
    assert r["stream"] == {"lores": [256, 192], "main": [640, 480], "format": "YUV420", "colour_space": "sYCC", "stride": 256}
    assert set(r["ratios_to_invoke"]) == {"preprocess, crop center", "preprocess, crop object", "pipeline, crop center",
                                          "pipeline, crop object", "pipeline, main 640x480 BGR"}
    assert all(v > 0 for v in r["ratios_to_invoke"].values())
    split = r["stage_us_wall"]["pipeline, crop center"]
    assert set(split) == {"capture", "preprocess", "invoke", "postprocess", "total"} and split["total"] >= split["invoke"]
    # the artifacts it wrote are a complete RGB release: the device's own bench runs on them
    b = _run("-m", "device", "bench", "--manifest", str(out / "manifest.json"), "--source", "synthetic", "--runs", "8",
             "--warmup", "2", "--json")["results"][0]
    assert b["labelled_frames"] == 8 and b["golden_count"] == 8
    assert b["host_agreement"] == 1.0  # model_input on the golden R,G,B images reproduces the outputs written with them
