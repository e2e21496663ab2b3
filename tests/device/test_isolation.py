"""The device package imports nothing from TensorFlow, fabric, picamera2, host or deploy."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import device

BLOCKED = ("tensorflow", "tf_keras", "keras", "fabric", "paramiko", "invoke", "picamera2", "host", "deploy")


def test_every_device_module_imports_with_heavy_packages_blocked() -> None:
    modules = sorted(f"device.{m.name}" for m in pkgutil.iter_modules(device.__path__) if m.name != "__main__")
    assert {"device.preprocess", "device.daemon", "device.pi_camera", "device.bench", "device.cli"} <= set(modules)
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}: sys.modules[name] = None\n"
        "import importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in " + repr(BLOCKED) + " and sys.modules[n] is not None)\n"
        "assert not bad, bad\n"
        "print('ok', len(" + repr(modules) + "))\n"
    )
    root = Path(device.__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok")


def test_picamera_source_without_picamera2_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['picamera2'] = None\n"
        "from device.pi_camera import PiCameraSource\n"
        "from device.errors import SourceError\n"
        "try:\n    PiCameraSource()\nexcept SourceError as e:\n    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "python3-picamera2" in p.stdout and "--source synthetic" in p.stdout
