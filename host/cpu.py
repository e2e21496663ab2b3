"""The training CPU: model name and the instruction-set flags that decide training speed.

Training time depends on them: with bfloat16 units (``avx512_bf16``, ``amx_bf16``) Keras mixed
bfloat16 runs about 1.7x faster than float32; without them training runs in float32 on AVX2 or
AVX-512. ``ONEDNN_MAX_CPU_ISA`` caps what oneDNN (TensorFlow's conv and matmul kernels on x86)
may use, e.g. ``AVX2`` to measure on a bf16 machine as on a CPU without bf16 or AVX-512. It
caps oneDNN only; TensorFlow's other kernels are built for a baseline x86 ISA either way.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
# oneDNN ISA names at or below which there are no bfloat16 units to use
_NO_BF16_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class CpuInfo:
    """What one training figure needs beside it to compare across machines."""

    model: str
    flags: dict[str, bool]
    cores: int
    onednn_isa_cap: Optional[str]

    @property
    def bf16(self) -> bool:
        """True when bfloat16 compute is available to oneDNN (flags present and not capped away)."""
        if self.onednn_isa_cap and self.onednn_isa_cap.upper() in _NO_BF16_CAPS:
            return False
        return self.flags.get("avx512_bf16", False) or self.flags.get("amx_bf16", False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"model": self.model, "flags": dict(self.flags), "cores": self.cores, "onednn_isa_cap": self.onednn_isa_cap}

    def describe(self) -> str:
        """One line: model, cores, flags present, and the oneDNN cap when set."""
        have = [f for f in FLAGS if self.flags.get(f)] or ["none of " + "/".join(FLAGS)]
        cap = f", oneDNN capped at {self.onednn_isa_cap}" if self.onednn_isa_cap else ""
        return f"{self.model} ({self.cores} cores; {' '.join(have)}{cap})"


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo"), environ: Any = None) -> CpuInfo:
    """This machine's CPU (model from ``model name``, flags from the first ``flags`` line)."""
    env = os.environ if environ is None else environ
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.processor() or platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return CpuInfo(model, {f: f in flags for f in FLAGS}, os.cpu_count() or 1, env.get(ISA_CAP_ENV) or None)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AMX or AVX512-BF16) and oneDNN is not capped below it."""
    return read_cpu().bf16


_ISA_PROBE = (
    "import tensorflow as tf; "
    "tf.nn.conv2d(tf.ones([1, 8, 8, 8]), tf.ones([3, 3, 8, 8]), 1, 'SAME')"
)


def onednn_isa_in_use(environ: Any = None, timeout_s: float = 120.0) -> Optional[str]:
    """The ISA oneDNN really dispatches to in a fresh process with this environment (e.g. 'Intel AVX2').

    Runs one convolution with ``ONEDNN_VERBOSE=1`` and reads oneDNN's own ``isa:`` line, so a
    cap that did not take effect shows. None when oneDNN printed nothing (not an x86 build).
    """
    import subprocess
    import sys

    env = dict(os.environ if environ is None else environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    try:
        r = subprocess.run([sys.executable, "-c", _ISA_PROBE], capture_output=True, text=True, env=env, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (r.stdout + r.stderr).splitlines():
        if line.startswith("onednn_verbose") and ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return None
