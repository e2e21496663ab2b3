"""bench/host_pipeline refuses bad input in one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _refusal(*args: str) -> str:
    p = subprocess.run([sys.executable, str(BENCH / "host_pipeline.py"), *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return p.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("fraction", ["2", "-0.5"])
def test_a_camera_fraction_outside_0_to_1_is_one_line(tfds_dir: Path, tmp_path: Path, fraction: str) -> None:
    line = _refusal("--quick", "--camera-fraction", fraction, "--out", str(tmp_path / "out"))
    assert line.startswith("error:") and "camera_fraction must be in [0, 1]" in line
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_is_not_empty_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _refusal("--quick", "--out", str(out))
    assert line.startswith("error:") and (out / "keep.txt").read_text() == "mine"
