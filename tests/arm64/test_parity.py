"""The int8 model on emulated aarch64 (both runtimes) gives the host x86 interpreter's answers.

Two references: the golden set (the host pipeline's x86 interpreter, ai-edge-litert there) and
the same runtime run on x86. Measured here: tflite-runtime 2.14 is bit-identical on x86 and
aarch64; ai-edge-litert differs by at most 1 int8 level in about 1 % of images; against the
golden set tflite-runtime differs by up to ~8 levels in ~20 % of images because its int8
kernels round differently from the XNNPACK path that made the golden set (top-1 still agrees
on ≥ 99.9 %). ``bench/arm64_parity.py --diagnose`` prints the full picture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from arm64_compare import Kit, Probe, compare, host_inputs, host_probe, run_probe
from arm64_target import Arm64Session

from device.manifest import load_manifest

pytestmark = [pytest.mark.arm64, pytest.mark.slow]


@pytest.fixture(scope="module")
def gold(arm64_artifacts: Path) -> dict[str, np.ndarray]:
    """Golden labels, raw int8 outputs and the host's quantised input tensors."""
    manifest = load_manifest(arm64_artifacts)
    with np.load(manifest.golden_path()) as z:
        images, labels, raw = z["images"], z["labels"], z["raw_int8"]
    return {"labels": labels, "raw": raw, "inputs": host_inputs(images, manifest.variant("int8").input)}


@pytest.mark.parametrize("runtime", ["tflite-runtime", "ai-edge-litert"])
def test_int8_golden_parity_on_emulated_aarch64(arm64: Arm64Session, arm64_kit: Kit, arm64_artifacts: Path,
                                                gold: dict[str, np.ndarray], runtime: str, tmp_path: Path) -> None:
    n = len(gold["labels"])
    assert n >= 1000, "the golden set must hold at least 1000 official test images"
    dev = run_probe(arm64, arm64_kit, runtime, "int8", frames=True)
    assert dev.info["machine"] == "aarch64" and dev.info["python"].startswith("3.11.")
    assert dev.info["runtime"] == runtime
    if runtime == "tflite-runtime":
        assert dev.info["numpy"].startswith("1.26.")
    a = dev.arrays

    # Against the golden set: same inputs, same answers (bar near-ties), small raw differences.
    g = compare(a["raw"], gold["raw"], gold["labels"], a["inputs"], gold["inputs"])
    assert g.count == n
    assert g.inputs_identical == n, g.why
    assert g.top1_agreement >= 0.995, g.why
    assert g.max_abs_raw_diff <= 12, g.why
    assert abs(g.device_accuracy - g.host_accuracy) <= 0.005, g.why

    # Against the same runtime on x86: the architecture changes (almost) nothing.
    host = host_probe(runtime, arm64_artifacts, tmp_path, "int8", frames=True)
    if host is None:
        pytest.skip(f"no x86 {runtime} on this host to compare like with like (golden parity passed)")
    assert isinstance(host, Probe)
    h = host.arrays
    same = compare(a["raw"], h["raw"], gold["labels"], a["inputs"], h["inputs"])
    if runtime == "tflite-runtime":
        assert same.rows_differing == 0, f"tflite-runtime 2.14 should be bit-identical on x86 and aarch64: {same.why}"
    assert same.top1_agreement >= 0.999, same.why
    assert same.max_abs_raw_diff <= 2, same.why

    # As camera frames through the device's preprocessing: same pixels, same tensors, same answers.
    m = len(a["frame_pixels"])
    assert m == n
    assert int((a["frame_pixels"].reshape(m, -1) == h["frame_pixels"].reshape(m, -1)).all(1).sum()) == m
    f = compare(a["frame_raw"], h["frame_raw"], gold["labels"], a["frame_inputs"], h["frame_inputs"])
    assert f.inputs_identical == m, f.why
    assert f.top1_agreement >= 0.999, f.why
    assert abs(f.device_accuracy - g.device_accuracy) <= 0.02, "frames must classify about as well as the raw images"
