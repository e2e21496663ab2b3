"""One virtual environment per requirements hash, pinned by each release: ``releases/<id>/venv -> ../../venvs/<hash>``.

A push that moves between runtimes (tflite-runtime with numpy<2, ai-edge-litert with numpy 2)
gets a second venv instead of rewriting the one the previous release was verified with, so a
rollback runs that release on exactly its own runtime. A venv is built in place under
``venvs/<sha256[:16]>/`` (system site packages, so Raspberry Pi OS's ``python3-picamera2`` is
visible), is used only once its ``.edgekit-complete`` marker exists (written after an
``os.sync()``), and is removed by ``prune`` once no release links to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from deploy.agent import durable
from deploy.agent.errors import AgentError
from deploy.agent.layout import RELEASE_VENV, VENV_COMPLETE, Layout
from deploy.agent.protocol import VenvAnswer
from device.manifest import sha256_file

REQ_HASH_LENGTH = 16

# Exit 0 when every requirement is already installed in the environment running it.
_SATISFIED = r"""
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if not line or line.startswith('-'):
        continue
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate():
        continue
    try:
        v = version(r.name)
    except PackageNotFoundError:
        sys.exit(1)
    if r.specifier and not r.specifier.contains(v, prereleases=True):
        sys.exit(1)
"""


def _satisfied(python: Path, requirements: Path) -> bool:
    try:
        return subprocess.run([str(python), "-c", _SATISFIED, str(requirements)], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def release_dir(lay: Layout, release_id: str) -> Path:
    """releases/<id> when it is complete, else staging/<id> (a push sends ``venv`` before ``verify``)."""
    if lay.is_complete(release_id):
        return lay.release(release_id)
    staged = lay.staged(release_id)
    if not staged.is_dir():
        raise AgentError(f"release {release_id} is neither on the device nor staged; push again", kind="incomplete")
    return staged


def venv_of(rel: Path) -> Optional[str]:
    """The venv name (requirements hash) a release links to, or None."""
    try:
        return os.path.basename(os.readlink(str(rel / RELEASE_VENV)))
    except OSError:
        return None


def _build(venv: Path, requirements: Path, wheelhouse: Optional[Path], timeout_s: float) -> list[str]:
    steps: list[str] = []
    shutil.rmtree(str(venv), ignore_errors=True)  # an incomplete venv from an interrupted push
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    # --without-pip: pip is bootstrapped only if something must be installed.
    p = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise AgentError(f"`{sys.executable} -m venv` failed: {p.stderr.strip()[-400:]}. "
                         "On Debian/Raspberry Pi OS: `sudo apt install python3-venv`", kind="venv")
    steps.append("created venv (system site packages)")
    if _satisfied(python, requirements):
        steps.append("requirements already satisfied (system site packages); nothing installed")
        return steps
    if subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode != 0:
        p = subprocess.run([str(python), "-m", "ensurepip", "--default-pip"], capture_output=True, text=True)
        if p.returncode != 0:
            raise AgentError(f"cannot bootstrap pip in {venv}: {p.stderr.strip()[-400:]}. "
                             "On Debian/Raspberry Pi OS: `sudo apt install python3-venv python3-pip`", kind="venv")
        steps.append("bootstrapped pip")
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(requirements)]
    if wheelhouse is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(wheelhouse)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise AgentError(f"pip install ran over {timeout_s:.0f} s", kind="venv") from None
    if p.returncode != 0:
        hint = ("the wheelhouse lacks a wheel for this device; rebuild it with --wheelhouse" if wheelhouse is not None
                else "the device may have no internet: use `push --wheelhouse DIR`")
        raise AgentError(f"pip install failed: {p.stderr.strip()[-600:]}. {hint}", kind="venv")
    steps.append("installed requirements" + (" from the wheelhouse" if wheelhouse is not None else ""))
    return steps


def ensure(lay: Layout, release_id: str, wheelhouse: bool = False, timeout_s: float = 900.0) -> VenvAnswer:
    """The venv for the release's requirements (built if missing), linked from the release as ``venv``."""
    rel = release_dir(lay, release_id)
    requirements = rel / "requirements.txt"
    if not requirements.is_file():
        raise AgentError(f"{requirements} is missing; push again", kind="incomplete")
    digest = sha256_file(requirements)
    name = digest[:REQ_HASH_LENGTH]
    venv = lay.venvs / name
    marker = venv / VENV_COMPLETE
    steps: list[str]
    changed = not (marker.is_file() and (venv / "bin" / "python").exists())
    if changed:
        steps = _build(venv, requirements, lay.wheelhouse if wheelhouse else None, timeout_s)
        durable.sync_all()  # pip's files reach the disk before the marker that says the venv is whole
        shutil.copyfile(str(requirements), str(venv / "requirements.txt"))
        durable.write_bytes(marker, (digest + "\n").encode())
    else:
        steps = ["requirements unchanged"]
    link = rel / RELEASE_VENV
    target = os.path.join("..", "..", "venvs", name)
    if venv_of(rel) != name or not link.exists():
        durable.symlink(target, link)
        steps.append(f"release {release_id} pinned to venv {name}")
    return {"venv": str(venv), "requirements_sha256": digest, "changed": changed, "steps": steps}


def prune(lay: Layout) -> list[str]:
    """Remove venvs that no release (complete or staged) links to; returns their names."""
    if not lay.venvs.is_dir():
        return []
    used = set()
    for parent in (lay.releases, lay.staging):
        if parent.is_dir():
            for rel in parent.iterdir():
                name = venv_of(rel)
                if name:
                    used.add(name)
    removed = []
    for v in sorted(lay.venvs.iterdir()):
        if v.is_dir() and v.name not in used:
            shutil.rmtree(str(v), ignore_errors=True)
            removed.append(v.name)
    if removed:
        durable.fsync_dir(lay.venvs)
    return removed
