"""Push a release atomically: upload to staging, verify on the device, switch, restart, check health, roll back.

The whole push holds the device root's lock (``deploy.agent.locking``): a second push or a
``start`` meanwhile fails at once with a line naming this push (or waits, ``--lock-timeout-s``).
Order of events, and what a SIGKILL (or dropped connection, or power cut) at each point leaves:

1. ``prepare``: layout created, stale staging cleared.           ``current`` untouched.
2. upload to ``staging/<id>/`` (tqdm bar), ``release.json`` last.  ``current`` untouched.
3. ``venv``: the venv of the release's requirements hash (built once per hash, kept while a
   release uses it), linked from the release: the release pins its runtime.
4. ``verify`` on the device: sizes + sha256 of every file, then the model loaded by the
   release's own runtime in a child process and run on golden inputs within the measured
   tolerance (``device.golden``); the files are fsynced, then ``staging/<id>`` is renamed to
   ``releases/<id>`` (complete or absent, also after a power cut).
5. ``activate``: ``current`` switched by symlink + rename + fsync.  always a complete release.
6. restart under the supervisor (chosen now, recorded on the device), wait for the daemon of
   *this* release to pass /healthz and classify frames; on failure the previous release is
   switched back and restarted, and the push fails with the first cause, then what the
   rollback did.

A repeated push finds the release already there (uploads nothing), and only does the steps
whose effect is missing (switch, restart), so an interrupted push is finished by the next one.
"""

from __future__ import annotations

import os
import posixpath
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import paramiko
from tqdm import tqdm

from deploy.agent import protocol
from deploy.doctor import probe
from deploy.errors import DeployError, HealthError, RemoteError, VerifyError
from deploy.layout import (
    DEFAULT_VARIANT,
    KEEP_RELEASES,
    KeepUncertain,
    Release,
    ReleaseConfig,
    build_release,
    load_artifacts,
)
from deploy.remote import Device, progress_callback
from deploy.supervisor import control, wait_healthy
from deploy.tune import AUTO, auto_config
from deploy.venv import (
    RuntimeChoice,
    build_wheelhouse,
    choose_runtime,
    ensure_venv,
    push_wheelhouse,
)

FAULT_ENV = "EDGEKIT_DEPLOY_FAULT"
FAULT_POINTS = ("after-prepare", "mid-upload", "after-upload", "after-verify", "after-switch", "after-restart",
                "rollback")


def fault(point: str, device: Optional[Device] = None, staged: Optional[str] = None) -> None:
    """Test hook: ``EDGEKIT_DEPLOY_FAULT=point[=kill|corrupt|drop],...`` at ``point``: kill this process, damage
    the upload, or drop the SSH connection (as a network failure would)."""
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        if name != point:
            continue
        if (action or "kill") == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "corrupt" and device is not None and staged is not None:
            # Flip bytes in the middle of the uploaded model, as a bad transfer or disk would.
            with device.sftp.open(staged, "r+b") as f:
                size = f.stat().st_size
                f.seek(size // 2)
                chunk = f.read(64)
                f.seek(size // 2)
                f.write(bytes(b ^ 0xFF for b in chunk))
        elif action == "drop" and device is not None:
            device.conn.client.get_transport().close()


@dataclass(frozen=True)
class PushOptions:
    """What to push and how to bring it up."""

    artifacts: Path
    variant: str = DEFAULT_VARIANT  # or AUTO: what `deploy tune` recorded on the device (deploy.tune.auto_config)
    runtime: str = "auto"
    supervisor: str = "auto"
    source: str = "auto"
    threads: Optional[int] = None
    xnnpack: Optional[str] = None
    keep: int = KEEP_RELEASES
    health_timeout_s: float = 30.0
    wheelhouse: Optional[Path] = None
    golden_count: int = 20
    progress: bool = True
    position: int = 0
    lock_timeout_s: float = 0.0
    keep_uncertain: Optional[KeepUncertain] = None
    daemon_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushResult:
    """What one push did on one host."""

    host: str
    release: str
    action: str  # deployed | switched | unchanged | restarted
    uploaded_bytes: int
    previous: Optional[str]
    runtime: str
    elapsed_s: float
    steps: tuple[str, ...] = ()
    golden: dict[str, Any] = field(default_factory=dict)
    frames: int = 0
    supervisor: str = ""
    fsync_count: int = 0
    fsync_s: float = 0.0

    @property
    def summary(self) -> str:
        """One line for the result table."""
        if self.action == "unchanged":
            return f"release {self.release} already current and healthy; uploaded nothing"
        what = {"deployed": "deployed", "switched": "switched to", "restarted": "restarted"}[self.action]
        up = f"uploaded {self.uploaded_bytes / 1024:.0f} KiB" if self.uploaded_bytes else "uploaded nothing (already on the device)"
        return f"{what} {self.release} ({self.runtime} under {self.supervisor}; {up}; {self.frames} frames classified)"


def _upload(device: Device, release: Release, staging: str, opts: PushOptions, label: str) -> int:
    dirs = sorted({posixpath.dirname(posixpath.join(staging, f.name)) for f in release.files})
    for d in dirs:
        device.makedirs(d)
    bar = tqdm(total=release.size_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{label} upload",
               position=opts.position, leave=False, disable=None if opts.progress else True)
    sent = 0
    try:
        for i, f in enumerate(release.files):
            remote = posixpath.join(staging, f.name)
            if f.local is not None:
                device.put(f.local, remote, callback=progress_callback(bar.update))
            else:
                device.put_bytes(f.data or b"", remote)
                bar.update(f.size_bytes)
            sent += f.size_bytes
            if i == 0:
                fault("mid-upload")
        # release.json last: without it the agent treats the staging dir as incomplete.
        device.put_bytes(release.meta_bytes(), posixpath.join(staging, "release.json"))
    finally:
        bar.close()
    return sent


def golden_summary(g: dict[str, Any]) -> str:
    """The golden check's two figures and their limits, as the device reported them."""
    unit = " levels" if g.get("raw_unit") == "levels" else ""
    return (f"golden top-1 {g.get('top1_agree')}/{g.get('count')} (≥ {g.get('top1_required')} required), largest raw "
            f"difference {float(g.get('max_raw_diff') or 0):.3g}{unit} (≤ {float(g.get('max_raw_allowed') or 0):g} allowed) "
            f"on {g.get('runtime')} {g.get('runtime_version')}")


def push(device: Device, opts: PushOptions, log: Callable[[str], None] = lambda s: None) -> PushResult:
    """Push ``opts.variant`` of ``opts.artifacts`` to one device; see the module docstring."""
    t0 = time.monotonic()
    fsyncs, fsync_s = device.fsync_count, device.fsync_s
    steps: list[str] = []
    facts = probe(device, cached=True)
    choice = choose_runtime(facts, opts.runtime)
    source = opts.source
    if source == "auto":
        camera = bool(facts.get("camera_models"))  # cameras libcamera sees, through picamera2
        source = "picamera2" if camera else "synthetic"
        steps.append(f"source: {source} ({'camera and picamera2 found' if camera else 'no camera with picamera2 on this device'})")
    variant, threads, xnnpack = opts.variant, opts.threads, opts.xnnpack
    if variant == AUTO:
        auto = auto_config(device, load_artifacts(opts.artifacts), choice.name, threads, xnnpack)
        variant, threads, xnnpack = auto.variant, auto.threads, auto.xnnpack
        steps.append(auto.note)
        log(f"{device.target.label}: {auto.note}")
    config = ReleaseConfig(variant=variant, port=device.target.daemon_port, source=source,
                           runtime=choice.name, threads=threads, xnnpack=xnnpack,
                           extra_args=opts.daemon_args, keep_uncertain=opts.keep_uncertain)
    release = build_release(opts.artifacts, config, choice.requirements_text)
    with device.locked(f"push of release {release.id}", opts.lock_timeout_s):
        result = _push_locked(device, opts, release, choice, facts, steps, log)
    return replace(result, elapsed_s=time.monotonic() - t0, fsync_count=device.fsync_count - fsyncs,
                   fsync_s=device.fsync_s - fsync_s)


def _push_locked(device: Device, opts: PushOptions, release: Release, choice: RuntimeChoice, facts: dict[str, Any],
                 steps: list[str], log: Callable[[str], None]) -> PushResult:
    label = device.target.label
    runtime = choice.name
    prep = device.agent(protocol.PREPARE, "--dir", device.root, "--id", release.id, "--supervisor", opts.supervisor)
    previous = prep.get("current")
    fault("after-prepare")
    uploaded = 0
    if prep["exists"]:
        steps.append(f"release {release.id} already on the device: uploaded nothing")
        log(f"{label}: release {release.id} already on the device: uploading nothing")
    else:
        staging = str(prep["staging"])
        uploaded = _upload(device, release, staging, opts, label)
        steps.append(f"uploaded {len(release.files)} files, {uploaded} bytes")
        model_name = next(f.name for f in release.files if f.name.endswith(".tflite"))
        fault("after-upload", device, posixpath.join(staging, model_name))
    if opts.wheelhouse is not None:
        wheels = build_wheelhouse(str(facts["machine"]), str(facts["python"]), choice.requirements, opts.wheelhouse,
                                  glibc=str(facts.get("libc") or "") or None)
        sent = push_wheelhouse(device, wheels, opts.progress, opts.position)
        steps.append(f"wheelhouse: {len(wheels)} wheels, {sent} bytes sent")
    venv = ensure_venv(device, release.id, wheelhouse=opts.wheelhouse is not None)
    steps.extend(venv.get("steps", []))
    golden: dict[str, Any] = {}
    if not prep["exists"]:
        # Loading the runtime under emulation or on a Pi Zero is slow: allow as long as the health check.
        verify_s = max(120.0, 2 * opts.health_timeout_s)
        ver = device.agent(protocol.VERIFY, "--dir", device.root, "--id", release.id, "--count", str(opts.golden_count),
                           "--timeout-s", str(verify_s), timeout_s=verify_s + 60, error_cls=VerifyError)
        golden = dict(ver.get("golden") or {})
        steps.append(f"verified on the device: sha256 of {len(release.files)} files; {golden_summary(golden)}")
        fault("after-verify")
    st = device.agent(protocol.STATUS, "--dir", device.root)
    if previous == release.id and st.get("running") and st.get("release") == release.id:
        try:
            health = wait_healthy(device, release.id, min(opts.health_timeout_s, 10.0))
            return PushResult(label, release.id, "unchanged", uploaded, previous, runtime, 0.0, tuple(steps), golden,
                              int(health.get("frames", 0)), str(st.get("supervisor", "")))
        except HealthError:
            steps.append("current release was not healthy; restarting it")
    action = "deployed" if not prep["exists"] else ("switched" if previous != release.id else "restarted")
    if previous != release.id:
        device.agent(protocol.ACTIVATE, "--dir", device.root, "--id", release.id, "--keep", str(opts.keep))
        steps.append(f"current: {previous} -> {release.id}")
        fault("after-switch")
    try:
        ctl = control(device, "restart", opts.supervisor, release=release.id, push=True,
                      start_timeout_s=opts.health_timeout_s)
        steps.extend(ctl.get("steps") or [])
        rec = ctl.get("record") or {}
        if rec:
            steps.append(f"supervisor: {rec.get('supervisor')} ({rec.get('reason')}), recorded on the device")
        fault("after-restart")
        health = wait_healthy(device, release.id, opts.health_timeout_s)
    except RemoteError as e:
        raise _rolled_back(device, opts, release.id, previous, e) from None
    return PushResult(label, release.id, action, uploaded, previous, runtime, 0.0, tuple(steps), golden,
                      int(health.get("frames", 0)), str(ctl.get("supervisor", "")))


def _rolled_back(device: Device, opts: PushOptions, failed: str, previous: Optional[str], cause: RemoteError) -> HealthError:
    """Roll back after ``cause``; the error says the first cause, then what the rollback did (or where it stopped)."""
    reason = str(cause)
    tail = cause.answer.get("log_tail") or []
    done = "nothing"
    try:
        fault("rollback", device)
        fallback = previous if previous != failed else None
        if fallback is None:  # already current (an interrupted push): fall back to the one before it
            fallback = device.agent(protocol.ROLLBACK_TARGET, "--dir", device.root, check=False).get("target")
        if fallback:
            device.agent(protocol.ACTIVATE, "--dir", device.root, "--id", str(fallback), "--keep", "0")
            done = f"switched current back to {fallback}"
            control(device, "restart", "auto", release=str(fallback), start_timeout_s=max(opts.health_timeout_s, 30.0))
            done = f"switched current back to {fallback} and restarted it"
            # The previous release was healthy before: give it at least the default time to come back.
            wait_healthy(device, str(fallback), max(opts.health_timeout_s, 30.0))
            restored = f"rolled back to {fallback}, which is running again"
        else:
            control(device, "stop")
            restored = "no earlier release to roll back to; the daemon is stopped"
    except (DeployError, paramiko.SSHException, OSError, EOFError) as e2:
        restored = (f"it did not finish ({done} done): {e2}. Run `python -m deploy rollback` (or push again) "
                    "once the device answers")
    log_hint = (" Daemon log: " + " | ".join(str(x) for x in tail[-5:])) if tail else ""
    return HealthError(f"release {failed} failed after the switch: {reason}. Rollback: {restored}.{log_hint}", cause.answer)
