"""What an open page costs the classifier: per-frame cost with a page open against none, side by side.

Starts the real daemon (``python -m device run --source synthetic``: lores YUV420 frames paced
like a camera at ``--fps``, 30 by default; ``--fps 0`` runs flat out) and measures it in phases,
interleaved round by round:

* **none**: nobody watches; the pipeline reads one attribute per frame;
* **page**: one open device page: an SSE client reads ``/events`` (a state document every
  0.5 s, the frame and the input view encoded twice a second);
* **dashboard**: what ``deploy dashboard`` does to each device: ``/page.json?images=frame``
  once a second.

Per phase: the daemon's CPU time (``/proc/PID/stat``, all its threads: the encoding and the
event stream included) per frame classified, and each frame's own processing time
(preprocess + invoke + postprocess, the daemon's stage clocks, from its ``--results`` lines),
p50 and p99. CPU per frame barely moves with other load on the machine, unlike wall time. Each
condition's overhead against **none** is taken within each round (so drifting load cancels),
then the median over rounds. The daemon's own counters say how many images it encoded and how
long an encode took; a **none** phase that kept or encoded any frame is an error. Before each
**none** phase the bench waits out the page's watch grace period.

    python bench/page_overhead.py --manifest ARTIFACTS/manifest.json [--rounds 5] [--phase-s 8] [--fps 30] [--json]
    python bench/page_overhead.py --manifest ARTIFACTS/manifest.json --quick   # seconds, for tests
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from device.hardware import read_hardware
from device.page import PageConfig
from device.testing import DaemonProcess

CONDITIONS = ("none", "page", "dashboard")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_flags() -> list[str]:
    """The SIMD flags that decide TFLite kernel speed on x86 (AVX2, AVX-512, AMX), or the ARM ones."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(val.split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "fma", "neon", "asimd", "asimddp")
    return [f for f in wanted if f in flags]


class Viewer:
    """One open page: reads /events until stopped, counting bytes."""

    def __init__(self, port: int):
        self.port = port
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/events")
        resp = conn.getresponse()
        while not self._stop.is_set():
            chunk = resp.read1(65536)
            if not chunk:
                break
            self.bytes += len(chunk)
        resp.close()
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Poller:
    """What the fleet dashboard does to one device: /page.json?images=frame&history=0 every second."""

    def __init__(self, daemon: DaemonProcess, interval_s: float = 1.0):
        self.daemon = daemon
        self.interval_s = interval_s
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.bytes += len(self.daemon.get("/page.json?images=frame&history=0")[1])
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def page_counters(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.get_json("/page.json?images=0&history=0")["page"])


def processing_us(results: Path, t0: float, t1: float) -> list[float]:
    """preprocess + invoke + postprocess in µs of every frame read between wall times t0 and t1."""
    out = []
    with open(results) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue  # the writer's last line may be half written
            if t0 <= r["timestamp"] <= t1:
                lat = r["latency_ms"]
                out.append(1e3 * (lat["preprocess"] + lat["invoke"] + lat["postprocess"]))
    return out


def phase(d: DaemonProcess, results: Path, condition: str, seconds: float) -> dict[str, Any]:
    """Run one phase; CPU per frame, per-frame processing and the page's counters over it."""
    watcher: Optional[Viewer | Poller] = None
    if condition == "page":
        watcher = Viewer(d.port)
    elif condition == "dashboard":
        watcher = Poller(d)
    time.sleep(0.5)  # the first frame kept, the first event sent: measure the steady state
    c0, f0, p0, t0, w0 = cpu_s(d.proc.pid), d.get_json("/stats")["frames"], page_counters(d), time.monotonic(), time.time()
    time.sleep(seconds)
    c1, f1, p1, t1, w1 = cpu_s(d.proc.pid), d.get_json("/stats")["frames"], page_counters(d), time.monotonic(), time.time()
    sent = 0
    if watcher is not None:
        watcher.stop()
        sent = watcher.bytes
    frames = max(1, f1 - f0)
    time.sleep(0.3)  # let the results writer flush the phase's last frames
    proc = processing_us(results, w0, w1)
    encoded = p1["encoded_images"] - p0["encoded_images"]
    encode_ms = p1["encode_ms_total"] - p0["encode_ms_total"]
    return {"frames": frames, "fps": frames / (t1 - t0), "cpu_us_per_frame": 1e6 * (c1 - c0) / frames, "processing_us": proc,
            "encoded": encoded, "kept": p1["kept_frames"] - p0["kept_frames"],
            "encode_ms_mean": encode_ms / encoded if encoded else 0.0, "bytes_per_s": sent / (t1 - t0)}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values, 0 when empty."""
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * len(v)) - 1))]


def main(argv: Optional[list[str]] = None) -> int:
    """Run the phases and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True, type=Path, help="manifest.json (or its folder) written by `python -m host run`")
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--fps", type=float, default=30.0, help="synthetic camera rate (0: flat out)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of none / page / dashboard")
    ap.add_argument("--phase-s", type=float, default=8.0, help="seconds measured per phase")
    ap.add_argument("--quick", action="store_true", help="1 round of 1.5 s phases (for tests; the figures are noisy)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    rounds, phase_s = (1, 1.5) if args.quick else (args.rounds, args.phase_s)
    settle_s = PageConfig().watch_grace_s + 0.5
    hw = read_hardware()
    machine = {"cpu": hw.cpu_model or hw.machine, "cores": hw.cpu_count, "flags": cpu_flags(), "emulated": hw.emulated,
               "load_1min": round(os.getloadavg()[0], 2)}
    log: Callable[[str], None] = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))

    with tempfile.TemporaryDirectory() as tmp:
        results_file = Path(tmp) / "results.jsonl"
        daemon = DaemonProcess.start(args.manifest, workdir=Path(tmp), extra=(
            "--fps", f"{args.fps:g}", "--variant", args.variant, "--results", str(results_file), "--results-max-bytes", str(2**30)))
        results: dict[str, list[dict[str, Any]]] = {c: [] for c in CONDITIONS}
        try:
            time.sleep(1.0 if args.quick else 3.0)  # warm-up out of the figures
            for r in range(rounds):
                for c in CONDITIONS:
                    if c == "none":
                        time.sleep(settle_s)  # the previous round's dashboard phase keeps frames this long
                    results[c].append(phase(daemon, results_file, c, phase_s))
                    p = results[c][-1]
                    log(f"round {r + 1}/{rounds} {c:9s} {p['fps']:7.1f} frames/s  CPU {p['cpu_us_per_frame']:7.1f} µs/frame  "
                        f"processing p50 {pct(p['processing_us'], 50):6.1f} µs  encoded {p['encoded']:.0f}")
        finally:
            code = daemon.stop()
            log_tail = daemon.log.read_text()[-500:]
    machine["load_1min_after"] = round(os.getloadavg()[0], 2)
    errors = [f"none, round {i + 1}: kept {p['kept']:.0f} frames and encoded {p['encoded']:.0f} images with nobody watching"
              for i, p in enumerate(results["none"]) if p["encoded"] or p["kept"]]
    if code != 0:
        errors.append(f"the daemon exited {code}: {log_tail}")

    def med(c: str, fn: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(fn(p) for p in results[c])

    def over(c: str, fn: Callable[[dict[str, Any]], float]) -> float:  # within each round, then the median
        return statistics.median(fn(p) - fn(n) for p, n in zip(results[c], results["none"]))

    def cpu(p: dict[str, Any]) -> float:
        return float(p["cpu_us_per_frame"])

    def p50(p: dict[str, Any]) -> float:
        return pct(p["processing_us"], 50)

    def p99(p: dict[str, Any]) -> float:
        return pct(p["processing_us"], 99)

    rows = {c: {"fps": med(c, lambda p: p["fps"]), "cpu_us_per_frame": med(c, cpu), "cpu_overhead_us": over(c, cpu),
                "cpu_overhead_pct": 100 * over(c, cpu) / med("none", cpu),
                "processing_p50_us": med(c, p50), "processing_p50_overhead_us": over(c, p50),
                "processing_p99_us": med(c, p99), "processing_p99_overhead_us": over(c, p99),
                "images_encoded_per_s": med(c, lambda p: p["encoded"]) / phase_s,
                "encode_ms_mean": med(c, lambda p: p["encode_ms_mean"]), "kb_sent_per_s": med(c, lambda p: p["bytes_per_s"]) / 1e3}
            for c in CONDITIONS}
    report = {"machine": machine, "variant": args.variant, "fps": args.fps, "rounds": rounds, "phase_s": phase_s,
              "quick": args.quick, "conditions": rows, "errors": errors}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        flags = ", ".join(str(f) for f in machine["flags"]) or "none listed"  # type: ignore[attr-defined]
        pace = "flat out" if not args.fps else f"{args.fps:g} fps"
        print(f"page overhead: {args.variant}, synthetic lores frames at {pace}, {rounds} round(s) x {phase_s:g} s per condition")
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, flags {flags}; load {machine['load_1min']} -> "
              f"{machine['load_1min_after']}" + (f"; EMULATED {hw.emulated}" if hw.emulated else ""))
        print(f"{'condition':10s} {'frames/s':>8s} {'CPU µs/frame':>13s} {'overhead':>17s} {'processing p50 µs':>24s} "
              f"{'p99 µs':>8s} {'images/s':>9s} {'encode ms':>10s} {'kB/s':>7s}")
        for c, row in rows.items():
            print(f"{c:10s} {row['fps']:8.1f} {row['cpu_us_per_frame']:13.1f} {row['cpu_overhead_us']:+8.1f} "
                  f"({row['cpu_overhead_pct']:+5.1f}%) {row['processing_p50_us']:12.1f} ({row['processing_p50_overhead_us']:+6.1f}) "
                  f"{row['processing_p99_us']:11.1f} {row['images_encoded_per_s']:9.1f} {row['encode_ms_mean']:10.2f} "
                  f"{row['kb_sent_per_s']:7.1f}")
        print("overhead and (+x): against none within each round, median over rounds; CPU time is the daemon's, all threads")
        for e in errors:
            print(f"error: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
