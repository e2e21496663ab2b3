"""probe: the facts ``deploy doctor`` needs (arch, OS, Python, systemd, camera, disk, importable runtimes)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy.agent.layout import Layout, read_json
from deploy.agent.supervisor import plan, systemd_booted, systemd_refusal
from device.hardware import emulation

# Each runtime import is tried in its own child process (a broken wheel can crash the interpreter).
IMPORT_PROBES = {
    "numpy": "import numpy; print(numpy.__version__)",
    "tflite-runtime": "import tflite_runtime, tflite_runtime.interpreter as i; i.Interpreter; "
                      "print(getattr(tflite_runtime, '__version__', '?'))",
    "ai-edge-litert": "import ai_edge_litert.interpreter as i; i.Interpreter\n"
                      "try:\n from importlib.metadata import version; print(version('ai-edge-litert'))\n"
                      "except Exception: print('?')",
    # libcamera's list of connected cameras (a Pi 5 has /dev/video* nodes even without one).
    "picamera2": "import json; from picamera2 import Picamera2; "
                 "print(json.dumps([str(c.get('Model', '?')) for c in Picamera2.global_camera_info()]))",
    "venv": "import venv; print('ok')",
    "ensurepip": "import ensurepip; print('ok')",
    "pip": "import pip; print(pip.__version__)",
}


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(p).read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v.strip().strip('"')
            break
        except OSError:
            continue
    return out


def try_imports(codes: dict[str, str], python: str, timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
    """Run each import probe in its own child process, all at once (imports are slow on a Pi)."""
    procs: dict[str, Any] = {}
    for name, code in codes.items():
        try:
            procs[name] = subprocess.Popen([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            procs[name] = e
    out: dict[str, dict[str, Any]] = {}
    for name, p in procs.items():
        if isinstance(p, OSError):
            out[name] = {"ok": False, "error": str(p)}
            continue
        try:
            stdout, stderr = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            out[name] = {"ok": False, "error": f"import took over {timeout_s:.0f} s"}
            continue
        if p.returncode == 0:
            out[name] = {"ok": True, "version": stdout.strip()}
        else:
            out[name] = {"ok": False, "error": (stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return out


def _probe_key() -> str:
    """Changes when the interpreter or anything on its import path is installed or removed."""
    parts = [sys.executable, os.path.realpath(sys.executable)]
    for p in [os.path.realpath(sys.executable), *sys.path]:
        with contextlib.suppress(OSError):
            parts.append(f"{p}:{os.stat(p or '.').st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cameras() -> list[str]:
    """/dev/video* nodes."""
    return sorted(str(p) for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []


def _sudo_ok() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return subprocess.run(["sudo", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def probe(lay: Layout, cached: bool) -> dict[str, Any]:
    """Facts about the device; ``cached`` reuses the last probe while the interpreter's paths are unchanged."""
    existing = lay.root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    du = shutil.disk_usage(str(existing))
    mode, reason = plan(lay, "auto")
    live = {"free_bytes": du.free, "total_bytes": du.total, "cameras": cameras(),
            # From the session's environment and the device's record: never cached.
            "emulated": emulation(), "systemd_refused": systemd_refusal(),
            "supervisor": {"auto": mode, "reason": reason}}
    key = _probe_key()
    if cached:
        old = read_json(lay.probe_cache, {}) or {}
        if old.get("key") == key and isinstance(old.get("facts"), dict):
            return {**old["facts"], **live, "cached": True}
    facts = _facts(lay.root)
    if lay.probe_cache.parent.is_dir():
        with contextlib.suppress(OSError):
            tmp = lay.probe_cache.with_name(".probe.json.tmp")
            tmp.write_text(json.dumps({"key": key, "facts": facts}))
            os.replace(str(tmp), str(lay.probe_cache))  # a cache: atomic, not durable
    return {**facts, **live}


def _facts(root: Path) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace")
    checks = try_imports(IMPORT_PROBES, sys.executable)
    models: list[str] = []
    if checks["picamera2"]["ok"]:
        with contextlib.suppress(ValueError):
            models = [str(m) for m in json.loads(checks["picamera2"].get("version") or "[]")]
    libc = platform.libc_ver()
    pip = checks["pip"]
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "kernel": platform.release(),
        "os_release": {k: v for k, v in _os_release().items() if k in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")},
        "python": ".".join(str(x) for x in sys.version_info[:3]),
        "python_executable": sys.executable,
        "libc": f"{libc[0]} {libc[1]}" if libc[0] else "",
        "systemd": systemd_booted(),
        "sudo": _sudo_ok(),
        "is_root": os.geteuid() == 0,
        "board": model,
        "camera_models": models,
        "remote_dir": str(root),
        "imports": {k: checks[k] for k in ("numpy", "tflite-runtime", "ai-edge-litert", "picamera2")},
        "venv_module": checks["venv"]["ok"],
        "ensurepip": checks["ensurepip"]["ok"],
        "pip": pip.get("version") if pip["ok"] else None,
    }
