"""The machine line every figure carries: CPU model, the SIMD flags that matter, cores (from /proc/cpuinfo)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Flags that change what numpy, XNNPACK and TensorFlow can use; the rest of /proc/cpuinfo is noise here.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
         "asimd", "asimddp", "neon", "fphp", "sve", "bf16", "i8mm")


def describe(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """{"cpu": model name, "flags": [the FLAGS present], "cores": n, "machine": uname -m}."""
    model, flags = "", set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, val = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = val.strip()
            elif key in ("flags", "features"):
                flags.update(val.split())
    except OSError:
        pass
    return {"cpu": model or platform.processor() or "unknown", "flags": [f for f in FLAGS if f in flags],
            "cores": os.cpu_count() or 0, "machine": platform.machine()}


def line() -> str:
    """One line: 'CPU model (machine, N cores; flags a b c)'."""
    d = describe()
    return f"{d['cpu']} ({d['machine']}, {d['cores']} cores; flags {' '.join(d['flags']) or 'none listed'})"  # type: ignore[arg-type]
