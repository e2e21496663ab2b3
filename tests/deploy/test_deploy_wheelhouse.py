"""The closed-network install path and per-release runtimes: wheels fetched on the host, venvs per requirements hash.

The "device" is this machine's Debian ``/usr/bin/python3`` (3.11, without numpy), so doctor picks
tflite-runtime with numpy<2 and the venv must really install them, from the pushed wheels only
(``pip install --no-index --find-links``). A second push moves the same device to ai-edge-litert
with numpy 2, and a rollback must run the first release on exactly the runtime it was verified
with. The wheels are downloaded once into a cache; the test skips if that download is impossible
(no index reachable) and the cache is empty.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from deploy_helpers import current_id, remote_root, run_cli

from deploy.errors import WheelhouseError
from deploy.testing import SSHServer
from deploy.venv import LITERT_REQS, TFLITE_RUNTIME_REQS, build_wheelhouse

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("EDGEKIT_CACHE", "~/.cache/edgekit")).expanduser() / "wheelhouse-x86_64-cp311"


def _system_python_version() -> str:
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, timeout=30)
    return p.stdout.strip()


def _versions(python: Path, module: str) -> tuple[str, str]:
    code = f"import numpy, {module} as m, importlib.metadata as md; print(numpy.__version__, getattr(m, '__version__', '') or md.version('ai-edge-litert'))"
    p = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    a, b = p.stdout.split()
    return a, b


def _daemon_python(pi: SSHServer) -> Path:
    pid = json.loads((remote_root(pi) / "run" / "daemon.json").read_text())["pid"]
    return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no /usr/bin/python3 to act as the device's Python")
def test_runtime_switch_and_rollback_keep_each_release_on_its_own_venv(make_pi: Callable[..., SSHServer],
                                                                       deploy_artifacts: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    if _system_python_version() != "3.11":
        pytest.skip("the device Python must be 3.11 for the tflite-runtime path")
    try:
        build_wheelhouse("x86_64", "3.11", TFLITE_RUNTIME_REQS, CACHE, glibc="glibc 2.36")
        build_wheelhouse("x86_64", "3.11", LITERT_REQS, CACHE, glibc="glibc 2.36")
    except WheelhouseError as e:
        pytest.skip(f"cannot fetch wheels for the cache: {e}")
    pi = make_pi(python=SYSTEM_PYTHON)
    base = [*pi.target.cli_args(), "--artifacts", str(deploy_artifacts), "--variant", "int8", "--wheelhouse", str(CACHE),
            "--supervisor", "process", "--health-timeout-s", "60"]

    # 1. tflite-runtime 2.14 + numpy<2, with the golden check on all 1,000 golden inputs.
    code, data, err = run_cli(capsys, "push", *base, "--runtime", "tflite-runtime", "--golden-count", "1000")
    assert code == 0, (data, err)
    first = data[0]["result"]
    assert first["runtime"] == "tflite-runtime" and "installed requirements from the wheelhouse" in first["steps"]
    g = first["golden"]
    assert g["runtime"] == "tflite-runtime" and g["count"] == 1000 and g["top1_agree"] >= g["top1_required"]
    assert any(s.startswith("verified on the device") and "≤ 16 allowed" in s for s in first["steps"])
    venv_a = (remote_root(pi) / "releases" / first["release"] / "venv").resolve()
    assert _versions(venv_a / "bin" / "python", "tflite_runtime")[0].startswith("1.")
    assert _daemon_python(pi) == remote_root(pi) / "releases" / first["release"] / "venv" / "bin" / "python"
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    assert code == 0 and str(data[0]["result"]["runtime"]).startswith("tflite-runtime")

    # 2. The same model on ai-edge-litert + numpy 2: a second venv; the first one is not touched.
    code, data, err = run_cli(capsys, "push", *base, "--runtime", "ai-edge-litert")
    assert code == 0, (data, err)
    second = data[0]["result"]
    assert second["runtime"] == "ai-edge-litert" and second["release"] != first["release"]
    venv_b = (remote_root(pi) / "releases" / second["release"] / "venv").resolve()
    assert venv_b != venv_a and sorted(p.name for p in (remote_root(pi) / "venvs").iterdir()) == sorted([venv_a.name, venv_b.name])
    np_b, litert = _versions(venv_b / "bin" / "python", "ai_edge_litert")
    assert np_b.startswith("2.") and litert
    np_a, tfl = _versions(venv_a / "bin" / "python", "tflite_runtime")
    assert np_a.startswith("1.") and tfl == "2.14.0"  # the release we may roll back to keeps its runtime
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    assert str(data[0]["result"]["runtime"]).startswith("ai-edge-litert")

    # 3. Rollback: the first release runs again, on exactly the venv it was verified with.
    code, data, _ = run_cli(capsys, "rollback", *pi.target.cli_args())
    assert code == 0, data
    assert data[0]["result"]["to"] == first["release"] == current_id(pi)
    assert _daemon_python(pi).resolve() == (venv_a / "bin" / "python").resolve()
    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    st = data[0]["result"]
    assert code == 0 and st["release"] == first["release"] and str(st["runtime"]).startswith("tflite-runtime 2.14")
    assert st["frames"] > 0

    # 4. Same requirements again: nothing sent, nothing installed.
    code, data, _ = run_cli(capsys, "push", *base, "--runtime", "tflite-runtime")
    assert code == 0
    steps = data[0]["result"]["steps"]
    assert "requirements unchanged" in steps and any(s.startswith("wheelhouse: ") and s.endswith(", 0 bytes sent") for s in steps)
