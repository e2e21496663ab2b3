"""Test helper: run the device code inside the arm64 root and compare its outputs with the host's.

Shared by ``tests/arm64/test_parity.py`` and ``bench/arm64_parity.py``. The host's reference is
the golden set the host pipeline wrote (``raw_<variant>``: the x86 interpreter's raw output for
each official test image). Inputs are compared too, so a difference can be placed: in the
quantisation of the input (numpy 1.26 on the device vs the host's numpy) or in the kernels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]

from arm64_target import Arm64Session  # noqa: E402

# runtime name (as device.runtime knows it) → the venv inside the root that has it.
RUNTIME_VENVS = {"tflite-runtime": "tflite", "ai-edge-litert": "litert"}


@dataclass(frozen=True)
class Kit:
    """Where the device code, the probe and the artifacts sit inside the root."""

    src: str
    artifacts: str

    @property
    def manifest(self) -> str:
        """manifest.json inside the root."""
        return f"{self.artifacts}/manifest.json"


def stage_kit(session: Arm64Session, artifacts: Path) -> Kit:
    """Copy the device package, the probe helpers and the artifacts into the session's folder."""
    if not (session.workdir / "src/device").exists():
        session.copy_in(REPO / "device", "src/device")
        for helper in ("arm64_parity_probe.py", "arm64_frames.py"):
            if (HERE / helper).exists():
                session.copy_in(HERE / helper, f"src/{helper}")
    dest = session.workdir / "artifacts"
    if dest.exists():
        shutil.rmtree(dest)
    session.copy_in(artifacts, "artifacts")
    return Kit(f"{session.workdir_inside}/src", f"{session.workdir_inside}/artifacts")


@dataclass(frozen=True)
class Probe:
    """What the probe reported from inside the root, and the arrays it wrote."""

    info: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _probe_args(manifest: str, runtime: str, variant: str, out: str, frames: bool, limit: int,
                no_delegates: bool) -> list[str]:
    argv = ["--manifest", manifest, "--variant", variant, "--runtime", runtime, "--out", out, "--limit", str(limit)]
    return argv + (["--frames"] if frames else []) + (["--no-delegates"] if no_delegates else [])


def _load(path: Path, stdout: str) -> Probe:
    info = json.loads(stdout.strip().splitlines()[-1])
    with np.load(path) as z:
        return Probe(info, {k: z[k] for k in z.files})


def run_probe(session: Arm64Session, kit: Kit, runtime: str, variant: str = "int8", frames: bool = False,
              limit: int = 0, no_delegates: bool = False, timeout_s: float = 1200) -> Probe:
    """Run the golden set through ``device`` in the venv that has ``runtime`` (emulated aarch64)."""
    venv = RUNTIME_VENVS[runtime]
    out = f"{session.workdir_inside}/probe-{venv}-{variant}{'-builtin' if no_delegates else ''}.npz"
    argv = [f"/opt/edgekit/venv-{venv}/bin/python", f"{kit.src}/arm64_parity_probe.py",
            *_probe_args(kit.manifest, runtime, variant, out, frames, limit, no_delegates)]
    p = session.run(argv, timeout_s=timeout_s, env={"PYTHONPATH": kit.src})
    return _load(session.root / out.lstrip("/"), p.stdout)


def host_python(runtime: str) -> Optional[str]:
    """An x86 Python on this host that has ``runtime`` (None when there is none)."""
    from build_rootfs import HOST_TFLITE_VENV

    if runtime == "tflite-runtime":
        py = HOST_TFLITE_VENV / "bin/python"
        return str(py) if py.exists() else None
    try:
        __import__("ai_edge_litert.interpreter")
    except Exception:
        return None
    return sys.executable


def host_probe(runtime: str, artifacts: Path, workdir: Path, variant: str = "int8", frames: bool = False,
               limit: int = 0, no_delegates: bool = False, timeout_s: float = 600) -> Optional[Probe]:
    """The same probe with the same runtime on the x86 host (None when the host lacks that runtime)."""
    py = host_python(runtime)
    if py is None:
        return None
    out = workdir / f"host-{RUNTIME_VENVS[runtime]}-{variant}{'-builtin' if no_delegates else ''}.npz"
    argv = [py, str(HERE / "arm64_parity_probe.py"),
            *_probe_args(str(artifacts / "manifest.json"), runtime, variant, str(out), frames, limit, no_delegates)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}", "HOME": os.environ.get("HOME", "/root")}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"host probe with {py} ({runtime}) failed: {p.stderr[-2000:]}")
    return _load(out, p.stdout)


@dataclass(frozen=True)
class Parity:
    """Device (emulated aarch64) against host (x86) on the same images."""

    count: int
    inputs_identical: int  # images whose quantised input tensor is bit-identical
    top1_agreement: float  # fraction of images with the same argmax
    top1_disagreements: int
    max_abs_raw_diff: int  # largest |device - host| over every raw output element
    rows_differing: int  # images with any raw difference at all
    device_accuracy: float
    host_accuracy: float
    why: str  # where differences come from, when there are any

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def host_inputs(images: np.ndarray, spec: Any) -> np.ndarray:
    """The same quantised input tensors the device builds, computed on the host (x86, host numpy)."""
    from device.quant import to_input

    return np.stack([to_input(img.astype(np.float32) / np.float32(255.0), spec)[0] for img in images])


def compare(device_raw: np.ndarray, host_raw: np.ndarray, labels: np.ndarray,
            device_inputs: Optional[np.ndarray] = None, host_in: Optional[np.ndarray] = None) -> Parity:
    """Top-1 agreement and the largest raw difference, with a diagnosis when they are not exact."""
    n = len(device_raw)
    host_raw, labels = host_raw[:n], labels[:n]
    d = device_raw.astype(np.int64).reshape(n, -1)
    h = host_raw.astype(np.int64).reshape(n, -1)
    diff = np.abs(d - h)
    agree = d.argmax(1) == h.argmax(1)
    same_in = n
    if device_inputs is not None and host_in is not None:
        same_in = int((device_inputs.reshape(n, -1) == host_in[:n].reshape(n, -1)).all(1).sum())
    rows = int((diff.max(1) > 0).sum())
    why = "exact: identical inputs and identical raw outputs"
    if rows:
        in_diff = n - same_in
        if in_diff:
            why = f"{in_diff} input tensors differ (quantisation of the input: device numpy vs host numpy)"
        else:
            ties = int(sum(1 for i in np.flatnonzero(~agree) if np.sort(h[i])[-1] - np.sort(h[i])[-2] <= diff[i].max()))
            why = (
                f"inputs identical, {rows} images differ in raw outputs by at most {int(diff.max())}: the two "
                f"interpreters' int8 kernels round differently; {ties} of {int((~agree).sum())} top-1 flips are "
                "near-ties within that difference"
            )
    return Parity(
        count=n,
        inputs_identical=same_in,
        top1_agreement=float(agree.mean()),
        top1_disagreements=int((~agree).sum()),
        max_abs_raw_diff=int(diff.max()) if n else 0,
        rows_differing=rows,
        device_accuracy=float((d.argmax(1) == labels).mean()),
        host_accuracy=float((h.argmax(1) == labels).mean()),
        why=why,
    )
