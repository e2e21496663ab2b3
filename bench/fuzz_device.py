"""Fuzz the device's input paths for longer than the test suite does, and print the figures.

Targets (tests/device/fuzz_targets.py): ``manifest`` (parse_manifest on mutated dicts),
``manifest_file`` (load_manifest on mutated bytes), ``preprocess`` (frames of random shapes,
dtypes, strides and formats), ``frame_file`` (decode_image on valid, cut-short, empty, corrupt
and huge-claiming images), ``tflite`` (random, cut-short and byte-flipped models, each loaded,
allocated and invoked in a forked child, since a runtime may crash on garbage; a few more go
through the daemon's own ``device.model_check`` child).

The first four run under hypothesis in a child process each (a crash there ends the child, is
counted, and a new child goes on). For every target it prints the inputs tried, how many were
accepted and refused, how many refusals were one line naming the input, promise violations
(a non-DeviceError, a multi-line error, a valid input refused) and crashes.

    python bench/fuzz_device.py --manifest ARTIFACTS [--seconds 60] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "device"))

HYPOTHESIS_TARGETS = ("manifest", "manifest_file", "preprocess", "frame_file")


def _new_counts(target: str) -> dict[str, Any]:
    return {"target": target, "inputs": 0, "accepted": 0, "refused": 0, "one_line_errors": 0, "violations": 0,
            "crashes": 0, "examples": [], "kinds": {}}


def run_hypothesis_target(target: str, artifacts: Path, seconds: float, seed: int, out: Path) -> None:
    """In this (child) process: run one target under hypothesis until ``seconds`` pass; counts go to ``out``."""
    import fuzz_targets as ft
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    doc, text = ft.base_manifest(artifacts)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    strategy, check = {
        "manifest": (ft.mutated_manifests(doc), ft.check_manifest),
        "manifest_file": (ft.manifest_files(text), lambda d: ft.check_manifest_file(d, work / "manifest.json")),
        "preprocess": (ft.frames(), ft.check_preprocess),
        "frame_file": (ft.image_files(), lambda c: ft.check_frame_file(c, work)),
    }[target]
    counts = _new_counts(target)
    end = time.monotonic() + seconds
    last_save = 0.0

    def save() -> None:
        out.write_text(json.dumps(counts))

    def prop(case: Any) -> None:
        nonlocal last_save
        if time.monotonic() > end:
            return
        counts["inputs"] += 1
        kind = case.get("kind") if isinstance(case, dict) and "kind" in case else None
        if kind:
            counts["kinds"][kind] = counts["kinds"].get(kind, 0) + 1
        try:
            outcome = check(case)
        except AssertionError as e:
            counts["violations"] += 1
            if len(counts["examples"]) < 5:
                counts["examples"].append(str(e)[:400])
            return
        counts[outcome] += 1
        if outcome == "refused":
            counts["one_line_errors"] += 1  # the check asserted one line naming the input
        if time.monotonic() - last_save > 0.5:
            save()
            last_save = time.monotonic()

    chunk = 0
    while time.monotonic() < end:
        runner = hseed(seed * 100_003 + chunk)(settings(max_examples=200, deadline=None, database=None, derandomize=False,
                                                        suppress_health_check=list(HealthCheck))(given(strategy)(prop)))
        runner()
        chunk += 1
    save()


def fuzz_in_children(target: str, artifacts: Path, seconds: float, seed: int) -> dict[str, Any]:
    """Run a hypothesis target in child processes until the time is up; a child that dies is a crash."""
    total = _new_counts(target)
    end = time.monotonic() + seconds
    n = 0
    while (left := end - time.monotonic()) > 0.2 or n == 0:
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "counts.json"
            cmd = [sys.executable, __file__, "--child", target, "--manifest", str(artifacts), "--seconds", f"{max(left, 0.5):.2f}",
                   "--seed", str(seed + n), "--out", str(out)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(left, 0.5) + 300)
            part = json.loads(out.read_text()) if out.exists() else _new_counts(target)
            if p.returncode != 0:
                total["crashes"] += 1
                total["examples"].append(f"child exited {p.returncode}: {p.stderr.strip()[-400:]}")
        for k in ("inputs", "accepted", "refused", "one_line_errors", "violations"):
            total[k] += part[k]
        total["examples"] += part["examples"][: max(0, 5 - len(total["examples"]))]
        for k, v in part["kinds"].items():
            total["kinds"][k] = total["kinds"].get(k, 0) + v
        n += 1
    return total


def fuzz_tflite(artifacts: Path, seconds: float, seed: int, via_model_check: int) -> dict[str, Any]:
    """Each input written to a file, read and loaded and invoked in a forked child; the parent never loads one."""
    import fuzz_targets as ft
    import numpy as np

    from device.engine import LiteRTEngine, read_model_bytes
    from device.errors import DeviceError
    from device.model_check import check_in_child
    from device.runtime import load_runtime

    counts = _new_counts("tflite")
    rt = load_runtime("auto")
    models = [p.read_bytes() for p in sorted(artifacts.glob("model_*.tflite"))]
    rng = random.Random(seed)
    gen = ft.tflite_inputs(models, rng)
    work = Path(tempfile.mkdtemp(prefix="fuzz-tflite-"))
    end = time.monotonic() + seconds
    r_fd, w_fd = os.pipe()
    while time.monotonic() < end:
        kind, data = next(gen)
        counts["inputs"] += 1
        counts["kinds"][kind] = counts["kinds"].get(kind, 0) + 1
        path = work / f"input{counts['inputs'] % 4}.tflite"
        path.write_bytes(data)
        pid = os.fork()
        if pid == 0:  # the child: what the device does with a model file, minus the manifest's sha256
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # the runtime's INFO lines
            code = 0
            try:
                engine = LiteRTEngine(read_model_bytes(path), rt, 1, str(path))
                engine.run(np.zeros(engine.input_spec.shape, np.dtype(engine.input_spec.dtype)))
            except DeviceError as e:
                msg = str(e)
                code = 3 if ("\n" not in msg and path.name in msg) else 5
                os.write(w_fd, (msg.replace("\n", "\\n")[:300] + "\n").encode())
            except BaseException as e:
                code = 4
                os.write(w_fd, f"{type(e).__name__}: {e}".replace("\n", "\\n")[:300].encode() + b"\n")
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            counts["crashes"] += 1
            counts["examples"].append(f"{kind}: child killed by {signal.Signals(os.WTERMSIG(status)).name}")
            continue
        code = os.WEXITSTATUS(status)
        msg = os.read(r_fd, 4096).decode(errors="replace").strip() if code else ""
        if code == 0:
            counts["accepted"] += 1  # a flipped weight still makes a model the runtime can run
        elif code == 3:
            counts["refused"] += 1
            counts["one_line_errors"] += 1
        else:
            counts["violations"] += 1
            if len(counts["examples"]) < 5:
                counts["examples"].append(f"{kind}: {msg}")
    os.close(r_fd)
    os.close(w_fd)
    checked = 0
    for _ in range(via_model_check):  # the daemon's own path: python -m device.model_check
        kind, data = next(gen)
        try:
            check_in_child(data, rt.name, 1, "fuzz.tflite")
        except DeviceError as e:
            msg = str(e)
            ok = "\n" not in msg and "fuzz.tflite" in msg
            counts["one_line_errors" if ok else "violations"] += 1
            counts["refused"] += 1
        else:
            counts["accepted"] += 1
        counts["inputs"] += 1
        counts["kinds"][f"{kind} (model_check)"] = counts["kinds"].get(f"{kind} (model_check)", 0) + 1
        checked += 1
    counts["via_model_check"] = checked
    counts["runtime"] = f"{rt.name} {rt.version}"
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    """Run every target for its time and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, type=Path, help="the host pipeline's output folder (manifest.json, models)")
    ap.add_argument("--seconds", type=float, default=60.0, help="time per target")
    ap.add_argument("--quick", action="store_true", help="2 s per target (what the test suite runs)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the first run (each child takes the next)")
    ap.add_argument("--targets", default=",".join((*HYPOTHESIS_TARGETS, "tflite")), help="comma-separated subset")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    artifacts = args.manifest.parent if args.manifest.is_file() else args.manifest
    if args.child:
        run_hypothesis_target(args.child, artifacts, args.seconds, args.seed, args.out)
        return 0
    seconds = 2.0 if args.quick else args.seconds
    results = []
    for target in args.targets.split(","):
        t0 = time.monotonic()
        if target == "tflite":
            r = fuzz_tflite(artifacts, seconds, args.seed, 3 if args.quick else 30)
        else:
            r = fuzz_in_children(target, artifacts, seconds, args.seed)
        r["seconds"] = round(time.monotonic() - t0, 1)
        results.append(r)
        if not args.json:
            print(f"{target:14} {r['inputs']:>8} inputs in {r['seconds']:5.1f} s: {r['accepted']:>7} accepted, "
                  f"{r['refused']:>7} refused ({r['one_line_errors']} one-line errors naming the input), "
                  f"{r['violations']} violations, {r['crashes']} crashes", flush=True)
            for e in r["examples"]:
                print(f"    {e}")
    machine = {"cpu": _cpu(), "python": platform.python_version(), "machine": platform.machine()}
    bad = sum(r["violations"] + r["crashes"] for r in results)
    if args.json:
        print(json.dumps({"machine": machine, "seconds_per_target": seconds, "targets": results}, indent=1))
    else:
        print(f"machine: {machine['cpu']}, Python {machine['python']}; {'FAILED' if bad else 'ok'}: "
              f"{bad} violations or crashes")
    return 1 if bad else 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
