"""One place picks the TFLite interpreter: tflite_runtime → ai_edge_litert → tensorflow.lite."""

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


@dataclass(frozen=True)
class Runtime:
    """A TFLite runtime that imported: its name, version and Interpreter class."""

    name: str
    version: str
    interpreter_class: Callable[..., Any]


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
        return Runtime(n, _version(modname), cls)
    raise RuntimeNotFound(
        "no TFLite runtime could be imported (" + "; ".join(failures) + "). " + install_hint()
    )
