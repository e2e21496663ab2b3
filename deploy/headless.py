"""A headless browser for tests and screenshots: Debian's Chromium driven by Playwright for Python.

Playwright's own browser download is never used (no network at run time): the system's
``/usr/bin/chromium`` is the executable, with a fresh profile per launch and the flags that
keep it from phoning home. Install with ``apt-get install chromium`` and ``pip install
playwright`` (the package only; never ``playwright install``).

    with chromium() as browser:
        page = browser.new_page()
        page.goto("http://127.0.0.1:8686/")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM = os.environ.get("EDGEKIT_CHROMIUM", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def missing() -> str:
    """Why a browser cannot start here ("" when it can), with what to install."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: `apt-get install chromium` (or set EDGEKIT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is missing: `pip install playwright` (the package only, no `playwright install`)"
    return ""


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Playwright browser context on the system Chromium with a fresh user-data dir, closed on exit."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="edgekit-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=list(FLAGS),
                                                        viewport={"width": width, "height": height})
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
