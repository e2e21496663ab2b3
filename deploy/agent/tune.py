"""tune: the tuning sweep on the device, and the durable record of the choice made from it (``tuning.json``).

* ``tune`` runs ``python -m device sweep --json`` with the current release's own interpreter (so
  the runtime measured is the one the release installed), on the current release's model or on a
  bundle of every variant uploaded beside it (``bench/<hash>/``, as ``deploy bench --artifacts``
  does). The daemon is paused while it runs, so it does not compete for the CPU being measured,
  and started again afterwards, also when the sweep fails.
* ``tune-record`` writes the choice the host made to ``<remote-dir>/tuning.json`` with
  ``durable.write_json`` (temp file, fsync, rename, fsync of the directory): a power cut leaves
  the old record or the new one, never half of one.
* ``tuned`` reads the record back (``push --variant auto`` uses it), with what the current
  release is and which host folder it was pushed from.

The record (``protocol.TuningRecord``)::

    {"schema": 1, "variant": "int8", "threads": 2, "xnnpack": "off",
     "runtime": "tflite-runtime", "runtime_version": "2.14.0",
     "model_sha256": "<the chosen variant's sha256>", "models": {"<variant>": "<sha256>", ...},
     "measured": {"total_p50_ms": ..., "total_p99_ms": ..., "invoke_p50_ms": ..., "cpu_per_frame_ms": ...,
                  "golden_accuracy": ..., "float32_accuracy": ..., "float32_agreement": ...},
     "gate_points": 0.3, "budget_ms": 5.0 | null, "meets_budget": true | null, "emulated": null | "qemu-user-aarch64",
     "hardware": "...", "reason": "...", "release": "<current id when tuned>", "tuned_at": "...", "by": "user@host"}
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from deploy.agent import durable, supervisor
from deploy.agent.errors import AgentError
from deploy.agent.layout import RELEASE_META, Layout, read_json
from deploy.agent.protocol import (
    TUNING_SCHEMA,
    TuneAnswer,
    TunedAnswer,
    TuningRecord,
    decode_answer,
)
from device.errors import ManifestError
from device.hardware import emulation
from device.manifest import MANIFEST_NAME, load_manifest, sha256_file

REQUIRED = {"variant": str, "threads": int, "xnnpack": str, "runtime": str, "model_sha256": str}


def _models(manifest_path: Path) -> dict[str, str]:
    """variant → sha256 of the variants whose model file is present beside the manifest."""
    try:
        m = load_manifest(manifest_path)
    except ManifestError as e:
        raise AgentError(f"{e}; push a release again", kind="missing") from None
    return {v: m.variant(v).sha256 for v in m.variants if m.model_path(v).is_file()}


def _pause(lay: Layout, timeout_s: float) -> bool:
    """Stop the daemon if it runs; True when it did."""
    if not supervisor.daemon(lay).running:
        return False
    supervisor.control(lay, "stop", timeout_s=timeout_s)
    return True


def run(lay: Layout, manifest_arg: str, code_arg: str, timeout_s: float, pause: bool, extra: list[str]) -> TuneAnswer:
    """Run the sweep (see the module docstring) and return its JSON report."""
    rid = lay.current_id()
    if rid is None:
        raise AgentError("nothing to tune with: push a release first (tune measures with the runtime a release installed)",
                         kind="missing")
    rel = lay.release(rid).resolve()
    python = lay.release_python(rel)
    if not python.exists():
        raise AgentError(f"release {rid} has no virtual environment (its venv link is missing); push it again", kind="missing")
    if manifest_arg:
        manifest, code = Path(manifest_arg), Path(code_arg)
    else:
        manifest, code = rel / "model" / MANIFEST_NAME, rel / "code"
    models = _models(manifest)
    if not models:
        raise AgentError(f"{manifest.parent} holds no model file; push a release again", kind="missing")
    cmd = [str(python), "-m", "device", "sweep", "--manifest", str(manifest), "--json", *extra]
    env = dict(os.environ, PYTHONPATH=str(code), PYTHONDONTWRITEBYTECODE="1")
    paused = _pause(lay, 15.0) if pause else False
    restart_error: Optional[str] = None
    try:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(lay.root))
        except subprocess.TimeoutExpired:
            raise AgentError(f"the tuning sweep ran over {timeout_s:.0f} s; pass fewer --frames or --golden-count, or a "
                             "longer --timeout-s", kind="tune") from None
    finally:
        if paused:
            try:
                supervisor.control(lay, "start", release=rid)
            except AgentError as e:
                restart_error = str(e)
    if p.returncode != 0:
        detail = " | ".join(p.stderr.strip().splitlines()[-3:]) or f"exit {p.returncode}"
        if "invalid choice: 'sweep'" in p.stderr:
            detail = (f"the device code in {code} predates `device sweep`; pass --artifacts DIR (it brings this host's "
                      "device code) or push again")
        raise AgentError(f"`python -m device sweep` failed on the device: {detail}", kind="tune",
                         paused=paused, restart_error=restart_error)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = decode_answer(p.stdout)
    if not isinstance(doc, dict) or not isinstance(doc.get("report"), dict):
        raise AgentError("`python -m device sweep --json` printed no report: " + p.stdout[-300:], kind="tune")
    meta = read_json(rel / RELEASE_META, {}) or {}
    return {"report": doc["report"], "choice": doc.get("choice"), "release": rid, "release_variant": meta.get("variant"),
            "models": models, "manifest_sha256": sha256_file(manifest), "emulated": emulation(), "paused": paused,
            "restart_error": restart_error, "command": " ".join(cmd)}


def check_record(record: Any) -> TuningRecord:
    """``record`` if it has what ``push --variant auto`` needs, else an AgentError naming what is wrong."""
    if not isinstance(record, dict):
        raise AgentError(f"a tuning record is a JSON object. Got: {type(record).__name__}", kind="bad-request")
    bad = [f"{k} ({t.__name__})" for k, t in REQUIRED.items() if not isinstance(record.get(k), t)]
    if bad or isinstance(record.get("threads"), bool) or int(record.get("threads") or 0) < 1:
        raise AgentError(f"a tuning record needs {', '.join(bad) or 'threads ≥ 1'}: host and device agent disagree",
                         kind="bad-request")
    return record  # type: ignore[return-value]


def record(lay: Layout, text: str) -> dict[str, Any]:
    """Write the host's choice to tuning.json, durably."""
    try:
        rec = check_record(json.loads(text))
    except ValueError as e:
        raise AgentError(f"the tuning record is not JSON: {e}", kind="bad-request") from None
    lay.ensure()
    rec = {**rec, "schema": TUNING_SCHEMA, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    durable.write_json(lay.tuning, rec)
    return {"record": rec, "path": str(lay.tuning)}


def recorded(lay: Layout) -> TunedAnswer:
    """The recorded choice (None when this device was never tuned), the current release and where it was pushed from."""
    rec = read_json(lay.tuning, None)
    try:
        rec = check_record(rec) if rec is not None else None
    except AgentError:
        rec = None  # an unreadable record is the same as none: push --variant auto says so
    rid = lay.current_id()
    out: TunedAnswer = {"record": rec, "path": str(lay.tuning), "current": rid, "artifacts": None, "manifest_sha256": None,
                        "models": {}}
    if rid is not None and lay.is_complete(rid):
        rel = lay.release(rid)
        meta = read_json(rel / RELEASE_META, {}) or {}
        out["artifacts"] = meta.get("artifacts")
        out["release_variant"] = meta.get("variant")
        if (rel / "model" / MANIFEST_NAME).is_file():
            out["manifest_sha256"] = sha256_file(rel / "model" / MANIFEST_NAME)
            out["models"] = _models(rel / "model" / MANIFEST_NAME)
    return out
