"""A probe of ``host.train.train`` under one or two workers, run as a script (see test_multi_worker.py).

    python tests/host/multi_worker_probe.py OUT        # one worker
    TF_CONFIG=... python tests/host/multi_worker_probe.py OUT   # one of the workers in TF_CONFIG

It trains the real recipe (float32, seed 42, the real CNN and augmentation) on a small fixed
synthetic set, wrapped between two identity layers that record, at every training step, what
this worker's replica saw: a fingerprint of each input image (its pixel sum after augmentation)
and the training forward's scores (dropout included). OUT.json gets those, this worker's index,
whether any batch-norm layer is still ``synchronized`` after training and the trained model's
config; OUT.npz the trained weights. Two workers should together see, step by step, exactly one
worker's batches (worker 0 the first half of each, worker 1 the second) and compute the same
scores and weights, up to float rounding.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
IMAGES, VAL_IMAGES, BATCH, EPOCHS = 1024, 256, 128, 2


def main(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    index = 0
    dist = None
    if os.environ.get("TF_CONFIG"):
        from host.distribute import multi_worker_strategy

        dist, task = multi_worker_strategy()  # before any other TensorFlow op
        index = task.index
    import keras
    import tensorflow as tf

    from host.model import ModelConfig
    from host.train import TrainConfig, train

    records: dict[str, list[Any]] = {"inputs": [], "scores": []}

    class Probe(keras.layers.Layer):
        def __init__(self, key: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.key = key

        def call(self, x: Any, training: Any = None) -> Any:
            if not training:
                return x

            def record(v: Any) -> Any:
                a = v.numpy().astype(np.float64)
                records[self.key].append((a.reshape(len(a), -1).sum(axis=1) if self.key == "inputs" else a).tolist())
                return np.int32(0)

            done = tf.py_function(record, [x], tf.int32)
            with tf.control_dependencies([done]):
                return tf.identity(x)

    @dataclass(frozen=True)
    class ProbedModel:
        name: str = "probed"

        def build(self, input_shape: tuple[int, ...], num_classes: int) -> Any:
            inner = ModelConfig().build(input_shape, num_classes)
            inputs = keras.Input(shape=input_shape, name="image")
            scores = Probe("scores", name="probe_scores")(inner(Probe("inputs", name="probe_inputs")(inputs)))
            return keras.Model(inputs, scores, name=self.name)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (IMAGES + VAL_IMAGES, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, IMAGES + VAL_IMAGES)
    config = TrainConfig(epochs=EPOCHS, batch_size=BATCH, precision="float32", seed=42, model=ProbedModel())
    if dist is None:
        result = train(x[:IMAGES], y[:IMAGES], x[IMAGES:], y[IMAGES:], config, progress=False, num_classes=10)
    else:
        with dist.scope():
            result = train(x[:IMAGES], y[:IMAGES], x[IMAGES:], y[IMAGES:], config, progress=False, num_classes=10)
    model = result.model
    synchronized = [bool(layer.synchronized) for layer in model._flatten_layers(include_self=False)
                    if isinstance(layer, keras.layers.BatchNormalization)]
    inner = model.get_layer(ModelConfig().name)
    info = {"worker": index, **records, "bn_synchronized": synchronized, "config": inner.get_config()}
    Path(f"{out}.json").write_text(json.dumps(info))
    np.savez(f"{out}.npz", *model.get_weights())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
