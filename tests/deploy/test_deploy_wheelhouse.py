"""The closed-network install path: wheels fetched on the host for the device's platform, installed offline there.

The "device" is this machine's Debian ``/usr/bin/python3`` (3.11, without numpy), so doctor picks
tflite-runtime with numpy<2 and the venv must really install them, from the pushed wheels only
(``pip install --no-index --find-links``). The wheels are downloaded once into a cache; the test
skips if that download is impossible (no index reachable) and the cache is empty.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from deploy_helpers import remote_root, run_cli

from deploy.errors import WheelhouseError
from deploy.testing import SSHServer
from deploy.venv import TFLITE_RUNTIME_REQS, build_wheelhouse

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("EDGEKIT_CACHE", "~/.cache/edgekit")).expanduser() / "wheelhouse-x86_64-cp311"


def _system_python_version() -> str:
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                       capture_output=True, text=True, timeout=30)
    return p.stdout.strip()


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no /usr/bin/python3 to act as the device's Python")
def test_push_with_wheelhouse_installs_offline(make_pi: Callable[..., SSHServer], deploy_artifacts: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    if _system_python_version() != "3.11":
        pytest.skip("the device Python must be 3.11 for the tflite-runtime path")
    try:
        build_wheelhouse("x86_64", "3.11", TFLITE_RUNTIME_REQS, CACHE, glibc="glibc 2.36")
    except WheelhouseError as e:
        pytest.skip(f"cannot fetch wheels for the cache: {e}")
    pi = make_pi(python=SYSTEM_PYTHON)
    code, data, err = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts),
                              "--variant", "int8", "--wheelhouse", str(CACHE), "--health-timeout-s", "60")
    assert code == 0, (data, err)
    res = data[0]["result"]
    assert res["runtime"] == "tflite-runtime"
    assert "installed requirements from the wheelhouse" in res["steps"]
    assert any(s.startswith("wheelhouse: 2 wheels") for s in res["steps"])
    assert res["golden"]["runtime"] == "tflite-runtime" and res["golden"]["top1_agree"] == res["golden"]["count"]
    venv_python = remote_root(pi) / "venv" / "bin" / "python"
    p = subprocess.run([str(venv_python), "-c", "import numpy, tflite_runtime; print(numpy.__version__, tflite_runtime.__version__)"],
                       capture_output=True, text=True, timeout=60)
    np_version, tfl_version = p.stdout.split()
    assert np_version.startswith("1.") and tfl_version == "2.14.0"
    wheels = {w.name for w in (remote_root(pi) / "wheelhouse").glob("*.whl")}
    assert any(w.startswith("tflite_runtime-2.14.0") for w in wheels)

    code, data, _ = run_cli(capsys, "status", *pi.target.cli_args())
    assert code == 0 and str(data[0]["result"]["runtime"]).startswith("tflite-runtime")
    # Same requirements: nothing sent, nothing installed.
    code, data, _ = run_cli(capsys, "push", *pi.target.cli_args(), "--artifacts", str(deploy_artifacts),
                            "--variant", "int8", "--wheelhouse", str(CACHE))
    assert code == 0
    steps = data[0]["result"]["steps"]
    assert "requirements unchanged" in steps and "wheelhouse: 2 wheels, 0 bytes sent" in steps
    assert json.loads((remote_root(pi) / "run" / "state.json").read_text())["release"] == res["release"]
