"""Where everything lives under one remote directory on the device::

    bin/agent-<sha>.pyz       the agent itself, named by its content hash
    .lock                     the root's lock (deploy.agent.locking)
    releases/<id>/            a complete, verified release: code/, model/, config.json,
                              requirements.txt, release.json, .verified, venv -> ../../venvs/<req>
    staging/<id>/             a release being uploaded; renamed into releases/ once verified
    current -> releases/<id>  switched atomically and durably
    history.json              ids in the order they became current (for rollback)
    supervisor.json           the supervisor a push chose (systemd or process), for every later command
    tuning.json               the configuration ``deploy tune`` chose, for ``push --variant auto``
    venvs/<req>/              one virtual environment per requirements hash, kept while a release uses it
    wheelhouse/               wheels pushed for offline installs
    data/<label>/             collected frames: frame/*.png, model/*.png, frames.jsonl (device.framestore)
    uncertain/                the frames the daemon was unsure of (--keep-uncertain), laid out the same way
    run/                      supervisor.json / daemon.json (pid + start time), state.json, probe.json,
                              collect.json (the collection job), collect-status.json (a one-shot's progress)
    logs/                     daemon.log, supervisor.log, results.jsonl, collect.log
    bench/<hash>/             bundles uploaded by ``deploy bench --artifacts``

Release ids are checked (12 lowercase hex digits) before they become a path part.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from deploy.agent.errors import AgentError
from deploy.agent.protocol import is_release_id

VERIFIED_MARKER = ".verified"
RELEASE_META = "release.json"
RELEASE_VENV = "venv"
VENV_COMPLETE = ".edgekit-complete"


class Layout:
    """Paths under one remote directory."""

    def __init__(self, root: str):
        self.root = Path(os.path.expanduser(root)).absolute()
        self.bin = self.root / "bin"
        self.releases = self.root / "releases"
        self.staging = self.root / "staging"
        self.current = self.root / "current"
        self.history = self.root / "history.json"
        self.supervisor_record = self.root / "supervisor.json"
        self.tuning = self.root / "tuning.json"
        self.venvs = self.root / "venvs"
        self.wheelhouse = self.root / "wheelhouse"
        self.run = self.root / "run"
        self.logs = self.root / "logs"
        self.supervisor_ref = self.run / "supervisor.json"
        self.daemon_ref = self.run / "daemon.json"
        self.supervisor_lock = self.run / "supervisor.lock"
        self.state = self.run / "state.json"
        self.probe_cache = self.run / "probe.json"
        self.daemon_log = self.logs / "daemon.log"
        self.supervisor_log = self.logs / "supervisor.log"
        self.results = self.logs / "results.jsonl"
        self.bench = self.root / "bench"
        self.data = self.root / "data"
        self.uncertain = self.root / "uncertain"
        self.collect_job = self.run / "collect.json"
        self.collect_status = self.run / "collect-status.json"
        self.collect_log = self.logs / "collect.log"

    def ensure(self) -> None:
        """Create the directories every command expects (data/ and uncertain/ too: systemd's ReadWritePaths names them)."""
        for d in (self.releases, self.staging, self.venvs, self.run, self.logs, self.data, self.uncertain):
            d.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def check_id(release_id: str) -> str:
        """``release_id`` if it is a release id, else an AgentError (it becomes a path part)."""
        if not is_release_id(release_id):
            raise AgentError(f"{release_id!r} is not a release id (12 lowercase hex digits); "
                             "`deploy releases` lists the ids on the device", kind="bad-request")
        return release_id

    def release(self, release_id: str) -> Path:
        """releases/<id> (checked id)."""
        return self.releases / self.check_id(release_id)

    def staged(self, release_id: str) -> Path:
        """staging/<id> (checked id)."""
        return self.staging / self.check_id(release_id)

    def current_id(self) -> Optional[str]:
        """The id ``current`` points at, or None."""
        try:
            rid = os.path.basename(os.readlink(str(self.current)))
        except OSError:
            return None
        return rid if is_release_id(rid) else None

    def is_complete(self, release_id: str) -> bool:
        """True when releases/<id> exists and was verified."""
        return (self.release(release_id) / VERIFIED_MARKER).is_file()

    def release_ids(self) -> list[str]:
        """Complete releases, oldest first (by verification time)."""
        out = []
        if self.releases.is_dir():
            for d in self.releases.iterdir():
                if is_release_id(d.name) and (d / VERIFIED_MARKER).is_file():
                    out.append((float((d / VERIFIED_MARKER).stat().st_mtime), d.name))
        return [name for _, name in sorted(out)]

    def release_python(self, release_dir: Path) -> Path:
        """The interpreter of a release's own venv (through its ``venv`` link, so it is the one it was verified with)."""
        return release_dir / RELEASE_VENV / "bin" / "python"

    def agent_python(self) -> str:
        """The device's python3 running the agent (the one venvs are made from)."""
        return sys.executable


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default
