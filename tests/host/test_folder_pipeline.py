"""`host run --data folder:DIR` end to end: the same artifacts as for Fashion-MNIST, for grey and RGB folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imagefolders import grey_folder, needs_idx, rgb_folder

from device.engine import open_engine
from device.manifest import VARIANTS, load_manifest, sha256_file
from device.preprocess import model_input
from device.quant import to_scores
from host.convert import integer_only_offenders

pytestmark = needs_idx


def host_cli(*args: str, timeout_s: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=timeout_s)


def check_artifacts(out: Path, labels: tuple[str, ...], shape: tuple[int, ...], color: str) -> None:
    """What every run writes, checked against the files through the device's own code."""
    m = load_manifest(out)
    assert m.schema == 2 and m.labels == labels and set(m.variants) == set(VARIANTS)
    pre = m.preprocess
    assert (pre.size, pre.color, pre.channel_order, pre.crop, pre.resize, pre.contrast, pre.polarity) == (
        shape[:2], color, "rgb", "center", "area", "none", "any")
    assert pre.normalize.range == (0.0, 1.0)
    for v in m.variants.values():
        assert sha256_file(m.model_path(v.name)) == v.sha256 and m.model_path(v.name).stat().st_size == v.bytes
        assert v.input.shape == (1, *shape)
    assert integer_only_offenders(m.model_path("int8").read_bytes()) == []
    g = np.load(m.golden_path())
    images = g["images"]
    assert images.dtype == np.uint8 and images.shape[1:] == (shape if color == "rgb" else shape[:2])
    assert m.golden is not None and m.golden.count == len(images) == m.model["test_images"]
    for name in VARIANTS:  # the golden outputs are what the device's engine gives on model_input
        engine = open_engine(m, name)
        x = model_input(images, pre, engine.input_spec)
        for i in range(0, len(images), 7):
            np.testing.assert_array_equal(engine.run(x[i : i + 1])[0], g[f"raw_{name}"][i])
        acc = float(np.mean(to_scores(g[f"raw_{name}"], engine.output_spec).argmax(1) == g["labels"]))
        assert acc == pytest.approx(m.variants[name].accuracy, abs=1e-9)  # golden = the whole held-out split here
    report = (out / "report.md").read_text()
    assert "## Per-class accuracy (the held-out 10 %" in report and "## Data:" in report
    for label in labels:
        assert f"| {label} |" in report
    assert (out / "confusion_int8.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_grey_folder_trains_the_cnn_and_learns(tmp_path: Path) -> None:
    """A 28-px grey folder with the defects real folders have: warned about in one line each, counted, and the run completes."""
    root = grey_folder(tmp_path / "garments", classes=(0, 1), per_class=300)
    grey_folder(root, classes=(7,), per_class=90)  # 300 / 90: beyond the 3x imbalance warning
    good = (root / "tshirt" / "img00000.png").read_bytes()
    (root / "tshirt" / "cut-short.png").write_bytes(good[: len(good) // 2])  # an interrupted copy
    shutil.copy(root / "tshirt" / "img00001.png", root / "tshirt" / "again.png")  # the same picture twice (the first name is kept)
    shutil.copy(root / "tshirt" / "img00002.png", root / "sneaker" / "wrong-folder.png")  # in two classes
    out = tmp_path / "out"
    r = host_cli("run", "--data", f"folder:{root}", "--out", str(out), "--epochs", "3", "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING: ")]
    for start, names in [
        ("WARNING: skipped 1 unreadable image (counted in report.md): ", ["tshirt/cut-short.png (", "Invalid PNG data"]),
        ("WARNING: 1 duplicate image counted once: ", ["tshirt/img00001.png = tshirt/again.png"]),
        ("WARNING: 1 picture appears in two classes and was left out", ["sneaker/wrong-folder.png = tshirt/img00002.png"]),
        ("WARNING: class imbalance 3.3x: 'trouser' has 300 images, ", ["'sneaker' 90"]),
    ]:
        line = [w for w in warnings if w.startswith(start)]
        assert len(line) == 1 and all(n in line[0] for n in names), (start, warnings)  # one line, naming the files
    check_artifacts(out, ("sneaker", "trouser", "tshirt"), (28, 28, 1), "grayscale")
    m = load_manifest(out)
    assert m.model["name"] == "fmnist_cnn" and m.model["params"] <= 100_000  # 28 px grey: the small CNN
    d = m.model["data"]
    assert (d["files"], d["unreadable"], d["duplicates"], d["conflicts"]) == (693, 1, 1, 1)
    assert d["imbalance"]["largest"] == "trouser" and d["imbalance"]["smallest"] == "sneaker" and d["imbalance"]["ratio"] > 3
    distinct = 693 - 1 - 1 - 2  # the unreadable file, the duplicate and both copies of the conflict are set aside
    assert d["train"] + d["validation"] + d["test"] == distinct and d["test"] == m.model["test_images"]
    assert abs(d["test"] / distinct - 0.1) < 0.03 and abs(d["train"] / distinct - 0.8) < 0.04
    report = (out / "report.md").read_text()
    for phrase in ("Unreadable, skipped: 1; `tshirt/cut-short.png`", "Duplicates counted once: 1; `tshirt/img00001.png` = `tshirt/again.png`",
                   "Pictures in two classes, left out: 1; `sneaker/wrong-folder.png` (sneaker) = `tshirt/img00002.png` (tshirt)",
                   "Class imbalance: `trouser` has 3.3x the images of `sneaker` (beyond the 3x"):
        assert phrase in report, phrase
    for v in VARIANTS:  # three classes of real garments: far above chance (33 %)
        assert summary["variants"][v]["accuracy"] > 0.85
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One from-scratch MobileNet-style run on a folder of RGB photos of mixed sizes, at 64 px."""
    tmp = tmp_path_factory.mktemp("rgb")
    root = rgb_folder(tmp / "photos", per_class=40)
    out = tmp / "out"
    r = host_cli("run", "--data", f"folder:{root}", "--out", str(out), "--image-size", "64", "--epochs", "30", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return root, out


@pytest.mark.slow
def test_rgb_folder_trains_the_mobilenet_from_scratch(rgb_run: tuple[Path, Path]) -> None:
    root, out = rgb_run
    check_artifacts(out, ("sneaker", "trouser", "tshirt"), (64, 64, 3), "rgb")
    m = load_manifest(out)
    assert m.model["name"] == "mobilenet_style" and m.model["params"] < 200_000
    info = json.loads((out / "training.json").read_text())
    assert info["config"]["model"]["width"] == 0.5 and info["config"]["batch_size"] == 32
    assert info["data"]["dir"] == str(root.resolve()) and info["labels"] == list(m.labels)
    for v in VARIANTS:  # the classes differ in shape and tint: well above chance (33 %)
        assert (m.variants[v].accuracy or 0) > 0.6


@pytest.mark.slow
def test_convert_and_evaluate_steps_reload_the_same_folder_split(rgb_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = rgb_run
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(out / "saved_model", work / "saved_model")
    for name in ("model.keras", "training.json"):
        shutil.copy(out / name, work / name)
    r = host_cli("convert", "--out", str(work), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    r = host_cli("evaluate", "--out", str(work), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    again, first = load_manifest(work), load_manifest(out)
    assert again.preprocess == first.preprocess and again.labels == first.labels
    assert again.model["data"]["per_class"] == first.model["data"]["per_class"]  # the same split
    assert again.variants["float32"].sha256 == first.variants["float32"].sha256  # from the same SavedModel
    for v in VARIANTS:  # same test images, same seeded representative set: the same accuracy (int8: within one image)
        assert again.variants[v].accuracy == pytest.approx(first.variants[v].accuracy, abs=1.01 / again.model["test_images"])
    r = host_cli("evaluate", "--out", str(work), "--data", "fashion_mnist", "--quiet")
    assert r.returncode == 1 and "was trained on --data folder:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_offline_base_weights_fine_tune_mobilenet_v2(tmp_path: Path) -> None:
    import keras

    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    weights = tmp_path / "mobilenet_v2_0.35_no_top.weights.h5"
    base.save_weights(weights)
    root = rgb_folder(tmp_path / "photos", per_class=12)
    out = tmp_path / "out"
    # training through the one training path; conversion and evaluation are the from-scratch run's
    r = host_cli("train", "--data", f"folder:{root}", "--out", str(out), "--image-size", "64", "--epochs", "2",
                 "--base-weights", str(weights), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((out / "training.json").read_text())
    assert info["config"]["model"] == {"width": 0.35, "weights": str(weights), "fine_tune_layers": 0, "dropout": 0.2,
                                       "name": "mobilenet_v2_transfer"}
    assert (out / "saved_model" / "1" / "saved_model.pb").is_file() and info["epochs_run"] == 2
    trained = keras.models.load_model(out / "model.keras", compile=False)
    assert tuple(trained.input_shape) == (None, 64, 64, 3)
    kept = next(layer for layer in trained.layers if type(layer).__name__ == "Functional")
    for got, want in zip(kept.get_weights(), base.get_weights()):  # the frozen base is the file's, untouched
        np.testing.assert_array_equal(got, want)
