"""The emulated arm64 root as a deploy target: doctor, push --wheelhouse, status, bench over real SSH.

The root's own aarch64 OpenSSH server runs under chroot on a 127.0.0.1 port; the deploy CLI
talks to it exactly as to a Pi. pip inside the root cannot reach the index, so the push must
bring its wheels (``--wheelhouse``): the closed-network Pi case.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from arm64_target import Arm64Session, SshTarget, deploy_cli

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

WHEELHOUSE = Path(os.environ.get("EDGEKIT_DEPLOY_WHEELHOUSE", "/var/cache/edgekit/deploy-wheelhouse"))
deploy = functools.partial(deploy_cli, timeout_s=900)


def test_doctor_reports_aarch64_python311_tflite_runtime(pi: tuple[SshTarget, list[str]]) -> None:
    _, opts = pi
    rc, data, out = deploy("doctor", *opts, timeout_s=300)
    assert rc == 0, out
    report = data[0]["result"]
    assert report["machine"] == "aarch64", out
    assert report["python"].startswith("3.11."), out
    assert "bookworm" in report["os"].lower(), out
    assert report["runtime"] == "tflite-runtime", out
    assert "numpy<2" in report["requirements"], out


def test_push_with_wheelhouse_then_status_and_bench(pi: tuple[SshTarget, list[str]], arm64: Arm64Session,
                                                    arm64_artifacts: Path, tmp_path: Path) -> None:
    t, opts = pi
    # Emulated start-up (imports under qemu, rendering frames) is slow: give the health check time.
    rc, data, out = deploy("push", *opts, "--artifacts", str(arm64_artifacts), "--variant", "int8",
                           "--wheelhouse", str(WHEELHOUSE), "--health-timeout-s", "300", "--no-progress",
                           timeout_s=1500)
    assert rc == 0, out
    assert data[0]["ok"], out
    # The wheels came from the host: aarch64 cp311 numpy<2 + tflite-runtime, installed offline.
    wheels = sorted(p.name for p in WHEELHOUSE.glob("*.whl"))
    assert any(w.startswith("tflite_runtime-2.14.0-cp311") and "aarch64" in w for w in wheels), wheels
    assert any(w.startswith("numpy-1.") and "aarch64" in w for w in wheels), wheels
    venv_pythons = list((arm64.root / t.remote_dir.lstrip("/")).glob("**/bin/python"))
    assert venv_pythons, f"no venv under {t.remote_dir}"
    check = arm64.run([f"/{venv_pythons[0].relative_to(arm64.root)}", "-c",
                       "import numpy, tflite_runtime, platform; print(numpy.__version__, tflite_runtime.__version__, platform.machine())"])
    np_v, tfl_v, machine = check.stdout.split()
    assert np_v.startswith("1.") and tfl_v == "2.14.0" and machine == "aarch64"

    rc, data, out = deploy("status", *opts, timeout_s=300)
    assert rc == 0, out
    row = data[0]["result"]
    assert row["running"] and row["variant"] == "int8", out
    assert str(row["runtime"]).startswith("tflite-runtime"), out
    assert (row["frames"] or 0) > 0, out

    rc, data, out = deploy("bench", *opts, "--variant", "int8", "--runs", "30", "--warmup", "5",
                           "--out", str(tmp_path), timeout_s=900)
    assert rc == 0, out
    assert data[0]["ok"], out
    saved = list(tmp_path.glob("*.json"))
    assert saved, f"bench saved nothing in {tmp_path}: {out}"
    assert "tflite-runtime" in saved[0].read_text()
