"""The Engine: a TFLite model loaded once from verified bytes, run on one tensor at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from device.errors import ModelError
from device.manifest import Manifest, TensorSpec, Variant, sha256_bytes
from device.runtime import Runtime, load_runtime

TFLITE_MAGIC = b"TFL3"  # FlatBuffer file identifier at bytes 4..8 of every .tflite


class Engine(Protocol):
    """Anything that maps one input tensor to one output tensor."""

    input_spec: TensorSpec
    output_spec: TensorSpec

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference; returns the raw output tensor (a copy)."""
        ...


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zp = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    if dtype in ("int8", "uint8") and scale:
        return TensorSpec(tuple(int(x) for x in detail["shape"]), dtype, float(scale), int(zp))
    return TensorSpec(tuple(int(x) for x in detail["shape"]), dtype)


def read_model_bytes(path: Path, expected_sha256: Optional[str] = None) -> bytes:
    """Read a .tflite once, check its identifier and (if given) its sha256."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist; re-run the host pipeline or `deploy push`") from None
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e}") from e
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise ModelError(
            f"{path} is not a TFLite model (no 'TFL3' identifier; {len(data)} bytes): "
            "the file is truncated or corrupt. Re-convert it or push it again"
        )
    if expected_sha256 is not None:
        got = sha256_bytes(data)
        if got != expected_sha256:
            raise ModelError(
                f"{path} has sha256 {got[:12]}…, the manifest says {expected_sha256[:12]}…: "
                "the file was changed or damaged after conversion. Push it again"
            )
    return data


class LiteRTEngine:
    """A TFLite interpreter from whichever runtime ``load_runtime`` picked."""

    def __init__(self, model: bytes, runtime: Optional[Runtime] = None, threads: Optional[int] = None):
        self.runtime = runtime or load_runtime("auto")
        self.threads = threads
        try:
            self._interp = self.runtime.interpreter_class(model_content=model, num_threads=threads)
            self._interp.allocate_tensors()
        except Exception as e:
            raise ModelError(f"the {self.runtime.name} runtime could not load this model: {e}") from e
        inp = self._interp.get_input_details()
        out = self._interp.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"expected a model with one input and one output. Got: {len(inp)} inputs, {len(out)} outputs")
        self._in_index = inp[0]["index"]
        self._out_index = out[0]["index"]
        self.input_spec = _spec(inp[0])
        self.output_spec = _spec(out[0])

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Set the input, invoke, return a copy of the output."""
        self._interp.set_tensor(self._in_index, tensor)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index).copy()

    def invoke_only(self) -> None:
        """Invoke on whatever input is set (for timing invoke alone)."""
        self._interp.invoke()

    def set_input(self, tensor: np.ndarray) -> None:
        """Set the input tensor without invoking."""
        self._interp.set_tensor(self._in_index, tensor)

    def get_output(self) -> np.ndarray:
        """Copy of the output tensor after an invoke."""
        return self._interp.get_tensor(self._out_index).copy()


def _same_spec(a: TensorSpec, b: TensorSpec) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.quantized or b.quantized:
        return bool(
            a.scale and b.scale and abs(a.scale - b.scale) <= 1e-6 * max(abs(a.scale), 1e-12) and a.zero_point == b.zero_point
        )
    return True


def check_against_manifest(engine: Engine, variant: Variant) -> None:
    """Refuse a model whose input or output spec differs from what the manifest promises."""
    for what, got, want in (("input", engine.input_spec, variant.input), ("output", engine.output_spec, variant.output)):
        if not _same_spec(got, want):
            raise ModelError(
                f"the {variant.name} model's {what} is {got.to_json()} but the manifest says {want.to_json()}: "
                "model and manifest come from different runs. Push both from the same `host run` output"
            )


def open_engine(manifest: Manifest, variant: str, runtime: str = "auto", threads: Optional[int] = None) -> LiteRTEngine:
    """Read a variant's bytes once, verify hash and spec, load it with the chosen runtime."""
    v = manifest.variant(variant)
    data = read_model_bytes(manifest.model_path(variant), v.sha256)
    engine = LiteRTEngine(data, load_runtime(runtime), threads)
    check_against_manifest(engine, v)
    return engine
