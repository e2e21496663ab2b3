"""Which names can be a class label: a label becomes a folder name on the Pi and on the host.

Collected frames go to ``<data>/<label>/`` on the device (``python -m deploy collect``),
``deploy pull-data`` copies them to ``DIR/<label>/`` on the host, and ``host run --data
folder:DIR`` reads ``DIR/<label>/``: so a label must be a valid file name on the Pi's ext4 file
system, and one that survives the tools around it: no ``/`` or NUL (invalid), not ``.`` or
``..``, at most 255 bytes in UTF-8, no control characters (a newline breaks labels.txt and the
JSON-lines logs), no leading or trailing white space (invisible in a listing), and no leading
``.`` (a hidden folder: ``ls`` does not show it and the folder loader skips it).

The one home of that rule: the host (``host.labels``), the device (collection) and deploy
(``pull-data``, which also checks what a device sends back) import it. Standard library only:
the deploy agent carries it in its zipapp.
"""

from __future__ import annotations

import unicodedata
from typing import Optional

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


def check_label(name: str, what: str = "label") -> str:
    """``name`` when it can be a class folder on the Pi, else ValueError in one line naming it and why."""
    problem = label_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {name!r} is not a valid file name on the Pi: {problem}; choose another name")
    return name
