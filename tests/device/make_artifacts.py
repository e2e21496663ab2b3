"""Test helper: a brief real training run that writes a complete host-pipeline output folder.

Stand-in for the shared ``artifacts`` fixture until ``tests/conftest.py`` provides it. Uses
TensorFlow (tests may; the device package may not) and the Debian Fashion-MNIST IDX files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GOLDEN_COUNT = 1000


def read_idx(name: str) -> np.ndarray:
    """Images [N,28,28] uint8 or labels [N] from a gzipped IDX file."""
    with gzip.open(IDX_DIR / name) as f:
        data = f.read()
    if "images" in name:
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def _spec(detail: dict) -> dict:
    d = {"shape": [int(x) for x in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
    scale, zp = detail["quantization"]
    if d["dtype"] in ("int8", "uint8") and scale:
        d["scale"], d["zero_point"] = float(scale), int(zp)
    return d


def build(out: Path, train_count: int = 30000, epochs: int = 1) -> Path:
    """Train, convert to four variants, write manifest.json and golden.npz into ``out``."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = read_idx("train-images-idx3-ubyte.gz")[:train_count], read_idx("train-labels-idx1-ubyte.gz")[:train_count]
    xte, yte = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(16, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    f32 = lambda x: (x.astype(np.float32) / 255.0)[..., None]  # noqa: E731
    model.fit(f32(xtr), ytr, epochs=epochs, batch_size=128, verbose=0)
    keras_acc = float(model.evaluate(f32(xte), yte, verbose=0)[1])

    def convert(kind: str) -> bytes:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind != "float32":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "float16":
            c.target_spec.supported_types = [tf.float16]
        if kind == "int8":
            rep = f32(xtr[:300])
            c.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        return c.convert()

    variants = {}
    raws = {}
    gimg, glab = xte[:GOLDEN_COUNT], yte[:GOLDEN_COUNT]
    for kind in ("float32", "dynamic", "float16", "int8"):
        blob = convert(kind)
        path = out / f"model_{kind}.tflite"
        path.write_bytes(blob)
        it = tf.lite.Interpreter(model_content=blob)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        ispec, ospec = _spec(i), _spec(o)
        outs = []
        for img in xte:
            x = img.astype(np.float32)[None, ..., None] / 255.0
            if "scale" in ispec:
                x = np.clip(np.round(x / ispec["scale"]) + ispec["zero_point"], -128, 127).astype(np.int8)
            it.set_tensor(i["index"], x)
            it.invoke()
            outs.append(it.get_tensor(o["index"])[0].copy())
        raw = np.stack(outs)
        raws[f"raw_{kind}"] = raw[:GOLDEN_COUNT]
        variants[kind] = {
            "path": path.name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
            "accuracy": float((raw.argmax(1) == yte).mean()), "input": ispec, "output": ospec,
        }
    np.savez(out / "golden.npz", images=gimg, labels=glab, **raws)
    manifest = {
        "schema": 1,
        "model": {"name": "fashion_cnn", "params": int(model.count_params()), "keras_accuracy": keras_acc},
        "labels": LABELS,
        "input": {"shape": [1, 28, 28, 1], "dtype": "float32", "range": [0.0, 1.0]},
        "preprocess": {"size": [28, 28], "color": "grayscale", "crop": "center", "resize": "area",
                       "polarity": "light_on_dark", "normalize": [0.0, 1.0]},
        "variants": variants,
        "golden": {"path": "golden.npz", "sha256": hashlib.sha256((out / "golden.npz").read_bytes()).hexdigest(),
                   "count": GOLDEN_COUNT},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out / "manifest.json"


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
