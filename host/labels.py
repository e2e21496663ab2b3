"""Class labels: which names can be a folder on the Pi, and how a labels file is read.

A label becomes a folder name on the device (collected frames go to ``<data>/<label>/``) and on
the host (``--data folder:DIR`` reads ``DIR/<label>/``), so it must be a valid file name on the
Pi's ext4 file system, and one that survives the tools around it: no ``/`` or NUL (invalid), not
``.`` or ``..``, at most 255 bytes in UTF-8, no control characters (a newline breaks labels.txt
and the JSON-lines logs), no leading or trailing white space (invisible in a listing), and no
leading ``.`` (a hidden folder: ``ls`` does not show it and the folder loader skips it).
Standard library only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from host.errors import DataError

MAX_NAME_BYTES = 255  # ext4's NAME_MAX


def label_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a class folder on the Pi, or None when it can."""
    if name == "":
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} is not a folder name"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if "/" in name or "\0" in name:
        return "it contains '/' or a NUL byte, which no Linux file name can hold"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes in UTF-8"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return "it contains a control character (newline, tab, ...)"
    if name != name.strip():
        return "it starts or ends with white space"
    if name.startswith("."):
        return "it starts with '.', which makes a hidden folder"
    return None


def check_labels(labels: Sequence[str], what: str) -> None:
    """Refuse, in one line, labels that are not valid folder names on the Pi, or that repeat."""
    for name in labels:
        problem = label_problem(name)
        if problem is not None:
            raise DataError(f"{what} {name!r} is not a valid file name on the Pi: {problem}; rename it")
    seen: set[str] = set()
    for name in labels:
        if name in seen:
            raise DataError(f"{what} {name!r} appears twice; every class needs its own name")
        seen.add(name)


_INDEXED = re.compile(r"^(\d+)\s+(.*)$")


def read_labels_file(path: Path) -> tuple[str, ...]:
    """One label per line, in output order; blank lines at the end are ignored.

    Teachable Machine writes ``0 Class 1``: when every line starts with its own index followed
    by white space, the index is dropped.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"--labels {path} does not exist; pass a text file with one label per line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read --labels {path}: {e}; pass a UTF-8 text file with one label per line") from e
    lines = [line.strip() for line in text.split("\n")]  # trailing spaces and CRs in a text file are noise
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"--labels {path} is empty; pass a text file with one label per line, in the model's output order")
    matches = [_INDEXED.match(line) for line in lines]
    if all(m is not None and int(m.group(1)) == i for i, m in enumerate(matches)):
        lines = [m.group(2) for m in matches if m is not None]
    for i, line in enumerate(lines):
        if not line:
            raise DataError(f"--labels {path}: line {i + 1} is blank; one label per line, in the model's output order")
    return tuple(lines)
