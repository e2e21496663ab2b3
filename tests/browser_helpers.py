"""Shared by the browser tests: skip with an install hint when there is no browser, and where artifacts go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.headless import missing

REPO = Path(__file__).resolve().parents[1]


def need_browser() -> None:
    """Skip the test, saying what to install, when Chromium or Playwright is missing."""
    why = missing()
    if why:
        pytest.skip(why)


def artifact(name: str) -> Path:
    """Where a test saves a file for people to look at: $EDGEKIT_TEST_ARTIFACTS or test-artifacts/ in the repo."""
    d = Path(os.environ.get("EDGEKIT_TEST_ARTIFACTS", REPO / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d / name
