"""The pipeline's output folder against the contract the device and deploy sides read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.engine import open_engine
from device.manifest import VARIANTS, load_manifest, sha256_file
from device.quant import to_input, to_scores
from host.data import LABELS

FLOAT_VARIANTS = ("float32", "dynamic", "float16")


def test_layout(artifacts: Path) -> None:
    for name in ["manifest.json", "golden.npz", "report.md", "confusion_int8.png", *(f"model_{v}.tflite" for v in VARIANTS)]:
        assert (artifacts / name).is_file(), name
    assert (artifacts / "saved_model" / "1" / "saved_model.pb").is_file()
    assert (artifacts / "confusion_int8.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in artifacts.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_manifest_matches_the_files(artifacts: Path) -> None:
    m = load_manifest(artifacts)
    assert m.labels == LABELS
    assert set(m.variants) == set(VARIANTS)
    assert m.preprocess.polarity == "light_on_dark" and m.preprocess.size == (28, 28)
    for v in m.variants.values():
        p = m.model_path(v.name)
        assert p.stat().st_size == v.bytes and sha256_file(p) == v.sha256
        assert v.accuracy is not None and 0.5 < v.accuracy <= 1.0  # even the brief run learns
    assert m.variants["int8"].input.dtype == "int8" and m.variants["int8"].input.quantized
    assert m.variants["int8"].output.dtype == "int8"
    for name in FLOAT_VARIANTS:
        assert m.variants[name].input.shape == (1, 28, 28, 1) and m.variants[name].input.dtype == "float32"
    raw = json.loads((artifacts / "manifest.json").read_text())
    assert raw["input"]["range"] == [0.0, 1.0]
    assert m.model["params"] <= 100_000


def test_int8_is_smaller_than_float32(artifacts: Path) -> None:
    m = load_manifest(artifacts)
    assert m.variants["int8"].bytes < 0.5 * m.variants["float32"].bytes


def test_golden_is_reproduced_by_the_device_engine(artifacts: Path) -> None:
    m = load_manifest(artifacts)
    assert m.golden is not None and sha256_file(m.golden_path()) == m.golden.sha256
    g = np.load(m.golden_path())
    assert g["images"].shape == (m.golden.count, 28, 28) and g["images"].dtype == np.uint8
    assert g["labels"].dtype == np.int64 and m.golden.count == 1000
    for name in VARIANTS:
        raw = g[f"raw_{name}"]
        engine = open_engine(m, name)
        assert raw.shape == (1000, 10) and raw.dtype == np.dtype(engine.output_spec.dtype)
        for i in range(0, 1000, 97):
            x = to_input(g["images"][i].astype(np.float32) / np.float32(255), engine.input_spec)
            np.testing.assert_array_equal(engine.run(x)[0], raw[i])
        golden_acc = float(np.mean(to_scores(raw, engine.output_spec).argmax(1) == g["labels"]))
        assert abs(golden_acc - (m.variants[name].accuracy or 0.0)) < 0.06  # first 1000 vs all 10,000


@pytest.mark.parametrize("variant", FLOAT_VARIANTS)
def test_seed_client_code_runs_float_variants_unchanged(artifacts: Path, variant: str) -> None:
    import tensorflow as tf

    g = np.load(artifacts / "golden.npz")
    interpreter = tf.lite.Interpreter(model_content=(artifacts / f"model_{variant}.tflite").read_bytes())
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    hits = 0
    for i in range(50):
        img = (g["images"][i] / 255.0).astype(np.float32).reshape(1, 28, 28, 1)
        interpreter.set_tensor(input_index, img)
        interpreter.invoke()
        scores = interpreter.get_tensor(output_index)
        assert scores.shape == (1, 10)
        hits += int(np.argmax(scores) == g["labels"][i])
    assert hits >= 25


def test_report_compares_all_variants(artifacts: Path) -> None:
    text = (artifacts / "report.md").read_text()
    for v in VARIANTS:
        assert f"| {v} |" in text
    for label in LABELS:
        assert label in text
    assert "confusion_int8.png" in text


def test_report_has_the_camera_like_section_from_the_manifest(artifacts: Path) -> None:
    man = json.loads((artifacts / "manifest.json").read_text())
    cams = man["model"]["camera_like"]["variants"]
    assert set(cams) == set(VARIANTS) and cams["int8"]["raw_accuracy"] > 0
    text = (artifacts / "report.md").read_text()
    section = text.split("## Camera-like frames", 1)[1].split("\n## ", 1)[0]
    for v in VARIANTS:
        row = next(line for line in section.splitlines() if line.startswith(f"| {v} |"))
        assert f"{100 * cams[v]['accuracy']:.2f} %" in row and f"{cams[v]['gap_points']:+.2f} ± {cams[v]['gap_ci95_points']:.2f}" in row
        assert cams[v]["lost"] + cams[v]["gained"] <= cams[v]["frames"] <= man["model"]["camera_like"]["count"]
