"""Deploy timings against a real local sshd "Pi": what a push costs, and what the agent session saves.

    python bench/deploy_push.py --artifacts DIR [--calls 10]

Prints, side by side in one run: a first push, a re-push of the same release (uploads
nothing), a push of a second variant, a rollback; and one agent call through the long-lived
agent session against one SSH exec + interpreter start per call (what a push would pay per
step without the session).
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path

from deploy.connect import ConnectOptions, connect
from deploy.push import PushOptions, push
from deploy.releases import rollback
from deploy.remote import Device
from deploy.targets import parse_host
from deploy.testing import SSHServer


def main() -> None:
    """Run the measurements and print them."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, required=True, help="host pipeline output folder")
    ap.add_argument("--calls", type=int, default=10, help="agent calls timed each way")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SSHServer.start(Path(tmp)) as server:
        t = server.target
        target = parse_host(t.spec, identity=t.identity, remote_dir=t.remote_dir, python=t.python, daemon_port=t.daemon_port)
        device = Device(connect(target, ConnectOptions(known_hosts=t.known_hosts)), target)
        rows: list[tuple[str, float, str]] = []

        def timed(name: str, fn: object) -> None:
            t0 = time.perf_counter()
            out = fn()  # type: ignore[operator]
            rows.append((name, time.perf_counter() - t0, getattr(out, "summary", "") or str(out)[:60]))

        opts = PushOptions(artifacts=args.artifacts, variant="int8", progress=False)
        timed("first push (int8)", lambda: push(device, opts))
        timed("re-push, same release", lambda: push(device, opts))
        timed("push second variant (float32)", lambda: push(device, PushOptions(args.artifacts, "float32", progress=False)))
        timed("rollback", lambda: rollback(device))
        width = max(len(r[0]) for r in rows)
        print(f"{'step':<{width}}  {'seconds':>8}  ratio to first push")
        for name, s, summary in rows:
            print(f"{name:<{width}}  {s:8.2f}  {s / rows[0][1]:6.2f}x   {summary}")

        device.agent("status", "--dir", device.root)  # session warm
        t0 = time.perf_counter()
        for _ in range(args.calls):
            device.agent("status", "--dir", device.root)
        session_s = (time.perf_counter() - t0) / args.calls
        cmd = " ".join(shlex.quote(a) for a in (target.python, device.agent_path, "status", "--dir", device.root))
        t0 = time.perf_counter()
        for _ in range(args.calls):
            device.run(cmd)
        exec_s = (time.perf_counter() - t0) / args.calls
        print(f"\nagent call via session: {session_s * 1e3:7.1f} ms   via a new exec each: {exec_s * 1e3:7.1f} ms   "
              f"session is {exec_s / session_s:.1f}x faster")
        device.close()


if __name__ == "__main__":
    main()
