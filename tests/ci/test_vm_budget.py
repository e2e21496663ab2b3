"""CI's estimate for the vm marker: a cold build is counted for every image not cached, and only for the releases chosen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "vm" / "ci_budget.py"


def budget(tmp_path: Path, releases: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEKIT_VM_CACHE": str(tmp_path / "empty-cache")}
    env.pop("EDGEKIT_VM_RELEASES", None)
    if releases is not None:
        env["EDGEKIT_VM_RELEASES"] = releases
    return subprocess.run([sys.executable, str(SCRIPT), "--json"], capture_output=True, text=True, env=env, timeout=60)


def test_uncached_images_count_their_cold_build(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from ci_budget import COLD_BUILD_S, RUN_S
    finally:
        sys.path.remove(str(SCRIPT.parent))
    p = budget(tmp_path)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc["releases"]) == {"bookworm", "trixie"}
    for name, row in doc["releases"].items():
        assert row == {"build": COLD_BUILD_S[name], "run": RUN_S[name]}
    assert doc["total_s"] == sum(COLD_BUILD_S.values()) + sum(RUN_S.values())
    one = json.loads(budget(tmp_path, "trixie").stdout)
    assert list(one["releases"]) == ["trixie"] and one["total_s"] == COLD_BUILD_S["trixie"] + RUN_S["trixie"]


def test_unknown_release_is_one_line(tmp_path: Path) -> None:
    p = budget(tmp_path, "jessie")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "jessie" in p.stderr and "bookworm" in p.stderr
