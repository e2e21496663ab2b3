"""The agent's entry point: parse one command, run it (under the root's lock when it changes the device), answer.

``serve`` answers commands from stdin for a whole SSH session; any other command runs once
(see ``deploy.agent.protocol``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Optional

from deploy.agent import (
    bench,
    collect,
    data,
    durable,
    health,
    locking,
    logs,
    probe,
    process_supervisor,
    releases,
    supervisor,
    systemd,
    tune,
    venvs,
)
from deploy.agent import protocol as P
from deploy.agent.errors import AgentError
from deploy.agent.layout import Layout


def _lay(args: argparse.Namespace) -> Layout:
    return Layout(args.dir)


def cmd_lock(args: argparse.Namespace) -> dict[str, Any]:
    """Hold the root's lock for the rest of this session."""
    lay = _lay(args)
    holder, waited = locking.acquire(lay.root, args.purpose, args.by or locking.default_by(), args.timeout_s)
    return {"root": str(lay.root), "holder": holder, "waited_s": round(waited, 3)}


def cmd_unlock(args: argparse.Namespace) -> dict[str, Any]:
    """Give the session's lock back."""
    return {"released": locking.release(_lay(args).root)}


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Check the supervisor the push asks for (before anything is uploaded), then make the staging dir."""
    lay = _lay(args)
    mode, reason = supervisor.plan(lay, args.supervisor)
    return {**releases.prepare(lay, Layout.check_id(args.id)), "supervisor": mode, "supervisor_reason": reason}


def cmd_logs(args: argparse.Namespace) -> dict[str, Any]:
    """The last lines of the logs of the recorded supervisor."""
    lay = _lay(args)
    if supervisor.recorded_mode(lay) == "systemd":
        return dict(systemd.logs(lay, args.lines))
    return dict(logs.file_logs(lay, args.lines))


def cmd_control(args: argparse.Namespace) -> dict[str, Any]:
    """start / stop / restart under the recorded (or, for a push, the chosen) supervisor."""
    release = Layout.check_id(args.release) if args.release else None
    return dict(supervisor.control(_lay(args), args.action, args.mode, release, args.push, args.timeout_s))


def cmd_supervise(args: argparse.Namespace) -> dict[str, Any]:
    """The process supervisor's loop (runs until SIGTERM)."""
    return process_supervisor.supervise(_lay(args))


COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    P.PROBE: lambda a: probe.probe(_lay(a), a.cached),
    P.LOCK: cmd_lock,
    P.UNLOCK: cmd_unlock,
    P.PREPARE: cmd_prepare,
    P.VENV: lambda a: dict(venvs.ensure(_lay(a), Layout.check_id(a.id), a.wheelhouse, a.timeout_s)),
    P.VERIFY: lambda a: dict(releases.verify(_lay(a), Layout.check_id(a.id), a.count, a.timeout_s)),
    P.ACTIVATE: lambda a: dict(supervisor.activate(_lay(a), Layout.check_id(a.id), a.keep)),
    P.ROLLBACK_TARGET: lambda a: dict(releases.rollback_target(_lay(a))),
    P.RELEASES: lambda a: dict(releases.listing(_lay(a))),
    P.CONTROL: cmd_control,
    P.WAIT: lambda a: dict(health.wait(_lay(a), a.id, a.timeout_s)),
    P.STATUS: lambda a: dict(health.status(_lay(a))),
    P.LOGS: cmd_logs,
    P.BENCH: lambda a: dict(bench.bench(_lay(a), a.variant, a.manifest, a.code, a.timeout_s, list(a.extra))),
    P.TUNE: lambda a: dict(tune.run(_lay(a), a.manifest, a.code, a.timeout_s, not a.no_pause, list(a.extra))),
    P.TUNE_RECORD: lambda a: tune.record(_lay(a), a.record),
    P.TUNED: lambda a: dict(tune.recorded(_lay(a))),
    P.SUPERVISE: cmd_supervise,
    P.COLLECT: lambda a: dict(collect.start(_lay(a), a.label, a.count, a.interval_s, a.view_px)),
    P.COLLECT_STATUS: lambda a: dict(collect.status(_lay(a), a.cancel)),
    P.DATA_LIST: lambda a: dict(data.listing(_lay(a), a.uncertain)),
}


def parser() -> argparse.ArgumentParser:
    """The agent's command line (the host builds these argvs; see deploy.agent.protocol)."""
    ap = argparse.ArgumentParser(prog="edgekit-agent", description="edgekit's device-side agent (stdlib only).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(fn=COMMANDS[name])
        p.add_argument("--dir", required=True, help="the kit's remote directory")
        return p

    add(P.PROBE, "facts for doctor").add_argument("--cached", action="store_true", help="reuse the last probe while nothing changed")
    p = add(P.LOCK, "hold the root's lock for the rest of the session")
    p.add_argument("--purpose", default="a deploy command")
    p.add_argument("--by", default="")
    p.add_argument("--timeout-s", type=float, default=0.0, help="wait this long for the lock (0: fail at once)")
    add(P.UNLOCK, "give the session's lock back")
    p = add(P.PREPARE, "make the layout and a staging dir; say which supervisor the push will use")
    p.add_argument("--id", required=True)
    p.add_argument("--supervisor", choices=P.SUPERVISORS, default="auto")
    p = add(P.VENV, "the release's venv (one per requirements hash)")
    p.add_argument("--id", required=True)
    p.add_argument("--wheelhouse", action="store_true")
    p.add_argument("--timeout-s", type=float, default=900.0)
    p = add(P.VERIFY, "check hashes and golden outputs, then publish")
    p.add_argument("--id", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p = add(P.ACTIVATE, "switch current, prune")
    p.add_argument("--id", required=True)
    p.add_argument("--keep", type=int, default=3)
    add(P.ROLLBACK_TARGET, "the release before current")
    add(P.RELEASES, "list releases")
    p = add(P.CONTROL, "start, stop or restart the daemon")
    p.add_argument("action", choices=P.ACTIONS)
    p.add_argument("--mode", choices=P.SUPERVISORS, default="auto")
    p.add_argument("--release", default="", help="the release the host expects current to be")
    p.add_argument("--push", action="store_true", help="choose the supervisor and record it (a push)")
    p.add_argument("--timeout-s", type=float, default=15.0)
    p = add(P.WAIT, "wait for a release's daemon to be healthy")
    p.add_argument("--id", required=True)
    p.add_argument("--timeout-s", type=float, default=30.0)
    add(P.STATUS, "supervisor and daemon state, /stats")
    add(P.LOGS, "last log lines").add_argument("--lines", type=int, default=20)
    p = add(P.BENCH, "run the device benchmark")
    p.add_argument("--variant", default="all")
    p.add_argument("--manifest", default="")
    p.add_argument("--code", default="")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("extra", nargs="*")
    p = add(P.TUNE, "run the tuning sweep with the current release's runtime (the daemon paused meanwhile)")
    p.add_argument("--manifest", default="", help="an uploaded bundle's manifest (default: the current release's)")
    p.add_argument("--code", default="", help="the bundle's device code")
    p.add_argument("--no-pause", action="store_true", help="leave the daemon running during the sweep")
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("extra", nargs="*", help="options for `python -m device sweep`")
    add(P.TUNE_RECORD, "record the chosen configuration in tuning.json (durably)").add_argument("--record", required=True)
    add(P.TUNED, "the recorded choice and the current release")
    add(P.SUPERVISE, "the process supervisor (runs until SIGTERM)")
    p = add(P.COLLECT, "collect labelled frames through the daemon, or in a one-shot process when none runs")
    p.add_argument("--label", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--interval-s", type=float, default=0.5)
    p.add_argument("--view-px", type=int, default=320)
    add(P.COLLECT_STATUS, "the collection job's status").add_argument("--cancel", action="store_true", help="stop it first")
    add(P.DATA_LIST, "collected (and uncertain) frames with their sha256").add_argument("--uncertain", action="store_true")
    return ap


def execute(argv: list[str]) -> dict[str, Any]:
    """Run one command; the answer always has ``ok`` and the durable-write counters."""
    try:
        args = parser().parse_args(argv)
    except SystemExit:
        return {**P.error_answer(f"bad agent command {argv!r}: host and device agent disagree", "bad-request"),
                "fsync_count": 0, "fsync_s": 0.0}
    durable.reset_stats()
    try:
        if args.cmd in P.MUTATING:
            with locking.locked(Layout(args.dir).root, purpose=args.cmd):
                answer = {"ok": True, **args.fn(args)}
        else:
            answer = {"ok": True, **args.fn(args)}
    except AgentError as e:
        answer = P.error_answer(str(e), e.kind, **e.data)
    except Exception as e:  # report, never a bare traceback the host cannot parse
        answer = P.error_answer(f"{type(e).__name__}: {e}", "internal")
    return {**answer, **durable.stats()}


def serve() -> int:
    """Answer commands from stdin, one JSON argv list per line, one JSON answer per line, until EOF."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a command prints may corrupt the answer stream
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            answer = execute(P.decode_request(line))
        except ValueError as e:
            answer = P.error_answer(f"bad request: {e}", "bad-request")
        try:
            out.write(P.encode_answer(answer) + "\n")
            out.flush()
        except OSError:  # the host went away
            return 0
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run one agent command and print its JSON answer on the last line (``serve``: many)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [P.SERVE]:
        return serve()
    if argv[:1] == [P.SUPERVISE] or "-h" in argv or "--help" in argv:
        args = parser().parse_args(argv)
        args.fn(args)
        return 0
    answer = execute(argv)
    print(P.encode_answer(answer))
    return 0 if answer.get("ok") else 1
