"""Every benchmark script runs end to end in its quick mode (figures checked for shape, never for speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout_s: float = 900) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([sys.executable, str(BENCH / script), *args, "--quick", "--json"], capture_output=True, text=True,
                       timeout=timeout_s, env=env, cwd=str(REPO))
    assert p.returncode == 0, f"{script} exit {p.returncode}: {p.stderr[-2000:]}"
    return json.loads(p.stdout)


def test_every_bench_script_has_a_quick_mode_that_a_test_runs() -> None:
    scripts = sorted(p.name for p in BENCH.glob("*.py") if '__name__ == "__main__"' in p.read_text())
    tests = [t.read_text() for t in (REPO / "tests").rglob("test_*.py")]
    for name in scripts:
        assert '"--quick"' in (BENCH / name).read_text(), f"{name} has no --quick mode"
        assert any(name in t and '"--quick"' in t for t in tests), f"no test runs {name} --quick"


def test_device_soak_quick(artifacts: Path) -> None:
    r = _run("device_soak.py", "--manifest", str(artifacts / "manifest.json"))
    assert r["seconds"] == 6.0 and r["frames_total"] > 0 and r["exit_code_after_sigterm"] == 0 and len(r["samples"]) >= 3


def test_host_pipeline_quick(tfds_dir: Path, tmp_path: Path) -> None:
    r = _run("host_pipeline.py", "--out", str(tmp_path / "out"))
    assert r["epochs_run"] == 1 and set(r["variants"]) == {"float32", "dynamic", "float16", "int8"}
    assert all(0 < v["accuracy"] <= 1 for v in r["variants"].values()) and (tmp_path / "out" / "manifest.json").is_file()


def test_camera_framing_quick(artifacts: Path) -> None:
    r = _run("camera_framing.py", "--manifest", str(artifacts))
    rows = {(row["framing"], row["crop"]): row for row in r["rows"]}
    assert set(rows) == {(f, c) for f in ("issue", "wide", "small", "centred") for c in ("center", "object")}
    assert all(row["frames"] == 40 and 0 <= row["camera_like"] <= 1 for row in rows.values())
    assert sum(row["contract_crop"] for row in rows.values()) == 4  # one of the two crops is the manifest's own
    assert len({row["raw"] for row in rows.values()}) == 1  # the same images, the same raw figure
    # a garment at 40-60 % of the frame: the centre window sees it small, the object crop fills the frame with it
    assert rows[("small", "object")]["camera_like"] > rows[("small", "center")]["camera_like"] + 0.1
    assert all(row["gap_ci95_points"] > 0 for row in rows.values() if row["lost"] + row["gained"] > 1)


def test_camera_framing_runs_the_framings_asked_for(artifacts: Path) -> None:
    r = _run("camera_framing.py", "--manifest", str(artifacts), "--framing", "issue")
    assert {(row["framing"], row["crop"]) for row in r["rows"]} == {("issue", "center"), ("issue", "object")}


def test_deploy_push_quick(artifacts: Path) -> None:
    r = _run("deploy_push.py", "--artifacts", str(artifacts))
    steps = {row["step"]: row for row in r["steps"]}
    assert list(steps) == ["first push", "re-push, same release", "push second variant", "rollback"]
    assert steps["first push"]["fsyncs"] > 0 and steps["first push"]["fsyncs_when_off"] == 0
    assert steps["re-push, same release"]["fsyncs"] == 0  # nothing changes, nothing is synced
    assert all(row["fsync_s"] > 0 and row["no_fsync_s"] > 0 for row in r["steps"])
    assert r["agent_call_session_ms"] > 0 and r["agent_call_exec_ms"] > 0


@pytest.mark.arm64
def test_arm64_parity_quick(artifacts: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "arm64"))
    try:
        from build_rootfs import binfmt_problem
    finally:
        sys.path.pop(0)
    problem = binfmt_problem()
    if problem:
        pytest.skip(f"arm64 target unavailable: {problem}")
    r = _run("arm64_parity.py", "--artifacts", str(artifacts), timeout_s=3600)
    assert r["count"] == 50 and set(r["targets"]) and all("vs_golden" in e for e in r["targets"].values())


def test_early_stop_ties_quick() -> None:
    r = _run("early_stop_ties.py", timeout_s=900)
    assert r["collect"] == 30 and r["eval"] == 15 and len(r["seeds"]) == 1 and "cores" in r["machine"]
    seed = r["seeds"][0]
    for rule in ("keras", "tie-break"):
        row = seed[rule]
        assert 1 <= row["kept_epoch"] <= row["epochs_run"] and set(row["per_class"]) == {"blue box", "green star", "red ball"}
        assert 0.0 <= row["fresh_worst_class"] <= row["fresh_mean"] <= 1.0
    # the tie-break keeps an epoch at least as good by its own rule: higher accuracy, or equal with lower loss
    k, t = seed["keras"], seed["tie-break"]
    assert (t["val_accuracy"], -t["val_loss"]) >= (k["val_accuracy"], -k["val_loss"] - 1e-3), seed


def test_precision_parity_quick(tfds_dir: Path) -> None:
    r = _run("precision_parity.py", timeout_s=900)
    assert r["quick"] and len(r["seeds"]) == 1 and r["float32_isa_cap"] == "AVX2" and "cores" in r["machine"]
    row = r["seeds"][0]
    assert row["float32"]["precision"] == "float32" and row["mixed_bfloat16"]["precision"] == "mixed_bfloat16"
    assert 0 < row["float32"]["accuracy"] <= 1 and 0 < row["mixed_bfloat16"]["accuracy"] <= 1
    assert row["diff_points"] == pytest.approx(100 * (row["mixed_bfloat16"]["accuracy"] - row["float32"]["accuracy"]))
    assert r["summary"]["n"] == 1 and r["summary"]["ci95"] is None
