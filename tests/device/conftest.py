"""Device test fixtures: the host pipeline's artifacts (shared fixture when present, else a brief build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from device.manifest import Manifest, load_manifest


@pytest.fixture(scope="session")
def device_artifacts(request: pytest.FixtureRequest) -> Path:
    """Folder with manifest.json, model_*.tflite and golden.npz from a brief real training run."""
    try:
        return Path(request.getfixturevalue("artifacts"))
    except pytest.FixtureLookupError:
        pass
    spec = importlib.util.spec_from_file_location("_device_make_artifacts", Path(__file__).with_name("make_artifacts.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    folder = Path(request.config.cache.mkdir("edgekit-device-artifacts-v1"))
    if not (folder / "manifest.json").exists():
        mod.build(folder)
    return folder


@pytest.fixture(scope="session")
def manifest(device_artifacts: Path) -> Manifest:
    """The parsed manifest of the artifacts."""
    return load_manifest(device_artifacts)
