"""bench: ``python -m device bench --json`` on the variants present on the device, in a release's own venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout
from deploy.agent.protocol import BenchAnswer, decode_answer
from device.errors import ManifestError
from device.hardware import emulation
from device.manifest import load_manifest


def present_variants(manifest_path: Path) -> tuple[list[str], list[str]]:
    """(variants whose model file is next to the manifest, all variants the manifest names)."""
    try:
        manifest = load_manifest(manifest_path)
    except ManifestError as e:
        raise AgentError(f"{e}; push a release again", kind="missing") from None
    named = list(manifest.variants)
    return [v for v in named if manifest.model_path(v).is_file()], named


def bench(lay: Layout, variant: str, manifest_arg: str, code_arg: str, timeout_s: float, extra: list[str]) -> BenchAnswer:
    """Benchmark a variant (or all present) of the current release, or of an uploaded bench bundle."""
    rid = lay.current_id()
    venv_python = lay.release_python(lay.release(rid)) if rid else None
    # The current release's own runtime; the device's python3 when nothing was pushed yet.
    python = str(venv_python) if venv_python is not None and venv_python.exists() else sys.executable
    if manifest_arg:
        manifest, code, where = Path(manifest_arg), Path(code_arg), "the uploaded bundle"
    else:
        if rid is None:
            raise AgentError("nothing to benchmark: push a release first or pass --artifacts", kind="missing")
        rel = lay.release(rid).resolve()
        manifest, code, where = rel / "model" / "manifest.json", rel / "code", f"release {rid} (current)"
    present, named = present_variants(manifest)
    if variant == "all":
        variants = present
    elif variant in present:
        variants = [variant]
    else:
        known = "" if variant in named else f" (the manifest names {', '.join(named)})"
        raise AgentError(
            f"variant {variant!r} is not on the device{known}: {where} holds {', '.join(present) or 'no model'}. "
            f"Benchmark it with `python -m deploy bench --artifacts DIR --variant {variant}` (uploads every variant "
            f"for the benchmark) or make it current with `python -m deploy push --artifacts DIR --variant {variant}`",
            kind="missing", present=present)
    if not variants:
        raise AgentError(f"{where} holds no model file; push a release again", kind="missing")
    env = dict(os.environ, PYTHONPATH=str(code))
    # One run for all when every variant is there, else one per present variant (a release holds one).
    runs = ["all"] if variants == named and len(named) > 1 else variants
    results: list[Any] = []
    commands = []
    report: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    for v in runs:
        cmd = [python, "-m", "device", "bench", "--manifest", str(manifest), "--variant", v, "--json", *extra]
        commands.append(" ".join(cmd))
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()),
                               env=env, cwd=str(lay.root))
        except subprocess.TimeoutExpired:
            raise AgentError(f"the benchmark ran over {timeout_s:.0f} s; pass fewer --runs", kind="bench") from None
        if p.returncode != 0:
            raise AgentError(f"`python -m device bench` failed (exit {p.returncode}): "
                             + " | ".join(p.stderr.strip().splitlines()[-5:]), kind="bench")
        try:
            one = json.loads(p.stdout)  # `device bench --json` prints one (indented) document
        except ValueError:
            one = decode_answer(p.stdout)
        if not isinstance(one, dict):
            raise AgentError("`python -m device bench --json` printed no JSON: " + p.stdout[-300:], kind="bench")
        part = one.get("results")
        if isinstance(part, list):
            results += part
            report.update((k, x) for k, x in one.items() if k != "results")
        else:
            results.append(one)
    report["results"] = results
    return {"report": report, "variants": variants, "emulated": emulation(), "command": " && ".join(commands)}
