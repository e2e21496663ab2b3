"""Property and fuzz tests: bad manifests, frames, image files and models get one-line errors, never a crash.

The default suite runs each target briefly and derandomized (the same inputs every run);
``EDGEKIT_FUZZ_EXAMPLES=N`` runs N per target, and ``python bench/fuzz_device.py`` runs them for
longer (and the .tflite target, in forked children) and prints the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import fuzz_targets as ft
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from device.errors import FrameError
from device.frames import MAX_IMAGE_PIXELS, decode_image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("EDGEKIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def base(device_artifacts: Path) -> tuple[dict[str, Any], str]:
    return ft.base_manifest(device_artifacts)


def test_the_host_manifest_itself_is_accepted(base: tuple[dict[str, Any], str]) -> None:
    assert ft.check_manifest(base[0]) == "accepted"


def test_manifest_dicts(base: tuple[dict[str, Any], str]) -> None:
    @FUZZ
    @given(ft.mutated_manifests(base[0]))
    def run(doc: Any) -> None:
        ft.check_manifest(doc)

    run()


def test_manifest_files(base: tuple[dict[str, Any], str], tmp_path: Path) -> None:
    @FUZZ
    @given(ft.manifest_files(base[1]))
    def run(data: bytes) -> None:
        ft.check_manifest_file(data, tmp_path / "manifest.json")

    run()


@FUZZ
@given(ft.frames())
def test_preprocessing_random_shapes_dtypes_and_strides(case: dict[str, Any]) -> None:
    ft.check_preprocess(case)


@FUZZ
@given(ft.image_files())
def test_folder_frames_truncated_empty_corrupt_or_huge(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as d:
        ft.check_frame_file(case, Path(d))


def test_a_valid_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    """A real 6000x5000 PNG (30 MP: under Pillow's own 89 MP limit) is refused from its header."""
    from PIL import Image

    p = tmp_path / "big.png"
    Image.new("L", (6000, 5000)).save(p)
    assert MAX_IMAGE_PIXELS < 6000 * 5000 and p.stat().st_size < 1_000_000
    with pytest.raises(FrameError, match=r"big\.png: 6000x5000 is too large to decode \(30 MP, the limit is 25 MP\)"):
        decode_image(p)


_BOMB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20))  # a Pi Zero 2 has 512 MB
from pathlib import Path
from device.errors import FrameError
from device.frames import decode_image
for name in sys.argv[1:]:
    try:
        decode_image(Path(name))
        print("decoded", name)
    except FrameError as e:
        print("refused", e)
"""


def test_huge_claims_are_refused_within_a_small_memory_limit(tmp_path: Path) -> None:
    """Headers claiming 100000x100000 (PNG, PGM, .npy) in a child that may not map more than 700 MB."""
    files = {
        "claim.png": ft.png_claiming(100_000, 100_000, 2),
        "claim.npy": ft.npy_claiming((100_000, 100_000)),
        "claim.pgm": b"P5\n100000 100000\n255\n" + b"\0" * 64,
        "pillow-warns.png": ft.png_claiming(10_000, 10_000),  # 100 MP: Pillow only warns below 179 MP
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    p = subprocess.run([sys.executable, "-c", _BOMB, *(str(tmp_path / n) for n in files)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and not p.stderr, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert len(lines) == len(files) and all(line.startswith("refused") and "too large" in line for line in lines), lines


def test_a_runtime_that_crashes_on_a_model_is_one_line_from_the_child(device_artifacts: Path, tmp_path: Path) -> None:
    """The child really dies of SIGSEGV (a sitecustomize makes the interpreter dereference NULL)."""
    from device.errors import ModelError
    from device.model_check import check_in_child

    (tmp_path / "sitecustomize.py").write_text(
        "import ctypes, importlib.abc, sys\n"
        "class Crash(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ai_edge_litert.interpreter':\n"
        "            ctypes.string_at(0)\n"
        "sys.meta_path.insert(0, Crash())\n"
    )
    data = (device_artifacts / "model_int8.tflite").read_bytes()
    check_in_child(data, "ai-edge-litert", 1, "model_int8.tflite")  # the real runtime loads it
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tmp_path)
    try:
        with pytest.raises(ModelError) as e:
            check_in_child(data, "ai-edge-litert", 1, "model_int8.tflite")
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    msg = ft.assert_one_line(e.value, "model_int8.tflite")
    assert "crashed (SIGSEGV)" in msg


def test_the_fuzz_bench_quick_mode_finds_no_crash(device_artifacts: Path) -> None:
    """bench/fuzz_device.py --quick: every target, .tflite loads in forked children, figures as JSON."""
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz_device.py"), "--manifest", str(device_artifacts), "--quick",
                        "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    targets = {t["target"]: t for t in doc["targets"]}
    assert set(targets) == {"manifest", "manifest_file", "preprocess", "frame_file", "tflite"}
    for t in targets.values():
        assert t["inputs"] > 0 and t["crashes"] == 0 and t["violations"] == 0, t
        assert t["refused"] == t["one_line_errors"]
    assert targets["tflite"]["refused"] > 0 and np.isclose(sum(targets["tflite"]["kinds"].values()), targets["tflite"]["inputs"])
