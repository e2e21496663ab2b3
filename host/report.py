"""report.md (one table comparing the variants) and the int8 confusion-matrix PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from host.evaluate import VariantEval

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


def render_report(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> str:
    """The Markdown report: model facts, the variant table, per-class accuracy."""
    by = {e.variant: e for e in evals}
    base = by.get("float32")
    lines = [
        "# edgekit host report",
        "",
        f"Model `{model.get('name', '?')}`: {model.get('params', '?')} parameters, trained "
        f"{model.get('epochs_run', '?')} epochs in {float(model.get('train_seconds', 0)):.0f} s; "
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
    lines += ["", "## Per-class accuracy (official test split)", ""]
    lines.append("| class | " + " | ".join(e.variant for e in evals) + " |")
    lines.append("|---|" + "---:|" * len(evals))
    for i, name in enumerate(labels):
        lines.append(f"| {name} | " + " | ".join(f"{100 * e.per_class_accuracy[i]:.1f} %" for e in evals) + " |")
    if "int8" in by:
        lines += ["", f"![int8 confusion matrix]({CONFUSION_NAME})", ""]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> Path:
    """Write report.md and, when there is an int8 variant, confusion_int8.png into ``folder``."""
    by = {e.variant: e for e in evals}
    if "int8" in by:
        plot_confusion(by["int8"].confusion, labels, Path(folder) / CONFUSION_NAME, "int8 model, official test split")
    path = Path(folder) / REPORT_NAME
    path.write_text(render_report(evals, labels, model))
    return path
