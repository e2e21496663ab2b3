"""report.md (sections: model, variant table, camera-like frames, per-class accuracy, data, confusion matrix) and the int8 confusion-matrix PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from host.evaluate import VariantEval

REPORT_NAME = "report.md"
CONFUSION_NAME = "confusion_int8.png"
MAX_PLOTTED_CLASSES = 30  # beyond this, only the classes that occur are listed and plotted


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    """Save a labelled confusion-matrix heat map (counts in each cell; many classes: only those that occur)."""
    import matplotlib

    if len(labels) > MAX_PLOTTED_CLASSES:
        used = np.nonzero(cm.sum(axis=0) + cm.sum(axis=1))[0]
        cm, labels = cm[np.ix_(used, used)], [labels[int(i)] for i in used]

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
    for i in range(cm.shape[0] if cm.shape[0] <= MAX_PLOTTED_CLASSES else 0):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8, color="white" if cm[i, j] > limit else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


Section = Callable[[Sequence[VariantEval], Sequence[str], dict[str, Any]], list[str]]


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _machine(model: dict[str, Any]) -> str:
    """' (float32 on CPU X: flags)' for the training figure, when training.json recorded it."""
    cpu = model.get("cpu") or {}
    if not cpu and not model.get("precision"):
        return ""
    flags = " ".join(f for f, on in (cpu.get("flags") or {}).items() if on) or "no avx2/avx512/bf16 flags"
    cap = f", oneDNN capped at {cpu['onednn_isa_cap']}" if cpu.get("onednn_isa_cap") else ""
    return f" ({model.get('precision', '?')} on {cpu.get('model', '?')}, {cpu.get('cores', '?')} cores: {flags}{cap})"


def header_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """Title and the model's facts."""
    test = model.get("test_name", "the official Fashion-MNIST test split")
    seed = model.get("seed_test_name", "the seed's `train[90%:]` split")
    trained = (
        f"trained {model.get('epochs_run', '?')} epochs in {float(model.get('train_seconds') or 0):.0f} s{_machine(model)}; "
        if model.get("train_seconds") is not None else ""
    )
    keras = f"source-model accuracy on the test split {_pct(model.get('keras_accuracy'))}. " if model.get("keras_accuracy") is not None else ""
    return [
        "# edgekit host report",
        "",
        f"Model `{model.get('name') or '?'}`: {model.get('params') or '?'} parameters, {trained}{keras}"
        f"Data: {model.get('data_source', '?')}. Interpreter: {evals[0].runtime if evals else '?'}.",
        "",
        f"Accuracy is top-1 on {test} unless noted" + (f"; *seed test* is {seed}" if seed and any(e.seed_test_accuracy is not None for e in evals) else "")
        + ". Latency is `invoke()` alone on this host, one image, warm.",
    ]


def variants_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """One row per variant: size, accuracy, agreement, input, latency."""
    by = {e.variant: e for e in evals}
    base = by.get("float32")
    seed = any(e.seed_test_accuracy is not None for e in evals)
    cols = ["variant", "bytes", "size vs float32", "accuracy", "Δ vs float32 (points)", *(["seed test"] if seed else []),
            "agreement with source model", "input", "p50 ms", "p99 ms"]
    lines = ["", "| " + " | ".join(cols) + " |", "|---|---:|---:|---:|---:|" + ("---:|" if seed else "") + "---:|---|---:|---:|"]
    for e in evals:
        ratio = f"{e.size_bytes / base.size_bytes:.3f}" if base else "—"
        delta = f"{100 * (e.accuracy - base.accuracy):+.2f}" if base else "—"
        q = f" (scale {e.input.scale:.6g}, zp {e.input.zero_point})" if e.input.quantized else ""
        cells = [e.variant, f"{e.size_bytes:,}", ratio, _pct(e.accuracy), delta, *([_pct(e.seed_test_accuracy)] if seed else []),
                 _pct(e.keras_agreement), f"{e.input.dtype}{q}", f"{e.latency_p50_ms:.4f}", f"{e.latency_p99_ms:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def camera_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """Camera-like frames (host.evaluate_camera): accuracy beside the raw figure on the same images, by polarity and frame format."""
    info = model.get("camera_like") or {}
    cams = info.get("variants") or {}
    if not cams:
        return []
    formats = list(next(iter(cams.values())).get("by_format", {}))
    lines = [
        "",
        "## Camera-like frames",
        "",
        f"{info.get('count', '?')} test images rendered as a camera sees a garment (`device.camera_scene`: "
        "the garment's longer side at 60-100 % of the frame height, off centre, light on dark or dark on light, "
        "tinted, tone-curved, vignetted, slightly blurred, noisy), in turn as 640x480 B,G,R main frames and as "
        "lores YUV420 frames with padded rows, each through the device's preprocessing "
        f"(crop `{info.get('crop', '?')}`) and the interpreter. *Raw* is the same interpreter on the same images "
        f"as stored; the gap is raw minus camera-like, ± its 95 % interval over these paired frames. Renderer seed {info.get('seed', '?')}, never used for tuning.",
        "",
        "| variant | camera-like | raw, same images | gap (points, 95 %) | light on dark | dark on light | " + " | ".join(formats) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(formats),
    ]
    for variant, c in cams.items():
        pol = c.get("by_polarity", {})
        cells = [f"{100 * pol[k]:.1f} %" if k in pol else "—" for k in ("light_on_dark", "dark_on_light")]
        cells += [f"{100 * c['by_format'][f]:.1f} %" if f in c.get("by_format", {}) else "—" for f in formats]
        lines.append(
            f"| {variant} | {_pct(c.get('accuracy'))} | {_pct(c.get('raw_accuracy'))} | {_gap(c)} | "
            + " | ".join(cells) + " |"
        )
    return lines


def _gap(c: dict[str, Any]) -> str:
    """'+1.20 ± 0.65': the gap and its 95 % half-width when the manifest has it (older manifests do not)."""
    gap = f"{float(c.get('gap_points', 0)):+.2f}"
    return f"{gap} ± {float(c['gap_ci95_points']):.2f}" if "gap_ci95_points" in c else gap


def per_class_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """Recall of every class, per variant, on the test split."""
    counts = evals[0].confusion.sum(axis=1) if evals else np.zeros(len(labels), dtype=np.int64)
    lines = ["", f"## Per-class accuracy ({model.get('test_name', 'the official Fashion-MNIST test split')})", ""]
    lines.append("| class | images | " + " | ".join(e.variant for e in evals) + " |")
    lines.append("|---|---:|" + "---:|" * len(evals))
    shown = [i for i in range(len(labels)) if counts[i]] if len(labels) > MAX_PLOTTED_CLASSES else range(len(labels))
    for i in shown:
        cells = [f"{100 * e.per_class_accuracy[i]:.1f} %" if counts[i] else "—" for e in evals]
        lines.append(f"| {labels[i]} | {int(counts[i])} | " + " | ".join(cells) + " |")
    if len(shown) < len(labels):
        lines += ["", f"{len(labels) - len(shown)} classes without test images are not shown."]
    return lines


def data_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """For a folder of images: the split per class and everything set aside on the way."""
    d = model.get("data") or {}
    if d.get("kind") != "folder":
        return []
    size = d.get("image_size")
    hw = f"{size[0]}x{size[1]}" if isinstance(size, list) else f"{size}x{size}"
    lines = ["", f"## Data: `{d.get('dir')}` ({hw} {d.get('color')})", ""]
    lines.append("| class | train | validation | test |")
    lines.append("|---|---:|---:|---:|")
    for label, c in (d.get("per_class") or {}).items():
        lines.append(f"| {label} | {c.get('train', 0)} | {c.get('validation', 0)} | {c.get('test', 0)} |")
    lines += [
        "",
        f"- {d.get('files', 0)} image files; split 80 / 10 / 10 by content hash (`host/split.py`): "
        f"{d.get('train', 0)} train, {d.get('validation', 0)} validation, {d.get('test', 0)} test.",
        f"- Unreadable, skipped: {d.get('unreadable', 0)}"
        + "".join(f"; `{n}` ({why})" for n, why in d.get("unreadable_examples", [])) + ".",
        f"- Duplicates counted once: {d.get('duplicates', 0)}"
        + "".join(f"; `{a}` = `{b}`" for a, b in d.get("duplicate_examples", [])) + ".",
        f"- Pictures in two classes, left out: {d.get('conflicts', 0)}"
        + "".join("; " + " = ".join(f"`{n}` ({lab})" for n, lab in c) for c in d.get("conflict_examples", [])) + ".",
        f"- Near-identical images (bursts, re-encoded copies) kept together in one split: {d.get('grouped_images', 0)} in "
        f"{d.get('multi_groups', 0)} groups; the largest holds {d.get('largest_group', 0)}.",
        f"- Images with an EXIF rotation (the loader ignores it): {d.get('exif_rotated', 0)}.",
    ]
    imb = d.get("imbalance")
    if imb and imb["ratio"] <= 1.0:
        lines.append("- Every class has the same number of images.")
    elif imb:
        warned = " (beyond the {:g}x that is warned about: add images to the small classes)".format(imb["warn_above"]) if imb["ratio"] > imb["warn_above"] else ""
        lines.append(f"- Class imbalance: `{imb['largest']}` has {imb['ratio']:.1f}x the images of `{imb['smallest']}`{warned}.")
    return lines


def confusion_section(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> list[str]:
    """The int8 confusion-matrix image."""
    return ["", f"![int8 confusion matrix]({CONFUSION_NAME})"] if any(e.variant == "int8" for e in evals) else []


# The report, in order; a new section is one more function here.
SECTIONS: list[Section] = [header_section, variants_section, camera_section, per_class_section, data_section, confusion_section]


def render_report(evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> str:
    """The Markdown report: every section in SECTIONS, in order."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(evals, labels, model)
    return "\n".join(lines) + "\n"


def write_report(folder: Path, evals: Sequence[VariantEval], labels: Sequence[str], model: dict[str, Any]) -> Path:
    """Write report.md and, when there is an int8 variant, confusion_int8.png into ``folder``."""
    by = {e.variant: e for e in evals}
    if "int8" in by:
        plot_confusion(by["int8"].confusion, labels, Path(folder) / CONFUSION_NAME, f"int8 model, {model.get('test_name', 'official test split')}")
    path = Path(folder) / REPORT_NAME
    path.write_text(render_report(evals, labels, model))
    return path
