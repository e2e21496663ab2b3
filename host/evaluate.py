"""Score each .tflite in the host interpreter through the device's own engine and quantisation code.

The host runs exactly the Pi's path on images at model size: ``device.preprocess.model_input``
(the contract's channel order and normalisation, then the variant's quantisation) →
``device.engine.LiteRTEngine`` (ai_edge_litert, else tf.lite) → ``device.quant.to_scores``,
one image per invoke.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from device.engine import LiteRTEngine
from device.errors import DeviceError
from device.manifest import Preprocess, TensorSpec
from device.preprocess import model_input
from device.quant import to_scores
from device.runtime import Runtime, load_runtime
from host.errors import EvaluationError
from host.model import NUM_CLASSES

DEFAULT_CONTRACT = Preprocess()  # a manifest without a preprocess field: 28x28 grey, centre crop (host.data has Fashion-MNIST's own)


@dataclass(frozen=True)
class Scored:
    """Raw outputs and predictions of one model on one image set."""

    raw: np.ndarray  # [N, 10] in the output dtype
    predictions: np.ndarray  # [N] int64


@dataclass(frozen=True)
class VariantEval:
    """Everything measured for one variant."""

    variant: str
    size_bytes: int
    runtime: str
    input: TensorSpec
    output: TensorSpec
    accuracy: float  # the test split (Fashion-MNIST: official test; a folder: its held-out 10 %)
    seed_test_accuracy: Optional[float]  # the second test split where there is one (the seed's train[90%:])
    per_class_accuracy: tuple[float, ...]
    keras_agreement: Optional[float]  # top-1 agreement with the source model on the test split
    confusion: np.ndarray  # [K, K], rows = true class, columns = predicted
    latency_p50_ms: float
    latency_p99_ms: float
    official_raw: np.ndarray  # [N, K] raw outputs on the test split


def host_runtime() -> Runtime:
    """ai_edge_litert when it imports, else tf.lite (the device's picker with the host's preference)."""
    try:
        return load_runtime("ai-edge-litert")
    except DeviceError:
        return load_runtime("tensorflow")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images → float32 in [0, 1], exactly as the device normalises a frame."""
    return np.asarray(images).astype(np.float32) / np.float32(255.0)


def run_images(engine: LiteRTEngine, images: np.ndarray, contract: Preprocess = DEFAULT_CONTRACT) -> Scored:
    """Run uint8 images at model size one at a time; raw outputs and argmax predictions."""
    inputs = model_input(images, contract, engine.input_spec)
    raw = np.empty((len(inputs), *engine.output_spec.shape[1:]), dtype=np.dtype(engine.output_spec.dtype))
    for i in range(len(inputs)):
        raw[i] = engine.run(inputs[i : i + 1])[0]
    scores = to_scores(raw, engine.output_spec).reshape(len(raw), -1)
    return Scored(raw, scores.argmax(axis=1).astype(np.int64))


def invoke_latency_ms(
    engine: LiteRTEngine, image: np.ndarray, runs: int = 300, warmup: int = 20, contract: Preprocess = DEFAULT_CONTRACT
) -> tuple[float, float]:
    """p50 and p99 of ``invoke()`` alone on one image at model size, warm-up excluded."""
    engine.set_input(model_input(np.asarray(image)[None], contract, engine.input_spec))
    for _ in range(warmup):
        engine.invoke_only()
    ns = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        engine.invoke_only()
        ns[i] = time.perf_counter_ns() - t0
    return float(np.percentile(ns, 50) / 1e6), float(np.percentile(ns, 99) / 1e6)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts [true, predicted]."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> tuple[float, ...]:
    """Recall of each class from a confusion matrix."""
    totals = cm.sum(axis=1)
    return tuple(float(cm[i, i] / totals[i]) if totals[i] else float("nan") for i in range(cm.shape[0]))


def evaluate_variant(
    variant: str,
    model: bytes,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed_test_x: Optional[np.ndarray],
    seed_test_y: Optional[np.ndarray],
    keras_predictions: Optional[np.ndarray],
    runtime: Optional[Runtime] = None,
    latency_runs: int = 300,
    contract: Preprocess = DEFAULT_CONTRACT,
    num_classes: Optional[int] = None,
) -> VariantEval:
    """Accuracy (test and seed test splits), per-class accuracy, agreement with the source model, confusion, latency."""
    try:
        engine = LiteRTEngine(model, runtime or host_runtime())
    except DeviceError as e:
        raise EvaluationError(f"cannot load the {variant} model for evaluation: {e}") from e
    official = run_images(engine, test_x, contract)
    seed = run_images(engine, seed_test_x, contract) if seed_test_x is not None and len(seed_test_x) else None
    k = num_classes if num_classes is not None else int(np.prod(engine.output_spec.shape))
    cm = confusion_matrix(test_y, official.predictions, k)
    p50, p99 = invoke_latency_ms(engine, test_x[0], runs=latency_runs, contract=contract)
    return VariantEval(
        variant=variant,
        size_bytes=len(model),
        runtime=engine.runtime.name,
        input=engine.input_spec,
        output=engine.output_spec,
        accuracy=float(np.mean(official.predictions == test_y)),
        seed_test_accuracy=float(np.mean(seed.predictions == seed_test_y)) if seed is not None else None,
        per_class_accuracy=per_class_accuracy(cm),
        keras_agreement=float(np.mean(official.predictions == keras_predictions)) if keras_predictions is not None else None,
        confusion=cm,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        official_raw=official.raw,
    )


def keras_predictions(model: object, images: np.ndarray, contract: Preprocess = DEFAULT_CONTRACT) -> np.ndarray:
    """Top-1 of the Keras model on uint8 images at model size, normalised as the contract says."""
    spec = TensorSpec(contract.input_shape(), "float32")
    scores = model.predict(model_input(images, contract, spec), batch_size=256, verbose=0)  # type: ignore[attr-defined]
    return np.asarray(scores).reshape(len(images), -1).argmax(axis=1).astype(np.int64)
