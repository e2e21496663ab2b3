"""The manifest contract: schema 1 read unchanged, schema 2 fields parsed, refusals in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from device.errors import ManifestError
from device.manifest import SCHEMA, Normalize, Preprocess, TensorSpec, load_manifest, parse_manifest

# A schema-1 manifest as the first host build wrote it (fields and values copied from its output).
SCHEMA1: dict[str, Any] = {
    "schema": 1,
    "model": {"name": "fmnist_cnn", "params": 93658, "keras_accuracy": 0.9352},
    "labels": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "input": {"shape": [1, 28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]},
    "preprocess": {"size": [28, 28], "color": "grayscale", "crop": "center", "resize": "area",
                   "polarity": "light_on_dark", "normalize": [0.0, 1.0]},
    "variants": {
        "int8": {"path": "model_int8.tflite", "sha256": "ab" * 32, "bytes": 107216, "accuracy": 0.9344,
                 "input": {"shape": [1, 28, 28, 1], "dtype": "int8", "scale": 0.00392156862745098, "zero_point": -128},
                 "output": {"shape": [1, 10], "dtype": "int8", "scale": 0.00390625, "zero_point": -128}},
        "float32": {"path": "model_float32.tflite", "sha256": "cd" * 32, "bytes": 378396, "accuracy": 0.9352,
                    "input": {"shape": [1, 28, 28, 1], "dtype": "float32"},
                    "output": {"shape": [1, 10], "dtype": "float32"}},
    },
    "golden": {"path": "golden.npz", "sha256": "ef" * 32, "count": 1000},
}


def rgb_manifest(**pre: Any) -> dict[str, Any]:
    """A schema-2 manifest for a 96x96 RGB uint8 classifier with three classes."""
    return {
        "schema": 2,
        "labels": ["cup", "key", "pen"],
        "input": {"shape": [1, 96, 96, 3], "dtype": "float32"},
        "preprocess": {"size": [96, 96], "color": "rgb", "channel_order": "rgb", "crop": "none", "resize": "area",
                       "contrast": "none", "polarity": "any", "normalize": {"mean": [127.5], "std": [127.5]}, **pre},
        "variants": {"int8": {"path": "m.tflite", "sha256": "00" * 32, "bytes": 1,
                              "input": {"shape": [1, 96, 96, 3], "dtype": "uint8", "scale": 0.0078125, "zero_point": 128},
                              "output": {"shape": [1, 3], "dtype": "uint8", "scale": 0.00390625, "zero_point": 0}}},
    }


def test_schema1_reads_unchanged_with_its_meaning(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(SCHEMA1))
    m = load_manifest(tmp_path)
    assert m.schema == 1
    assert m.preprocess == Preprocess()  # every schema-2 default is what schema 1 meant
    assert m.preprocess.contrast == "border" and m.preprocess.channel_order == "rgb"
    assert m.preprocess.normalize.range == (0.0, 1.0)
    assert m.variant("int8").input.quantized and m.labels[9] == "Ankle boot"


def test_written_manifest_is_schema2_and_round_trips(tmp_path: Path) -> None:
    m = parse_manifest(rgb_manifest(), tmp_path)
    m.write(tmp_path)
    again = load_manifest(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["schema"] == SCHEMA == 2
    assert again.preprocess == m.preprocess
    assert again.preprocess.normalize.mean == (127.5,) and again.preprocess.channels == 3
    # a schema-1 manifest written back keeps its meaning under schema 2
    old = parse_manifest(copy.deepcopy(SCHEMA1), tmp_path)
    assert parse_manifest(old.to_json(), tmp_path).preprocess == old.preprocess


@pytest.mark.parametrize(
    ("field", "value", "supported"),
    [
        ("color", "cmyk", "grayscale, rgb"),
        ("crop", "smart", "center, none, object"),
        ("resize", "lanczos", "area"),
        ("contrast", "histogram", "border, none"),
        ("polarity", "sideways", "light_on_dark, dark_on_light, any"),
        ("channel_order", "gbr", "rgb, bgr"),
    ],
)
def test_unsupported_field_names_field_value_and_what_is_supported(tmp_path: Path, field: str, value: str, supported: str) -> None:
    with pytest.raises(ManifestError) as e:
        parse_manifest(rgb_manifest(**{field: value}), tmp_path)
    msg = str(e.value)
    assert f"preprocess.{field}" in msg and repr(value) in msg and supported in msg
    assert "\n" not in msg


def test_newer_schema_is_refused_with_what_this_build_reads(tmp_path: Path) -> None:
    d = rgb_manifest()
    d["schema"] = 3
    with pytest.raises(ManifestError, match=r"schema is 3; this device build reads schemas 1, 2\. Update the device package"):
        parse_manifest(d, tmp_path)


def test_input_the_contract_cannot_feed_is_refused(tmp_path: Path) -> None:
    d = rgb_manifest()
    d["variants"]["int8"]["input"]["shape"] = [1, 3, 96, 96]  # NCHW
    with pytest.raises(ManifestError, match=r"input shape \[1, 3, 96, 96\] does not match preprocess .* feeds \[1, 96, 96, 3\]"):
        parse_manifest(d, tmp_path)
    d = rgb_manifest()
    d["variants"]["int8"]["input"] = {"shape": [1, 96, 96, 3], "dtype": "int16", "scale": 1.0, "zero_point": 0}
    with pytest.raises(ManifestError, match=r"input dtype int16 cannot be fed; this device build feeds float32, uint8, int8"):
        parse_manifest(d, tmp_path)


def test_labels_must_match_the_output_size(tmp_path: Path) -> None:
    d = rgb_manifest()
    d["labels"] = ["cup", "key"]
    with pytest.raises(ManifestError, match=r"output has 3 values but there are 2 labels"):
        parse_manifest(d, tmp_path)


def test_normalize_forms_are_affine_per_channel() -> None:
    assert Normalize(range=(-1.0, 1.0)).bounds(3) == ((-1.0, 1.0),) * 3
    mean_std = Normalize(range=None, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    (k0, c0), _, (k2, c2) = mean_std.affine(3)
    assert 123.675 * k0 + c0 == pytest.approx(0.0) and 103.53 * k2 + c2 == pytest.approx(0.0)
    with pytest.raises(ManifestError, match=r"normalize\.std needs 1 or 3 values"):
        Normalize.from_json({"mean": [0.0], "std": [1.0, 2.0]}, "m", 3)
    with pytest.raises(ManifestError, match="needs lo < hi"):
        Normalize.from_json([1.0, 0.0], "m", 1)


def test_grey_model_without_a_channel_axis_is_fed(tmp_path: Path) -> None:
    d = copy.deepcopy(SCHEMA1)
    d["variants"]["float32"]["input"]["shape"] = [1, 28, 28]
    assert parse_manifest(d, tmp_path).variant("float32").input == TensorSpec((1, 28, 28), "float32")
