"""The power-cut summary: N of N per release and point from the rounds a vm run logged, and a one-line error for a bad log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "vm" / "cut_report.py"


def _round(point: str, ok: bool, serve: float, torn: int = 0) -> str:
    return json.dumps({"release": "trixie", "point": point, "round": 1, "serve_after_power_on_s": serve, "served": True,
                       "results": {"torn_last": torn}, "push_s": 60.0, "fsyncs": 65, "fsync_s": 0.3, "ok": ok})


def test_rounds_are_counted_per_point(tmp_path: Path) -> None:
    log = tmp_path / "cuts.jsonl"
    log.write_text("\n".join([_round("after-switch", True, 90.0, torn=1), _round("after-switch", False, 120.0),
                              _round("mid-upload", True, 80.0)]) + "\n")
    p = subprocess.run([sys.executable, str(SCRIPT), str(log)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[2].startswith("| trixie | after-switch | 1 of 2 | 90\u2013120 s | 1 |"), lines
    assert lines[3].startswith("| trixie | mid-upload | 1 of 1 | 80 s | 0 |"), lines


def test_a_log_that_is_not_json_lines_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "cuts.jsonl"
    log.write_text(_round("mid-upload", True, 80.0) + "\n{torn\n")
    p = subprocess.run([sys.executable, str(SCRIPT), str(log)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "Traceback" not in p.stderr and f"{log}:2" in p.stderr
    assert p.stderr.strip().count("\n") == 0
