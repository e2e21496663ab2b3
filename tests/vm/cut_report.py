"""The power-cut rounds a vm run logged (``EDGEKIT_VM_CUT_LOG``), as one Markdown table: N of N per release and point.

    EDGEKIT_VM_CUT_ROUNDS=2 EDGEKIT_VM_CUT_LOG=cuts.jsonl python -m pytest -m vm tests/vm/test_power_cut.py
    python tests/vm/cut_report.py cuts.jsonl [more.jsonl ...]

Every figure is EMULATED (qemu TCG): power-on → the daemon classifying, and the next push's
wall time and fsyncs (count, and seconds inside the agent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional


def load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every logged round; a line that does not parse is an error naming its file and line."""
    rows = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise SystemExit(f"error: {path}:{n} is not JSON; is it a cut log (EDGEKIT_VM_CUT_LOG)?") from None
    return rows


DASH = "\u2013"  # en dash, for ranges


def _span(values: list[float], unit: str = " s", digits: int = 0) -> str:
    if not values:
        return "\u2014"
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return f"{lo}{unit}" if lo == hi else f"{lo}{DASH}{hi}{unit}"


def table(rows: list[dict[str, Any]]) -> str:
    """One line per (release, point), in the order first logged."""
    keys: list[tuple[str, str]] = []
    for r in rows:
        k = (str(r.get("release")), str(r.get("point")))
        if k not in keys:
            keys.append(k)
    out = ["| release | cut at | passed | power-on → classifying | torn last lines | next push | its fsyncs (s in the agent) |",
           "|---|---|---|---|---|---|---|"]
    for release, point in keys:
        mine = [r for r in rows if (str(r.get("release")), str(r.get("point"))) == (release, point)]
        ok = sum(1 for r in mine if r.get("ok"))
        serve = [float(r["serve_after_power_on_s"]) for r in mine if r.get("served")]
        torn = sum(int((r.get("results") or {}).get("torn_last") or 0) for r in mine)
        push = [float(r["push_s"]) for r in mine if r.get("push_s") is not None]
        fsyncs = sorted({int(r["fsyncs"]) for r in mine if r.get("fsyncs") is not None})
        fsync_s = [float(r["fsync_s"]) for r in mine if r.get("fsync_s") is not None]
        fs = "/".join(str(f) for f in fsyncs) or "\u2014"
        out.append(f"| {release} | {point} | {ok} of {len(mine)} | {_span(serve)} | {torn} | {_span(push)} | "
                   f"{fs} ({_span(fsync_s, '', 2)}) |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Summarise the power-cut rounds of vm runs (EDGEKIT_VM_CUT_LOG files) "
                                             "as a Markdown table: N of N per release and cut point, EMULATED timings.")
    ap.add_argument("logs", nargs="+", type=Path, help="JSON-lines files written through EDGEKIT_VM_CUT_LOG")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.logs if not p.is_file()]
    if missing:
        print(f"error: no such cut log: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = load(args.logs)
    if not rows:
        print("error: the cut logs hold no rounds; run tests/vm/test_power_cut.py with EDGEKIT_VM_CUT_LOG set", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
