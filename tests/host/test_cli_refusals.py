"""Every bad input of `host run --data folder:` and `host import`: one `error:` line, exit 1, no traceback, nothing written.

The commands run in-process through ``host.cli.main`` (an exception that escaped it would fail
the test with its traceback); one case per command also runs as a real subprocess. Each case
checks that --out was not created and that no staging folder was left beside it, and one that
fails after the work began (a weights file that does not fit) checks that --force keeps the old
folder as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imagefolders import fashion, grey_folder, needs_idx, rgb_folder, write_images

from host.cli import main

pytestmark = needs_idx
LABELS = ("sneaker", "trouser", "tshirt")


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    """Run the command in-process; assert exit 1 with one `error:` line and nothing left behind; return the line."""
    capsys.readouterr()
    rc = main([*argv, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert not out.exists(), f"{out} was written"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "a staging folder was left"
    return errors[0]


# ---------------------------------------------------------------- host run --data folder:


def _no_images(r: Path) -> None:
    (r / "cat").mkdir()
    (r / "dog").mkdir()
    (r / "dog" / "notes.txt").write_text("not an image")


def _loose(r: Path) -> None:
    write_images(r, fashion()[0][:3])


def _one_class(r: Path) -> None:
    grey_folder(r, classes=(0,), per_class=12)


def _few(r: Path) -> None:
    grey_folder(r, per_class=12)
    for p in sorted((r / "sneaker").iterdir())[5:]:
        p.unlink()


def _all_unreadable(r: Path) -> None:
    grey_folder(r, per_class=12)
    for p in (r / "trouser").iterdir():
        p.write_bytes(p.read_bytes()[:40])  # every trouser cut short: the class is left with none


def _renamed(new: bytes) -> Callable[[Path], None]:
    def make(r: Path) -> None:
        grey_folder(r, per_class=12)
        os.rename(r / "tshirt", os.fsencode(r) + b"/" + new)

    return make


def _dangling(r: Path) -> None:
    grey_folder(r, per_class=12)
    (r / "tshirt" / "IMG_9.png").symlink_to(r / "gone.png")


FOLDER_CASES: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("empty folder", lambda r: None, [], "holds no class folders: put one subfolder per class in it"),
    ("images directly in DIR", _loose, [], "holds 3 images directly; move them into one subfolder per class"),
    ("class folders without images", _no_images, [], "the class folders in"),
    ("one class only", _one_class, [], "has one class folder ('tshirt'); a classifier needs at least two"),
    ("fewer than 10 in a class", _few, [], "every class needs at least 10 distinct images (8 to train, 1 to validate, 1 to test), but 'sneaker' has 5"),
    ("every image of a class unreadable", _all_unreadable, [], "but 'trouser' has 0 (after duplicates, conflicts and unreadable files"),
    ("label ends with a space", _renamed(b"tshirt "), [], "class folder 'tshirt ' is not a valid file name on the Pi: it starts or ends with white space; rename it"),
    ("label with a newline", _renamed(b"t\nshirt"), [], "is not a valid file name on the Pi: it contains a control character"),
    ("label not UTF-8", _renamed(b"t\xffshirt"), [], "is not a valid file name on the Pi: it is not valid UTF-8"),
    ("a file that cannot be opened", _dangling, [], "tshirt/IMG_9.png: No such file or directory; fix its permissions or link, or remove it"),
    ("image size too small", lambda r: grey_folder(r, per_class=12), ["--image-size", "4"], "between 8 and 512 pixels a side. Got: 4x4"),
    ("missing base weights", lambda r: grey_folder(r, per_class=12), ["--base-weights", "/nonexistent/w.h5"], "--base-weights /nonexistent/w.h5 does not exist"),
    ("base weights a folder", lambda r: grey_folder(r, per_class=12), ["--base-weights", "/"], "--base-weights / is a folder"),
    ("base weights below 32 px", lambda r: grey_folder(r, per_class=12), ["--base", "mobilenet_v2"], "MobileNetV2 needs an input of at least 32x32"),
]


@pytest.mark.parametrize(("make", "extra", "expect"), [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES])
def test_run_refuses_a_bad_folder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], None], extra: list[str], expect: str
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    make(root)
    line = refused(["run", "--data", f"folder:{root}", *extra], capsys, tmp_path / "out")
    assert expect in line, line


@pytest.fixture(scope="module")
def mobilenet_v2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local MobileNetV2 weights file (width 0.35, no top), made here: the offline path needs no download."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.35_no_top.weights.h5"
    keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None).save_weights(path)
    keras.backend.clear_session()
    return path


def test_weights_that_do_not_fit_fail_after_loading_and_keep_the_old_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mobilenet_v2_weights: Path
) -> None:
    """The mismatch shows only when the model is built (inside the staging folder): --force keeps the old --out whole."""
    root = rgb_folder(tmp_path / "photos", per_class=12)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("last round's")
    capsys.readouterr()
    rc = main(["run", "--data", f"folder:{root}", "--out", str(out), "--image-size", "64", "--epochs", "1", "--force", "--quiet",
               "--base-weights", str(mobilenet_v2_weights), "--width", "0.5"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert f"--base-weights {mobilenet_v2_weights} does not fit MobileNetV2 at width 0.5" in errors[0]
    assert "_0.5_224_no_top.h5" in errors[0]  # names the file to get
    assert [p.name for p in out.iterdir()] == ["manifest.json"] and (out / "manifest.json").read_text() == "last round's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]


def test_run_refusal_as_a_real_command(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    _few(root)
    r = subprocess.run([sys.executable, "-m", "host", "run", "--data", f"folder:{root}", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "'sneaker' has 5" in errors[0] and "Traceback" not in r.stderr
    assert r.stdout == "" and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- host import


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rgb_folder(tmp_path_factory.mktemp("calibration") / "photos", per_class=12)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real models that the device cannot use, each built here: Keras files, a SavedModel and .tflite files."""
    import keras
    import tensorflow as tf

    d = tmp_path_factory.mktemp("models")

    def cnn(shape: tuple[int, ...], classes: int = 3) -> Any:
        inp = keras.Input(shape)
        x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inp)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(x))

    def tflite(model: Any, name: str, **options: Any) -> Path:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        for k, v in options.items():
            setattr(c, k, v)
        path = d / name
        path.write_bytes(c.convert())
        return path

    out: dict[str, Path] = {}
    five = cnn((32, 32, 3), classes=5)
    five.save(d / "five.keras")
    out["five.keras"] = d / "five.keras"
    out["five.tflite"] = tflite(five, "five.tflite")
    out["three.tflite"] = tflite(cnn((32, 32, 3)), "three.tflite")
    cnn((32, 32, 4)).save(d / "rgba.keras")
    out["rgba.keras"] = d / "rgba.keras"
    flat_in = keras.Input((784,))
    keras.Model(flat_in, keras.layers.Dense(3, activation="softmax")(flat_in)).save(d / "flat.keras")
    out["flat.keras"] = d / "flat.keras"
    nchw_in = keras.Input((3, 32, 32))  # as a PyTorch export lays it out
    x = keras.layers.Permute((2, 3, 1))(nchw_in)
    out["nchw.tflite"] = tflite(keras.Model(nchw_in, cnn((32, 32, 3))(x)), "nchw.tflite")

    class Cumprod(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return tf.math.cumprod(x, axis=1)  # a TF op without a TFLite builtin kernel

    inp = keras.Input((32, 32, 3))
    odd = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(Cumprod()(inp))))
    odd.save(d / "custom-layer.keras")
    out["custom-layer.keras"] = d / "custom-layer.keras"
    odd.export(str(d / "flex_sm"), verbose=False)
    out["flex_sm"] = d / "flex_sm"
    c = tf.lite.TFLiteConverter.from_saved_model(str(d / "flex_sm"))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (d / "flex.tflite").write_bytes(c.convert())
    out["flex.tflite"] = d / "flex.tflite"
    c = tf.lite.TFLiteConverter.from_saved_model(str(d / "flex_sm"))
    c.allow_custom_ops = True
    (d / "custom.tflite").write_bytes(c.convert())
    out["custom.tflite"] = d / "custom.tflite"

    good = out["five.tflite"].read_bytes()
    (d / "cut.tflite").write_bytes(good[: len(good) // 3])
    out["cut.tflite"] = d / "cut.tflite"
    (d / "cut.keras").write_bytes((d / "five.keras").read_bytes()[:200])
    out["cut.keras"] = d / "cut.keras"
    cnn((32, 32, 3)).save(d / "good.h5")
    (d / "cut.h5").write_bytes((d / "good.h5").read_bytes()[:300])
    out["cut.h5"] = d / "cut.h5"
    (d / "junk.h5").write_bytes(b"<html>a download page, not a model</html>")
    out["junk.h5"] = d / "junk.h5"
    (d / "bad_sm").mkdir()
    (d / "bad_sm" / "saved_model.pb").write_bytes(b"\x08\x01" + bytes(range(256)))
    out["bad_sm"] = d / "bad_sm"
    keras.backend.clear_session()
    return out


FEEDS = "the device feeds one NHWC image: [1, H, W, 3] RGB or [1, H, W, 1] / [1, H, W] grey"
IMPORT_CASES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("labels vs Keras outputs", "five.keras", LABELS, "--labels has 3 labels but the model outputs 5 scores; give one label per output"),
    ("labels vs .tflite outputs", "five.tflite", LABELS, "--labels has 3 labels but the model outputs 5 scores"),
    ("4-channel input", "rgba.keras", LABELS, f"has 4 channels; {FEEDS}"),
    ("flat input", "flat.keras", LABELS, f"the model's input [None, 784] is not an image; {FEEDS}"),
    ("channels-first .tflite", "nchw.tflite", LABELS, "(channels first, as PyTorch exports: re-export it channels last)"),
    ("Flex ops in a .tflite", "flex.tflite", LABELS, "the model uses ops the Pi's TFLite runtime cannot run: FlexCumprod"),
    ("custom ops in a .tflite", "custom.tflite", LABELS, "the model uses ops the Pi's TFLite runtime cannot run: Cumprod"),
    ("SavedModel needing Flex ops", "flex_sm", LABELS, "no builtin kernel for (Cumprod)"),
    ("Keras custom layer", "custom-layer.keras", LABELS, "uses a custom layer 'Cumprod' whose code is not here"),
    ("damaged .tflite", "cut.tflite", LABELS, "cut.tflite: cannot read the operators of this .tflite"),
    ("damaged .keras", "cut.keras", LABELS, "cut.keras is not a .keras file (a .keras file is a zip archive"),
    ("cut-short .h5", "cut.h5", LABELS, "cannot load --model"),
    ("not an .h5", "junk.h5", LABELS, "junk.h5 is not an HDF5 file"),
    ("damaged SavedModel", "bad_sm", LABELS, "cannot load the SavedModel"),
    ("label not a file name on the Pi", "five.keras", ("sneaker", "T-shirt/top", "tshirt"), "label 'T-shirt/top' is not a valid file name on the Pi"),
]
STATED_CASES: list[tuple[str, str, str]] = [  # a .tflite's tensors against the stated preprocessing
    ("stated size", '{"size": [64, 64], "normalize": [0, 1]}', "does not match preprocess"),
    ("stated colour", '{"color": "grayscale", "normalize": [0, 1]}', "does not match preprocess"),
    ("unknown crop", '{"crop": "zoom", "normalize": [0, 1]}', "preprocess.crop is 'zoom'"),
    ("normalisation not stated", "{}", "state how pixels map to the model's real-valued input"),
]


@pytest.mark.parametrize(("model", "labels", "expect"), [c[1:] for c in IMPORT_CASES], ids=[c[0] for c in IMPORT_CASES])
def test_import_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], calibration: Path,
    model: str, labels: tuple[str, ...], expect: str,
) -> None:
    (tmp_path / "labels.txt").write_text("".join(f"{x}\n" for x in labels))
    line = refused(["import", "--model", str(models[model]), "--labels", str(tmp_path / "labels.txt"),
                    "--calibration", f"folder:{calibration}", "--preprocess", '{"normalize": [0, 1]}'], capsys, tmp_path / "out")
    assert expect in line, line


@pytest.mark.parametrize(("preprocess", "expect"), [c[1:] for c in STATED_CASES], ids=[c[0] for c in STATED_CASES])
def test_import_checks_a_tflite_against_the_stated_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path], calibration: Path, preprocess: str, expect: str,
) -> None:
    (tmp_path / "labels.txt").write_text("sneaker\ntrouser\ntshirt\n")
    line = refused(["import", "--model", str(models["three.tflite"]), "--labels", str(tmp_path / "labels.txt"),
                    "--calibration", f"folder:{calibration}", "--preprocess", preprocess], capsys, tmp_path / "out")
    assert expect in line, line


def test_import_refuses_a_bad_calibration_folder_as_run_does(tmp_path: Path, capsys: pytest.CaptureFixture[str], models: dict[str, Path]) -> None:
    (tmp_path / "labels.txt").write_text("sneaker\ntrouser\ntshirt\n")
    shutil.copy(models["five.keras"], tmp_path / "m.keras")
    root = tmp_path / "photos"
    root.mkdir()
    _few(root)
    # 5 outputs vs 3 labels is checked first; a matching model then meets the folder's own refusal
    import keras

    inp = keras.Input((32, 32, 3))
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))).save(tmp_path / "three.keras")
    line = refused(["import", "--model", str(tmp_path / "three.keras"), "--labels", str(tmp_path / "labels.txt"),
                    "--calibration", f"folder:{root}", "--preprocess", '{"normalize": [0, 1]}'], capsys, tmp_path / "out")
    assert "'sneaker' has 5" in line


def test_import_refusal_as_a_real_command(tmp_path: Path, models: dict[str, Path], calibration: Path) -> None:
    (tmp_path / "labels.txt").write_text("sneaker\ntrouser\ntshirt\n")
    r = subprocess.run([sys.executable, "-m", "host", "import", "--model", str(models["flex.tflite"]), "--labels", str(tmp_path / "labels.txt"),
                        "--calibration", f"folder:{calibration}", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "FlexCumprod" in errors[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- --help


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # rewrapped: phrases may span lines


def test_run_help_explains_folder_data_the_model_rule_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "run")
    for phrase in ("--data folder:DIR", "image_dataset_from_directory", "Split 80/10/10", "by content hash",
                   "below 64 px the small CNN", "depthwise-separable", "--base-weights FILE does the same offline",
                   "one class only", "fewer than 10 distinct images in a class", "not a valid file name on the Pi",
                   "unreadable or truncated images (skipped and named)", "class imbalance beyond 3x", "--out untouched"):
        assert phrase in text, phrase


def test_import_help_explains_what_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "import")
    for phrase in ("SavedModel", ".keras", ".tflite", "--preprocess", "labels that do not match the model's output size",
                   "an input the device cannot feed", "Flex (select-TF) or custom ops", "--out untouched"):
        assert phrase in text, phrase


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_camera_fraction_outside_0_to_1_is_refused_in_one_line(value: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--out", str(tmp_path / "out"), "--camera-fraction", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--camera-fraction: must be a number from 0 to 1" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_camera_fraction_reaches_the_training_config() -> None:
    from host.augment import AugmentConfig
    from host.recipe import FASHION_AUGMENT, fashion_mnist

    assert FASHION_AUGMENT.camera_fraction == 0.5  # the recipe's default (README, "Camera framing")
    assert fashion_mnist().augment.camera_fraction == 0.5
    assert fashion_mnist(camera_fraction=0.0).augment.camera_fraction == 0.0
    assert fashion_mnist(camera_fraction=0.2, flip=False).augment == AugmentConfig(**{**vars(FASHION_AUGMENT), "camera_fraction": 0.2, "flip": False})
