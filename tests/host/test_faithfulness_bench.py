"""bench/folder_faithfulness.py runs in its quick mode and reports what it claims to measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from imagefolders import needs_idx

ROOT = Path(__file__).resolve().parents[2]


@needs_idx
@pytest.mark.slow
def test_quick_mode_trains_both_paths_and_compares_them_on_the_official_test_split(tmp_path: Path, tfds_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([sys.executable, "bench/folder_faithfulness.py", "--quick", "--json", "--keep", str(tmp_path / "runs")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    assert r["quick"] and r["official_test_images"] == 2_000 and r["machine"]["cpu"]
    png = list((tmp_path / "runs" / "fashion_mnist_png").rglob("*.png"))
    assert len(png) == 2000 and {q.parent.name for q in png} >= {"T-shirt-top", "Ankle boot"}
    for side in ("tfds", "folder"):
        assert set(r[side]["accuracy"]) == {"float32", "dynamic", "float16", "int8"}
        assert all(0.3 < a <= 1.0 for a in r[side]["accuracy"].values()), r[side]  # ten brief epochs: far above chance (10 %)
        assert r[side]["epochs_run"] <= 10 and r[side]["precision"] in ("float32", "mixed_bfloat16")
    d = r["folder"]["data"]
    assert d["files"] == 2000 and d["train"] + d["validation"] + d["test"] == 2000 - d["duplicates"] - d["conflicts"]
    assert abs(r["delta_points"]["int8"] - 100 * (r["folder"]["accuracy"]["int8"] - r["tfds"]["accuracy"]["int8"])) < 1e-9
    assert r["goal_met"] in (True, False) and r["goal_points"] == 0.5
