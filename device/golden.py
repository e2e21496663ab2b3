"""The golden check: a variant run on the host's golden inputs must give the host's outputs, within the kernels' noise.

``deploy push`` runs it on the device (``python -m device.golden``, in the release's own
virtual environment) before a release can become current. Two figures decide, both printed:

* **top-1 agreement**: the fraction of golden inputs whose best class matches the host's;
* **largest raw difference**: over every output of every input, in quantisation levels for
  integer outputs and in score units for float outputs.

The limits depend on whether the device runs the same kernels as the host interpreter that
wrote the golden set (the manifest's ``model.interpreter``). They come from measurements on the
1,000-image golden set, not from a wish for bit-identity (x86: Intel Xeon with AVX-512, this
repository's host; aarch64: the emulated Bookworm root, README's parity table):

=============================================  =========  ===========  =============  ==============
device runtime vs golden writer                model      top-1 agree  int8 raw diff  float raw diff
=============================================  =========  ===========  =============  ==============
ai-edge-litert 2.3 x86 vs itself               1, 8 ep.   100 %        0              0
ai-edge-litert 2.3 aarch64 vs x86              28 ep.     100 %        1 level        -
tflite-runtime 2.14 x86 vs ai-edge-litert      1 ep.      99.6 %       3 levels       7.5e-7
tflite-runtime 2.14 x86 vs ai-edge-litert      8 ep.      99.7 %       4 levels       1.1e-6
tflite-runtime 2.14 aarch64 vs ai-edge-litert  28 ep.     99.9 %       8 levels       -
=============================================  =========  ===========  =============  ==============

(``tflite-runtime`` runs int8 on TFLite's builtin kernels, ai-edge-litert on XNNPACK, which
rounds differently; tflite-runtime is bit-identical across x86 and aarch64. tflite-runtime 2.14
cannot load the ``dynamic`` variant at all: FULLY_CONNECTED version 12.) The limits leave about
twice the worst measured difference: same kernels ≥ 99 % top-1 and ≤ 2 levels, other kernels
≥ 98 % and ≤ 16 levels, floats ≤ 1e-4 either way. A genuinely wrong model — another model's
weights, outputs in another label order — disagrees on most inputs and differs by far more
than these bounds, so it is still refused.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device.engine import open_engine
from device.errors import DeviceError, ManifestError
from device.manifest import load_manifest, sha256_file
from device.preprocess import model_input
from device.quant import to_scores
from device.runtime import XNNPACK_SETTINGS


@dataclass(frozen=True)
class Tolerance:
    """How far a device may be from the golden outputs: minimum top-1 agreement and largest raw difference."""

    min_top1: float
    max_levels: int
    max_float: float
    basis: str

    def required(self, count: int) -> int:
        """Golden inputs that must agree out of ``count`` (rounded down, so a short check allows one near-tie flip)."""
        return math.floor(self.min_top1 * count + 1e-9)


# Same kernels as the golden writer: differences come from SIMD width and FMA only.
SAME_KERNELS = Tolerance(
    0.99, 2, 1e-4,
    "same runtime as the golden writer: measured 100 % top-1, ≤ 1 int8 level (aarch64 vs x86), bit-identical on x86")
# Other kernels (builtin vs XNNPACK): int8 rounding differs, near-ties can flip.
OTHER_KERNELS = Tolerance(
    0.98, 16, 1e-4,
    "another runtime than the golden writer: measured 99.6-99.9 % top-1, ≤ 8 int8 levels, ≤ 1.1e-6 for floats "
    "(tflite-runtime 2.14 vs ai-edge-litert 2.3)")


def tolerance(device_runtime: str, golden_runtime: Optional[str], xnnpack: str = "on") -> Tolerance:
    """The limits for a device runtime against golden outputs written by ``golden_runtime`` (None: unknown).

    The host writes the golden set with its runtime's default kernels; with XNNPACK off the device runs the
    builtin ones, which round int8 differently even in the same runtime: other kernels.
    """
    same = bool(golden_runtime) and device_runtime == golden_runtime and xnnpack == "on"
    return SAME_KERNELS if same else OTHER_KERNELS


@dataclass(frozen=True)
class GoldenReport:
    """What the check measured and the limits it applied."""

    ok: bool
    variant: str
    runtime: str
    runtime_version: str
    golden_runtime: Optional[str]
    count: int
    top1_agree: int
    top1_required: int
    min_top1: float
    max_raw_diff: float
    max_raw_allowed: float
    raw_unit: str
    label_accuracy: float
    load_ms: float
    basis: str
    error: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @property
    def summary(self) -> str:
        """One line with both figures and both limits."""
        unit = f" {self.raw_unit}" if self.raw_unit == "levels" else ""
        return (f"golden top-1 {self.top1_agree}/{self.count} (≥ {self.top1_required} required, {self.min_top1:.0%}), "
                f"largest raw difference {self.max_raw_diff:.3g}{unit} (≤ {self.max_raw_allowed:g} allowed) "
                f"on {self.runtime} {self.runtime_version}")


def check_golden(manifest_path: Path, variant: str, runtime: str = "auto", count: int = 20, threads: Optional[int] = None,
                 xnnpack: str = "on") -> GoldenReport:
    """Run ``count`` golden inputs through ``variant`` as the daemon will run it (runtime, threads, XNNPACK) and compare
    with the host's raw outputs."""
    t0 = time.perf_counter()
    manifest = load_manifest(manifest_path)
    engine = open_engine(manifest, variant, runtime=runtime, threads=threads, xnnpack=xnnpack)
    load_ms = (time.perf_counter() - t0) * 1e3
    gpath = manifest.golden_path()
    if manifest.golden is not None and sha256_file(gpath) != manifest.golden.sha256:
        raise ManifestError(f"{gpath} does not match the manifest's sha256; push again")
    with np.load(str(gpath)) as gold:
        key = "raw_" + variant
        if key not in gold:
            raise ManifestError(f"{gpath} has no {key} outputs; re-run the host pipeline")
        images, labels, want_raw = gold["images"], gold["labels"], gold[key]
    n = min(int(count), len(images))
    if n <= 0:
        raise ManifestError(f"{gpath} holds no golden inputs; re-run the host pipeline")
    spec = manifest.variant(variant).output
    integer = np.issubdtype(np.dtype(spec.dtype), np.integer)
    golden_runtime = manifest.model.get("interpreter")
    tol = tolerance(engine.runtime.name, str(golden_runtime) if golden_runtime else None, xnnpack)
    worst = 0.0
    agree = 0
    correct = 0
    for i in range(n):
        x = model_input(images[i : i + 1], manifest.preprocess, engine.input_spec)
        got = engine.run(x).reshape(-1)
        want = np.asarray(want_raw[i]).reshape(-1)
        # Raw outputs compared in their own units: int64 for integers (no wrap-around), float64 for floats.
        diff = np.abs(got.astype(np.int64 if integer else np.float64) - want.astype(np.int64 if integer else np.float64))
        worst = max(worst, float(diff.max()))
        top = int(np.argmax(to_scores(got, spec)))
        agree += int(top == int(np.argmax(to_scores(want, spec))))
        correct += int(top == int(labels[i]))
    allowed = float(tol.max_levels) if integer else tol.max_float
    required = tol.required(n)
    ok = agree >= required and worst <= allowed
    report = GoldenReport(
        ok=ok, variant=variant, runtime=engine.runtime.name, runtime_version=engine.runtime.version,
        golden_runtime=str(golden_runtime) if golden_runtime else None, count=n, top1_agree=agree,
        top1_required=required, min_top1=tol.min_top1, max_raw_diff=worst, max_raw_allowed=allowed,
        raw_unit="levels" if integer else "score", label_accuracy=correct / n, load_ms=load_ms, basis=tol.basis,
    )
    if ok:
        return report
    why = []
    if agree < required:
        why.append(f"top-1 agrees on {agree}/{n} golden inputs, {required} required")
    if worst > allowed:
        why.append(f"largest raw difference {worst:.4g} exceeds {allowed:g}")
    error = (f"{variant} on {engine.runtime.name} {engine.runtime.version} does not reproduce the host's outputs: "
             f"{'; '.join(why)} ({tol.basis}). This is not kernel noise: the model, its manifest or its golden set "
             "come from different runs. Push the model and manifest from one `host run` output")
    return GoldenReport(**{**report.to_json(), "error": error})


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m device.golden``: print the report (one JSON line with --json); exit 1 when refused, 2 on an error."""
    ap = argparse.ArgumentParser(prog="python -m device.golden", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--manifest", type=Path, required=True, help="manifest.json or its folder")
    ap.add_argument("--variant", required=True, help="model variant to check")
    ap.add_argument("--runtime", default="auto", help="TFLite runtime (auto, tflite-runtime, ai-edge-litert, tensorflow)")
    ap.add_argument("--count", type=int, default=20, help="golden inputs to run")
    ap.add_argument("--threads", type=int, default=None, help="interpreter threads, as the daemon will run it")
    ap.add_argument("--xnnpack", default="on", choices=XNNPACK_SETTINGS, help="XNNPACK on or off, as the daemon will run it")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    try:
        report = check_golden(args.manifest, args.variant, args.runtime, args.count, args.threads, args.xnnpack)
    except DeviceError as e:
        print(json.dumps({"ok": False, "error": str(e)}) if args.json else f"error: {e}")
        return 2
    print(json.dumps(report.to_json()) if args.json else (report.error or report.summary))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
