"""Parity of the emulated 64-bit Raspberry Pi OS target with the host: the figure issue 5 asks for.

Runs the int8 model on the golden set (≥1000 official test images) with the device package
inside the emulated Debian Bookworm arm64 root (qemu-user), under tflite-runtime 2.14 + numpy
1.26 AND under ai-edge-litert, twice each: fed the 28x28 images directly, and as camera frames
(the daemon's lores YUV420 stream) through the device's own preprocessing. Compares with the host
x86 interpreter: top-1 agreement and the largest difference in raw int8 scores, with a diagnosis
when they are not exact. Timings printed here are EMULATED (qemu-user on x86) and say nothing
about a Raspberry Pi.

    sudo python bench/arm64_parity.py --artifacts OUT [--limit N] [--json]

``OUT`` is a host-pipeline output folder (``python -m host run --out OUT``). Needs root,
debootstrap, qemu-user-static and binfmt-support; builds the cached root on first use (about
10 minutes; ``EDGEKIT_ARM64_ROOT`` / ``EDGEKIT_WHEELHOUSE`` move the caches).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "arm64"))

from arm64_compare import (  # noqa: E402
    RUNTIME_VENVS,
    Probe,
    compare,
    host_inputs,
    host_probe,
    run_probe,
    stage_kit,
)
from arm64_target import Arm64Session  # noqa: E402
from build_rootfs import BuildError, Paths, binfmt_problem, build, log  # noqa: E402

from device.errors import DeviceError  # noqa: E402
from device.manifest import load_manifest  # noqa: E402


def golden(artifacts: Path, variant: str, limit: int) -> dict[str, Any]:
    """The host pipeline's golden set: images, labels, the x86 interpreter's raw outputs, host inputs."""
    manifest = load_manifest(artifacts)
    with np.load(manifest.golden_path()) as z:
        images, labels, raw = z["images"], z["labels"], z[f"raw_{variant}"]
    if limit:
        images, labels, raw = images[:limit], labels[:limit], raw[:limit]
    spec = manifest.variant(variant).input
    return {"labels": labels, "raw": raw, "inputs": host_inputs(images, spec)}


def frames_entry(dev: Probe, ref: Probe, labels: np.ndarray) -> Optional[dict[str, Any]]:
    """Frames rendered and preprocessed on the device against the same on the host."""
    a, h = dev.arrays, ref.arrays
    if "frame_raw" not in a or "frame_raw" not in h:
        return None
    n = len(a["frame_pixels"])
    same_pix = int((a["frame_pixels"].reshape(n, -1) == h["frame_pixels"].reshape(n, -1)).all(1).sum())
    c = compare(a["frame_raw"], h["frame_raw"], labels, a["frame_inputs"], h["frame_inputs"])
    return {"pixels_identical": same_pix, **c.to_json()}


def measure(artifacts: Path, variant: str, limit: int, runtimes: list[str], paths: Paths,
            diagnose: bool = False) -> dict[str, Any]:
    """Build (cached), run the probes inside the root and on the host, compare; a JSON-ready report."""
    log("building or checking the cached arm64 root…")
    stages = build(paths)
    gold = golden(artifacts, variant, limit)
    report: dict[str, Any] = {
        "variant": variant,
        "count": len(gold["labels"]),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__},
        "build": [s.__dict__ for s in stages],
        "targets": {},
        "timing_note": "EMULATED: qemu-user on an x86 host; these timings say nothing about a Raspberry Pi",
    }
    with tempfile.TemporaryDirectory(prefix="arm64_parity_") as tmp, Arm64Session(paths) as session:
        kit = stage_kit(session, artifacts)
        for rt in runtimes:
            log(f"{rt}: x86 host, then inside the emulated aarch64 root ({len(gold['labels'])} images + frames)…")
            host = host_probe(rt, artifacts, Path(tmp), variant, frames=True, limit=limit)
            t0 = time.monotonic()
            dev = run_probe(session, kit, rt, variant, frames=True, limit=limit)
            a = dev.arrays
            entry: dict[str, Any] = {
                "info": dev.info,
                "host_info": host.info if host else None,
                "wall_s": round(time.monotonic() - t0, 1),
                "vs_golden": compare(a["raw"], gold["raw"], gold["labels"], a["inputs"], gold["inputs"]).to_json(),
                "vs_host_same_runtime": None,
                "frames_vs_host_same_runtime": None,
            }
            if host is not None:
                h = host.arrays
                entry["vs_host_same_runtime"] = compare(a["raw"], h["raw"], gold["labels"], a["inputs"], h["inputs"]).to_json()
                entry["frames_vs_host_same_runtime"] = frames_entry(dev, host, gold["labels"])
            if diagnose:
                log(f"{rt}: builtin kernels only (no XNNPACK), host and aarch64…")
                dev_b = run_probe(session, kit, rt, variant, limit=limit, no_delegates=True)
                host_b = host_probe(rt, artifacts, Path(tmp), variant, limit=limit, no_delegates=True)
                entry["builtin_only"] = {
                    "aarch64_vs_golden": compare(dev_b.arrays["raw"], gold["raw"], gold["labels"]).to_json(),
                    "aarch64_builtin_vs_default": compare(dev_b.arrays["raw"], a["raw"], gold["labels"]).to_json(),
                    "aarch64_vs_host": None if host_b is None else compare(dev_b.arrays["raw"], host_b.arrays["raw"], gold["labels"]).to_json(),
                }
            report["targets"][rt] = entry
    report["conclusion"] = conclusion(report)
    return report


def conclusion(r: dict[str, Any]) -> str:
    """Where differences come from, read off the figures (architecture or runtime)."""
    lines = []
    for rt, e in r["targets"].items():
        same, gold = e["vs_host_same_runtime"], e["vs_golden"]
        if same is None:
            lines.append(f"{rt}: no x86 {rt} on this host to compare like with like; against the golden set: {gold['why']}")
            continue
        arch = ("is bit-identical on x86 and aarch64" if same["rows_differing"] == 0 else
                f"differs between x86 and aarch64 in {same['rows_differing']} images by at most {same['max_abs_raw_diff']} "
                f"int8 levels ({same['top1_disagreements']} top-1 flips)")
        lines.append(f"{rt}: the same runtime {arch}.")
        bo = e.get("builtin_only")
        if bo and bo["aarch64_vs_host"] is not None:
            lines.append(
                f"  builtin kernels only (no XNNPACK): aarch64 vs x86 differ in {bo['aarch64_vs_host']['rows_differing']} images, "
                f"aarch64 builtin vs XNNPACK in {bo['aarch64_builtin_vs_default']['rows_differing']}, "
                f"aarch64 builtin vs golden in {bo['aarch64_vs_golden']['rows_differing']}."
            )
        if gold["rows_differing"] and gold["rows_differing"] > same["rows_differing"]:
            lines.append(
                f"  Against the golden set (the host pipeline's x86 interpreter) {gold['rows_differing']} images differ by at most "
                f"{gold['max_abs_raw_diff']} ({gold['top1_disagreements']} top-1 flips): the runtime's int8 kernels, not the "
                "architecture, make that difference (run with --diagnose to compare builtin kernels without XNNPACK)."
            )
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def print_table(r: dict[str, Any]) -> None:
    """The report as a side-by-side table, one column per runtime inside the emulated root."""
    names = list(r["targets"])
    es = [r["targets"][n] for n in names]
    rows: list[tuple[str, list[str]]] = []
    infos = [e["info"] for e in es]
    rows.append(("machine / python / numpy", [f"{i['machine']} / {i['python']} / {i['numpy']}" for i in infos]))
    rows.append(("runtime", [f"{i['runtime']} {i['runtime_version']}" for i in infos]))

    def block(title: str, key: str, pixels: bool = False) -> None:
        got = [e.get(key) for e in es]
        rows.append((f"-- {title}", ["" for _ in es]))
        if pixels:
            rows.append(("frame pixels identical", [f"{g['pixels_identical']}/{g['count']}" if g else "n/a" for g in got]))
        rows.append(("input tensors identical", [f"{g['inputs_identical']}/{g['count']}" if g else "n/a" for g in got]))
        rows.append(("top-1 agreement", [_pct(g["top1_agreement"]) if g else "n/a" for g in got]))
        rows.append(("max |raw int8 diff|", [str(g["max_abs_raw_diff"]) if g else "n/a" for g in got]))
        rows.append(("images with any diff", [str(g["rows_differing"]) if g else "n/a" for g in got]))
        rows.append(("accuracy aarch64 / x86", [f"{_pct(g['device_accuracy'])} / {_pct(g['host_accuracy'])}" if g else "n/a" for g in got]))

    block("28x28 images vs the golden set (host pipeline, x86)", "vs_golden")
    block("28x28 images vs the same runtime on x86", "vs_host_same_runtime")
    block("camera frames vs the same runtime on x86", "frames_vs_host_same_runtime", pixels=True)
    if all("builtin_only" in e for e in es):
        rows.append(("-- builtin kernels only (--diagnose)", ["" for _ in es]))
        rows.append(("aarch64 vs x86: images differing", [str(e["builtin_only"]["aarch64_vs_host"]["rows_differing"]) if e["builtin_only"]["aarch64_vs_host"] else "n/a" for e in es]))
        rows.append(("aarch64 vs golden: images differing", [str(e["builtin_only"]["aarch64_vs_golden"]["rows_differing"]) for e in es]))
        rows.append(("builtin vs XNNPACK: images differing", [str(e["builtin_only"]["aarch64_builtin_vs_default"]["rows_differing"]) for e in es]))
    rows.append(("-- timing (EMULATED, not a Pi)", ["" for _ in es]))
    hosts = [e["host_info"] for e in es]
    rows.append(("invoke p50 ms, x86 host", [f"{h['emulated_invoke_p50_ms']:.3f}" if h else "n/a" for h in hosts]))
    rows.append(("invoke p50 ms, EMULATED aarch64", [f"{i['emulated_invoke_p50_ms']:.3f}" for i in infos]))
    rows.append(("EMULATED / x86", [f"{i['emulated_invoke_p50_ms'] / max(h['emulated_invoke_p50_ms'], 1e-9):.0f}x" if h else "n/a" for i, h in zip(infos, hosts)]))
    cols = [f"aarch64 {n}" for n in names]
    w0 = max(len(k) for k, _ in rows) + 2
    ws = [max(len(c), *(len(v[j]) for _, v in rows)) + 2 for j, c in enumerate(cols)]
    frames = next((i["frames"] for i in infos), "")
    print(f"arm64 parity: {r['variant']} model, {r['count']} golden images (official test split); frames: {frames}")
    print("".ljust(w0) + "".join(c.ljust(w) for c, w in zip(cols, ws)))
    for k, v in rows:
        print(k.ljust(w0) + "".join(x.ljust(w) for x, w in zip(v, ws)))
    print(r["conclusion"])
    print(r["timing_note"] + ".")


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True, help="host-pipeline output folder (manifest.json, model_*.tflite, golden.npz)")
    ap.add_argument("--variant", default="int8", help="model variant to compare")
    ap.add_argument("--limit", type=int, default=0, help="first N golden images only (0 = all)")
    ap.add_argument("--runtimes", default=",".join(RUNTIME_VENVS), help="comma-separated runtimes to run inside the root")
    ap.add_argument("--diagnose", action="store_true", help="also run builtin kernels only (no XNNPACK) on both sides")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--quick", action="store_true", help="the first 50 golden images, no --diagnose: checks that it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.diagnose = 50, False
    runtimes = [x.strip() for x in args.runtimes.split(",") if x.strip()]
    bad = [x for x in runtimes if x not in RUNTIME_VENVS]
    if bad:
        print(f"error: unknown runtime {', '.join(bad)}; choose from {', '.join(RUNTIME_VENVS)}", file=sys.stderr)
        return 2
    if not (args.artifacts / "manifest.json").exists():
        print(f"error: no manifest.json in {args.artifacts}; run `python -m host run --out {args.artifacts}` first", file=sys.stderr)
        return 2
    problem = binfmt_problem()
    if problem:
        print(f"error: the emulated arm64 target cannot run here: {problem}", file=sys.stderr)
        return 2
    try:
        report = measure(args.artifacts.resolve(), args.variant, args.limit, runtimes, Paths.from_env(), args.diagnose)
    except (BuildError, DeviceError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"error: the golden set has no {e} array; re-run the host pipeline", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
