"""The on-device golden check (``device.golden``): measured tolerance per runtime, wrong models still refused.

Real interpreters on the real artifacts: ai-edge-litert in this process, tflite-runtime 2.14
(numpy<2) in a venv of this machine's Debian Python 3.11 built offline from the wheelhouse cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deploy.errors import WheelhouseError
from deploy.venv import TFLITE_RUNTIME_REQS, build_wheelhouse
from device.golden import OTHER_KERNELS, SAME_KERNELS, check_golden, tolerance
from device.manifest import sha256_file

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("EDGEKIT_CACHE", "~/.cache/edgekit")).expanduser()


def _copy(art: Path, tmp: Path) -> Path:
    out = tmp / "art"
    shutil.copytree(art, out, ignore=shutil.ignore_patterns("saved_model", "*.keras"))
    return out


def _rewrite_manifest(art: Path, edit: object) -> None:
    m = json.loads((art / "manifest.json").read_text())
    edit(m)  # type: ignore[operator]
    (art / "manifest.json").write_text(json.dumps(m))


def test_tolerance_is_per_runtime_and_short_checks_allow_a_near_tie() -> None:
    assert tolerance("ai-edge-litert", "ai-edge-litert") is SAME_KERNELS
    assert tolerance("tflite-runtime", "ai-edge-litert") is OTHER_KERNELS
    assert tolerance("ai-edge-litert", None) is OTHER_KERNELS  # unknown writer: the looser, measured bound
    assert OTHER_KERNELS.required(1000) == 980 and OTHER_KERNELS.required(20) == 19 and SAME_KERNELS.required(20) == 19
    assert SAME_KERNELS.max_levels < OTHER_KERNELS.max_levels


def test_good_model_passes_with_both_figures_printed(deploy_artifacts: Path) -> None:
    r = check_golden(deploy_artifacts / "manifest.json", "int8", "ai-edge-litert", count=200)
    assert r.ok and r.error is None and r.count == 200 and r.top1_agree == 200 and r.max_raw_diff == 0
    assert r.raw_unit == "levels" and r.golden_runtime == "ai-edge-litert" and r.max_raw_allowed == SAME_KERNELS.max_levels
    assert "golden top-1 200/200" in r.summary and "≥ 198 required" in r.summary and "≤ 2 allowed" in r.summary
    f = check_golden(deploy_artifacts / "manifest.json", "float32", "ai-edge-litert", count=50)
    assert f.ok and f.raw_unit == "score" and f.max_raw_allowed == SAME_KERNELS.max_float


def _shuffle_int8_weights(model: Path) -> None:
    """Another model's weights: every int8 weight tensor's values permuted (same graph, same statistics)."""
    # TensorFlow only here, on the host side of the test.
    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.read_model_from_bytearray(bytearray(model.read_bytes()))
    rng = np.random.default_rng(7)
    int8 = 9  # schema TensorType.INT8
    for t in m.subgraphs[0].tensors:
        buf = m.buffers[t.buffer]
        if t.type == int8 and buf.data is not None and len(buf.data) > 64:
            buf.data = rng.permutation(np.frombuffer(bytes(buf.data), dtype=np.uint8)).tolist()
    model.write_bytes(bytes(fu.convert_object_to_bytearray(m)))


@pytest.mark.slow
def test_another_models_weights_are_refused(deploy_artifacts: Path, tmp_path: Path) -> None:
    art = _copy(deploy_artifacts, tmp_path)
    model = art / "model_int8.tflite"
    _shuffle_int8_weights(model)

    def edit(m: dict) -> None:
        m["variants"]["int8"]["sha256"] = sha256_file(model)
        m["variants"]["int8"]["bytes"] = model.stat().st_size

    _rewrite_manifest(art, edit)  # a consistent-looking folder: hashes and specs match, the weights do not
    r = check_golden(art / "manifest.json", "int8", "ai-edge-litert", count=100)
    assert not r.ok and r.top1_agree < r.top1_required and r.max_raw_diff > OTHER_KERNELS.max_levels
    assert r.error is not None and "not kernel noise" in r.error and f"{r.top1_agree}/100" in r.error


def test_outputs_in_another_label_order_are_refused(deploy_artifacts: Path, tmp_path: Path) -> None:
    """The model's classes are in another order than the manifest and golden set say: refused."""
    art = _copy(deploy_artifacts, tmp_path)
    perm = np.random.default_rng(3).permutation(10)
    with np.load(art / "golden.npz") as g:
        arrays = {k: g[k] for k in g.files}
    for k in [k for k in arrays if k.startswith("raw_")]:
        arrays[k] = arrays[k][..., perm]
    arrays["labels"] = np.argsort(perm)[arrays["labels"]]
    np.savez(art / "golden.npz", **arrays)

    def edit(m: dict) -> None:
        m["labels"] = [m["labels"][i] for i in perm]
        m["golden"]["sha256"] = sha256_file(art / "golden.npz")

    _rewrite_manifest(art, edit)
    for variant in ("int8", "float32"):
        r = check_golden(art / "manifest.json", variant, "ai-edge-litert", count=100)
        assert not r.ok and r.top1_agree < 50 and r.label_accuracy < 0.5, r


@pytest.fixture(scope="module")
def tflite_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv of the Debian Python 3.11 with tflite-runtime 2.14 + numpy<2, installed offline from the wheelhouse cache."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("no /usr/bin/python3")
    wheels = CACHE / "wheelhouse-x86_64-cp311"
    try:
        build_wheelhouse("x86_64", "3.11", TFLITE_RUNTIME_REQS, wheels, glibc="glibc 2.36")
    except WheelhouseError as e:
        pytest.skip(f"no tflite-runtime wheels: {e}")
    venv = tmp_path_factory.mktemp("tflite") / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
                    *TFLITE_RUNTIME_REQS], check=True, timeout=600)
    yield venv / "bin" / "python"


@pytest.mark.slow
def test_tflite_runtime_passes_1000_golden_inputs_that_it_does_not_all_agree_on(tflite_python: Path,
                                                                               deploy_artifacts: Path) -> None:
    """`--golden-count 1000` on the Bookworm runtime: a good model passes although its kernels flip near-ties."""
    p = subprocess.run([str(tflite_python), "-m", "device.golden", "--manifest", str(deploy_artifacts / "manifest.json"),
                        "--variant", "int8", "--runtime", "tflite-runtime", "--count", "1000", "--json"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and r["ok"], r
    assert r["runtime"] == "tflite-runtime" and r["golden_runtime"] == "ai-edge-litert"
    # Not bit-identical: a 100 % rule would refuse this good model.
    assert r["top1_required"] <= r["top1_agree"] < 1000 and 0 < r["max_raw_diff"] <= r["max_raw_allowed"]
    # The human form states both figures and both limits.
    q = subprocess.run([str(tflite_python), "-m", "device.golden", "--manifest", str(deploy_artifacts / "manifest.json"),
                        "--variant", "int8", "--runtime", "tflite-runtime", "--count", "1000"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert q.returncode == 0 and f"golden top-1 {r['top1_agree']}/1000 (≥ 980 required, 98%)" in q.stdout
    assert "≤ 16 allowed" in q.stdout and "tflite-runtime 2.14.0" in q.stdout


def test_golden_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "device.golden", "--manifest", str(tmp_path), "--variant", "int8", "--json"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no manifest" in json.loads(p.stdout)["error"]
