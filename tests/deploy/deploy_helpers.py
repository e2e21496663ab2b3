"""Helpers shared by the deploy tests: run the CLI in-process, inspect a test Pi's remote directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from deploy.cli import main
from deploy.testing import SSHServer


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run ``python -m deploy ARGV --json`` in this process; returns (exit code, parsed JSON, stderr)."""
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    try:
        data = json.loads(out)
    except ValueError:
        data = out
    return code, data, err


def run_cli_process(*argv: str, env: Optional[dict[str, str]] = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m deploy ARGV`` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "deploy", *argv], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})})


def remote_root(pi: SSHServer) -> Path:
    """The test Pi's remote directory (it is on this machine)."""
    return Path(pi.target.remote_dir)


def current_id(pi: SSHServer) -> Optional[str]:
    """The release ``current`` points at, or None."""
    cur = remote_root(pi) / "current"
    return os.path.basename(os.readlink(cur)) if cur.is_symlink() else None


def assert_current_complete(pi: SSHServer) -> Optional[str]:
    """``current`` is absent or points at a verified release whose every file matches release.json."""
    cur = remote_root(pi) / "current"
    if not cur.is_symlink():
        assert not cur.exists(), "current exists but is not a symlink"
        return None
    rel = cur.resolve()
    assert (rel / ".verified").is_file(), f"current -> {rel} is not a verified release"
    meta = json.loads((rel / "release.json").read_text())
    for name, want in meta["files"].items():
        data = (rel / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == want["sha256"], f"{rel / name} differs from release.json"
    return rel.name


def release_dir(root: Path, rid: str, config: dict[str, Any]) -> Path:
    """A verified release dir with the device code, a config and a venv link (what the agent leaves)."""
    rel = root / "releases" / rid
    shutil.copytree(Path(__file__).resolve().parents[2] / "device", rel / "code" / "device",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (rel / "config.json").write_text(json.dumps(config))
    (rel / ".verified").write_text("{}")
    venv_bin = root / "venvs" / "0123456789abcdef" / "bin"
    venv_bin.mkdir(parents=True, exist_ok=True)
    if not (venv_bin / "python").exists():
        (venv_bin / "python").symlink_to(sys.executable)
    (rel / "venv").symlink_to("../../venvs/0123456789abcdef")
    return rel
