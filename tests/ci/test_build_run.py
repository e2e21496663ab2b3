"""The image builders' ``run``: a stage that overruns its timeout is stopped with everything it started."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _build_rootfs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_rootfs_under_test", ROOT / "tests" / "arm64" / "build_rootfs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waits for its parent to reap it: it runs no more
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_stage_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    """debootstrap, chroot and pip start children of their own; killing only the direct child left them
    running and holding the output pipe, so the builder waited for them after the timeout."""
    b = _build_rootfs()
    pidfile = tmp_path / "grandchild.pid"
    t0 = time.monotonic()
    with pytest.raises(b.BuildError, match=r"did not finish in 1 s"):
        b.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], "a stage", timeout_s=1)
    took = time.monotonic() - t0
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the stage's child outlived the timeout"
    assert took < 20, f"run() returned {took:.1f} s after a 1 s timeout"
