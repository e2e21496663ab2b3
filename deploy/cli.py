"""``python -m deploy`` / ``edgekit-deploy``: doctor, push, start, stop, restart, status, logs, bench, tune, releases, rollback,
dashboard, collect, pull-data.

Every command takes one or more targets (``--host`` repeated, or ``--inventory FILE``), runs on
all of them in parallel (one SSH connection per host, in threads), prints one result row per
host (or JSON with ``--json``) and exits non-zero if any host failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import paramiko

from deploy.agent.protocol import SUPERVISORS
from deploy.errors import DeployError
from deploy.layout import DEFAULT_VARIANT, KEEP_RELEASES
from deploy.targets import (
    DEFAULT_DAEMON_PORT,
    DEFAULT_PYTHON,
    DEFAULT_REMOTE_DIR,
    Target,
    resolve_targets,
)
from deploy.trust import DEFAULT_KNOWN_HOSTS
from deploy.venv import RUNTIME_CHOICES
from device import tuning
from device.manifest import VARIANTS
from device.runtime import XNNPACK_SETTINGS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("doctor", "push", "start", "stop", "restart", "status", "logs", "bench", "tune", "releases", "rollback", "dashboard",
            "collect", "pull-data")
LOCK_HELP = ("another push or control command holding the device's lock makes this one fail at once; "
             "wait up to this long for it instead")


@dataclass(frozen=True)
class HostResult:
    """The outcome of one command on one host."""

    host: str
    ok: bool
    summary: str
    data: Any = None
    error_type: Optional[str] = None
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = self.data.to_json() if hasattr(self.data, "to_json") else self.data
        if d is not None and not isinstance(d, (dict, list, str, int, float, bool)):
            d = {k: getattr(d, k) for k in getattr(d, "__dataclass_fields__", {})}
        return {"host": self.host, "ok": self.ok, "summary": self.summary, "error_type": self.error_type,
                "elapsed_s": round(self.elapsed_s, 3), "result": d}


COLLECT_DESCRIPTION = """

Put one object (one class) in front of the camera and run this once per label. The
running daemon collects the frames from its own pipeline and keeps classifying (the camera
opens in one process at a time); when no daemon runs, a one-shot `python -m device collect`
of the current release opens the camera. Each frame is saved on the device under
<remote-dir>/data/<label>/ as two PNGs, the camera frame (main stream, area-downscaled to
--view-px on its long side, true colour: what a new model is trained on) and what the
current model sees (its size and colour), with one JSON line per frame in frames.jsonl:
time, sha256, source, camera controls. The device's lock is held meanwhile (a push or
start fails at once); a progress bar shows the count, and Ctrl-C cancels the job on the
device too. Vary what the model should not learn between frames: position, distance,
light, background."""

PULL_DESCRIPTION = """

Only frames not yet in DIR are copied: run it again after collecting more. Each picture is
copied into a hidden .part file while its sha256 is computed and renamed to its own name
only when hash and size match the device's record, so an interrupted pull leaves no half
file (the next pull removes the .part files); the frame's record (time, camera controls,
source) is appended to DIR/<label>/frames.jsonl. --view frame (the default) copies the
camera frame, which any new model can be trained on; --view model copies what the current
model saw. One DIR holds one view. Nothing on the device is deleted."""

LOOP_EPILOG = """\
the loop (collect on the Pi, train on the host, push back):
  python -m deploy collect   --host pi@raspberrypi.local --label cup --count 50
  python -m deploy collect   --host pi@raspberrypi.local --label pen --count 50
  python -m deploy pull-data --host pi@raspberrypi.local --to photos/
  python -m host run --data folder:photos --out mine
  python -m deploy push      --host pi@raspberrypi.local --artifacts mine/ --keep-uncertain
  python -m deploy pull-data --host pi@raspberrypi.local --uncertain-to unsure/   # later"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("targets")
    g.add_argument("--host", action="append", default=[], metavar="[USER@]HOST[:PORT]",
                   help="a device to act on (repeatable); user defaults to yours, port to 22")
    g.add_argument("--inventory", type=Path, metavar="FILE", help="TOML file naming hosts with user, port, identity, remote_dir")
    g.add_argument("--identity", type=Path, metavar="FILE", help="private key for SSH; without it your own keys and agent are tried")
    g.add_argument("--known-hosts", type=Path, default=DEFAULT_KNOWN_HOSTS, metavar="FILE",
                   help="known-hosts file that pins host keys; unknown or changed keys are refused")
    g.add_argument("--trust-new", action="store_true",
                   help="record the key of a host not yet in --known-hosts (check its fingerprint first); changed keys are still refused")
    g.add_argument("--remote-dir", default=None, metavar="DIR", help=f"kit directory on the device; if unset: inventory value, else {DEFAULT_REMOTE_DIR}")
    g.add_argument("--python", default=None, metavar="PATH", help=f"the device's Python, the venv is made from it; if unset: inventory value, else {DEFAULT_PYTHON}")
    g.add_argument("--daemon-port", type=int, default=None, metavar="PORT",
                   help=f"the daemon's HTTP port on the device's loopback; if unset: inventory value, else {DEFAULT_DAEMON_PORT}")
    g.add_argument("--connect-timeout-s", type=float, default=10.0, metavar="S", help="SSH connect timeout")
    p.add_argument("--json", action="store_true", help="print JSON (one object per host in a list) instead of tables")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for every command."""
    ap = argparse.ArgumentParser(prog="python -m deploy", description=__doc__, formatter_class=_Formatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter)
        _common(p)
        return p

    p = cmd("doctor", "report the device's arch, OS, Python, systemd, camera, free disk and the TFLite runtime it gets")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES, help="force a runtime")

    p = cmd("push", "upload a model release, verify it on the device, switch to it atomically, restart, check health, roll back on failure")
    p.add_argument("--artifacts", type=Path, required=True, metavar="DIR", help="the host pipeline's output (manifest.json, .tflite, golden.npz)")
    p.add_argument("--variant", default=DEFAULT_VARIANT, choices=[*VARIANTS, "auto"],
                   help="which model variant to run; auto: the variant, threads and XNNPACK setting `tune` recorded on the "
                        f"device for these models and runtime (a device never tuned gets {DEFAULT_VARIANT}, and a line saying so)")
    p.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                   help="TFLite runtime on the device (auto: as `doctor` decides)")
    p.add_argument("--supervisor", default="auto", choices=SUPERVISORS,
                   help="auto: keep the supervisor recorded on the device, else systemd where it runs and you may install "
                        "units, else a detached supervisor process; systemd/process: use it and record it")
    p.add_argument("--source", default="auto",
                   help="daemon frame source: picamera2, synthetic, folder:DIR, or auto (picamera2 when doctor finds a camera and picamera2, else synthetic)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads on the device (with --variant auto: overrides the tuned count)")
    p.add_argument("--xnnpack", default=None, choices=XNNPACK_SETTINGS,
                   help="XNNPACK on (the runtime's default delegate) or off (builtin kernels only); unset: on, or the tuned setting with --variant auto")
    p.add_argument("--keep", type=int, default=KEEP_RELEASES, help="releases kept on the device (current and previous always kept)")
    p.add_argument("--health-timeout-s", type=float, default=30.0, help="how long the new daemon has to pass /healthz and classify frames")
    p.add_argument("--wheelhouse", type=Path, default=None, metavar="DIR",
                   help="download wheels for the device's platform into DIR on this host and install offline from them")
    p.add_argument("--golden-count", type=int, default=20, help="golden inputs run on the device before the switch")
    p.add_argument("--no-progress", action="store_true", help="no upload progress bars")
    p.add_argument("--lock-timeout-s", type=float, default=0.0, metavar="S", help=LOCK_HELP)
    p.add_argument("--keep-uncertain", action="store_true",
                   help="the daemon keeps the frames it is unsure of (top-1 minus top-2 score below --margin) in the device's "
                        "uncertain/ folder, at most one every 10 s, up to 2000 files and 200 MiB; `pull-data --uncertain-to` "
                        "copies them")
    p.add_argument("--margin", type=float, default=0.2, help="with --keep-uncertain: the top-1 minus top-2 score below which a frame is kept")
    p.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for `python -m device run` on the device (repeatable), e.g. "
                        "--daemon-arg=--uncertain-every-s=2 or --daemon-arg=--lores=224x168")

    for name, help_ in (("start", "start the daemon of the current release"), ("stop", "stop the daemon"),
                        ("restart", "restart the daemon of the current release")):
        p = cmd(name, help_)
        p.add_argument("--supervisor", default="auto", choices=SUPERVISORS,
                       help="auto: the one the last push recorded on the device (another value is refused)")
        p.add_argument("--health-timeout-s", type=float, default=30.0, help="wait this long for health after start/restart")
        p.add_argument("--lock-timeout-s", type=float, default=0.0, metavar="S", help=LOCK_HELP)

    p = cmd("status", "show per host the release, runtime, fps and per-stage latency p50/p90/p99 from the daemon's /stats")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval-s", type=float, default=2.0, help="refresh interval for --watch")
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after this many refreshes (0: forever)")

    p = cmd("logs", "tail the daemon's log (journald under systemd), the supervisor's and the results file")
    p.add_argument("-n", "--lines", type=int, default=20, help="lines of each")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (prefixed by host) until Ctrl-C")

    p = cmd("bench", "run `python -m device bench --json` on the device, save the JSON here, compare variants and hosts")
    p.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="upload all variants from DIR and benchmark them (if unset: the current release's variant)")
    p.add_argument("--variant", default="all",
                   help="variant to benchmark, or all: every variant on the device (the current release holds one; --artifacts uploads all)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR", help="where to save <host>-<time>.json")
    p.add_argument("--runs", type=int, default=None, help="timed runs (passed to the device benchmark)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs (passed to the device benchmark)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="give up on the benchmark after this long")

    p = cmd("tune", "run every variant at 1, 2 and 4 threads with XNNPACK on and off on the device with the golden set; "
                    "record the fastest within the accuracy gate for `push --variant auto`")
    p.description = (p.description or "") + (
        ". Per configuration: p50/p99 of invoke and of the daemon's whole pipeline, CPU time per frame, golden accuracy "
        "and top-1 agreement with float32, and the XNNPACK nodes and worker threads the interpreter really used. The "
        "variants are uploaded beside the current release (bench/<hash>/, once per content) and run with its runtime; "
        "the choice is written to <remote-dir>/tuning.json. Exit 1 when nothing passes the gate, the budget is not met, "
        "or the timings are emulated and --allow-emulated is not given.")
    p.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                   help="the host pipeline's output whose variants to compare (if unset: the folder the current release was "
                        "pushed from, when it is on this host unchanged; else only the release's own variant)")
    p.add_argument("--variant", action="append", default=[], choices=VARIANTS, metavar="VARIANT",
                   help="a variant to include (repeatable; if unset: every variant); float32 is the accuracy reference "
                        "(without it, the host's float32 outputs in the golden set are)")
    p.add_argument("--budget-ms", type=float, default=None, metavar="B",
                   help="per-frame budget for the p99 of the whole pipeline: only configurations within it compete; "
                        "when none is, the fastest is chosen anyway and the exit is 1")
    p.add_argument("--allow-emulated", action="store_true",
                   help="choose and record from EMULATED timings (otherwise they are measured and printed only)")
    p.add_argument("--threads", type=_listed(tuning.parse_threads), default=",".join(map(str, tuning.DEFAULT_THREADS)), metavar="N,N,...",
                   help="interpreter thread counts to try")
    p.add_argument("--xnnpack", type=_listed(tuning.parse_xnnpack), default=",".join(XNNPACK_SETTINGS), metavar="on,off",
                   help="XNNPACK settings to try (off only where the runtime can build an interpreter without it)")
    p.add_argument("--frames", type=int, default=300, help="timed frames per configuration (synthetic lores frames)")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames per configuration first")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the timed frames are split into")
    p.add_argument("--golden-count", type=int, default=None, help="golden images for accuracy (if unset: all of them)")
    p.add_argument("--gate-points", type=float, default=tuning.GATE_POINTS,
                   help="pass when golden accuracy is at most this many points below float32's")
    p.add_argument("--tie-pct", type=float, default=tuning.TIE_PCT,
                   help="configurations within this %% of the fastest p50 are tied; the least CPU per frame wins (0: fastest only)")
    p.add_argument("--no-record", action="store_true", help="measure and print, record nothing on the device")
    p.add_argument("--keep-daemon-running", action="store_true",
                   help="do not pause the daemon during the sweep (its frames then compete for the CPU being measured)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="give up on the sweep after this long")
    p.add_argument("--health-timeout-s", type=float, default=30.0, help="how long the restarted daemon has to be healthy")
    p.add_argument("--lock-timeout-s", type=float, default=0.0, metavar="S", help=LOCK_HELP)

    cmd("releases", "list the releases on the device and which one is current")

    p = cmd("rollback", "switch back to the previous release (or --to ID), restart and check health")
    p.add_argument("--to", default=None, metavar="ID", help="release id to switch to (default: the one before current)")
    p.add_argument("--supervisor", default="auto", choices=SUPERVISORS,
                   help="auto: the one the last push recorded on the device (another value is refused)")
    p.add_argument("--health-timeout-s", type=float, default=30.0, help="wait this long for health")
    p.add_argument("--lock-timeout-s", type=float, default=0.0, metavar="S", help=LOCK_HELP)

    from deploy.dashboard import add_arguments as dashboard_arguments

    dashboard_arguments(cmd("dashboard", "serve one live page on 127.0.0.1 for every device, through SSH port forwards, until Ctrl-C"))

    p = cmd("collect", "capture N frames of one label on the device, through the same camera configuration its daemon uses")
    p.description = (p.description or "") + COLLECT_DESCRIPTION
    p.epilog = LOOP_EPILOG
    p.add_argument("--label", required=True, help="the class of what is in front of the camera (a valid file name on the Pi)")
    p.add_argument("--count", type=int, required=True, metavar="N", help="frames to collect")
    p.add_argument("--interval-s", type=float, default=0.5, metavar="S", help="seconds between collected frames")
    p.add_argument("--view-px", type=int, default=320, metavar="N", help="long side of the frame picture (area-downscaled)")
    p.add_argument("--lock-timeout-s", type=float, default=0.0, metavar="S", help=LOCK_HELP)

    p = cmd("pull-data", "copy new collected frames into DIR/<label>/ (sha256-verified), ready for `host run --data folder:DIR`")
    p.description = (p.description or "") + PULL_DESCRIPTION
    p.epilog = LOOP_EPILOG
    p.add_argument("--to", type=Path, default=None, metavar="DIR",
                   help="local folder: one subfolder per label (this, --uncertain-to, or both)")
    p.add_argument("--view", default="frame", choices=["frame", "model"],
                   help="which picture of each frame: the camera frame (to train any new model on) or what the current model saw")
    p.add_argument("--label", action="append", default=[], metavar="NAME", help="only this label (repeatable; default: all)")
    p.add_argument("--uncertain-to", type=Path, default=None, metavar="UDIR",
                   help="also copy the frames the daemon kept as uncertain (push --keep-uncertain) into UDIR, to label by hand")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def _listed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ValueError (a usage error naming what was wrong)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _targets(args: argparse.Namespace) -> list[Target]:
    return resolve_targets(args.host, args.inventory, identity=args.identity, remote_dir=args.remote_dir,
                           python=args.python, daemon_port=args.daemon_port)


def _on_host(target: Target, args: argparse.Namespace, fn: Callable[[Any], HostResult]) -> HostResult:
    from deploy.connect import ConnectOptions, connect
    from deploy.remote import Device

    t0 = time.monotonic()
    device = None
    try:
        conn = connect(target, ConnectOptions(args.known_hosts, args.trust_new, args.connect_timeout_s))
        device = Device(conn, target)
        res = fn(device)
        return HostResult(res.host, res.ok, res.summary, res.data, res.error_type, time.monotonic() - t0)
    except DeployError as e:
        return HostResult(target.label, False, str(e), getattr(e, "answer", None) or None, type(e).__name__, time.monotonic() - t0)
    except (OSError, EOFError, paramiko.SSHException) as e:
        return HostResult(target.label, False, f"lost the connection to {target.address}: {type(e).__name__}: {e}. "
                          "Run the command again: an interrupted push is finished by the next one",
                          None, "ConnectionLost", time.monotonic() - t0)
    except Exception as e:  # one host's surprise must not hide the others' results
        return HostResult(target.label, False, f"unexpected {type(e).__name__}: {e}", None, type(e).__name__, time.monotonic() - t0)
    finally:
        if device is not None:
            device.close()


def _bind(fn: Callable[[Any, int], HostResult], i: int) -> Callable[[Any], HostResult]:
    return lambda d: fn(d, i)


def run_on_all(targets: Sequence[Target], args: argparse.Namespace, fn: Callable[[Any, int], HostResult]) -> list[HostResult]:
    """Run ``fn(device, index)`` on every target in parallel; results in target order."""
    if len(targets) == 1:
        return [_on_host(targets[0], args, lambda d: fn(d, 0))]
    with ThreadPoolExecutor(max_workers=min(16, len(targets)), thread_name_prefix="deploy") as pool:
        futures = [pool.submit(_on_host, t, args, _bind(fn, i)) for i, t in enumerate(targets)]
        return [f.result() for f in futures]


def _print_rows(results: list[HostResult], extra: str = "") -> None:
    from deploy.status import table

    if extra:
        print(extra)
    print(table(["host", "result", "detail"], [[r.host, "ok" if r.ok else "FAILED", r.summary] for r in results]))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        targets = _targets(args)
        return _dispatch(args, targets)
    except DeployError as e:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "error": str(e), "error_type": type(e).__name__}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _finish(args: argparse.Namespace, results: list[HostResult], human: Optional[Callable[[], None]] = None) -> int:
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1, default=str))
    else:
        if human is not None:
            human()
        _print_rows(results)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _dispatch(args: argparse.Namespace, targets: list[Target]) -> int:
    c = args.command
    if c == "doctor":
        return _doctor(args, targets)
    if c == "push":
        return _push(args, targets)
    if c in ("start", "stop", "restart"):
        return _control(args, targets)
    if c == "status":
        return _status(args, targets)
    if c == "logs":
        return _logs(args, targets)
    if c == "bench":
        return _bench(args, targets)
    if c == "tune":
        return _tune(args, targets)
    if c == "releases":
        return _releases(args, targets)
    if c == "rollback":
        return _rollback(args, targets)
    if c == "dashboard":
        from deploy.dashboard import run_dashboard

        return run_dashboard(args, targets)
    if c == "collect":
        return _collect(args, targets)
    if c == "pull-data":
        return _pull_data(args, targets)
    raise DeployError(f"unknown command {c}")  # argparse prevents this


def _doctor(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.doctor import doctor

    def fn(device: Any, i: int) -> HostResult:
        r = doctor(device, args.runtime)
        summary = (f"{r.machine} · {r.os} · Python {r.python} · systemd {'yes' if r.systemd else 'no'} · camera {r.camera} · "
                   f"{_gib(r.free_bytes)} free · runtime {r.runtime or '-'}" + (f" ({r.runtime_reason})" if r.runtime else "")
                   + (f" · supervisor {r.supervisor} ({r.supervisor_reason})" if r.supervisor else ""))
        if r.problems:
            summary = "; ".join(r.problems) + " | " + summary
        if r.warnings:
            summary += " | warning: " + "; ".join(r.warnings)
        if r.emulated:
            summary = f"EMULATED ({r.emulated}): its timings are not Pi latency | " + summary
        return HostResult(r.host, r.ok, summary, r)

    return _finish(args, run_on_all(targets, args, fn))


def _push(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.layout import KeepUncertain, artifact_variant, load_artifacts
    from deploy.push import PushOptions, push

    manifest = load_artifacts(args.artifacts)  # fail once, before connecting, on a bad folder
    if args.variant != "auto":
        artifact_variant(manifest, args.variant)
    opts = PushOptions(artifacts=args.artifacts, variant=args.variant, runtime=args.runtime, supervisor=args.supervisor,
                       source=args.source, threads=args.threads, xnnpack=args.xnnpack, keep=args.keep,
                       health_timeout_s=args.health_timeout_s,
                       wheelhouse=args.wheelhouse, golden_count=args.golden_count, progress=not args.no_progress,
                       lock_timeout_s=args.lock_timeout_s,
                       keep_uncertain=KeepUncertain(args.margin) if args.keep_uncertain else None,
                       daemon_args=tuple(args.daemon_arg))

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    def fn(device: Any, i: int) -> HostResult:
        from dataclasses import replace

        r = push(device, replace(opts, position=i), log)
        return HostResult(r.host, True, r.summary, r)

    return _finish(args, run_on_all(targets, args, fn))


def _control(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.supervisor import control, wait_healthy

    def fn(device: Any, i: int) -> HostResult:
        with device.locked(args.command, args.lock_timeout_s):
            out = control(device, args.command, args.supervisor, start_timeout_s=getattr(args, "health_timeout_s", 0.0))
            sup = out.get("supervisor")
            if args.command == "stop":
                unit = f" {out['unit']} stopped and disabled" if out.get("unit") and out.get("was_running") else ""
                summary = f"stopped ({sup}{unit})" if out.get("was_running") else f"was not running ({sup})"
                return HostResult(device.target.label, True, summary, out)
            if args.command == "start" and out.get("already_running"):
                return HostResult(device.target.label, True, f"already running ({sup})", out)
            h = wait_healthy(device, str(out["release"]), args.health_timeout_s)
        return HostResult(device.target.label, True, f"{args.command}ed release {h.get('release')} ({sup}); "
                          f"healthy, {h.get('frames')} frames classified", out)

    return _finish(args, run_on_all(targets, args, fn))


def _status(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.status import format_status, status

    def fn(device: Any, i: int) -> HostResult:
        row = status(device)
        ok = row.running and row.error is None
        summary = "running" if ok else (row.error or "not running")
        if row.emulated:
            summary += f" (EMULATED {row.emulated}: not Pi latency)"
        return HostResult(row.host, ok, summary, row)

    def once() -> list[HostResult]:
        return run_on_all(targets, args, fn)

    def render(results: list[HostResult]) -> str:
        rows = [r.data for r in results if r.data is not None]
        failed = [r for r in results if r.data is None]
        text = format_status(rows) if rows else ""
        for r in failed:
            text += f"\n{r.host}: FAILED: {r.summary}"
        return text

    if not args.watch:
        single = once()
        if args.json:
            print(json.dumps([r.to_json() for r in single], indent=1, default=str))
        else:
            print(render(single))
        return EXIT_OK if all(r.ok for r in single) else EXIT_FAILED
    # --watch keeps one connection per host open between refreshes (reconnecting a host that dropped).
    from deploy.connect import ConnectOptions, connect
    from deploy.remote import Device

    devices: dict[int, Any] = {}

    def watch_one(i: int) -> HostResult:
        t = targets[i]
        try:
            if i not in devices:
                devices[i] = Device(connect(t, ConnectOptions(args.known_hosts, args.trust_new, args.connect_timeout_s)), t)
            return fn(devices[i], i)
        except (DeployError, OSError, EOFError, paramiko.SSHException) as e:  # as _on_host: a dropped host, not a traceback
            dev = devices.pop(i, None)
            if dev is not None:
                dev.close()
            return HostResult(t.label, False, str(e), None, type(e).__name__)

    n = 0
    results: list[HostResult] = []
    try:
        with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
            while True:
                results = list(pool.map(watch_one, range(len(targets))))
                n += 1
                if args.json:
                    print(json.dumps([r.to_json() for r in results], default=str), flush=True)
                else:
                    # Home the cursor and clear the screen, then redraw: refresh in place.
                    sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S ") + f"every {args.interval_s:g} s, Ctrl-C to stop\n"
                                     + render(results) + "\n")
                    sys.stdout.flush()
                if args.count and n >= args.count:
                    break
                time.sleep(args.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        for dev in devices.values():
            dev.close()
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_FAILED


class _Prefixed:
    """A stream that writes complete lines prefixed with a host label (threads share stdout)."""

    _lock = threading.Lock()

    def __init__(self, label: str):
        self.label = label
        self.buf = ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        with self._lock:
            for line in lines:
                sys.stdout.write(f"{self.label} | {line}\n")
            sys.stdout.flush()
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _follow(args: argparse.Namespace, targets: list[Target]) -> int:
    import shlex

    from deploy.releases import logs

    def one(device: Any, i: int) -> HostResult:
        # The agent names the command that follows the recorded supervisor's logs (tail -F, or journalctl -f).
        follow = logs(device, args.lines)["follow"]
        device.conn.run(" ".join(shlex.quote(str(a)) for a in follow), hide=False, warn=True, in_stream=False,
                        out_stream=_Prefixed(device.target.label), err_stream=_Prefixed(device.target.label))
        return HostResult(device.target.label, True, "stream ended")

    results: list[HostResult] = []
    threads = [threading.Thread(target=lambda t=t, i=i: results.append(_on_host(t, args, lambda d: one(d, i))), daemon=True)
               for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    except KeyboardInterrupt:
        return EXIT_OK
    for r in results:
        if not r.ok:
            print(f"{r.host}: FAILED: {r.summary}", file=sys.stderr)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _logs(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.releases import logs

    if args.follow:
        return _follow(args, targets)

    def fn(device: Any, i: int) -> HostResult:
        out = logs(device, args.lines)
        return HostResult(device.target.label, True, f"{len(out['daemon'])} daemon ({out.get('source')}), "
                          f"{len(out['results'])} result lines", out)

    results = run_on_all(targets, args, fn)

    def human() -> None:
        for r in results:
            if not r.ok:
                continue
            journald = r.data.get("source") == "journald"
            titles = {"supervisor": "systemd's view" if journald else "supervisor",
                      "daemon": "daemon (journald)" if journald else "daemon", "results": "results"}
            for part in ("supervisor", "daemon", "results"):
                print(f"==> {r.host}: {titles[part]} (last {args.lines} lines) <==")
                for line in r.data.get(part, []):
                    print(line)
            print()

    return _finish(args, results, human)


def _bench(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.bench import format_bench, run_bench

    extra: list[str] = []
    if args.runs is not None:
        extra += ["--runs", str(args.runs)]
    if args.warmup is not None:
        extra += ["--warmup", str(args.warmup)]
    if args.artifacts is not None:
        from deploy.layout import load_artifacts

        load_artifacts(args.artifacts)

    def fn(device: Any, i: int) -> HostResult:
        r = run_bench(device, args.artifacts, args.variant, args.out, tuple(extra), args.timeout_s)
        note = f"; EMULATED ({r.emulated}): not Pi latency" if r.emulated else ""
        return HostResult(r.host, True, f"saved {r.saved}{note}", r)

    results = run_on_all(targets, args, fn)

    def human() -> None:
        ok = [r.data for r in results if r.ok]
        if ok:
            print(format_bench(ok))
            print()

    if args.json:
        print(json.dumps([{"host": r.host, "ok": r.ok, "summary": r.summary, "error_type": r.error_type,
                           "emulated": r.data.emulated if r.ok else None,
                           "saved": str(r.data.saved) if r.ok else None,
                           "report": r.data.report if r.ok else None} for r in results], indent=1, default=str))
        return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED
    return _finish(args, results, human)


def _tune(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.layout import load_artifacts
    from deploy.tune import TuneOptions, tune

    if args.artifacts is not None:
        load_artifacts(args.artifacts)  # a bad folder fails once, before connecting
    for flag, value, least in (("--frames", args.frames, 1), ("--rounds", args.rounds, 1), ("--warmup", args.warmup, 0),
                               ("--golden-count", args.golden_count, 1)):
        if value is not None and value < least:
            raise DeployError(f"{flag} must be at least {least}. Got: {value}")
    opts = TuneOptions(artifacts=args.artifacts, variants=tuple(dict.fromkeys(args.variant)), budget_ms=args.budget_ms, allow_emulated=args.allow_emulated,
                       threads=args.threads, xnnpack=args.xnnpack, frames=args.frames, warmup=args.warmup, rounds=args.rounds,
                       golden_count=args.golden_count, gate_points=args.gate_points, tie_pct=args.tie_pct,
                       record=not args.no_record, pause_daemon=not args.keep_daemon_running, timeout_s=args.timeout_s,
                       lock_timeout_s=args.lock_timeout_s, health_timeout_s=args.health_timeout_s)

    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    def fn(device: Any, i: int) -> HostResult:
        r = tune(device, opts, log)
        return HostResult(r.host, r.ok, r.summary, r)

    results = run_on_all(targets, args, fn)

    def human() -> None:
        for r in results:
            if r.data is not None and hasattr(r.data, "format"):
                print(r.data.format())
                print()

    return _finish(args, results, human)


def _releases(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.releases import list_releases
    from deploy.status import table

    def fn(device: Any, i: int) -> HostResult:
        out = list_releases(device)
        return HostResult(device.target.label, True, f"{len(out['releases'])} releases, current {out.get('current')}", out)

    results = run_on_all(targets, args, fn)

    def human() -> None:
        body = []
        for r in results:
            if r.ok:
                for rel in r.data["releases"]:
                    body.append([r.host, ("* " if rel["current"] else "  ") + rel["id"], str(rel.get("variant")),
                                 str(rel.get("created")), str(rel.get("source"))])
        if body:
            print(table(["host", "release", "variant", "created", "pushed by"], body))
            print()

    return _finish(args, results, human)


def _rollback(args: argparse.Namespace, targets: list[Target]) -> int:
    from deploy.releases import rollback

    def fn(device: Any, i: int) -> HostResult:
        out = rollback(device, args.to, args.supervisor, args.health_timeout_s, args.lock_timeout_s)
        return HostResult(device.target.label, True, f"rolled back {out['from']} -> {out['to']}; healthy, "
                          f"{out.get('frames')} frames classified", out)

    return _finish(args, run_on_all(targets, args, fn))


def _collect(args: argparse.Namespace, targets: list[Target]) -> int:
    from tqdm import tqdm

    from deploy.collect import collect
    from device.collect import CollectRequest

    try:
        CollectRequest(args.label, args.count, args.interval_s, args.view_px)  # the device's own checks, before connecting
    except ValueError as e:
        raise DeployError(f"{e}") from None

    def fn(device: Any, i: int) -> HostResult:
        bar = tqdm(total=args.count, unit="frame", desc=f"{device.target.label} collect {args.label!r}", position=i,
                   leave=False, disable=True if args.json else None)

        def progress(st: dict[str, Any]) -> None:
            bar.update(int(st.get("saved") or 0) + int(st.get("failed") or 0) - bar.n)

        try:
            r = collect(device, args.label, args.count, args.interval_s, args.view_px, args.lock_timeout_s, progress)
        finally:
            bar.close()
        return HostResult(r.host, r.ok, r.summary, r)

    return _finish(args, run_on_all(targets, args, fn))


def _pull_data(args: argparse.Namespace, targets: list[Target]) -> int:
    from tqdm import tqdm

    from deploy.pull import check_view, pull
    from device.labels import label_problem

    if args.to is None and args.uncertain_to is None:
        raise DeployError("pull-data needs --to DIR (collected labels) and/or --uncertain-to UDIR (uncertain frames)")
    for label in args.label:
        problem = label_problem(label)
        if problem is not None:
            raise DeployError(f"--label {label!r} is not a valid file name on the Pi: {problem}")
    if len(targets) > 1 and args.uncertain_to is not None:
        raise DeployError("--uncertain-to takes one host at a time (unlabelled frames of several devices would mix)")
    for folder in (args.to, args.uncertain_to):
        if folder is not None:
            check_view(folder, args.view)

    def fn(device: Any, i: int) -> HostResult:
        bar = tqdm(total=0, unit="file", desc=f"{device.target.label} pull", position=i, leave=False,
                   disable=True if args.json or args.no_progress else None)

        def listed(total: int) -> None:
            bar.total = total
            bar.refresh()

        try:
            r = pull(device, args.to, args.view, tuple(args.label), args.uncertain_to, lambda name, n: bar.update(n), listed)
        finally:
            bar.close()
        return HostResult(r.host, r.ok, r.summary, r)

    return _finish(args, run_on_all(targets, args, fn))


if __name__ == "__main__":
    sys.exit(main())
