"""`host import`: real Keras, SavedModel and .tflite classifiers built here, checked, converted and evaluated; refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from imagefolders import SAFE_NAMES, grey_folder, needs_idx, rgb_folder

from device.manifest import VARIANTS, load_manifest
from host.convert import integer_only_offenders
from host.data import load_data
from host.errors import ConfigError, DataError, UnsupportedOps
from host.importer import ModelFacts, contract_for_model, import_model, model_kind

pytestmark = needs_idx
LABELS = ("sneaker", "trouser", "tshirt")


def host_cli(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=timeout_s)


def labels_file(tmp: Path, labels: tuple[str, ...] = LABELS, teachable: bool = False) -> Path:
    p = tmp / "labels.txt"
    p.write_text("".join(f"{i} {x}\n" if teachable else f"{x}\n" for i, x in enumerate(labels)))
    return p


def tiny_cnn(input_shape: tuple[int, ...], classes: int, first: Any = None) -> Any:
    import keras

    inp = keras.Input(input_shape)
    x = first(inp) if first is not None else inp
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rgb_folder(tmp_path_factory.mktemp("photos") / "photos", per_class=40)


@pytest.fixture(scope="module")
def teachable(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A Teachable-Machine-like Keras .h5: 32x32 RGB in [-1, 1], trained here on the photos, with TM's `groups` quirk."""
    import keras

    s = load_data(f"folder:{photos}", image_size=32, color="rgb", progress=False)
    keras.utils.set_random_seed(0)
    m = tiny_cnn((32, 32, 3), 3)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(s.train_x.astype(np.float32) / 127.5 - 1.0, s.train_y, epochs=40, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("tm") / "keras_model.h5"
    m.save(path)
    with h5py.File(path, "r+") as f:  # what Keras 2.x wrote into Teachable Machine exports
        cfg = json.loads(f.attrs["model_config"])
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "DepthwiseConv2D":
                layer["config"]["groups"] = 1
        f.attrs["model_config"] = json.dumps(cfg)
    return path, m


@pytest.mark.slow
def test_teachable_machine_h5_is_converted_and_evaluated(teachable: tuple[Path, Any], photos: Path, tmp_path: Path) -> None:
    path, keras_model = teachable
    out = tmp_path / "tm"
    r = host_cli("import", "--model", str(path), "--labels", str(labels_file(tmp_path, teachable=True)),
                 "--calibration", f"folder:{photos}", "--out", str(out), "--preprocess", '{"normalize": [-1, 1]}', "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    m = load_manifest(out)
    assert m.labels == LABELS and set(m.variants) == set(VARIANTS)
    assert m.preprocess.normalize.range == (-1.0, 1.0) and m.preprocess.size == (32, 32) and m.preprocess.color == "rgb"
    assert integer_only_offenders(m.model_path("int8").read_bytes()) == []
    assert (out / "saved_model" / "1" / "saved_model.pb").is_file() and (out / "model.keras").is_file()
    # the Keras model's own accuracy on the held-out images, normalised as Teachable Machine does
    g = np.load(m.golden_path())
    own = float(np.mean(keras_model.predict(g["images"].astype(np.float32) / 127.5 - 1.0, verbose=0).argmax(1) == g["labels"]))
    assert m.model["keras_accuracy"] == pytest.approx(own) and own > 0.6
    for v in VARIANTS:
        assert m.model["evaluation"][v]["keras_agreement"] >= 0.9
        assert abs((m.variants[v].accuracy or 0) - own) <= 0.1
    assert m.model["imported_kind"] == "keras" and json.loads(r.stdout)["variants"]["int8"]["accuracy"] == m.variants["int8"].accuracy


@pytest.mark.slow
def test_tflite_is_checked_and_taken_as_is(teachable: tuple[Path, Any], photos: Path, tmp_path: Path) -> None:
    path, _ = teachable
    first = import_model(path, labels_file(tmp_path), f"folder:{photos}", tmp_path / "keras", preprocess='{"normalize": [-1, 1]}', progress=False)
    for variant in ("int8", "float16"):
        tflite = first / f"model_{variant}.tflite"
        # a float input's normalisation is not in the file, nor an int8 one's (its scale follows the calibration images)
        why = "int8 input's scale comes from the calibration" if variant == "int8" else "state how pixels map"
        with pytest.raises(ConfigError, match=why):
            import_model(tflite, labels_file(tmp_path), f"folder:{photos}", tmp_path / f"bare-{variant}", progress=False)
        out = import_model(tflite, labels_file(tmp_path), f"folder:{photos}", tmp_path / variant, preprocess='{"normalize": [-1, 1]}',
                           progress=False, force=True)
        m = load_manifest(out)
        assert list(m.variants) == [variant] and m.variant(variant).sha256 == load_manifest(first).variant(variant).sha256
        assert m.variants[variant].accuracy == load_manifest(first).variants[variant].accuracy  # same file, same images, same path
        assert m.model["imported_kind"] == "tflite" and m.model["evaluation"][variant]["keras_agreement"] is None


@pytest.mark.slow
def test_keras_tutorial_model_that_rescales_itself_and_its_saved_model(photos: Path, tmp_path: Path) -> None:
    import keras

    s = load_data(f"folder:{photos}", image_size=32, color="rgb", progress=False)
    keras.utils.set_random_seed(1)
    m = tiny_cnn((32, 32, 3), 3, first=keras.layers.Rescaling(1.0 / 255))  # as in the Keras image-classification tutorial
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(s.train_x.astype(np.float32), s.train_y, epochs=40, batch_size=16, verbose=0)
    m.save(tmp_path / "tutorial.keras")
    out = import_model(tmp_path / "tutorial.keras", labels_file(tmp_path), f"folder:{photos}", tmp_path / "a", progress=False)
    man = load_manifest(out)
    assert man.preprocess.normalize.range == (0.0, 255.0)  # pixels as they are: the model normalises itself
    assert (man.variants["float32"].accuracy or 0) > 0.6
    m.export(str(tmp_path / "exported"), verbose=False)
    out = import_model(tmp_path / "exported", labels_file(tmp_path), f"folder:{photos}", tmp_path / "b",
                       preprocess='{"normalize": [0, 255]}', progress=False)
    sm = load_manifest(out)
    assert sm.model["imported_kind"] == "saved_model" and set(sm.variants) == set(VARIANTS)
    for v in VARIANTS:
        assert sm.variants[v].accuracy == pytest.approx(man.variants[v].accuracy, abs=0.08)
        assert sm.model["evaluation"][v]["keras_agreement"] >= 0.9


@pytest.mark.slow
def test_fashion_mnist_int8_tflite_with_a_calibration_folder_of_three_classes(artifacts: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = grey_folder(tmp_path / "garments", classes=(1, 7, 8), per_class=100)
    with caplog.at_level("WARNING"):
        out = import_model(artifacts / "model_int8.tflite", labels_file(tmp_path, SAFE_NAMES), f"folder:{root}", tmp_path / "o",
                           preprocess='{"normalize": [0, 1], "polarity": "light_on_dark"}', progress=False)
    m = load_manifest(out)
    assert m.labels == SAFE_NAMES and m.preprocess.size == (28, 28) and m.preprocess.color == "grayscale"
    assert m.preprocess.polarity == "light_on_dark" and list(m.variants) == ["int8"]
    assert (m.variants["int8"].accuracy or 0) > 0.8  # trousers, sneakers and bags are easy even for the brief model
    assert any("no calibration images for 7 of 10 labels" in r.getMessage() for r in caplog.records)


def facts(shape: tuple[Any, ...], dtype: str = "float32", **kw: Any) -> ModelFacts:
    return ModelFacts(kind="keras", input_shape=shape, input_dtype=dtype, outputs=3, **kw)


def test_contract_from_the_model_input_and_what_is_stated() -> None:
    c = contract_for_model(facts((None, 224, 224, 3)), {"normalize": [-1, 1]})
    assert (c.size, c.color, c.crop, c.contrast, c.polarity, c.normalize.range) == ((224, 224), "rgb", "center", "none", "any", (-1.0, 1.0))
    c = contract_for_model(facts((None, 28, 28)), {"normalize": [0, 1], "polarity": "light_on_dark"})
    assert c.color == "grayscale" and c.polarity == "light_on_dark"
    c = contract_for_model(facts((None, 96, 96, 3), "uint8", input_quant=(1.0, 0)), {})
    assert c.normalize.range == (0.0, 255.0)  # uint8 pixels straight in
    c = contract_for_model(facts((None, 96, 96, 3), self_normalising=True), {})
    assert c.normalize.range == (0.0, 255.0)
    c = contract_for_model(facts((None, None, None, 3)), {"size": [160, 128], "normalize": {"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}})
    assert c.size == (160, 128) and c.normalize.mean == (123.7, 116.3, 103.5)


@pytest.mark.parametrize(
    ("shape", "dtype", "stated", "message"),
    [
        ((None, 3, 224, 224), "float32", {"normalize": [0, 1]}, "channels first"),
        ((None, 224, 224, 4), "float32", {"normalize": [0, 1]}, "has 4 channels"),
        ((None, 784), "float32", {"normalize": [0, 1]}, "is not an image"),
        ((None, 224, 224, 3), "float32", {}, "state how pixels map"),
        ((None, None, None, 3), "float32", {"normalize": [0, 1]}, "no fixed size"),
        ((None, 224, 224, 3), "float16", {"normalize": [0, 1]}, "input dtype float16 cannot be fed"),
        ((None, 224, 224, 3), "uint8", {"normalize": [0, 1]}, "needs a scale and zero point"),
        ((None, 224, 224, 3), "float32", {"normalize": [0, 1], "size": [96, 96]}, "does not match preprocess"),
        ((None, 224, 224, 3), "float32", {"normalize": [0, 1], "color": "grayscale"}, "does not match preprocess"),
        ((None, 224, 224, 3), "float32", {"normalize": [0, 1], "crop": "zoom"}, "preprocess.crop is 'zoom'"),
    ],
)
def test_inputs_the_device_cannot_feed_are_refused_saying_what_it_can(shape: tuple[Any, ...], dtype: str, stated: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        contract_for_model(facts(shape, dtype), stated)
    assert message in str(e.value) and "\n" not in str(e.value)
    if message in ("channels first", "has 4 channels", "is not an image"):
        assert "the device feeds one NHWC image" in str(e.value)


def test_wrong_labels_count_is_refused_before_any_conversion(photos: Path, tmp_path: Path) -> None:
    import keras

    tiny_cnn((32, 32, 3), 5).save(tmp_path / "m.keras")
    keras.backend.clear_session()
    with pytest.raises(DataError, match="--labels has 3 labels but the model outputs 5 scores"):
        import_model(tmp_path / "m.keras", labels_file(tmp_path), f"folder:{photos}", tmp_path / "o", preprocess='{"normalize": [0, 1]}', progress=False)
    assert not (tmp_path / "o").exists()


def _cumprod_model() -> Any:
    import keras
    import tensorflow as tf

    class Cumprod(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return tf.math.cumprod(x, axis=1)  # a TF op without a TFLite builtin kernel

    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(Cumprod()(inp))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


def test_flex_and_custom_ops_are_refused(photos: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    m = _cumprod_model()
    m.save(tmp_path / "custom-layer.keras")
    with pytest.raises(ConfigError, match=r"uses a custom layer 'Cumprod' whose code is not here; export the model as a SavedModel") as e:
        import_model(tmp_path / "custom-layer.keras", labels_file(tmp_path), f"folder:{photos}", tmp_path / "o0", preprocess='{"normalize": [0, 1]}', progress=False)
    assert "\n" not in str(e.value)
    m.export(str(tmp_path / "sm"), verbose=False)
    with pytest.raises(UnsupportedOps, match=r"no builtin kernel for \(Cumprod\)"):
        import_model(tmp_path / "sm", labels_file(tmp_path), f"folder:{photos}", tmp_path / "o1", preprocess='{"normalize": [0, 1]}', progress=False)
    c = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    (tmp_path / "flex.tflite").write_bytes(c.convert())
    with pytest.raises(UnsupportedOps, match="cannot run: FlexCumprod"):
        import_model(tmp_path / "flex.tflite", labels_file(tmp_path), f"folder:{photos}", tmp_path / "o2", progress=False)
    c = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    c.allow_custom_ops = True
    (tmp_path / "custom.tflite").write_bytes(c.convert())
    with pytest.raises(UnsupportedOps, match="cannot run: Cumprod"):
        import_model(tmp_path / "custom.tflite", labels_file(tmp_path), f"folder:{photos}", tmp_path / "o3", progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))]


def test_calibration_classes_must_be_labels(photos: Path, tmp_path: Path) -> None:
    tiny_cnn((32, 32, 3), 3).save(tmp_path / "m.keras")
    with pytest.raises(DataError, match="class folder 'tshirt' not in the labels"):
        import_model(tmp_path / "m.keras", labels_file(tmp_path, ("sneaker", "trouser", "shirt")), f"folder:{photos}", tmp_path / "o",
                     preprocess='{"normalize": [0, 1]}', progress=False)
    with pytest.raises(ConfigError, match="--calibration must be folder:DIR"):
        import_model(tmp_path / "m.keras", labels_file(tmp_path), str(photos), tmp_path / "o", preprocess='{"normalize": [0, 1]}', progress=False)


def test_model_kinds(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match=r"expected a SavedModel folder, a \.keras/\.h5 file or a \.tflite"):
        model_kind(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"without saved_model\.pb"):
        model_kind(tmp_path / "dir")
    with pytest.raises(ConfigError, match="does not exist"):
        model_kind(tmp_path / "nope.keras")


def test_cli_refusal_is_one_line(photos: Path, tmp_path: Path) -> None:
    tiny_cnn((32, 32, 3), 3).save(tmp_path / "m.keras")
    r = host_cli("import", "--model", str(tmp_path / "m.keras"), "--labels", str(labels_file(tmp_path)),
                 "--calibration", f"folder:{photos}", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "state how pixels map" in errors[0]
    r = host_cli("import", "--model", str(tmp_path / "m.keras"), "--labels", str(labels_file(tmp_path)),
                 "--calibration", f"folder:{photos}", "--out", str(tmp_path / "o"), "--preprocess", "{not json")
    assert r.returncode == 1 and "--preprocess must be a JSON object" in r.stderr and "Traceback" not in r.stderr

