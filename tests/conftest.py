"""Shared fixtures: the prepared Fashion-MNIST tfds data dir and a complete host-pipeline output folder.

``artifacts`` comes from a brief real run (1 epoch on a training subset, then the real
conversion and evaluation of all four variants). It is cached in ~/.cache/edgekit/ keyed by a
hash of the code that shapes it, built once under a file lock (parallel pytest sessions wait
for each other instead of training twice), and each session gets its own copy.
Set EDGEKIT_NO_CACHE=1 to rebuild it from scratch.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT_EPOCHS = 1
ARTIFACT_TRAIN_LIMIT = 12_000
STALE_CACHE_S = 24 * 3600.0
CACHE_ROOT = Path(os.environ.get("EDGEKIT_CACHE", "~/.cache/edgekit")).expanduser()


def _source_key() -> str:
    h = hashlib.sha256(f"epochs={ARTIFACT_EPOCHS} limit={ARTIFACT_TRAIN_LIMIT}".encode())
    files = sorted((ROOT / "host").glob("*.py")) + [ROOT / "device" / n for n in ("manifest.py", "engine.py", "quant.py", "runtime.py", "preprocess.py", "camera_scene.py")]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def tfds_dir() -> Path:
    """The tfds data dir with fashion_mnist:3.0.1 prepared (ingested from the IDX files if need be)."""
    from host.data import default_tfds_dir, prepare

    d = default_tfds_dir()
    prepare(tfds_dir=d)
    return d


@pytest.fixture(scope="session")
def artifacts(tfds_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-private copy of a complete host-pipeline output folder from a brief real run."""
    from host.pipeline import run_pipeline

    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    cached = CACHE_ROOT / f"artifacts-{_source_key()}"
    with open(CACHE_ROOT / "artifacts.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.environ.get("EDGEKIT_NO_CACHE") and cached.exists():
            shutil.rmtree(cached)
        if not (cached / "manifest.json").is_file():
            for old in CACHE_ROOT.glob("artifacts-*"):  # stale keys: code changed since (a day, so parallel checkouts keep theirs)
                if time.time() - old.stat().st_mtime > STALE_CACHE_S:
                    shutil.rmtree(old, ignore_errors=True)
            run_pipeline(cached, epochs=ARTIFACT_EPOCHS, train_limit=ARTIFACT_TRAIN_LIMIT, tfds_dir=tfds_dir, progress=False)
        fcntl.flock(lock, fcntl.LOCK_UN)
    copy = tmp_path_factory.mktemp("artifacts") / "out"
    shutil.copytree(cached, copy)
    yield copy
