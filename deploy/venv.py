"""The device's Python environment: which runtime to install, the per-requirements venv, offline wheelhouses."""

from __future__ import annotations

import hashlib
import json
import posixpath
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from deploy.agent import protocol
from deploy.errors import DeployError, WheelhouseError
from deploy.remote import Device, progress_callback

RUNTIME_CHOICES = ("auto", "tflite-runtime", "ai-edge-litert")
TFLITE_RUNTIME_REQS = ("numpy<2", "tflite-runtime==2.14.0")
LITERT_REQS = ("numpy", "ai-edge-litert>=1.2")
ARM32 = ("armv7l", "armv6l", "armv8l", "arm")
WHEEL_MACHINES = ("aarch64", "x86_64")


class DoctorError(DeployError):
    """The device cannot run the kit as it is (e.g. 32-bit ARM); the message names the fix."""


@dataclass(frozen=True)
class RuntimeChoice:
    """The TFLite runtime for a device, the requirements that install it, and why."""

    name: str
    requirements: tuple[str, ...]
    reason: str

    @property
    def requirements_text(self) -> str:
        """requirements.txt content."""
        return "".join(r + "\n" for r in self.requirements)


def _pyver(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def choose_runtime(probe: dict[str, Any], forced: str = "auto") -> RuntimeChoice:
    """Pick the runtime from a device probe: what already works, else tflite-runtime on Python ≤ 3.11, else ai-edge-litert."""
    machine = str(probe.get("machine", ""))
    py = _pyver(str(probe.get("python", "3.11")))
    pys = f"{py[0]}.{py[1]}"
    if machine in ARM32:
        raise DoctorError(
            f"this device runs a 32-bit ARM system ({machine}); neither tflite-runtime nor ai-edge-litert has "
            "current wheels for it. Install the 64-bit Raspberry Pi OS (Bookworm or later, arm64) and deploy again"
        )
    if forced not in RUNTIME_CHOICES:
        raise DoctorError(f"unknown runtime {forced!r}; choose one of: {', '.join(RUNTIME_CHOICES)}")
    imports = probe.get("imports", {})
    if forced == "tflite-runtime":
        if py > (3, 11):
            raise DoctorError(f"tflite-runtime has no wheel for Python {pys}; use --runtime ai-edge-litert")
        return RuntimeChoice("tflite-runtime", TFLITE_RUNTIME_REQS, "forced with --runtime (needs numpy<2)")
    if forced == "ai-edge-litert":
        return RuntimeChoice("ai-edge-litert", LITERT_REQS, "forced with --runtime")
    if imports.get("tflite-runtime", {}).get("ok"):
        return RuntimeChoice("tflite-runtime", ("numpy<2", "tflite-runtime"),
                             f"tflite-runtime {imports['tflite-runtime'].get('version')} is already installed and imports")
    if imports.get("ai-edge-litert", {}).get("ok"):
        return RuntimeChoice("ai-edge-litert", ("numpy", "ai-edge-litert"),
                             f"ai-edge-litert {imports['ai-edge-litert'].get('version')} is already installed and imports")
    if py <= (3, 11):
        return RuntimeChoice("tflite-runtime", TFLITE_RUNTIME_REQS,
                             f"Python {pys} ≤ 3.11 has tflite-runtime wheels (installed with numpy<2, which it needs)")
    return RuntimeChoice("ai-edge-litert", LITERT_REQS, f"Python {pys} > 3.11: tflite-runtime has no wheel, ai-edge-litert has")


def platform_tags(machine: str, glibc: Optional[str] = None) -> list[str]:
    """pip --platform tags a Linux ``machine`` with ``glibc`` (e.g. '2.36') accepts, newest first."""
    if machine not in WHEEL_MACHINES:
        raise WheelhouseError(f"no wheel platform for machine {machine!r}; supported: {', '.join(WHEEL_MACHINES)}")
    top = 36
    if glibc:
        try:
            top = int(str(glibc).split()[-1].split(".")[1])
        except (IndexError, ValueError):
            top = 36
    tags = [f"manylinux_2_{m}_{machine}" for m in range(top, 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    if machine == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags


def build_wheelhouse(target_machine: str, target_python: str, requirements: Sequence[str], dest: Path,
                     glibc: Optional[str] = None, timeout_s: float = 900.0) -> list[Path]:
    """Download on this host the binary wheels ``requirements`` need on a Linux ``target_machine`` with ``target_python``.

    Runs ``pip download --only-binary=:all: --platform ... --python-version X.Y --implementation cp --abi cpXY``
    into ``dest`` (kept between runs: pip skips files already there) and returns the wheels in it.
    """
    py = _pyver(target_python)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # A marker per (platform, Python, requirements) lists what a previous download brought:
    # with all those wheels still there, nothing is downloaded (works with the host offline too).
    key = hashlib.sha256(json.dumps([target_machine, f"{py[0]}.{py[1]}", glibc, sorted(requirements)]).encode()).hexdigest()[:16]
    marker = dest / f".edgekit-wheelhouse-{key}.json"
    if marker.is_file():
        try:
            names = json.loads(marker.read_text())
            wheels = [dest / n for n in names]
            if names and all(w.is_file() for w in wheels):
                return sorted(wheels)
        except (OSError, ValueError):
            pass
    before = {p.name for p in dest.glob("*.whl")}
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--dest", str(dest), "--python-version", f"{py[0]}.{py[1]}", "--implementation", "cp",
           "--abi", f"cp{py[0]}{py[1]}", "--abi", "abi3", "--abi", "none"]
    for tag in platform_tags(target_machine, glibc):
        cmd += ["--platform", tag]
    cmd += ["--platform", "any"]
    cmd += list(requirements)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise WheelhouseError(f"`pip download` ran over {timeout_s:.0f} s; check the network to the package index") from None
    if p.returncode != 0:
        tail = " | ".join(p.stderr.strip().splitlines()[-4:])
        raise WheelhouseError(
            f"`pip download` for {target_machine} / Python {target_python} failed: {tail}. "
            "Check the requirement names and versions exist as wheels for that platform"
        )
    # pip prints "Saved"/"File was already downloaded" per file; take those names (not whatever else is in dest).
    names = sorted({Path(line.split()[-1]).name for line in p.stdout.splitlines()
                    if line.strip().startswith(("Saved", "File was already downloaded")) and line.strip().endswith(".whl")})
    if not names:
        names = sorted({p.name for p in dest.glob("*.whl")} - before) or sorted(p.name for p in dest.glob("*.whl"))
    marker.write_text(json.dumps(names))
    return sorted(dest / n for n in names)


def push_wheelhouse(device: Device, wheels: Sequence[Path], progress: bool = True, position: int = 0) -> int:
    """Upload wheels the device does not have yet (by name and size), with a progress bar; returns bytes sent."""
    remote = posixpath.join(device.root, "wheelhouse")
    device.makedirs(remote)
    have = {a.filename: a.st_size for a in device.sftp.listdir_attr(remote)}
    todo = [w for w in wheels if have.get(w.name) != w.stat().st_size]
    bar = tqdm(total=sum(w.stat().st_size for w in todo), unit="B", unit_scale=True, unit_divisor=1024,
               desc=f"{device.target.label} wheels", position=position, leave=False, disable=None if progress else True)
    sent = 0
    try:
        for w in todo:
            tmp = posixpath.join(remote, w.name + ".part")
            device.put(w, tmp, callback=progress_callback(bar.update))
            device.sftp.posix_rename(tmp, posixpath.join(remote, w.name))  # never a half wheel under its name
            sent += w.stat().st_size
    finally:
        bar.close()
    return sent


def ensure_venv(device: Device, release_id: str, wheelhouse: bool = False, timeout_s: float = 900.0) -> dict[str, Any]:
    """The venv of the release's requirements hash on the device (built once per hash), pinned by the release."""
    args = ["--dir", device.root, "--id", release_id, "--timeout-s", str(timeout_s)]
    if wheelhouse:
        args.append("--wheelhouse")
    return device.agent(protocol.VENV, *args, timeout_s=timeout_s + 60)
