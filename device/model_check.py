"""Load a model in a child process first, so a runtime that crashes on it ends the child, not the daemon.

TFLite runtimes verify a model's FlatBuffer before building an interpreter, so random bytes
and files cut short are refused with an error. A file that is structurally sound but corrupt
inside can still fail in ``allocate_tensors`` or ``invoke`` (a kernel that refuses its tensors),
and runtimes have crashed outright on such files. ``check_in_child`` loads, allocates and invokes
the model once in ``python -m device.model_check`` and turns whatever happens there (an error, a
signal, a hang) into one ModelError line. It costs one Python start-up (about 0.3 s here).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from device.errors import DeviceError, ModelError, one_line
from device.runtime import XNNPACK_SETTINGS

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def check_in_child(data: bytes, runtime: str, threads: Optional[int] = None, name: str = "the model", timeout_s: float = 120.0,
                   xnnpack: str = "on") -> None:
    """Load, allocate and invoke ``data`` once in a child process; raise ModelError if that fails in any way."""
    cmd = [sys.executable, "-m", "device.model_check", "--runtime", runtime, "--name", name, "--xnnpack", xnnpack]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    try:
        p = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{name}: the {runtime} runtime did not finish loading it within {timeout_s:.0f} s; "
                         "the file may be corrupt. Re-convert it, or push it again") from None
    if p.returncode == 0:
        return
    if p.returncode < 0:
        sig = signal.Signals(-p.returncode).name
        raise ModelError(f"{name}: the {runtime} runtime crashed ({sig}) loading it: the file is corrupt or made for "
                         "another runtime version. Re-convert it, or push it again")
    lines = p.stdout.decode(errors="replace").strip().splitlines() or p.stderr.decode(errors="replace").strip().splitlines()
    raise ModelError(one_line(lines[-1] if lines else f"{name}: the model check exited {p.returncode}"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Read a model from stdin, load it, invoke it once on zeros; print one line on failure (exit 1)."""
    ap = argparse.ArgumentParser(prog="python -m device.model_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--name", default="the model")
    ap.add_argument("--xnnpack", default="on", choices=XNNPACK_SETTINGS)
    args = ap.parse_args(argv)
    data = sys.stdin.buffer.read()
    try:
        import numpy as np

        from device.engine import LiteRTEngine
        from device.runtime import load_runtime

        engine = LiteRTEngine(data, load_runtime(args.runtime), args.threads, args.name, args.xnnpack)
        engine.run(np.zeros(engine.input_spec.shape, np.dtype(engine.input_spec.dtype)))
    except DeviceError as e:
        print(one_line(str(e)), flush=True)
        return 1
    except Exception as e:  # anything else the runtime raises is still this model's fault
        print(one_line(f"{args.name}: the {args.runtime} runtime failed on it: {type(e).__name__}: {e}"), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
