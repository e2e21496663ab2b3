"""Bring your own model: a SavedModel, a Keras file or a .tflite, plus labels → the same artifacts as ``host run``.

    python -m host import --model PATH --labels labels.txt --calibration folder:DIR --out OUT [--preprocess JSON]

- A Keras model (``.keras``, or a legacy ``.h5`` such as Teachable Machine's ``keras_model.h5``)
  or a SavedModel folder is converted to the four variants; the int8 one is calibrated on the
  training 90 % of DIR (train + validation of ``host.split``).
- A ``.tflite`` is taken as it is, after its operators and tensors are checked: it becomes the
  one variant its tensors say it is (int8 for int8/uint8 input, float16, dynamic or float32).
- Accuracy, the report and the golden set come from DIR's held-out 10 %, through the device's path.

The preprocessing contract starts from the model's input (size, grey or RGB) and the folder
defaults (centre crop, area resize, no contrast stretch, any polarity); ``--preprocess`` states
the rest in the manifest's own vocabulary, e.g. ``'{"normalize": [-1, 1]}'`` for Teachable Machine.
Normalisation cannot be read from a float or int8 model (an int8 input's scale follows its
calibration images' range), so it must be stated, unless the model normalises itself (its first
layer is a Rescaling or Normalization layer: it takes pixels 0..255) or takes uint8 (the pixel
bytes as they are, the convention of picamera2's and Coral's examples).

Refused in one line each: labels that do not match the output size, an input the device cannot
feed (``Preprocess.check_input`` says what it can), Flex or custom ops the Pi's runtime cannot run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device.errors import DeviceError, ManifestError
from device.manifest import VARIANTS, Preprocess, TensorSpec
from device.preprocess import model_input
from host.convert import (
    REPRESENTATIVE_COUNT,
    _plain_interpreter,
    convert_all,
    model_filename,
    representative_images,
    resolve_optimization,
    runtime_unsupported_ops,
)
from host.data import Splits
from host.errors import ConfigError, ConversionError, DataError, UnsupportedOps
from host.evaluate import keras_predictions
from host.folder import folder_splits, parse_folder_spec
from host.labels import check_labels, read_labels_file
from host.pipeline import KERAS_MODEL, SAVED_MODEL, check_output, publish, staged_output

log = logging.getLogger(__name__)

KINDS = ("keras", "saved_model", "tflite")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SELF_NORMALISING_LAYERS = ("Rescaling", "Normalization")
FOLDER_DEFAULTS: dict[str, Any] = {"crop": "center", "resize": "area", "contrast": "none", "polarity": "any", "channel_order": "rgb"}


@dataclass(frozen=True)
class ModelFacts:
    """What the import learns about a model before it converts anything."""

    kind: str
    input_shape: tuple[Optional[int], ...]  # batch first; None for a dynamic dimension
    input_dtype: str
    outputs: int
    input_quant: Optional[tuple[float, int]] = None  # (scale, zero point) of a quantised input
    self_normalising: bool = False
    name: str = "imported"
    params: Optional[int] = None


def model_kind(path: Path) -> str:
    """keras, saved_model or tflite, from what ``path`` is; a one-line error otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--model {p} does not exist")
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            return "saved_model"
        raise ConfigError(f"--model {p} is a folder without saved_model.pb; pass a SavedModel folder, a .keras/.h5 file or a .tflite")
    if p.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if p.suffix.lower() == ".tflite":
        return "tflite"
    raise ConfigError(f"--model {p}: expected a SavedModel folder, a .keras/.h5 file or a .tflite. Got: a {p.suffix or 'suffix-less'} file")


def _depthwise_compat() -> Any:
    """DepthwiseConv2D that drops the ``groups`` argument Keras 2.x wrote into Teachable Machine's .h5 files."""
    import keras

    class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
        def __init__(self, *args: Any, groups: int = 1, **kwargs: Any):
            super().__init__(*args, **kwargs)

    return DepthwiseConv2D


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


_UNKNOWN_CLASS = re.compile(r"Could not locate class '([^']+)'")


def _load_error(path: Path, e: BaseException) -> ConfigError:
    import keras

    unknown = _UNKNOWN_CLASS.search(str(e))
    if unknown:
        return ConfigError(
            f"cannot load --model {path}: it uses a custom layer {unknown.group(1)!r} whose code is not here; "
            "export the model as a SavedModel (model.export(DIR)) or a .tflite and import that"
        )
    return ConfigError(f"cannot load --model {path} with Keras {keras.__version__}: {_first_line(e)}")


def load_keras(path: Path) -> Any:
    """The Keras model in a .keras or legacy .h5 file (with Teachable Machine's ``groups`` quirk handled)."""
    import zipfile

    import h5py
    import keras

    suffix = Path(path).suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ConfigError(f"--model {path} is not a .keras file (a .keras file is a zip archive; this one is damaged, cut short or another format)")
    if suffix in (".h5", ".hdf5") and not h5py.is_hdf5(path):
        raise ConfigError(f"--model {path} is not an HDF5 file (damaged, cut short or another format); pass the Keras .h5 file as it was saved")
    try:
        return keras.models.load_model(path, compile=False)
    except TypeError as e:
        if "'groups'" not in str(e):
            raise _load_error(path, e) from e
    except Exception as e:
        raise _load_error(path, e) from e
    try:
        return keras.models.load_model(path, compile=False, custom_objects={"DepthwiseConv2D": _depthwise_compat()})
    except Exception as e:
        raise _load_error(path, e) from e


def _shape(dims: Any) -> tuple[Optional[int], ...]:
    return tuple(None if d is None or int(d) < 0 else int(d) for d in dims)


def keras_facts(model: Any) -> ModelFacts:
    """Input and output of a Keras model (one each)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; an image classifier has one of each")
    out = _shape(model.outputs[0].shape)
    first = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"][:1]
    return ModelFacts(
        kind="keras",
        input_shape=_shape(model.inputs[0].shape),
        input_dtype=str(np.dtype(model.inputs[0].dtype).name) if model.inputs[0].dtype else "float32",
        outputs=int(np.prod([d or 1 for d in out[1:]])),
        self_normalising=bool(first) and type(first[0]).__name__ in SELF_NORMALISING_LAYERS,
        name=str(model.name),
        params=int(model.count_params()),
    )


def _serving_signature(path: Path) -> Any:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ConfigError(f"cannot load the SavedModel {path}: {_first_line(e)}") from e
    sigs = getattr(loaded, "signatures", {}) or {}
    if not sigs:
        raise ConfigError(f"the SavedModel {path} has no serving signature; export it with model.export(DIR) or tf.saved_model.save(model, DIR, signatures=...)")
    return loaded, sigs["serving_default"] if "serving_default" in sigs else next(iter(sigs.values()))


def saved_model_facts(path: Path) -> ModelFacts:
    """Input and output of a SavedModel's serving signature (one each)."""
    loaded, sig = _serving_signature(path)
    inputs = [t for t in sig.structured_input_signature[1].values()] + list(sig.structured_input_signature[0])
    outputs = list(sig.structured_outputs.values()) if isinstance(sig.structured_outputs, dict) else [sig.structured_outputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(f"the SavedModel's signature has {len(inputs)} inputs and {len(outputs)} outputs; an image classifier has one of each")
    out = _shape(outputs[0].shape)
    params = sum(int(np.prod(v.shape)) for v in getattr(loaded, "variables", []))
    return ModelFacts(
        kind="saved_model",
        input_shape=_shape(inputs[0].shape),
        input_dtype=inputs[0].dtype.name,
        outputs=int(np.prod([d or 1 for d in out[1:]])),
        name=Path(path).resolve().name,
        params=params or None,
    )


def tflite_facts(data: bytes) -> ModelFacts:
    """Input and output of a .tflite, after refusing ops the Pi's runtime cannot run."""
    ops = runtime_unsupported_ops(data)
    if ops:
        raise UnsupportedOps(
            f"the model uses ops the Pi's TFLite runtime cannot run: {', '.join(ops)} (Flex ops need TensorFlow's "
            "select-ops runtime and custom ops their own kernels; tflite-runtime and ai-edge-litert have neither): "
            "re-export it with builtin ops only",
            tuple(ops),
        )
    try:
        interp = _plain_interpreter(data)
    except Exception as e:
        raise ConfigError(f"the TFLite runtime cannot load this model: {_first_line(e)}") from e
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ConfigError(f"the model has {len(ins)} inputs and {len(outs)} outputs; an image classifier has one of each")
    scale, zp = ins[0].get("quantization", (0.0, 0))
    dtype = np.dtype(ins[0]["dtype"]).name
    shape = _shape(ins[0].get("shape_signature", ins[0]["shape"]))
    if any(d is None for d in shape[1:]):
        raise ConfigError(f"the .tflite's input {list(shape)} has no fixed size (-1); convert it with a fixed input size")
    return ModelFacts(
        kind="tflite",
        input_shape=shape,
        input_dtype=dtype,
        outputs=int(np.prod(outs[0]["shape"][1:])),
        input_quant=(float(scale), int(zp)) if dtype in ("int8", "uint8") and scale else None,
    )


def tflite_variant(data: bytes) -> str:
    """Which of the four variants a .tflite is, from its tensors: int8 (quantised input), float16, dynamic or float32."""
    interp = _plain_interpreter(data)
    if np.dtype(interp.get_input_details()[0]["dtype"]).name in ("int8", "uint8"):
        return "int8"
    dtypes = {np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    if "float16" in dtypes:
        return "float16"
    return "dynamic" if "int8" in dtypes else "float32"


def parse_preprocess_arg(text: Optional[str]) -> dict[str, Any]:
    """``--preprocess`` as a JSON object, inline or in a file (the manifest's ``preprocess`` fields)."""
    if not text:
        return {}
    p = Path(text)
    try:
        raw = p.read_text() if not text.lstrip().startswith("{") and p.is_file() else text
        value = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--preprocess must be a JSON object (or a file holding one), e.g. '{{\"normalize\": [-1, 1]}}': {e}") from e
    if not isinstance(value, dict):
        raise ConfigError(f"--preprocess must be a JSON object, e.g. '{{\"normalize\": [-1, 1]}}'. Got: {value!r}")
    return value


def _can_feed(where: str) -> str:
    return (f"{where}; the device feeds one NHWC image: [1, H, W, 3] RGB or [1, H, W, 1] / [1, H, W] grey, "
            "as float32, uint8 or int8 (with scale and zero point)")


def contract_for_model(facts: ModelFacts, stated: dict[str, Any]) -> Preprocess:
    """The preprocessing contract: the model's input, the folder defaults, then what the user stated."""
    shape = facts.input_shape
    if len(shape) == 4:
        h, w, c = shape[1], shape[2], shape[3]
    elif len(shape) == 3:
        h, w, c = shape[1], shape[2], 1
    else:
        raise ConfigError(_can_feed(f"the model's input {list(shape)} is not an image"))
    if c not in (1, 3):
        layout = " (channels first, as PyTorch exports: re-export it channels last)" if len(shape) == 4 and shape[1] in (1, 3) else ""
        raise ConfigError(_can_feed(f"the model's input {list(shape)} has {c} channels{layout}"))
    pre: dict[str, Any] = {**FOLDER_DEFAULTS, "color": "rgb" if c == 3 else "grayscale"}
    if h is not None and w is not None:
        pre["size"] = [h, w]
    if facts.input_quant is not None and facts.input_dtype == "uint8":
        # uint8 models take the pixel bytes as they are (picamera2's, Coral's and the TFLite examples'
        # convention): pixel p is q = p, whose real value is (p - zero point) * scale
        scale, zp = facts.input_quant
        pre["normalize"] = [(0 - zp) * scale, (255 - zp) * scale]
    elif facts.self_normalising:
        pre["normalize"] = [0.0, 255.0]
    pre.update(stated)
    if "size" not in pre:
        raise ConfigError(f"the model's input {list(shape)} has no fixed size; state it: --preprocess '{{\"size\": [224, 224]}}'")
    if "normalize" not in pre:
        why = (" (an int8 input's scale comes from the calibration images' range, not from the normalisation)"
               if facts.input_dtype == "int8" else "")
        raise ConfigError(
            f"state how pixels map to the model's real-valued input{why}: --preprocess '{{\"normalize\": [-1, 1]}}' "
            "(Teachable Machine, MobileNet) or [0, 1], or {\"mean\": [...], \"std\": [...]} in pixel units"
        )
    try:
        contract = Preprocess.from_json(pre, "--preprocess")
        batch_one = (1, *[d if d is not None else s for d, s in zip(shape[1:], (*contract.size, contract.channels))])
        quant = facts.input_quant or (None, None)
        contract.check_input(TensorSpec(tuple(int(d) for d in batch_one), facts.input_dtype, quant[0], quant[1]), "the model")
    except ManifestError as e:
        raise ConfigError(str(e)) from e
    return contract


def calibration_splits(calibration: str, labels: tuple[str, ...], contract: Preprocess, progress: bool) -> Splits:
    """DIR at the model's size and colour, relabelled to the model's label order; train holds train + validation."""
    if not calibration.startswith("folder:"):
        raise ConfigError(f"--calibration must be folder:DIR (one subfolder per class, named as in the labels). Got: {calibration!r}")
    s = folder_splits(parse_folder_spec(calibration), contract.size, contract.color, None, progress, contract.crop)
    unknown = [c for c in s.labels if c not in labels]
    if unknown:
        raise DataError(
            f"--calibration class folder{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"not in the labels ({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}); name each folder as its label"
        )
    missing = [x for x in labels if x not in s.labels]
    if missing:
        log.warning(
            "no calibration images for %d of %d labels (%s%s): their accuracy is not measured and int8 calibration does not see them",
            len(missing), len(labels), ", ".join(missing[:5]), ", ..." if len(missing) > 5 else "",
        )
    to_model = np.asarray([labels.index(c) for c in s.labels], dtype=np.int64)
    return Splits(
        train_x=np.concatenate([s.train_x, s.val_x]), train_y=to_model[np.concatenate([s.train_y, s.val_y])],
        val_x=s.val_x[:0], val_y=s.val_y[:0], seed_test_x=None, seed_test_y=None,
        test_x=s.test_x, test_y=to_model[s.test_y], source=s.source, labels=labels, preprocess=contract,
        test_name=s.test_name, seed_test_name="", data=s.data,
    )


def _fixed_keras(model: Any, contract: Preprocess) -> Any:
    """The model with a fixed-size input (a dynamic H, W cannot become a TFLite model)."""
    import keras

    if all(d is not None for d in model.inputs[0].shape[1:]):
        return model
    inp = keras.Input(shape=contract.input_shape()[1:], name="image")
    return keras.Model(inp, model(inp), name=model.name)


def _saved_model_predictions(path: Path, images: np.ndarray, contract: Preprocess) -> np.ndarray:
    """Top-1 of the SavedModel's serving signature on images at model size."""
    import tensorflow as tf

    _, sig = _serving_signature(path)
    spec = TensorSpec(contract.input_shape(), "float32")
    name = next(iter(sig.structured_input_signature[1]), None)
    preds = []
    for i in range(0, len(images), 64):
        x = tf.constant(model_input(images[i : i + 64], contract, spec))
        out = sig(**{name: x}) if name else sig(x)
        out = next(iter(out.values())) if isinstance(out, dict) else out
        preds.append(np.asarray(out).reshape(len(x), -1).argmax(axis=1))
    return np.concatenate(preds).astype(np.int64) if preds else np.zeros(0, np.int64)


def import_into(
    stage: Path,
    model_path: Path,
    labels: tuple[str, ...],
    calibration: str,
    stated: dict[str, Any],
    optimization: str = "DEFAULT",
    seed: int = 42,
    progress: bool = True,
) -> None:
    """Write the artifacts of an imported model into the (empty, temporary) folder ``stage``."""
    kind = model_kind(model_path)
    keras_model = None
    if kind == "keras":
        keras_model = load_keras(model_path)
        facts = keras_facts(keras_model)
    elif kind == "saved_model":
        facts = saved_model_facts(model_path)
    else:
        try:
            tflite = Path(model_path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read --model {model_path}: {e}") from e
        try:
            facts = dataclasses.replace(tflite_facts(tflite), name=Path(model_path).stem)
        except UnsupportedOps:
            raise
        except ConversionError as e:  # the flatbuffer cannot be read
            raise ConfigError(f"--model {model_path}: {e}; pass a .tflite as the TFLite converter wrote it") from e
    if facts.outputs != len(labels):
        raise DataError(
            f"--labels has {len(labels)} labels but the model outputs {facts.outputs} scores; "
            "give one label per output, in the model's order"
        )
    contract = contract_for_model(facts, stated)
    splits = calibration_splits(calibration, labels, contract, progress)
    reference: Optional[np.ndarray] = None
    variants: tuple[str, ...] = VARIANTS
    if kind == "tflite":
        variant = tflite_variant(tflite)
        (stage / model_filename(variant)).write_bytes(tflite)
        variants = (variant,)
    else:
        saved = stage / SAVED_MODEL
        if keras_model is not None:
            keras_model = _fixed_keras(keras_model, contract)
            keras_model.export(str(saved), verbose=False)
            keras_model.save(stage / KERAS_MODEL)
            reference = keras_predictions(keras_model, splits.test_x, contract)
        else:
            shutil.copytree(model_path, saved)
            reference = _saved_model_predictions(saved, splits.test_x, contract)
        convert_all(saved, stage, representative_images(splits.train_x, REPRESENTATIVE_COUNT, seed), optimization,
                    progress=progress, contract=contract)
    info: dict[str, Any] = {
        "name": facts.name,
        "params": facts.params,
        "imported_from": str(Path(model_path).resolve()),
        "imported_kind": kind,
        "keras_accuracy": float(np.mean(reference == splits.test_y)) if reference is not None and len(reference) else None,
        "data_source": splits.source,
        "representative_images": min(REPRESENTATIVE_COUNT, len(splits.train_x)) if kind != "tflite" else None,
    }
    try:
        publish(stage, stage, splits, reference, info, progress, variants=variants)
    except DeviceError as e:
        raise ConfigError(f"the imported model cannot be evaluated: {e}") from e


def import_model(
    model_path: Path,
    labels_path: Path,
    calibration: str,
    out: Path,
    *,
    preprocess: Optional[str] = None,
    force: bool = False,
    optimization: str = "DEFAULT",
    seed: int = 42,
    progress: bool = True,
) -> Path:
    """Check, convert (or take) and evaluate a model; write manifest, variants, golden set and report into ``out`` atomically."""
    out = Path(out)
    optimization = resolve_optimization(optimization)
    check_output(out, force)
    labels = read_labels_file(labels_path)
    check_labels(labels, "label")
    stated = parse_preprocess_arg(preprocess)
    model_kind(model_path)  # before any heavy work
    with staged_output(out, force) as stage:
        import_into(stage, Path(model_path), labels, calibration, stated, optimization, seed, progress)
    return out
