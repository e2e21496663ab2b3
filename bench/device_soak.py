"""Does the daemon's memory stay flat? Run the real daemon flat out and sample its RSS.

Starts ``python -m device run --source synthetic --fps 0`` (no pacing: frames as fast as the
pipeline takes them, so a short run covers as many frames as hours at camera rate) with a
small ``--results-max-bytes`` so log rotation is exercised, samples ``VmRSS`` from
``/proc/PID/status`` and the frame count from ``/stats`` at intervals, then prints RSS at the
start and end of the steady phase, its growth per million frames, and the daemon's own
dropped-frame and error counters. The first ``--settle-s`` seconds (imports, model load,
first allocations) are left out of the slope.

    python bench/device_soak.py --manifest ARTIFACTS/manifest.json [--seconds 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stats(port: int) -> dict[str, Any]:
    """The daemon's /stats JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return dict(json.load(r))


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, help="manifest.json written by `python -m host run`")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--seconds", type=float, default=120.0, help="how long the daemon runs")
    ap.add_argument("--settle-s", type=float, default=15.0, help="start-up time left out of the slope")
    ap.add_argument("--interval-s", type=float, default=5.0, help="time between samples")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--quick", action="store_true", help="6 s, sampled every second: checks that it runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.settle_s, args.interval_s = 6.0, 1.0, 1.0

    with tempfile.TemporaryDirectory() as tmp:
        status_file = Path(tmp) / "status.json"
        cmd = [sys.executable, "-m", "device", "run", "--manifest", args.manifest, "--variant", args.variant,
               "--source", "synthetic", "--fps", "0", "--port", "0", "--status-file", str(status_file),
               "--results", str(Path(tmp) / "results.jsonl"), "--results-max-bytes", "1000000"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not status_file.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(f"error: the daemon did not start: {proc.stderr.read() if proc.stderr else ''}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            port = int(json.loads(status_file.read_text())["port"])
            t0 = time.monotonic()
            samples: list[dict[str, float]] = []
            while (now := time.monotonic() - t0) < args.seconds:
                s = stats(port)
                samples.append({"t_s": round(now, 1), "rss_kib": rss_kib(proc.pid), "frames": s.get("frames", 0)})
                if not args.json:
                    print(f"  t={now:6.1f}s  frames={samples[-1]['frames']:>9}  rss={samples[-1]['rss_kib'] / 1024:7.1f} MiB", flush=True)
                time.sleep(args.interval_s)
            final = stats(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=10)
    steady = [s for s in samples if s["t_s"] >= args.settle_s] or samples
    first, last = steady[0], steady[-1]
    frames = last["frames"] - first["frames"]
    growth_kib = last["rss_kib"] - first["rss_kib"]
    per_million = growth_kib / frames * 1e6 if frames else float("nan")
    result = {
        "variant": args.variant,
        "seconds": args.seconds,
        "frames_total": final.get("frames"),
        "steady_frames": frames,
        "rss_start_mib": round(first["rss_kib"] / 1024, 2),
        "rss_end_mib": round(last["rss_kib"] / 1024, 2),
        "rss_peak_mib": round(max(s["rss_kib"] for s in samples) / 1024, 2),
        "rss_growth_kib_per_million_frames": round(per_million, 1),
        "hours_at_30fps_covered": round((final.get("frames") or 0) / 30 / 3600, 2),
        "dropped": final.get("dropped"),
        "errors": final.get("errors"),
        "exit_code_after_sigterm": rc,
        "samples": samples,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"frames: {result['frames_total']} ({result['hours_at_30fps_covered']} h at 30 fps)   "
              f"RSS {result['rss_start_mib']} → {result['rss_end_mib']} MiB over {frames} steady frames "
              f"({result['rss_growth_kib_per_million_frames']} KiB per million frames), peak {result['rss_peak_mib']} MiB   "
              f"dropped {result['dropped']}  errors {result['errors']}  exit {rc}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
