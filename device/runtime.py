"""One place picks the TFLite interpreter: tflite_runtime → ai_edge_litert → tensorflow.lite.

It is also the one place that knows how to turn XNNPACK off. Every runtime here applies its
default delegate (XNNPACK, where the wheel was built with it and the op is one XNNPACK takes)
unless the interpreter is built with ``experimental_op_resolver_type=
OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``; then only TFLite's builtin kernels run.
Whether XNNPACK really took part is not a promise of the setting: ``LiteRTEngine.delegate_nodes``
reads it from the interpreter's execution plan.
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from device.errors import RuntimeNotFound

# name → module that exposes ``Interpreter``; order is the automatic preference.
RUNTIMES: dict[str, str] = {
    "tflite-runtime": "tflite_runtime.interpreter",
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tensorflow": "tensorflow.lite",
}


XNNPACK_SETTINGS = ("on", "off")  # on: the runtime's default delegates (XNNPACK); off: builtin kernels only
WITHOUT_DELEGATES = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


@dataclass(frozen=True)
class Runtime:
    """A TFLite runtime that imported: its name, version, Interpreter class and (if it has one) OpResolverType."""

    name: str
    version: str
    interpreter_class: Callable[..., Any]
    op_resolver_type: Optional[Any] = None

    @property
    def can_disable_xnnpack(self) -> bool:
        """True when this runtime can build an interpreter without its default delegates."""
        return self.op_resolver_type is not None and hasattr(self.op_resolver_type, WITHOUT_DELEGATES)

    def interpreter_options(self, xnnpack: str = "on") -> dict[str, Any]:
        """Interpreter keyword arguments for XNNPACK ``on`` (the runtime's default) or ``off`` (builtin kernels only)."""
        if xnnpack not in XNNPACK_SETTINGS:
            raise ValueError(f"XNNPACK must be one of {', '.join(XNNPACK_SETTINGS)}. Got: {xnnpack!r}")
        if xnnpack == "on":
            return {}
        if not self.can_disable_xnnpack:
            raise RuntimeNotFound(f"the {self.name} {self.version} runtime has no OpResolverType.{WITHOUT_DELEGATES}, so "
                                  "XNNPACK cannot be turned off there; use XNNPACK on, or install ai-edge-litert")
        return {"experimental_op_resolver_type": getattr(self.op_resolver_type, WITHOUT_DELEGATES)}


def install_hint(machine: Optional[str] = None, python: Optional[tuple[int, int]] = None) -> str:
    """What to pip-install for this Python and architecture."""
    machine = machine or platform.machine()
    py = python or (sys.version_info.major, sys.version_info.minor)
    pyv = f"{py[0]}.{py[1]}"
    if machine in ("armv7l", "armv6l"):
        return (
            f"this is 32-bit ARM ({machine}); no current TFLite runtime has wheels for it. "
            "Install 64-bit Raspberry Pi OS, then `pip install ai-edge-litert`"
        )
    if py <= (3, 11):
        return (
            f"for Python {pyv} on {machine}: `pip install 'numpy<2' tflite-runtime==2.14.0` "
            "(tflite-runtime fails with numpy 2), or `pip install ai-edge-litert`"
        )
    return f"for Python {pyv} on {machine}: `pip install ai-edge-litert` (tflite-runtime has no wheel past Python 3.11)"


def _op_resolver_type(mod: Any) -> Optional[Any]:
    """The runtime's OpResolverType enum: beside Interpreter (tflite_runtime, ai_edge_litert) or in tf.lite.experimental."""
    found = getattr(mod, "OpResolverType", None)
    if found is None:
        found = getattr(getattr(mod, "experimental", None), "OpResolverType", None)
    return found


def _version(modname: str) -> str:
    top = importlib.import_module(modname.split(".")[0])
    return str(getattr(top, "__version__", "unknown"))


def load_runtime(name: str = "auto") -> Runtime:
    """Import the named runtime (or the first that works for ``auto``)."""
    names = list(RUNTIMES) if name == "auto" else [name]
    if name != "auto" and name not in RUNTIMES:
        raise RuntimeNotFound(f"unknown runtime {name!r}; choose one of: auto, {', '.join(RUNTIMES)}")
    failures: list[str] = []
    for n in names:
        modname = RUNTIMES[n]
        try:
            mod = importlib.import_module(modname)
            cls = mod.Interpreter
        except Exception as e:  # a broken wheel raises more than ImportError (numpy 2 vs tflite-runtime)
            failures.append(f"{n}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        return Runtime(n, _version(modname), cls, _op_resolver_type(mod))
    raise RuntimeNotFound(
        "no TFLite runtime could be imported (" + "; ".join(failures) + "). " + install_hint()
    )
