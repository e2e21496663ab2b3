"""The tuning sweep: every variant at every thread count, XNNPACK on and off, through the daemon's own pipeline.

``python -m device sweep --manifest M --json`` runs on the device (``deploy tune`` starts it there,
in the current release's virtual environment). For each configuration (variant, threads, XNNPACK)
it measures, as ``device.bench`` does:

* p50 and p99 of ``invoke`` and of ``total`` (capture → preprocess → invoke → postprocess) on
  synthetic lores frames rendered from the golden set: the stream the daemon configures;
* CPU time per frame: the process's CPU time (every thread, ``time.process_time_ns``) over the
  timed frames, so worker threads that spin are counted, which wall time hides;
* top-1 on the raw golden images (``model_input``): accuracy against the labels and agreement
  with the float32 reference (float32 at 1 thread with the runtime's default kernels, measured
  here; the host's float32 outputs in the golden set when float32 is not on the device);
* what the interpreter really did with the settings, since a setting can silently do nothing:
  ``delegate_nodes`` (XNNPACK's nodes in the execution plan: none means builtin kernels ran) and
  ``worker_threads`` (OS threads the runtime started for this interpreter, from /proc/self/task).

A variant whose XNNPACK-on interpreter delegates nothing runs the same kernels with XNNPACK off,
so its off configurations are not measured twice (a note says so); neither are they where the
runtime cannot turn XNNPACK off. The timing is interleaved: each configuration runs its share of
frames in every round, so a machine whose load changes during the sweep does not favour the
configuration that happened to run first.

The report and the choice made from it are ``device.tuning``'s.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from device.engine import LiteRTEngine, open_engine
from device.errors import DeviceError, ManifestError, ModelError, one_line
from device.frames import CameraConfig, SyntheticSource
from device.hardware import read_hardware
from device.manifest import Manifest
from device.pipeline import STAGES, Pipeline
from device.preprocess import Preprocessor, model_input
from device.runtime import XNNPACK_SETTINGS, load_runtime
from device.stats import summarize
from device.tuning import (
    DEFAULT_THREADS,
    GATE_POINTS,
    REFERENCE,
    Config,
    ConfigResult,
    SweepReport,
    passes,
)

_INVOKE, _TOTAL = STAGES.index("invoke"), STAGES.index("total")


def _os_threads() -> Optional[int]:
    """Threads of this process now (Linux /proc), or None where it cannot be read."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _top1(engine: LiteRTEngine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 per input, raw outputs) of the engine on a batch of model-ready inputs, one at a time."""
    raws = [engine.run(x[i : i + 1]).reshape(-1) for i in range(len(x))]
    raw = np.stack(raws) if raws else np.zeros((0, 0))
    return (raw.argmax(axis=1) if len(raws) else np.zeros(0, np.int64)), raw


@dataclass
class _Live:
    """A configuration being measured: its engine and pipeline, and what it has collected."""

    config: Config
    engine: LiteRTEngine
    pipeline: Pipeline
    stage_ns: list[tuple[int, ...]] = field(default_factory=list)
    cpu_ns: int = 0
    top1: Optional[np.ndarray] = None
    raw: Optional[np.ndarray] = None
    workers: Optional[int] = None
    load_ms: float = 0.0


def plan(variants: Sequence[str], threads: Sequence[int], xnnpack: Sequence[str]) -> list[Config]:
    """Every configuration, XNNPACK on before off (the on interpreter shows whether off changes anything)."""
    for t in threads:
        if t < 1:
            raise ValueError(f"thread counts must be at least 1. Got: {t}")
    for x in xnnpack:
        if x not in XNNPACK_SETTINGS:
            raise ValueError(f"XNNPACK settings are {', '.join(XNNPACK_SETTINGS)}. Got: {x!r}")
    order = [x for x in XNNPACK_SETTINGS if x in xnnpack]
    return [Config(v, t, x) for v in variants for x in order for t in threads]


def run_sweep(
    manifest: Manifest,
    variants: Optional[Sequence[str]] = None,
    threads: Sequence[int] = DEFAULT_THREADS,
    xnnpack: Sequence[str] = XNNPACK_SETTINGS,
    frames: int = 300,
    warmup: int = 20,
    rounds: int = 3,
    golden_count: Optional[int] = None,
    runtime: str = "auto",
    gate_points: float = GATE_POINTS,
    hardware_root: Path | str = "/",
    progress: Optional[Any] = None,
) -> SweepReport:
    """Measure every configuration (see the module docstring); a configuration that fails is reported, not fatal."""
    if frames < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"frames and rounds must be at least 1 and warm-up at least 0. Got: {frames}, {rounds}, {warmup}")
    rt = load_runtime(runtime)
    names = list(variants or manifest.variants)
    for v in names:
        manifest.variant(v)  # an unknown variant is refused before anything runs, and so is one that is not here
        if not manifest.model_path(v).is_file():
            raise ModelError(f"variant {v} is not on this device ({manifest.model_path(v)} is missing); "
                             "measure the variants that are, or bring the others (`deploy tune --artifacts DIR`)")
    order = list(manifest.variants)
    names = sorted(dict.fromkeys(names), key=order.index)  # the manifest's order, whatever order they were asked in
    notes: list[str] = []
    wanted = list(xnnpack)
    if "off" in wanted and not rt.can_disable_xnnpack:
        wanted.remove("off")
        notes.append(f"{rt.name} {rt.version} cannot turn XNNPACK off (no OpResolverType): measured with its default kernels only")
    configs = plan(names, threads, wanted)
    try:
        gpath = manifest.golden_path()
    except ManifestError as e:
        raise ManifestError(f"tuning needs the golden set: {e}") from None
    with np.load(gpath, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
        host_ref = z[f"raw_{REFERENCE}"] if f"raw_{REFERENCE}" in z.files else None
    n = len(images) if golden_count is None else max(1, min(int(golden_count), len(images)))
    if 100.0 / n > gate_points:  # one image is more than the gate: it cannot tell a small loss from none
        notes.append(f"{n} golden images: one image is {100.0 / n:.2g} points, coarser than the {gate_points:g}-point gate; "
                     f"{math.ceil(100.0 / gate_points)} or more resolve it (the golden set holds {len(images)})")
    images, labels = images[:n], np.asarray(labels[:n]).astype(np.int64)
    camera = CameraConfig.for_contract(manifest.preprocess)
    source = SyntheticSource.from_golden(gpath, camera, limit=min(n, frames + warmup), loop=True)
    source.prerender()  # before any timing: the timed reads only hand frames out
    live: list[_Live] = []
    results: dict[Config, ConfigResult] = {}
    inputs: dict[str, np.ndarray] = {}
    isolated: set[str] = set()
    no_delegate: set[str] = set()
    failed: set[tuple[str, str]] = set()  # (variant, XNNPACK) that would not load: not retried at each thread count

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    for c in configs:
        if (c.xnnpack == "off" and c.variant in no_delegate) or (c.variant, c.xnnpack) in failed:
            continue
        before = _os_threads()
        t0 = time.perf_counter_ns()
        try:
            # The first load of each variant runs in a child process: a runtime that crashes on a file ends the child.
            engine = open_engine(manifest, c.variant, rt.name, c.threads, isolate=c.variant not in isolated, xnnpack=c.xnnpack)
        except DeviceError as e:
            results[c] = ConfigResult(c, error=one_line(str(e)))
            failed.add((c.variant, c.xnnpack))
            say(f"{c.label}: {one_line(str(e))}")
            continue
        finally:
            isolated.add(c.variant)
        load_ms = (time.perf_counter_ns() - t0) / 1e6
        if c.xnnpack == "on" and engine.delegate_nodes == 0:
            no_delegate.add(c.variant)
        if c.variant not in inputs:
            inputs[c.variant] = model_input(images, manifest.preprocess, engine.input_spec)
        say(f"{c.label}: golden set ({n} images)")
        top1, raw = _top1(engine, inputs[c.variant])
        pre = Preprocessor(manifest.preprocess, engine.input_spec, "auto")
        item = _Live(c, engine, Pipeline(source, engine, pre, manifest.labels), top1=top1, raw=raw, load_ms=load_ms)
        for _ in range(warmup):
            item.pipeline.step()
        after = _os_threads()
        item.workers = None if before is None or after is None else max(0, after - before)
        live.append(item)
    for v, x in sorted(failed, key=lambda k: (names.index(k[0]), k[1] != "on")):
        others = [c.threads for c in configs if (c.variant, c.xnnpack) == (v, x)][1:]
        if others:
            notes.append(f"{v} with XNNPACK {x} would not load, so it was not tried at {', '.join(map(str, others))} threads")
    for v in [v for v in names if v in no_delegate]:
        if any(c.variant == v and c.xnnpack == "off" for c in configs):
            notes.append(f"{v}: XNNPACK takes no node of this model on {rt.name} {rt.version}, so XNNPACK off runs the "
                         "same builtin kernels: not measured twice")
    per_round = [frames // rounds + (1 if r < frames % rounds else 0) for r in range(rounds)]
    for r, count in enumerate(per_round):
        say(f"timing round {r + 1}/{rounds}: {count} frames for each of {len(live)} configurations")
        for item in live:
            step = item.pipeline.step
            c0 = time.process_time_ns()
            for _ in range(count):
                item.stage_ns.append(step().stage_ns)
            item.cpu_ns += time.process_time_ns() - c0
    reference = _reference(live, host_ref, n)
    ref_acc = None if reference is None else float(np.mean(reference == labels))
    for item in live:
        arr = np.asarray(item.stage_ns, dtype=np.int64).reshape(-1, len(STAGES))
        acc = float(np.mean(item.top1 == labels)) if item.top1 is not None else None
        agree = None if reference is None or item.top1 is None else float(np.mean(item.top1 == reference))
        gate = passes(acc, ref_acc, gate_points)
        results[item.config] = ConfigResult(
            item.config, None, summarize(arr[:, _INVOKE]), summarize(arr[:, _TOTAL]), item.cpu_ns / 1e6 / max(1, len(arr)),
            len(arr), acc, agree, n, item.engine.delegate_nodes, item.workers, item.load_ms, gate)
    source.close()
    ordered = tuple(results[c] for c in configs if c in results)
    ref_name = REFERENCE if any(i.config.variant == REFERENCE for i in live) else f"the host's {REFERENCE} outputs"
    if reference is None:
        notes.append(f"no {REFERENCE} reference (not on the device, and the golden set has no raw_{REFERENCE}): "
                     "no accuracy gate")
    return SweepReport(rt.name, rt.version, ordered, ref_name, ref_acc, gate_points, n, frames, rounds,
                       read_hardware(hardware_root).to_json(), rt.can_disable_xnnpack, tuple(notes), _off_vs_on(live))


def _reference(live: Sequence[_Live], host_ref: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    """float32's top-1 on the golden set: measured here (1 thread, default kernels, else any), else the host's outputs."""
    f32 = [i for i in live if i.config.variant == REFERENCE]
    f32.sort(key=lambda i: (i.config.xnnpack != "on", i.config.threads != 1, i.config.threads))
    if f32 and f32[0].top1 is not None:
        return f32[0].top1
    if host_ref is not None:
        return np.asarray(host_ref[:n]).reshape(n, -1).argmax(axis=1)
    return None


def _off_vs_on(live: Sequence[_Live]) -> dict[str, dict[str, Any]]:
    """Per variant, how XNNPACK off differs from on at the same thread count: outputs and latency."""
    out: dict[str, dict[str, Any]] = {}
    by = {(i.config.variant, i.config.threads, i.config.xnnpack): i for i in live}
    for (v, t, x), off in by.items():
        on = by.get((v, t, "on"))
        if x != "off" or on is None or v in out or on.raw is None or off.raw is None or on.raw.shape != off.raw.shape:
            continue
        integer = np.issubdtype(on.raw.dtype, np.integer)
        diff = np.abs(on.raw.astype(np.int64 if integer else np.float64) - off.raw.astype(np.int64 if integer else np.float64))
        on_p50 = float(np.median([s[_INVOKE] for s in on.stage_ns])) / 1e6 if on.stage_ns else None
        off_p50 = float(np.median([s[_INVOKE] for s in off.stage_ns])) / 1e6 if off.stage_ns else None
        out[v] = {
            "threads": t, "max_raw_diff": float(diff.max()) if diff.size else 0.0, "raw_unit": "levels" if integer else "score",
            "outputs_differ": bool(diff.size and diff.max() > 0), "top1_changed": int(np.sum(on.top1 != off.top1)),
            "invoke_p50_ms_on": on_p50, "invoke_p50_ms_off": off_p50,
            "delegate_nodes_on": on.engine.delegate_nodes, "delegate_nodes_off": off.engine.delegate_nodes,
        }
    return out
