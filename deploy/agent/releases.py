"""Releases on the device: prepare a staging dir, verify and publish an upload, switch ``current``, prune, list.

A release becomes visible only by a rename of a verified, synced staging dir into ``releases/``,
and ``current`` only ever points at such a dir (see ``deploy.agent.durable`` for what is synced).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from deploy.agent import durable, venvs
from deploy.agent.errors import AgentError
from deploy.agent.layout import RELEASE_META, VERIFIED_MARKER, Layout, read_json
from deploy.agent.protocol import (
    ActivateAnswer,
    PrepareAnswer,
    ReleaseInfo,
    ReleasesAnswer,
    RollbackTargetAnswer,
    VerifyAnswer,
    decode_answer,
    is_release_id,
)
from device.manifest import sha256_file

STALE_STAGING_S = 3600.0
HISTORY_LENGTH = 50


def prepare(lay: Layout, release_id: str) -> PrepareAnswer:
    """Make the layout, clear stale staging, say whether the release is already there."""
    lay.ensure()
    staged = lay.staged(release_id)
    now = time.time()
    for d in lay.staging.iterdir():
        # Our own id is re-uploaded from scratch; others are left alone unless abandoned.
        if d.name == release_id or now - d.stat().st_mtime > STALE_STAGING_S:
            shutil.rmtree(str(d), ignore_errors=True)
    exists = lay.is_complete(release_id)
    if not exists:
        # A releases/<id> without its marker cannot come from us (verified dirs are renamed whole),
        # but do not trust it either.
        if lay.release(release_id).exists():
            shutil.rmtree(str(lay.release(release_id)), ignore_errors=True)
        staged.mkdir(parents=True)
    return {"root": str(lay.root), "exists": exists, "current": lay.current_id(), "staging": str(staged),
            "releases": lay.release_ids()}


def check_files(rel: Path) -> dict[str, Any]:
    """Sizes and sha256 of every file release.json lists; an AgentError naming each one that differs."""
    meta = read_json(rel / RELEASE_META)
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise AgentError(f"{rel}/{RELEASE_META} is missing or unreadable: the upload was incomplete; push again",
                         kind="incomplete")
    bad = []
    for name, want in sorted(meta["files"].items()):
        p = rel / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            bad.append(f"{name}: not a path inside the release")
        elif not p.is_file():
            bad.append(f"{name}: missing")
        elif p.stat().st_size != want["bytes"]:
            bad.append(f"{name}: {p.stat().st_size} bytes, expected {want['bytes']}")
        else:
            got = sha256_file(p)
            if got != want["sha256"]:
                bad.append(f"{name}: sha256 {got[:12]}…, expected {want['sha256'][:12]}…")
    if bad:
        raise AgentError("files on the device differ from what the host sent (" + "; ".join(bad) + "): "
                         "the upload was corrupted or interrupted; push again", kind="corrupt", files=bad)
    return meta


def golden_check(lay: Layout, rel: Path, count: int, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m device.golden`` with the release's own venv and code; its JSON report."""
    config = read_json(rel / "config.json", {}) or {}
    python = lay.release_python(rel)
    if not python.exists():
        raise AgentError(f"{rel} has no virtual environment yet (the host sends `venv` before `verify`)", kind="venv")
    cmd = [str(python), "-m", "device.golden", "--manifest", str(rel / "model" / "manifest.json"),
           "--variant", str(config.get("variant")), "--runtime", str(config.get("runtime") or "auto"),
           "--count", str(int(count)), "--json"]
    # The check runs the model as the daemon will: with the release's threads and XNNPACK setting.
    if config.get("threads"):
        cmd += ["--threads", str(int(config["threads"]))]
    if config.get("xnnpack"):
        cmd += ["--xnnpack", str(config["xnnpack"])]
    env = dict(os.environ, PYTHONPATH=str(rel / "code"), PYTHONDONTWRITEBYTECODE="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(rel))
    except subprocess.TimeoutExpired:
        raise AgentError(f"loading the model and running {count} golden inputs took over {timeout_s:.0f} s; "
                         "the device is overloaded or the model too large", kind="golden") from None
    result = decode_answer(p.stdout)
    if p.returncode != 0 or not result or not result.get("ok"):
        reason = (result or {}).get("error") or (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise AgentError(f"the model failed its check on the device: {reason}", kind="golden", golden=result)
    return result


def verify(lay: Layout, release_id: str, count: int, timeout_s: float) -> VerifyAnswer:
    """Check hashes, run the golden check, sync the files, then publish staging/<id> as releases/<id>."""
    if lay.is_complete(release_id):
        return {"verified": True, "already": True, "release": release_id}
    rel = lay.staged(release_id)
    if not rel.is_dir():
        raise AgentError(f"no staged upload at {rel}; push again", kind="incomplete")
    check_files(rel)
    golden = golden_check(lay, rel, count, timeout_s)
    durable.sync_tree(rel)  # the data the marker vouches for reaches the disk before the marker
    durable.write_json(rel / VERIFIED_MARKER, {"verified_at": time.time(), "golden": golden})
    durable.rename(rel, lay.release(release_id))
    return {"verified": True, "already": False, "golden": golden, "release": release_id}


def history(lay: Layout) -> list[str]:
    """Release ids in the order they became current."""
    h = read_json(lay.history, [])
    return [x for x in h if isinstance(x, str) and is_release_id(x)] if isinstance(h, list) else []


def switch(lay: Layout, release_id: str) -> Optional[str]:
    """Point ``current`` at releases/<id> atomically and durably; returns the previous id."""
    if not lay.is_complete(release_id):
        raise AgentError(f"release {release_id} is not on the device (or incomplete); push it first", kind="missing")
    if not lay.release_python(lay.release(release_id)).exists():
        raise AgentError(f"release {release_id} has no runtime environment (its venv link is missing); push it again",
                         kind="missing")
    previous = lay.current_id()
    durable.symlink(os.path.join("releases", release_id), lay.current)
    hist = [x for x in history(lay) if x != release_id] + [release_id]
    durable.write_json(lay.history, hist[-HISTORY_LENGTH:])
    return previous


def prune(lay: Layout, keep: int) -> list[str]:
    """Remove the oldest complete releases beyond ``keep``, never current nor the two last in history."""
    protect = {lay.current_id()} | set(history(lay)[-2:])
    ids = lay.release_ids()
    removed = []
    for rid in ids[: max(0, len(ids) - keep)]:
        if rid in protect:
            continue
        shutil.rmtree(str(lay.release(rid)), ignore_errors=True)
        removed.append(rid)
    if removed:
        durable.fsync_dir(lay.releases)
    return removed


def activate(lay: Layout, release_id: str, keep: int) -> ActivateAnswer:
    """Switch ``current`` to a release, prune old releases and the venvs no release uses any more."""
    previous = switch(lay, release_id)
    removed = prune(lay, keep) if keep > 0 else []
    return {"current": release_id, "previous": previous, "pruned": removed, "pruned_venvs": venvs.prune(lay)}


def rollback_target(lay: Layout) -> RollbackTargetAnswer:
    """The release before the current one in history that is still complete."""
    cur = lay.current_id()
    for rid in reversed(history(lay)):
        if rid != cur and lay.is_complete(rid):
            return {"current": cur, "target": rid}
    raise AgentError("no earlier release to roll back to (only the current one is on the device)", kind="missing")


def listing(lay: Layout) -> ReleasesAnswer:
    """Complete releases with their metadata."""
    cur = lay.current_id()
    out: list[ReleaseInfo] = []
    for rid in lay.release_ids():
        rel = lay.release(rid)
        meta = read_json(rel / RELEASE_META, {}) or {}
        out.append({
            "id": rid,
            "current": rid == cur,
            "variant": meta.get("variant"),
            "model_sha256": meta.get("model_sha256"),
            "created": meta.get("created"),
            "source": meta.get("source"),
            "verified_at": (rel / VERIFIED_MARKER).stat().st_mtime,
            "venv": venvs.venv_of(rel),
        })
    return {"current": cur, "releases": out, "history": history(lay)}
