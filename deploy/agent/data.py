"""data-list: what was collected (``data/<label>/``) and kept as uncertain (``uncertain/``), from their indexes.

Only frames that their folder's ``frames.jsonl`` names are listed (``device.framestore`` writes
the line after the pictures, so a listed frame's files are complete); torn or corrupt lines are
counted, not listed. A listed file that has since gone (deleted by hand) is reported missing, so
the host does not ask for it. The host checks every byte it copies against the sha256 here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deploy.agent.layout import Layout
from deploy.agent.protocol import DataListAnswer, FolderListing
from device.framestore import read_index
from device.labels import label_problem


def _listing(folder: Path) -> FolderListing:
    records, skipped = read_index(folder)
    kept: list[dict[str, Any]] = []
    missing = 0
    for rec in records:
        files = rec.get("files")
        if not isinstance(files, dict) or not isinstance(rec.get("name"), str):
            skipped += 1
            continue
        present = True
        for info in files.values():
            path = info.get("path") if isinstance(info, dict) else None
            if not isinstance(path, str) or not os.path.isfile(folder / path):
                present = False
        if present:
            kept.append(rec)
        else:
            missing += 1
    return {"dir": str(folder), "records": kept, "skipped_lines": skipped, "missing": missing}


def listing(lay: Layout, uncertain: bool) -> DataListAnswer:
    """Every collected label's frames (and, with ``uncertain``, the kept uncertain frames)."""
    labels: dict[str, FolderListing] = {}
    invalid: list[str] = []
    if lay.data.is_dir():
        for d in sorted(lay.data.iterdir()):
            if not d.is_dir():
                continue
            if label_problem(d.name) is not None:
                invalid.append(d.name)  # made by hand: not a label the host could store
                continue
            labels[d.name] = _listing(d)
    out: DataListAnswer = {"data_dir": str(lay.data), "labels": labels, "invalid_folders": invalid}
    if uncertain:
        out["uncertain"] = _listing(lay.uncertain)
    return out
