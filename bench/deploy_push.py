"""Deploy timings against real local sshd "Pis": what a push costs, what durability costs, what the agent session saves.

    python bench/deploy_push.py --artifacts DIR [--rounds 5] [--calls 10] [--json]
    python bench/deploy_push.py --artifacts DIR --quick          # one round, 3 calls (the test runs this)

Two sshd servers on 127.0.0.1 reach the same machine: one as the agent normally runs (every
release file, directory, marker, rename, ``current`` switch, history and record fsynced), one
whose sessions set ``EDGEKIT_AGENT_NO_FSYNC=1`` (the switch only this benchmark uses). Each round,
interleaved between the two, pushes into a fresh remote directory: a first push (upload, venv,
verify, switch, start), a re-push of the same release (uploads nothing), a push of a second
variant, and a rollback. Printed side by side: median seconds per step with and without fsync,
their ratio, and the fsyncs and the seconds spent in them as the agent measured them. Then one
agent call through the long-lived session against one SSH exec + interpreter start per call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.connect import ConnectOptions, connect
from deploy.push import PushOptions, push
from deploy.releases import rollback
from deploy.remote import Device
from deploy.supervisor import control
from deploy.targets import Target, parse_host
from deploy.testing import SSHServer

STEPS = ("first push", "re-push, same release", "push second variant", "rollback")
MODES = ("fsync", "no fsync")


def _device(server: SSHServer, remote_dir: str) -> Device:
    t = server.target
    target: Target = parse_host(t.spec, identity=t.identity, remote_dir=remote_dir, python=t.python,
                                daemon_port=t.daemon_port)
    return Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)


def _round(server: SSHServer, remote_dir: str, artifacts: Path) -> dict[str, dict[str, float]]:
    """One full sequence into a fresh remote dir; seconds and the agent's fsync figures per step."""
    device = _device(server, remote_dir)
    out: dict[str, dict[str, float]] = {}
    try:
        def timed(name: str, fn: Callable[[], Any]) -> None:
            n0, s0 = device.fsync_count, device.fsync_s
            t0 = time.perf_counter()
            fn()
            out[name] = {"s": time.perf_counter() - t0, "fsyncs": device.fsync_count - n0, "fsync_s": device.fsync_s - s0}

        first = PushOptions(artifacts=artifacts, variant="int8", supervisor="process", progress=False)
        timed(STEPS[0], lambda: push(device, first))
        timed(STEPS[1], lambda: push(device, first))
        timed(STEPS[2], lambda: push(device, PushOptions(artifacts=artifacts, variant="float32", supervisor="process",
                                                         progress=False)))
        timed(STEPS[3], lambda: rollback(device))
        control(device, "stop")
    finally:
        device.close()
    return out


def _session_vs_exec(server: SSHServer, remote_dir: str, calls: int) -> tuple[float, float]:
    device = _device(server, remote_dir)
    try:
        device.agent("status", "--dir", device.root)  # session warm, agent uploaded
        t0 = time.perf_counter()
        for _ in range(calls):
            device.agent("status", "--dir", device.root)
        session_s = (time.perf_counter() - t0) / calls
        cmd = device.agent_command("status", "--dir", device.root)
        t0 = time.perf_counter()
        for _ in range(calls):
            device.conn.run(cmd, hide=True, in_stream=False)
        exec_s = (time.perf_counter() - t0) / calls
    finally:
        device.close()
    return session_s, exec_s


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    return f"{model or platform.processor()} ({os.cpu_count()} CPUs), {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True, help="host pipeline output folder")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per mode; medians are reported")
    ap.add_argument("--calls", type=int, default=10, help="agent calls timed each way")
    ap.add_argument("--quick", action="store_true", help="one round and 3 calls: checks that everything runs")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    rounds, calls = (1, 3) if args.quick else (args.rounds, args.calls)
    figures: dict[str, dict[str, list[dict[str, float]]]] = {m: {s: [] for s in STEPS} for m in MODES}
    with tempfile.TemporaryDirectory() as tmp, \
            SSHServer.start(Path(tmp) / "a") as durable_pi, \
            SSHServer.start(Path(tmp) / "b", extra_config=["SetEnv EDGEKIT_AGENT_NO_FSYNC=1"]) as fast_pi:
        servers = {"fsync": durable_pi, "no fsync": fast_pi}
        for i in range(rounds):
            order = MODES if i % 2 == 0 else MODES[::-1]  # alternate who goes first: page cache, CPU boost
            for mode in order:
                got = _round(servers[mode], str(Path(tmp) / f"{mode.replace(' ', '-')}-{i}"), args.artifacts)
                for step, v in got.items():
                    figures[mode][step].append(v)
            if not args.json:
                print(f"round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
        session_s, exec_s = _session_vs_exec(durable_pi, str(Path(tmp) / "calls"), calls)

    def med(mode: str, step: str, key: str) -> float:
        return statistics.median(v[key] for v in figures[mode][step])

    rows = [{"step": s, "fsync_s": med("fsync", s, "s"), "no_fsync_s": med("no fsync", s, "s"),
             "ratio": med("fsync", s, "s") / med("no fsync", s, "s"), "fsyncs": med("fsync", s, "fsyncs"),
             "seconds_in_fsync": med("fsync", s, "fsync_s"), "fsyncs_when_off": med("no fsync", s, "fsyncs")}
            for s in STEPS]
    report = {"machine": _machine(), "rounds": rounds, "steps": rows, "agent_call_session_ms": session_s * 1e3,
              "agent_call_exec_ms": exec_s * 1e3, "session_speedup": exec_s / session_s}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['machine']}; medians of {rounds} round(s), fsync and no-fsync interleaved")
    width = max(len(s) for s in STEPS)
    print(f"{'step':<{width}}  {'fsync s':>8}  {'no fsync s':>10}  {'ratio':>6}  {'fsyncs':>6}  {'s in fsync':>10}")
    for r in rows:
        print(f"{r['step']:<{width}}  {r['fsync_s']:8.2f}  {r['no_fsync_s']:10.2f}  {r['ratio']:5.2f}x  "
              f"{r['fsyncs']:6.0f}  {r['seconds_in_fsync']:10.3f}")
    print(f"\nagent call via session: {session_s * 1e3:7.1f} ms   via a new exec each: {exec_s * 1e3:7.1f} ms   "
          f"session is {exec_s / session_s:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
