"""report.md (one table comparing the variants) and the int8 confusion-matrix PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from host.evaluate import VariantEval
from host.evaluate_camera import CameraEval

REPORT_NAME = "report.md"
CONFUSION_NAME = "confusion_int8.png"


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Save a labelled confusion-matrix heat map (counts in each cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    limit = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8, color="white" if cm[i, j] > limit else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _machine(model: dict[str, Any]) -> str:
    """' (float32 on CPU X: flags)' for the training figure, when training.json recorded it."""
    cpu = model.get("cpu") or {}
    if not cpu and not model.get("precision"):
        return ""
    flags = " ".join(f for f, on in (cpu.get("flags") or {}).items() if on) or "no avx2/avx512/bf16 flags"
    cap = f", oneDNN capped at {cpu['onednn_isa_cap']}" if cpu.get("onednn_isa_cap") else ""
    return f" ({model.get('precision', '?')} on {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores: {flags}{cap})"


def camera_section(cameras: Sequence[CameraEval], model: dict[str, Any]) -> list[str]:
    """The camera-like table: accuracy beside the raw figure on the same images, by polarity and frame format."""
    if not cameras:
        return []
    info = model.get("camera_like", {})
    formats = list(cameras[0].by_format)
    lines = [
        "",
        "## Camera-like frames",
        "",
        f"{info.get('count', '?')} official test images rendered as a camera sees a garment (`device.camera_scene`: "
        "the garment's longer side at 60-100 % of the frame height, off centre, light on dark or dark on light, "
        "tinted, tone-curved, vignetted, slightly blurred, noisy), in turn as 640x480 B,G,R main frames and as "
        "lores YUV420 frames with padded rows, each through the device's preprocessing "
        f"(crop `{info.get('crop', '?')}`) and the interpreter. *Raw* is the same interpreter on the same images "
        f"as stored; the gap is raw minus camera-like. Renderer seed {info.get('seed', '?')}, never used for tuning.",
        "",
        "| variant | camera-like | raw, same images | gap (points) | light on dark | dark on light | " + " | ".join(formats) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(formats),
    ]
    for c in cameras:
        pol = [f"{100 * c.by_polarity[k]:.1f} %" if k in c.by_polarity else "-" for k in ("light_on_dark", "dark_on_light")]
        lines.append(
            f"| {c.variant} | {100 * c.accuracy:.2f} % | {100 * c.raw_accuracy:.2f} % | {c.gap_points:+.2f} | "
            + " | ".join(pol) + " | " + " | ".join(f"{100 * c.by_format[f]:.1f} %" for f in formats) + " |"
        )
    return lines


def render_report(
    evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any], cameras: Sequence[CameraEval] = ()
) -> str:
    """The Markdown report: model facts, the variant table, camera-like frames, per-class accuracy."""
    by = {e.variant: e for e in evals}
    base = by.get("float32")
    lines = [
        "# edgekit host report",
        "",
        f"Model `{model.get('name', '?')}`: {model.get('params', '?')} parameters, trained "
        f"{model.get('epochs_run', '?')} epochs in {float(model.get('train_seconds', 0)):.0f} s{_machine(model)}; "
        f"Keras accuracy on the official test split {100 * float(model.get('keras_accuracy', 0)):.2f} %. "
        f"Data: {model.get('data_source', '?')}. Interpreter: {evals[0].runtime if evals else '?'}.",
        "",
        "Accuracy is top-1 on the official Fashion-MNIST test split (10,000 images) unless noted; "
        "*seed test* is the seed's `train[90%:]` split. Latency is `invoke()` alone on this host, one image, warm.",
        "",
        "| variant | bytes | size vs float32 | accuracy | Δ vs float32 (points) | seed test | agreement with Keras | input | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for e in evals:
        ratio = e.size_bytes / base.size_bytes if base else float("nan")
        delta = 100 * (e.accuracy - base.accuracy) if base else float("nan")
        q = f" (scale {e.input.scale:.6g}, zp {e.input.zero_point})" if e.input.quantized else ""
        lines.append(
            f"| {e.variant} | {e.size_bytes:,} | {ratio:.3f} | {100 * e.accuracy:.2f} % | {delta:+.2f} | "
            f"{100 * e.seed_test_accuracy:.2f} % | {100 * e.keras_agreement:.2f} % | {e.input.dtype}{q} | "
            f"{e.latency_p50_ms:.4f} | {e.latency_p99_ms:.4f} |"
        )
    lines += camera_section(cameras, model)
    lines += ["", "## Per-class accuracy (official test split)", ""]
    lines.append("| class | " + " | ".join(e.variant for e in evals) + " |")
    lines.append("|---|" + "---:|" * len(evals))
    for i, name in enumerate(labels):
        lines.append(f"| {name} | " + " | ".join(f"{100 * e.per_class_accuracy[i]:.1f} %" for e in evals) + " |")
    if "int8" in by:
        lines += ["", f"![int8 confusion matrix]({CONFUSION_NAME})", ""]
    return "\n".join(lines) + "\n"


def write_report(
    folder: Path, evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any], cameras: Sequence[CameraEval] = ()
) -> Path:
    """Write report.md and, when there is an int8 variant, confusion_int8.png into ``folder``."""
    by = {e.variant: e for e in evals}
    if "int8" in by:
        plot_confusion(by["int8"].confusion, labels, Path(folder) / CONFUSION_NAME, "int8 model, official test split")
    path = Path(folder) / REPORT_NAME
    path.write_text(render_report(evals, labels, model, cameras))
    return path
