"""bench/page_overhead.py --quick runs end to end and reports what it promises (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_page_overhead_bench_quick(device_artifacts: Path) -> None:
    p = subprocess.run([sys.executable, str(REPO / "bench" / "page_overhead.py"), "--manifest", str(device_artifacts), "--quick", "--json"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)
    assert report["quick"] and report["errors"] == [] and report["machine"]["cores"] >= 1
    rows = report["conditions"]
    assert set(rows) == {"none", "page", "dashboard"}
    assert rows["none"]["images_encoded_per_s"] == 0 and rows["none"]["cpu_overhead_us"] == 0
    assert rows["page"]["images_encoded_per_s"] > 0 and rows["page"]["kb_sent_per_s"] > 0
    assert rows["dashboard"]["images_encoded_per_s"] > 0
    for row in rows.values():
        assert row["fps"] > 5 and row["cpu_us_per_frame"] > 0 and 0 < row["processing_p50_us"] <= row["processing_p99_us"]
