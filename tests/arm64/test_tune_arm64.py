"""deploy tune against the emulated Raspberry Pi OS root: measured there, marked EMULATED, chosen only when allowed.

Kept cheap (two variants at 1 and 2 threads, 10 frames and 20 golden images per configuration):
everything under qemu-user is slow, and the full sweep is for a bench run.

The root's own aarch64 sshd declares its sessions emulated (``EDGEKIT_EMULATED``) and qemu-user is
detected anyway; the runtime is what doctor picks there (tflite-runtime 2.14 with numpy<2), so
this is also where "XNNPACK on" can mean no XNNPACK node at all (then off is not measured twice).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
from arm64_target import Arm64Session, SshTarget, deploy_cli

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

WHEELHOUSE = Path(os.environ.get("EDGEKIT_DEPLOY_WHEELHOUSE", "/var/cache/edgekit/deploy-wheelhouse"))
# 20 golden images: one flipped is 5 points, so the plumbing check gets a wide gate (see tests/deploy/test_tune.py)
QUICK = ["--frames", "10", "--warmup", "2", "--rounds", "1", "--golden-count", "20", "--gate-points", "30", "--timeout-s", "2400",
         "--health-timeout-s", "300"]


deploy = functools.partial(deploy_cli, timeout_s=2700)


def test_tune_on_the_emulated_pi(pi: tuple[SshTarget, list[str]], arm64: Arm64Session, arm64_artifacts: Path) -> None:
    t, opts = pi
    remote = arm64.root / t.remote_dir.lstrip("/")
    rc, data, out = deploy("push", *opts, "--artifacts", str(arm64_artifacts), "--variant", "int8",
                           "--wheelhouse", str(WHEELHOUSE), "--health-timeout-s", "300", "--no-progress")
    assert rc == 0, out

    # Every configuration measured and printed, marked EMULATED, and nothing chosen from it.
    rc, data, out = deploy("tune", *opts, "--artifacts", str(arm64_artifacts), "--variant", "int8", "--variant", "float32",
                           "--threads", "1,2", *QUICK)
    assert rc == 1, out
    res = data[0]["result"]
    report = res["report"]
    assert res["emulated"] and report["hardware"]["machine"] == "aarch64" and report["runtime"] == "tflite-runtime", out
    assert "--allow-emulated" in res["refused"] and res["choice"] is None and res["record"] is None
    assert not (remote / "tuning.json").exists()
    rows = {(r["variant"], r["threads"], r["xnnpack"]): r for r in report["results"]}
    for v in ("int8", "float32"):
        for threads in (1, 2):
            on = rows[(v, threads, "on")]
            assert on["ok"] and on["frames"] == 10 and on["cpu_per_frame_ms"] > 0, on
            if not report["xnnpack_off_supported"]:  # this runtime cannot build an interpreter without XNNPACK
                assert (v, threads, "off") not in rows
                assert any("cannot turn XNNPACK off" in n for n in report["notes"]), report["notes"]
            elif on["delegate_nodes"]:  # XNNPACK took part: off was measured, and ran builtin kernels only
                assert rows[(v, threads, "off")]["delegate_nodes"] == 0
            else:  # nothing for XNNPACK to take: on and off are the same kernels, measured once, said so
                assert (v, threads, "off") not in rows
                assert any(n.startswith(f"{v}: XNNPACK takes no node") for n in report["notes"]), report["notes"]

    # Allowed: the choice is recorded, marked emulated. One configuration, the daemon left running: under
    # qemu each pause and restart costs minutes, and push --variant auto reading the record (emulated or
    # not) is the same host code as against the local sshd Pi (tests/deploy/test_tune.py).
    rc, data, out = deploy("tune", *opts, "--variant", "int8", "--threads", "2", "--xnnpack", "on", *QUICK, "--allow-emulated",
                           "--keep-daemon-running")
    assert rc == 0, out
    res = data[0]["result"]
    record = json.loads((remote / "tuning.json").read_text())
    assert record == res["record"] and record["emulated"] == res["emulated"] == report["hardware"]["emulated"], out
    assert record["variant"] == "int8" and record["threads"] == 2 and record["xnnpack"] == "on", record
    assert record["runtime"] == "tflite-runtime" and record["measured"]["golden_count"] == 20, record
