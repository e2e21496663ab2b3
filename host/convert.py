"""SavedModel → four TFLite variants: float32, dynamic-range, float16, full-integer int8.

All four come from the SavedModel, as in the seed. The int8 model is calibrated on a
representative set drawn from the training split (normalised as the preprocessing contract
says), takes int8 input and gives int8 output, uses builtin int8 ops only, and is checked tensor
by tensor before it is accepted. A model that needs Flex (select-TF) or custom ops is refused:
the Pi's runtimes (tflite-runtime, ai-edge-litert) run builtin ops only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from device.manifest import VARIANTS, Preprocess, TensorSpec
from device.preprocess import model_input
from host.errors import ConfigError, ConversionError, NotIntegerOnly, UnsupportedOps
from host.evaluate import DEFAULT_CONTRACT

log = logging.getLogger(__name__)

OPTIMIZATIONS = ("DEFAULT", "OPTIMIZE_FOR_LATENCY", "OPTIMIZE_FOR_SIZE")
DEPRECATED_OPTIMIZATIONS = ("OPTIMIZE_FOR_LATENCY", "OPTIMIZE_FOR_SIZE")
REPRESENTATIVE_COUNT = 500
# int32 is what the int8 spec uses for biases and shape operands; anything else is a leak.
INTEGER_ONLY_DTYPES = frozenset({"int8", "int32"})
CUSTOM_OP_CODE = 32  # BuiltinOperator.CUSTOM in the TFLite schema
# Custom ops that TFLite's own builtin op resolver registers, so every runtime runs them.
RUNTIME_CUSTOM_OPS = frozenset({"TFLite_Detection_PostProcess", "Mfcc", "AudioSpectrogram"})


@dataclass(frozen=True)
class Converted:
    """One written .tflite file."""

    variant: str
    path: Path
    size_bytes: int


def model_filename(variant: str) -> str:
    """File name of a variant inside the output folder."""
    return f"model_{variant}.tflite"


def resolve_optimization(name: str) -> str:
    """Map the seed's optimisation names onto DEFAULT, warning about the deprecated aliases."""
    upper = name.upper().removeprefix("TF.LITE.OPTIMIZE.")
    if upper not in OPTIMIZATIONS:
        raise ConfigError(f"unknown optimisation {name!r}; choose one of {', '.join(OPTIMIZATIONS)}")
    if upper in DEPRECATED_OPTIMIZATIONS:
        msg = (
            f"tf.lite.Optimize.{upper} is deprecated and behaves exactly like DEFAULT in current "
            "TensorFlow; using DEFAULT"
        )
        warnings.warn(msg, FutureWarning, stacklevel=2)
        log.warning(msg)
    return "DEFAULT"


def representative_images(train_x: np.ndarray, count: int = REPRESENTATIVE_COUNT, seed: int = 42) -> np.ndarray:
    """A seeded draw of ``count`` training images (uint8) for int8 calibration."""
    if len(train_x) == 0:
        raise ConfigError("the representative set needs training images; got none")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_x), size=min(count, len(train_x)), replace=False)
    return train_x[np.sort(idx)]


def _representative_dataset(images: np.ndarray, contract: Preprocess) -> Callable[[], Iterator[list[np.ndarray]]]:
    spec = TensorSpec(contract.input_shape(), "float32")

    def gen() -> Iterator[list[np.ndarray]]:
        for img in images:
            yield [model_input(img[None], contract, spec)]

    return gen


def _converter(saved_model: Path, variant: str, representative: Optional[np.ndarray], contract: Preprocess = DEFAULT_CONTRACT) -> Any:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant == "float32":
        return c
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        c.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative is None or len(representative) == 0:
            raise ConfigError("the int8 variant needs a representative set of training images")
        c.representative_dataset = _representative_dataset(representative, contract)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    return c


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Any]:
    """Send file descriptor 2 to a temporary file: the converter's C++ diagnostics repeat what its exception says."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


_NOT_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_LISTED = re.compile(r"(?:Flex|Custom|TF Select) ops: ([\w, ]+)")


def _unsupported_in(message: str) -> list[str]:
    names = _NOT_BUILTIN.findall(message)
    for listed in _LISTED.findall(message):
        names += [n.strip() for n in listed.split(",") if n.strip()]
    return sorted(set(names))


def convert_variant(
    saved_model: Path, variant: str, representative: Optional[np.ndarray] = None, contract: Preprocess = DEFAULT_CONTRACT
) -> bytes:
    """Convert the SavedModel into one variant's flatbuffer bytes (int8: calibrated on ``representative``)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise ConversionError(f"no SavedModel at {saved_model}: run `python -m host train --out DIR` first")
    try:
        with _stderr_captured():
            data = bytes(_converter(Path(saved_model), variant, representative, contract).convert())
    except ConfigError:
        raise
    except Exception as e:
        unsupported = _unsupported_in(str(e))
        if unsupported:
            raise UnsupportedOps(
                f"the model uses TensorFlow ops that TFLite has no builtin kernel for ({', '.join(unsupported)}); "
                "the Pi's runtime runs builtin ops only (no Flex / select-TF ops, no custom ops): "
                "replace the layers that use them",
                tuple(unsupported),
            ) from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"converting {saved_model} to the {variant} variant failed: {first}") from e
    if variant == "int8":
        verify_integer_only(data)
    return data


def model_ops(model: bytes) -> list[tuple[int, Optional[str]]]:
    """(builtin code, custom code) of every operator code in a .tflite, read from its flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        m = schema.Model.GetRootAsModel(model, 0)
        out: list[tuple[int, Optional[str]]] = []
        for i in range(m.OperatorCodesLength()):
            oc = m.OperatorCodes(i)
            custom = oc.CustomCode()
            out.append((max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode())), custom.decode() if custom else None))
        return out
    except Exception as e:
        raise ConversionError(f"cannot read the operators of this .tflite ({type(e).__name__}): the file is damaged") from e


def runtime_unsupported_ops(model: bytes) -> list[str]:
    """Flex (select-TF) and custom ops in a .tflite that the Pi's TFLite runtimes cannot run."""
    names = []
    for code, custom in model_ops(model):
        if code == CUSTOM_OP_CODE and (custom or "?") not in RUNTIME_CUSTOM_OPS:
            names.append(custom or "custom op without a name")
    return sorted(set(names))


def _plain_interpreter(model: bytes) -> Any:
    """An interpreter without the default XNNPACK delegate, so the model's own ops stay visible."""
    try:
        from ai_edge_litert import interpreter as lite
    except ImportError:
        import tensorflow.lite as lite
    interp = lite.Interpreter(
        model_content=model, experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interp.allocate_tensors()
    return interp


def integer_only_offenders(model: bytes) -> list[str]:
    """Everything in the model that is not integer-only: float tensors, non-builtin or (de)quantise-to-float ops."""
    interp = _plain_interpreter(model)
    offenders: list[str] = []
    for t in interp.get_tensor_details():
        dtype = np.dtype(t["dtype"]).name
        if dtype not in INTEGER_ONLY_DTYPES:
            offenders.append(f"tensor {t['name']!r} is {dtype}")
    for d, what in ((interp.get_input_details(), "input"), (interp.get_output_details(), "output")):
        for t in d:
            if np.dtype(t["dtype"]).name != "int8":
                offenders.append(f"{what} {t['name']!r} is {np.dtype(t['dtype']).name}, not int8")
    ops = interp._get_ops_details() if hasattr(interp, "_get_ops_details") else []
    for op in ops:
        name = str(op.get("op_name", ""))
        if name.startswith("Flex") or name in ("CUSTOM", "DEQUANTIZE", "DELEGATE"):
            offenders.append(f"op {op.get('index')} is {name}")
    return offenders


def verify_integer_only(model: bytes) -> None:
    """Raise NotIntegerOnly naming every float tensor or non-integer op in an int8 model."""
    offenders = integer_only_offenders(model)
    if offenders:
        shown = "; ".join(offenders[:8]) + (f"; and {len(offenders) - 8} more" if len(offenders) > 8 else "")
        raise NotIntegerOnly(
            f"the int8 model is not integer-only ({len(offenders)} problems: {shown}). "
            "Keep augmentation and other non-inference layers out of the exported model, "
            "and check the representative set",
            tuple(offenders),
        )


def convert_all(
    saved_model: Path,
    folder: Path,
    representative: np.ndarray,
    optimization: str = "DEFAULT",
    variants: tuple[str, ...] = VARIANTS,
    progress: bool = True,
    contract: Preprocess = DEFAULT_CONTRACT,
) -> dict[str, Converted]:
    """Write every variant's .tflite into ``folder`` (each file written whole, then renamed into place).

    ``representative`` are uint8 images at model size; ``contract`` says how they become the model's input.
    """
    from tqdm import tqdm

    resolve_optimization(optimization)
    out: dict[str, Converted] = {}
    for v in tqdm(variants, desc="converting", unit="model", disable=not progress, leave=False):
        data = convert_variant(saved_model, v, representative if v == "int8" else None, contract)
        path = Path(folder) / model_filename(v)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        out[v] = Converted(v, path, len(data))
    return out
