"""The emulated target is the Raspberry Pi OS Bookworm software stack: arm64, Python 3.11, both runtimes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from arm64_compare import Kit
from arm64_target import Arm64Session
from build_rootfs import Paths, build, mounts_under

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

PROBE = "import json, platform, sys; print(json.dumps([platform.machine(), list(sys.version_info[:2])]))"


def test_root_runs_aarch64_python_311(arm64: Arm64Session) -> None:
    out = arm64.run(["/usr/bin/python3", "-c", PROBE]).stdout
    machine, version = json.loads(out)
    assert machine == "aarch64"
    assert version == [3, 11]
    # The interpreter really is an aarch64 ELF run by qemu through binfmt_misc, not the host's.
    elf = (arm64.root / "usr/bin/python3.11").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 0xB7  # EM_AARCH64


def test_second_build_is_all_cached(arm64_paths: Paths) -> None:
    t0 = time.monotonic()
    stages = build(arm64_paths)
    assert all(s.action in ("cached", "skipped") for s in stages if s.stage != "binfmt"), stages
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    ("venv", "runtime", "numpy_major"),
    [("tflite", "tflite-runtime", 1), ("litert", "ai-edge-litert", 2)],
)
def test_device_runtime_picker_inside_root(arm64: Arm64Session, arm64_kit: Kit, venv: str, runtime: str,
                                           numpy_major: int) -> None:
    code = (
        "import json, numpy; from device.runtime import load_runtime, install_hint; r = load_runtime('auto'); "
        "print(json.dumps([r.name, r.version, numpy.__version__, install_hint()]))"
    )
    out = arm64.run([f"/opt/edgekit/venv-{venv}/bin/python", "-c", code], env={"PYTHONPATH": arm64_kit.src}).stdout
    name, version, np_version, hint = json.loads(out)
    assert name == runtime
    assert int(np_version.split(".")[0]) == numpy_major
    assert "aarch64" in hint and "3.11" in hint
    if runtime == "tflite-runtime":
        assert version == "2.14.0"


def test_session_mounts_are_private_not_host_binds(arm64: Arm64Session) -> None:
    mounts = mounts_under(arm64.root)
    assert {str(arm64.root / p) for p in ("proc", "dev", "dev/pts")} <= set(mounts)
    # /dev inside is its own tmpfs: a file made there does not appear in the host's /dev.
    marker = arm64.root / "dev" / "edgekit-marker"
    marker.write_text("x")
    try:
        assert not Path("/dev/edgekit-marker").exists()
    finally:
        marker.unlink()
