"""The Engine: a TFLite model loaded once from verified bytes, run on one tensor at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from device.errors import ModelError, one_line
from device.manifest import Manifest, TensorSpec, Variant, sha256_bytes
from device.runtime import Runtime, load_runtime

TFLITE_MAGIC = b"TFL3"  # FlatBuffer file identifier at bytes 4..8 of every .tflite


def check_flatbuffer(data: bytes) -> Optional[str]:
    """Why ``data`` cannot be a TFLite FlatBuffer, or None if its header holds together.

    The identifier alone says nothing of what follows it: a file cut short keeps it. This also
    follows the root offset to the root table and its vtable, which must lie inside the file.
    The runtime's own verifier checks the rest before it builds an interpreter.
    """
    n = len(data)
    if n < 8 or data[4:8] != TFLITE_MAGIC:
        return f"no 'TFL3' identifier; {n} bytes"
    root = int.from_bytes(data[0:4], "little")
    if root % 4 or not 8 <= root <= n - 4:
        return f"its root table offset {root} lies outside its {n} bytes: the file is cut short or corrupt"
    vtable = root - int.from_bytes(data[root : root + 4], "little", signed=True)
    if vtable < 0 or vtable % 2 or vtable + 4 > n:
        return f"its root vtable offset {vtable} lies outside its {n} bytes: the file is cut short or corrupt"
    vt_size, table_size = int.from_bytes(data[vtable : vtable + 2], "little"), int.from_bytes(data[vtable + 2 : vtable + 4], "little")
    if vt_size < 4 or vt_size % 2 or vtable + vt_size > n or root + table_size > n:
        return f"its root table runs past its {n} bytes: the file is cut short or corrupt"
    return None


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
    problem = check_flatbuffer(data)
    if problem is not None:
        raise ModelError(f"{path} is not a TFLite model ({problem}). Re-convert it or push it again")
    if expected_sha256 is not None:
        got = sha256_bytes(data)
        if got != expected_sha256:
            raise ModelError(
                f"{path} has sha256 {got[:12]}…, the manifest says {expected_sha256[:12]}…: "
                "the file was changed or damaged after conversion. Push it again"
            )
    return data


def count_delegate_nodes(interpreter: Any) -> Optional[int]:
    """Nodes of the execution plan that a delegate (XNNPACK) runs, or None when the runtime does not say.

    A delegate that takes part replaces the nodes it runs with ``DELEGATE`` nodes; with
    XNNPACK off (or ops XNNPACK does not take) there are none.
    """
    wrapper = getattr(interpreter, "_interpreter", None)
    try:
        if wrapper is not None and hasattr(wrapper, "NumNodes") and hasattr(wrapper, "NodeName"):
            return sum(wrapper.NodeName(i) == "DELEGATE" for i in range(int(wrapper.NumNodes())))
        return sum(op.get("op_name") == "DELEGATE" for op in interpreter._get_ops_details())
    except Exception:  # a private API that changed: report "unknown", never fail a load over it
        return None


class LiteRTEngine:
    """A TFLite interpreter from whichever runtime ``load_runtime`` picked.

    ``threads`` is the interpreter's ``num_threads`` (None: the runtime's own choice); ``xnnpack``
    is ``on`` (the runtime's default delegates) or ``off`` (builtin kernels only, see
    ``device.runtime``). ``delegate_nodes`` says what the interpreter really did with it.
    """

    def __init__(self, model: bytes, runtime: Optional[Runtime] = None, threads: Optional[int] = None, name: str = "the model",
                 xnnpack: str = "on"):
        self.runtime = runtime or load_runtime("auto")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or unset for the runtime's choice). Got: {threads}")
        self.threads = threads
        self.xnnpack = xnnpack
        self.name = name
        options = self.runtime.interpreter_options(xnnpack)
        try:
            self._interp = self.runtime.interpreter_class(model_content=model, num_threads=threads, **options)
            self._interp.allocate_tensors()
            inp = self._interp.get_input_details()
            out = self._interp.get_output_details()
        except Exception as e:
            raise ModelError(f"the {self.runtime.name} runtime could not load {name}: {one_line(str(e)).rstrip('.')}. "
                             "Re-convert it, or push it again") from e
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{name}: expected a model with one input and one output. Got: {len(inp)} inputs, {len(out)} outputs")
        self._in_index = inp[0]["index"]
        self._out_index = out[0]["index"]
        self.input_spec = _spec(inp[0])
        self.output_spec = _spec(out[0])
        self.delegate_nodes = count_delegate_nodes(self._interp)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Set the input, invoke, return a copy of the output."""
        self._interp.set_tensor(self._in_index, tensor)
        self.invoke_only()
        return self._interp.get_tensor(self._out_index).copy()

    def invoke_only(self) -> None:
        """Invoke on whatever input is set (for timing invoke alone); a kernel error is a ModelError."""
        try:
            self._interp.invoke()
        except RuntimeError as e:  # a corrupt model that loaded: a kernel refuses its tensors
            raise ModelError(f"{self.name} failed to run on the {self.runtime.name} runtime: {one_line(str(e)).rstrip('.')}. "
                             "Re-convert it, or push it again") from e

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


def open_engine(
    manifest: Manifest, variant: str, runtime: str = "auto", threads: Optional[int] = None, isolate: bool = False,
    xnnpack: str = "on",
) -> LiteRTEngine:
    """Read a variant's bytes once, verify hash and spec, load it with the chosen runtime, threads and XNNPACK setting.

    ``isolate`` first loads and invokes it once in a child process (``device.model_check``), so a
    runtime that crashes on the file ends a child, and the caller gets a one-line ModelError.
    """
    v = manifest.variant(variant)
    path = manifest.model_path(variant)
    data = read_model_bytes(path, v.sha256)
    rt = load_runtime(runtime)
    rt.interpreter_options(xnnpack)  # refuse an impossible setting before anything is loaded
    if isolate:
        from device.model_check import check_in_child

        check_in_child(data, rt.name, threads, str(path), xnnpack=xnnpack)
    engine = LiteRTEngine(data, rt, threads, str(path), xnnpack)
    check_against_manifest(engine, v)
    return engine
