"""The protocol between the host (``deploy.remote.Device``) and the agent on the device, written down once.

**Transport.** The host uploads the agent zipapp once per content hash to
``<remote-dir>/bin/agent-<sha256[:12]>.pyz`` and starts, on one SSH channel::

    python3 -E -s <remote-dir>/bin/agent-<hash>.pyz serve

(``-E -s``: the device user's ``PYTHONPATH`` and user site cannot change what the agent imports.)

**Requests.** One per line on stdin: a JSON list of strings, the argv of one command, e.g.
``["status", "--dir", "/home/pi/edgekit"]``. EOF ends the session (and releases its lock).

**Answers.** One per line on stdout, a JSON object, in request order:
``{"ok": true, ...}`` with the fields of the command's answer type below, or
``{"ok": false, "error": "<one line: what went wrong, what to do>", "kind": "<error kind>", ...}``.
Every answer also carries ``fsync_count`` and ``fsync_s``: the durable writes the command made.
Nothing else is ever written to stdout (commands' own output goes to stderr).

**One-shot.** ``python3 agent.pyz COMMAND ARGS...`` prints the same answer as the last line of
stdout and exits 0 (ok) or 1 (not ok). The process supervisor runs as ``agent.pyz supervise``.

**Locking.** A command in ``MUTATING`` takes the device root's lock for itself unless the session
already holds it; ``lock`` takes it for the rest of the session (a whole push, a whole control
command), ``unlock`` gives it back. See ``deploy.agent.locking``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, TypedDict

PROTOCOL_VERSION = 2
RELEASE_ID_LENGTH = 12
_RELEASE_ID = re.compile(f"[0-9a-f]{{{RELEASE_ID_LENGTH}}}")
SUPERVISORS = ("auto", "systemd", "process")
ACTIONS = ("start", "stop", "restart")

# ---------------------------------------------------------------- commands

PROBE = "probe"
LOCK = "lock"
UNLOCK = "unlock"
PREPARE = "prepare"
VENV = "venv"
VERIFY = "verify"
ACTIVATE = "activate"
ROLLBACK_TARGET = "rollback-target"
RELEASES = "releases"
CONTROL = "control"
WAIT = "wait"
STATUS = "status"
LOGS = "logs"
BENCH = "bench"
TUNE = "tune"
TUNE_RECORD = "tune-record"
TUNED = "tuned"
SUPERVISE = "supervise"
SERVE = "serve"
COLLECT = "collect"
COLLECT_STATUS = "collect-status"
DATA_LIST = "data-list"

COMMANDS = (PROBE, LOCK, UNLOCK, PREPARE, VENV, VERIFY, ACTIVATE, ROLLBACK_TARGET, RELEASES, CONTROL, WAIT, STATUS,
            LOGS, BENCH, TUNE, TUNE_RECORD, TUNED, SUPERVISE, COLLECT, COLLECT_STATUS, DATA_LIST)
# Commands that change the device: each runs under the root's lock (tune pauses the daemon while it
# measures; collect may open the camera).
MUTATING = frozenset({PREPARE, VENV, VERIFY, ACTIVATE, CONTROL, TUNE, TUNE_RECORD, COLLECT})
TUNING_SCHEMA = 1

# ---------------------------------------------------------------- error kinds

ERROR_KINDS = {
    "bad-request": "the host sent something the agent does not accept (a bad release id, an unknown command)",
    "locked": "another deploy command holds the device root's lock",
    "missing": "a release, variant or earlier release that was asked for is not on the device",
    "incomplete": "an upload is incomplete (no release.json, no staging dir)",
    "corrupt": "uploaded files differ from their sha256",
    "golden": "the model failed its check on the device",
    "superseded": "current no longer names the release this command was about (another push switched it)",
    "venv": "the virtual environment could not be created or installed",
    "supervisor": "the supervisor could not start or stop the daemon",
    "unhealthy": "the daemon did not become healthy in time",
    "bench": "the device benchmark failed",
    "collect": "collection could not start or the daemon refused it",
    "busy": "a collection is already running on the device",
    "tune": "the tuning sweep failed on the device",
    "internal": "an unexpected failure inside the agent",
}

# ---------------------------------------------------------------- message types


class LockHolder(TypedDict, total=False):
    """Who holds a device root's lock (written into the lock file by its holder)."""

    pid: int
    purpose: str
    by: str
    since: float


class LockAnswer(TypedDict, total=False):
    """``lock``: the lock is held by this session until ``unlock`` or EOF."""

    root: str
    holder: LockHolder
    waited_s: float


class PrepareAnswer(TypedDict, total=False):
    """``prepare --id ID``: layout made, stale staging cleared; where to upload."""

    root: str
    exists: bool
    current: Optional[str]
    staging: str
    releases: list[str]
    supervisor: str  # the supervisor this push will use (refused here, before any upload, if it cannot be)
    supervisor_reason: str


class VenvAnswer(TypedDict, total=False):
    """``venv --id ID``: the release's runtime environment (one venv per requirements hash)."""

    venv: str
    requirements_sha256: str
    changed: bool
    steps: list[str]


class VerifyAnswer(TypedDict, total=False):
    """``verify --id ID``: sha256 of every file checked, golden check passed, release published."""

    verified: bool
    already: bool
    release: str
    golden: dict[str, Any]  # device.golden.GoldenReport.to_json()


class ActivateAnswer(TypedDict, total=False):
    """``activate --id ID``: current switched; releases and venvs no release uses pruned."""

    current: str
    previous: Optional[str]
    pruned: list[str]
    pruned_venvs: list[str]
    unit: str  # under systemd: the unit, re-rendered for the new current (not restarted) so a boot starts it


class RollbackTargetAnswer(TypedDict, total=False):
    """``rollback-target``: the release before current in history that is still complete."""

    current: Optional[str]
    target: str


class ReleaseInfo(TypedDict, total=False):
    """One complete release as ``releases`` lists it."""

    id: str
    current: bool
    variant: Optional[str]
    model_sha256: Optional[str]
    created: Optional[str]
    source: Optional[str]
    verified_at: float
    venv: Optional[str]


class ReleasesAnswer(TypedDict, total=False):
    """``releases``: complete releases (oldest first), current, history."""

    current: Optional[str]
    releases: list[ReleaseInfo]
    history: list[str]


class SupervisorRecord(TypedDict, total=False):
    """``<remote-dir>/supervisor.json``: the supervisor a push chose, used by every later command."""

    supervisor: str  # systemd | process
    unit: Optional[str]
    requested: str  # what the push asked for: auto | systemd | process
    reason: str
    release: Optional[str]
    recorded_at: str


class ControlAnswer(TypedDict, total=False):
    """``control ACTION``: what the supervisor did."""

    supervisor: str
    action: str
    release: Optional[str]
    unit: Optional[str]
    was_running: bool
    already_running: bool
    record: SupervisorRecord
    steps: list[str]


class WaitAnswer(TypedDict, total=False):
    """``wait --id ID``: the daemon of release ID answers /healthz and has classified frames."""

    healthy: bool
    release: str
    frames: int
    stats: dict[str, Any]


class SystemdView(TypedDict, total=False):
    """systemd's own view of the unit (``systemctl show``)."""

    unit: str
    LoadState: str
    ActiveState: str
    SubState: str
    NRestarts: int
    MainPID: int
    Result: str
    UnitFileState: str
    ExecMainStatus: int


class StatusAnswer(TypedDict, total=False):
    """``status``: supervisor and daemon state plus the daemon's /stats."""

    current: Optional[str]
    release: Optional[str]
    variant: Optional[str]
    supervisor: str
    running: bool
    daemon_pid: Optional[int]
    supervisor_pid: Optional[int]
    restarts: int
    last_exit: Optional[int]
    port: Optional[int]
    stats: Optional[dict[str, Any]]
    stats_error: Optional[str]
    emulated: Optional[str]
    systemd: SystemdView


class LogsAnswer(TypedDict, total=False):
    """``logs --lines N``: the last lines; ``follow`` is the argv that keeps printing them (for ``logs -f``)."""

    source: str  # files | journald
    daemon: list[str]
    supervisor: list[str]
    results: list[str]
    follow: list[str]


class BenchAnswer(TypedDict, total=False):
    """``bench``: the device benchmark's JSON report."""

    report: dict[str, Any]
    variants: list[str]
    emulated: Optional[str]
    command: str


class CollectAnswer(TypedDict, total=False):
    """``collect --label L --count N``: who collects (the running daemon, or a one-shot process) and its first status."""

    mode: str  # daemon | one-shot
    release: str
    label: str
    count: int
    dir: str
    pid: int
    status: dict[str, Any]  # device.collect.Collector.status()


class CollectStatusAnswer(TypedDict, total=False):
    """``collect-status [--cancel]``: the job recorded in run/collect.json and its status now."""

    mode: str
    job: dict[str, Any]
    status: dict[str, Any]  # state (running | done | failed | cancelled), label, count, saved, failed, last_error
    log_tail: list[str]


class FolderListing(TypedDict, total=False):
    """One folder of kept frames (``device.framestore``): its index records whose files are all there."""

    dir: str
    records: list[dict[str, Any]]  # name, files {kind: {path, sha256, bytes, size}}, time, camera, ...
    skipped_lines: int
    missing: int


class DataListAnswer(TypedDict, total=False):
    """``data-list [--uncertain]``: collected frames per label, and the uncertain frames."""

    data_dir: str
    labels: dict[str, FolderListing]
    invalid_folders: list[str]
    uncertain: FolderListing
class TuneAnswer(TypedDict, total=False):
    """``tune``: the sweep's report (``device.tuning.SweepReport.to_json()``) and what it ran on."""

    report: dict[str, Any]
    choice: Optional[dict[str, Any]]  # the device's own pick (the host decides again with its options)
    release: str  # current release: its venv ran the sweep
    release_variant: Optional[str]
    models: dict[str, str]  # variant → sha256 of the models swept
    manifest_sha256: str
    emulated: Optional[str]
    paused: bool  # the daemon was stopped for the sweep and started again
    restart_error: Optional[str]
    command: str


class TuningRecord(TypedDict, total=False):
    """``<remote-dir>/tuning.json``: the configuration ``deploy tune`` chose, which ``push --variant auto`` uses."""

    schema: int
    variant: str
    threads: int
    xnnpack: str  # on | off
    runtime: str
    runtime_version: str
    model_sha256: str  # of the chosen variant: a push of other models does not inherit the choice
    models: dict[str, str]
    measured: dict[str, Any]
    gate_points: float
    budget_ms: Optional[float]
    meets_budget: Optional[bool]
    emulated: Optional[str]
    hardware: str
    reason: str
    release: Optional[str]
    tuned_at: str
    recorded_at: str
    by: str


class TunedAnswer(TypedDict, total=False):
    """``tuned``: the recorded choice (None: never tuned), the current release and the host folder it came from."""

    record: Optional[TuningRecord]
    path: str
    current: Optional[str]
    release_variant: Optional[str]
    artifacts: Optional[str]  # release.json's "artifacts": where on the pushing host the release came from
    manifest_sha256: Optional[str]
    models: dict[str, str]


# ---------------------------------------------------------------- encoding


def is_release_id(value: str) -> bool:
    """True for a release id as ``deploy.layout`` makes them: 12 lowercase hex digits (safe as a path part)."""
    return bool(_RELEASE_ID.fullmatch(value))


def encode_request(argv: list[str]) -> bytes:
    """One request line."""
    return (json.dumps([str(a) for a in argv]) + "\n").encode()


def decode_request(line: str) -> list[str]:
    """The argv of one request line; ValueError when it is not a JSON list."""
    argv = json.loads(line)
    if not isinstance(argv, list):
        raise ValueError(f"expected a JSON list of strings. Got: {type(argv).__name__}")
    return [str(a) for a in argv]


def encode_answer(answer: dict[str, Any]) -> str:
    """One answer line (no newline inside: every value is JSON-encoded)."""
    return json.dumps(answer, default=str)


def error_answer(message: str, kind: str, **data: Any) -> dict[str, Any]:
    """A failure answer."""
    return {"ok": False, "error": message, "kind": kind, **data}


def decode_answer(text: str) -> Optional[dict[str, Any]]:
    """The last line of ``text`` that is a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                out = json.loads(line)
                return out if isinstance(out, dict) else None
            except ValueError:
                return None
    return None
