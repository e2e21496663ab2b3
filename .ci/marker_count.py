"""pytest plugin for CI (``-p marker_count``): counts passed tests, overall and per marker.

Written as JSON to ``$EDGEKIT_CI_COUNTS`` when the session ends, for ``.ci/pytest_run`` to check
that every marker a CI step relies on really executed something (skipped tests do not count).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_counts: dict[str, Any] = {"passed": 0, "markers": {}}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.passed:
        _counts["passed"] += 1
        for name in {m.name for m in item.iter_markers()}:
            _counts["markers"][name] = _counts["markers"].get(name, 0) + 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("EDGEKIT_CI_COUNTS")
    if path:
        with open(path, "w") as f:
            json.dump(_counts, f)
