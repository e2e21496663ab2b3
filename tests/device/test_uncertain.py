"""Uncertain frames: kept under the margin, rate-limited, capped, and a full card (a real tmpfs) never stops classification."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from tmpfs import small_tmpfs

from device.frames import Frame
from device.framestore import read_index
from device.manifest import Manifest
from device.pipeline import Prediction, Result
from device.testing import DaemonProcess
from device.uncertain import UncertainConfig, UncertainKeeper


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _result(seq: int, top1: float, top2: float) -> Result:
    return Result(seq, f"f{seq}", time.time_ns(), (Prediction(0, "a", top1), Prediction(1, "b", top2), Prediction(2, "c", 0.0)),
                  (0, 0, 0, 0, 0))


def _frame(seq: int) -> Frame:
    return Frame(np.full((84, 112), 60 + seq, np.uint8), "GRAY", seq, time.time_ns() + seq * 1000)


def _settle(k: UncertainKeeper) -> None:
    end = time.monotonic() + 10
    while k._item is not None and time.monotonic() < end:
        time.sleep(0.01)


def test_margin_rate_limit_and_caps(manifest: Manifest, tmp_path: Path) -> None:
    spec = manifest.variant("int8").input
    tensor = np.zeros(spec.shape, np.int8)
    clock = Clock()
    k = UncertainKeeper(UncertainConfig(tmp_path / "u", margin=0.3, every_s=5.0, max_files=6), manifest.preprocess, spec,
                        {"source": "test"}, clock=clock, fsync=False)
    try:
        k.consider(_result(1, 0.9, 0.05), _frame(1), tensor)  # sure of it: not kept
        assert k.uncertain == 0
        k.consider(_result(2, 0.5, 0.4), _frame(2), tensor)  # unsure: kept
        _settle(k)
        k.consider(_result(3, 0.5, 0.45), _frame(3), tensor)  # unsure, but within 5 s of the last one
        assert (k.kept, k.skipped_rate) == (1, 1)
        for seq in (4, 5, 6):
            clock.t += 5.0
            k.consider(_result(seq, 0.4, 0.35), _frame(seq), tensor)
            _settle(k)
        st = k.stats()
        assert st["kept"] == 3 and st["capped"] == 1 and st["files"] == 6  # 6 pictures: the cap
        records, _ = read_index(tmp_path / "u")
        assert [r["seq"] for r in records] == [2, 4, 5]
        assert records[0]["margin"] == pytest.approx(0.1) and [p["label"] for p in records[0]["prediction"]] == ["a", "b", "c"]
    finally:
        k.close()
    again = UncertainKeeper(UncertainConfig(tmp_path / "u", margin=0.3, every_s=0.0, max_files=6), manifest.preprocess, spec,
                            {}, fsync=False)  # a restarted daemon counts what is there
    try:
        again.consider(_result(9, 0.4, 0.35), _frame(9), tensor)
        assert again.capped == 1 and again.kept == 0
    finally:
        again.close()
    with pytest.raises(ValueError, match="--margin"):
        UncertainConfig(tmp_path, margin=0.0)


@pytest.mark.slow
def test_a_full_card_never_stops_classification_and_is_counted(device_artifacts: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "card", "192k") as card:
        unc = card / "uncertain"
        extra = ("--keep-uncertain", str(unc), "--margin", "1.0", "--uncertain-every-s", "0", "--uncertain-max-bytes", str(1 << 30),
                 "--fps", "60")
        with DaemonProcess.start(device_artifacts, extra=extra, workdir=tmp_path) as d:
            end = time.monotonic() + 60
            while (st := d.get_json("/stats"))["uncertain"]["write_errors"] < 3:
                assert time.monotonic() < end, st["uncertain"]
                time.sleep(0.2)
            frames = st["frames"]
            time.sleep(1.5)
            later = d.get_json("/stats")
            assert later["frames"] > frames + 30 and d.get("/healthz")[0] == 200  # classification goes on at full speed
            u = later["uncertain"]
            assert u["kept"] >= 1 and u["write_errors"] >= 3 and "No space left on device" in u["last_error"]
            metrics = d.get("/metrics")[1].decode()
            counters = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                        if line.startswith("edgekit_uncertain_")}
            assert counters["edgekit_uncertain_write_errors_total"] >= u["write_errors"]  # counted in /metrics too
            assert counters["edgekit_uncertain_kept_total"] >= u["kept"]
            if shutil.which("promtool"):
                p = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
                assert p.returncode == 0, p.stdout + p.stderr
            assert d.stop() == 0
        records, skipped = read_index(unc)
        assert skipped == 0 and len(records) >= 1
        for rec in records:  # what was kept is whole: every picture the index names, with its sha256
            for info in rec["files"].values():
                assert hashlib.sha256((unc / info["path"]).read_bytes()).hexdigest() == info["sha256"]
        assert not list(unc.rglob("*.part"))
        pngs = sorted(p.name for p in unc.rglob("*.png"))
        assert len(pngs) == 2 * len(records)  # no picture without its line
