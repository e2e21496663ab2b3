"""A benchmark in the manner of TFLite's ``benchmark_model``, over the daemon's own pipeline.

Reports model load time, first inference, warm-up average, then per stage (capture, preprocess,
invoke, postprocess, total) count / min / max / mean / std / p50 / p90 / p99, peak RSS, runtime
and threads, and accuracy on synthetic labelled frames next to the interpreter's accuracy on the
raw model-sized golden images (``model_input``: the contract's normalisation and the variant's quantisation)
and its top-1 agreement with the host's interpreter (the golden outputs).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from device.camera_scene import CameraLikeSource
from device.engine import LiteRTEngine, open_engine
from device.errors import ManifestError, SourceError
from device.frames import CameraConfig, FolderSource, FrameSource, SyntheticSource
from device.hardware import Hardware, read_hardware
from device.manifest import Manifest
from device.pipeline import STAGES, Pipeline
from device.preprocess import Preprocessor, model_input
from device.progress import Progress
from device.stats import Summary, summarize


@dataclass(frozen=True)
class BenchResult:
    """Everything one benchmark run of one variant measured."""

    variant: str
    runtime: str
    runtime_version: str
    threads: Optional[int]
    source: str
    warmup: int
    load_ms: float
    first_inference_ms: float
    warmup_avg_ms: float
    stages: dict[str, Summary]
    peak_rss_kb: int
    frame_accuracy: Optional[float]
    labelled_frames: int
    raw_accuracy: Optional[float]
    host_agreement: Optional[float]
    golden_count: int
    hardware: Hardware
    manifest_accuracy: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)
    xnnpack: str = "on"
    delegate_nodes: Optional[int] = None  # XNNPACK nodes in the interpreter's plan: 0 means builtin kernels ran
    cpu_per_frame_ms: Optional[float] = None  # process CPU time (all threads) per timed frame

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = {k: v for k, v in self.__dict__.items() if k not in ("stages", "hardware")}
        d["stages_ms"] = {s: v.to_json() for s, v in self.stages.items()}
        d["hardware"] = self.hardware.to_json()
        return d


SOURCES = ("synthetic", "synthetic-main", "camera-like", "camera-like-main", "folder:DIR")
CAMERA_LIKE_SEED = 0


def make_source(spec: str, manifest: Manifest, config: CameraConfig, loop: bool = True, fps: float = 0.0) -> FrameSource:
    """A frame source with no camera: see ``SOURCES``.

    ``synthetic`` renders the golden images exactly as the training crop; ``camera-like``
    renders them as a camera sees a garment (``device.camera_scene``: framed off centre at
    60-100 % of the height, both polarities, tint, blur, noise, vignetting). Both deliver the
    lores YUV420 stream the daemon reads, or with ``-main`` the 640x480 B,G,R main stream.
    """
    if spec in ("synthetic", "synthetic-main"):
        cfg = config.with_stream("main" if spec == "synthetic-main" else "lores")
        return SyntheticSource.from_golden(manifest.golden_path(), cfg, loop=loop, fps=fps)
    if spec in ("camera-like", "camera-like-main"):
        if spec == "camera-like":
            fmt = ("lores", "YUV420", *config.lores_size)
        else:
            fmt = ("main", "BGR", *config.main_size)
        return CameraLikeSource.from_golden(manifest.golden_path(), fmt, seed=CAMERA_LIKE_SEED, loop=loop)
    if spec.startswith("folder:"):
        return FolderSource(spec[len("folder:") :], loop=loop)
    raise SourceError(f"unknown source {spec!r} for a benchmark; use {', '.join(SOURCES)}")


def golden_parity(engine: LiteRTEngine, manifest: Manifest, variant: str) -> tuple[Optional[float], Optional[float], int]:
    """(accuracy on the raw model-sized golden images, top-1 agreement with the host's outputs, count)."""
    try:
        path = manifest.golden_path()
    except ManifestError:
        return None, None, 0
    with np.load(path, allow_pickle=False) as z:
        images, labels = z["images"], z["labels"]
        host = z[f"raw_{variant}"] if f"raw_{variant}" in z.files else None
    x = model_input(images, manifest.preprocess, engine.input_spec)
    top1 = np.empty(len(images), dtype=np.int64)
    for i in range(len(images)):
        top1[i] = int(np.argmax(engine.run(x[i : i + 1])))
    acc = float(np.mean(top1 == labels))
    agree = None if host is None else float(np.mean(top1 == host.reshape(len(host), -1).argmax(axis=1)))
    return acc, agree, len(images)


def run_bench(
    manifest: Manifest,
    variant: str,
    source_spec: str = "synthetic",
    runs: Optional[int] = None,
    warmup: int = 20,
    threads: Optional[int] = None,
    runtime: str = "auto",
    invert: str = "auto",
    config: Optional[CameraConfig] = None,
    hardware_root: Path | str = "/",
    progress: bool = False,
    source_factory: Optional[Callable[[], FrameSource]] = None,
    xnnpack: str = "on",
) -> BenchResult:
    """Load, warm up and time the pipeline on a source; check accuracy on labelled frames."""
    t0 = time.perf_counter_ns()
    engine = open_engine(manifest, variant, runtime, threads, xnnpack=xnnpack)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    if config is None:
        config = CameraConfig.for_contract(manifest.preprocess)
    src = source_factory() if source_factory else make_source(source_spec, manifest, config, loop=True)
    if runs is None:
        runs = len(src) if isinstance(src, (SyntheticSource, CameraLikeSource)) else 200
    if isinstance(src, SyntheticSource):
        src.prerender(warmup + runs)  # untimed: the timed reads only hand frames out, as a camera's buffers would
    pre = Preprocessor(manifest.preprocess, engine.input_spec, invert)
    pipe = Pipeline(src, engine, pre, manifest.labels)
    x = np.zeros(engine.input_spec.shape, dtype=np.dtype(engine.input_spec.dtype))
    engine.set_input(x)
    t0 = time.perf_counter_ns()
    engine.invoke_only()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    w_ns = [pipe.step().stage_ns[4] for _ in range(warmup)]
    totals: list[tuple[int, ...]] = []
    correct = labelled = 0
    bar = Progress(runs, f"bench {variant}", enabled=None if progress else False)
    cpu0 = time.process_time_ns()
    for _ in range(runs):
        r = pipe.step()
        totals.append(r.stage_ns)
        if r.truth is not None:
            labelled += 1
            correct += int(bool(r.correct))
        bar.update()
    cpu_ns = time.process_time_ns() - cpu0
    bar.close()
    src.close()
    arr = np.asarray(totals, dtype=np.int64).reshape(-1, len(STAGES))
    raw_acc, agree, n_golden = golden_parity(engine, manifest, variant)
    rt = engine.runtime
    return BenchResult(
        variant=variant,
        runtime=rt.name,
        runtime_version=rt.version,
        threads=threads,
        source=source_spec,
        warmup=warmup,
        load_ms=load_ms,
        first_inference_ms=first_ms,
        warmup_avg_ms=float(np.mean(w_ns)) / 1e6 if w_ns else 0.0,
        stages={s: summarize(arr[:, i]) for i, s in enumerate(STAGES)},
        peak_rss_kb=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        frame_accuracy=None if not labelled else correct / labelled,
        labelled_frames=labelled,
        raw_accuracy=raw_acc,
        host_agreement=agree,
        golden_count=n_golden,
        hardware=read_hardware(hardware_root),
        manifest_accuracy=manifest.variant(variant).accuracy,
        xnnpack=xnnpack,
        delegate_nodes=engine.delegate_nodes,
        cpu_per_frame_ms=cpu_ns / 1e6 / max(1, len(totals)),
    )


def emulated_banner(emulated: str) -> str:
    """The line that keeps emulated timings from passing for a Pi's."""
    return f"EMULATED ({emulated}): not Pi latency; these timings come from an emulator on another CPU"


def format_text(r: BenchResult) -> str:
    """A human report, benchmark_model style."""

    def pct(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    hw = r.hardware
    lines = [emulated_banner(hw.emulated)] if hw.emulated else []
    lines += [
        f"== {r.variant} on {r.source} frames: runtime {r.runtime} {r.runtime_version}, threads {r.threads or 'default'}, "
        f"XNNPACK {r.xnnpack} ({'?' if r.delegate_nodes is None else r.delegate_nodes} delegate nodes)",
        f"hardware: {hw.model or hw.cpu_model or 'unknown'} ({hw.machine}, {hw.cpu_count} CPUs)"
        + (f", governor {hw.governor}" if hw.governor else "")
        + (f", {hw.temperature_c:.1f} °C" if hw.temperature_c is not None else "")
        + (f", throttled {hex(hw.throttled)} ({'; '.join(hw.throttled_flags) or 'ok'})" if hw.throttled is not None else ""),
        f"model load: {r.load_ms:.2f} ms   first inference: {r.first_inference_ms:.3f} ms   "
        f"warm-up avg ({r.warmup} frames): {r.warmup_avg_ms:.3f} ms   peak RSS: {r.peak_rss_kb / 1024:.1f} MiB",
        f"{'stage':<12}{'count':>7}{'min':>10}{'max':>10}{'mean':>10}{'std':>10}{'p50':>10}{'p90':>10}{'p99':>10}  (ms)",
    ]
    for s, v in r.stages.items():
        lines.append(
            f"{s:<12}{v.count:>7}{v.min_ms:>10.4f}{v.max_ms:>10.4f}{v.mean_ms:>10.4f}{v.std_ms:>10.4f}"
            f"{v.p50_ms:>10.4f}{v.p90_ms:>10.4f}{v.p99_ms:>10.4f}"
        )
    fps = 1000.0 / r.stages["total"].mean_ms if r.stages["total"].mean_ms else 0.0
    gap = ""
    if r.frame_accuracy is not None and r.raw_accuracy is not None and r.labelled_frames == r.golden_count:
        gap = f" (gap {100 * (r.raw_accuracy - r.frame_accuracy):+.2f} points)"
    kind = r.source.split(":")[0].replace("-main", "")
    lines.append(
        f"accuracy on {r.labelled_frames} {kind} frames: {pct(r.frame_accuracy)}   "
        f"interpreter on the raw model-sized images: {pct(r.raw_accuracy)}{gap}   "
        f"top-1 agreement with the host interpreter: {pct(r.host_agreement)} ({r.golden_count} golden images)   "
        f"throughput: {fps:.0f} frames/s   CPU per frame: {r.cpu_per_frame_ms or 0:.4f} ms"
    )
    return "\n".join(lines)
