"""Issue 8 §5, end to end and host-only: collect three labels on a "Pi", pull, train, push, classify fresh frames.

The "Pi" is a real sshd on 127.0.0.1; its camera is the fake Picamera2 showing the table-top
scene (``device.tabletop``): a red ball, a blue striped box or a green dotted star, in a new
position, size, rotation, tint, light, colour cast, table colour and noise every frame. The test
chooses what is in view by rewriting the scene file, as a person would put an object in front
of the camera. Steps, each through the commands a user types:

1. ``deploy push`` of the Fashion-MNIST artifacts (the model that runs before), then
   ``deploy collect`` of each label (the running daemon collects; it keeps classifying);
2. ``deploy pull-data --to DATA``;
3. ``host run --data folder:DATA --image-size 32`` (RGB, so the small CNN: the fastest model; the
   folder recipe's epochs: 96 training images are 3 steps an epoch, and early stopping on
   validation ends it after 25-30 epochs. A cap of 20 epochs (60 steps) was measured to leave
   the star at 25/30 on the device, too near the floor; 1-3 epochs are 3-9 steps, before the
   batch norm statistics settle. 1.5-3 minutes on 2 shared cores at load 13-15);
4. ``deploy push`` of that model;
5. the daemon classifies **fresh** frames (scene seeds never used for collection) of each
   object: at least 80 % correct per class over ``EVAL_FRAMES`` frames (chance is 33 %).

The accuracy per class is printed and written to ``test-artifacts/loop_e2e.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import artifact
from deploy_helpers import remote_root, run_cli

from deploy.testing import SSHServer

pytestmark = pytest.mark.slow

CLASSES = (("red ball", "ball"), ("blue box", "box"), ("green star", "star"))
COLLECT_FRAMES = 60  # per label (with 40, and even 60, a class fell to 67-77 % in some suite runs: early stopping then
# kept the first epoch of a 100 % validation tie, half-trained; host/early_stop.py breaks the tie by the loss)
EVAL_FRAMES = 30  # per label, classified by the daemon after the push
MIN_ACCURACY = 0.80
REPO = Path(__file__).resolve().parents[2]


def _scene(path: Path, obj: str, seed: int) -> float:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"object": obj, "seed": seed}))
    tmp.replace(path)
    return time.time()


def _ok(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, data, err = run_cli(capsys, *argv)
    assert code == 0 and isinstance(data, list) and data[0]["ok"], (argv[0], data, err[-2000:])
    return dict(data[0])


def _results_after(results: Path, t0: float, n: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The daemon's first ``n`` results for frames captured after ``t0`` (its results file, read as it grows)."""
    end = time.monotonic() + timeout_s
    while True:
        recs = []
        for line in results.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("timestamp", 0) > t0:
                recs.append(rec)
        if len(recs) >= n:
            return recs[:n]
        assert time.monotonic() < end, f"only {len(recs)} frames classified after the scene changed"
        time.sleep(0.3)


def test_collect_pull_train_push_classify(make_pi: Any, deploy_artifacts: Path, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    pi: SSHServer = make_pi()
    args = pi.target.cli_args()
    scene = tmp_path / "scene.json"
    _scene(scene, "ball", 0)
    source = f"fake-picamera2:scene={scene}"
    _ok(capsys, "push", *args, "--artifacts", str(deploy_artifacts), "--supervisor", "process", "--source", source,
        "--no-progress")

    # 1. collect: each object in view in turn, COLLECT_FRAMES frames of it, while the old model keeps classifying
    for i, (label, obj) in enumerate(CLASSES):
        _scene(scene, obj, 10 + i)
        time.sleep(0.3)  # the camera picks the change up at its next frame
        row = _ok(capsys, "collect", *args, "--label", label, "--count", str(COLLECT_FRAMES), "--interval-s", "0.05")
        assert row["result"]["mode"] == "daemon" and row["result"]["saved"] == COLLECT_FRAMES

    # 2. pull the data
    data = tmp_path / "data"
    row = _ok(capsys, "pull-data", *args, "--to", str(data))
    assert sum(f["copied"] for f in row["result"]["folders"]) == 3 * COLLECT_FRAMES

    # 3. train on it, with the host pipeline's own command line
    out = tmp_path / "model"
    t_train = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "host", "run", "--data", f"folder:{data}", "--out", str(out), "--image-size", "32",
                        "--json", "--quiet"], capture_output=True, text=True, timeout=900, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    train_s = time.monotonic() - t_train
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"] == sorted(label for label, _ in CLASSES)
    assert manifest["preprocess"]["color"] == "rgb" and manifest["preprocess"]["size"] == [32, 32]

    # 4. push that model
    row = _ok(capsys, "push", *args, "--artifacts", str(out), "--variant", "int8", "--supervisor", "process", "--source", source,
              "--no-progress")
    release = row["result"]["release"]

    # 5. the daemon classifies fresh frames of each object: seeds never used for collection
    results = remote_root(pi) / "logs" / "results.jsonl"
    training = json.loads((out / "training.json").read_text())
    spec = importlib.util.spec_from_file_location("bench_machine", REPO / "bench" / "machine.py")
    assert spec is not None and spec.loader is not None
    machine = importlib.util.module_from_spec(spec)  # bench/machine.py: the CPU line every figure carries
    spec.loader.exec_module(machine)

    report: dict[str, Any] = {"collect_frames_per_label": COLLECT_FRAMES, "eval_frames_per_label": EVAL_FRAMES,
                              "release": release, "host_run_s": round(train_s, 1), "epochs_run": training.get("epochs_run"),
                              "precision": training.get("precision"), "machine": machine.line(),
                              "load_1min": os.getloadavg()[0], "per_class": {}}
    for i, (label, obj) in enumerate(CLASSES):
        t0 = _scene(scene, obj, 100 + i) + 0.5  # frames in flight when the scene changed are left out
        recs = _results_after(results, t0, EVAL_FRAMES)
        top1 = [r["top"][0]["label"] for r in recs]
        correct = sum(t == label for t in top1)
        report["per_class"][label] = {"correct": correct, "frames": len(recs), "accuracy": round(correct / len(recs), 4),
                                      "predicted": {lab: top1.count(lab) for lab in sorted(set(top1))}}
    st = _ok(capsys, "status", *args)["result"]
    assert st["release"] == release and st["running"]
    artifact("loop_e2e.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\nloop end to end:", json.dumps(report))
    for label, r in report["per_class"].items():
        assert r["accuracy"] >= MIN_ACCURACY, (label, report)
