"""Device test fixtures: the host pipeline's artifacts and their parsed manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.manifest import Manifest, load_manifest


@pytest.fixture(scope="session")
def device_artifacts(artifacts: Path) -> Path:
    """The shared host-pipeline output (tests/conftest.py): manifest.json, model_*.tflite, golden.npz."""
    return artifacts


@pytest.fixture(scope="session")
def manifest(device_artifacts: Path) -> Manifest:
    """The parsed manifest of the artifacts."""
    return load_manifest(device_artifacts)
