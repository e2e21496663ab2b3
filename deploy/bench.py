"""bench: run ``python -m device bench --json`` on the target, save the JSON locally, compare variants and hosts.

Without ``--artifacts`` it benchmarks the variants the current release holds (a release holds
one). With ``--artifacts DIR`` it first uploads every variant of DIR (with the device code) into
``<remote-dir>/bench/<hash>/``, once per content, so all variants can be compared on the device.

Timings from an emulated host (``EDGEKIT_EMULATED`` in its SSH sessions, or a qemu-user process
detected by ``device.hardware``) are marked EMULATED in the table: they are not Pi latency.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from deploy.agent import protocol
from deploy.errors import ArtifactsError
from deploy.layout import device_code_files, load_artifacts
from deploy.remote import Device
from deploy.status import EMULATED_NOTE, emulated_label, table
from device.manifest import MANIFEST_NAME, VARIANTS, sha256_file

COMPLETE = ".complete"


@dataclass(frozen=True)
class BenchResult:
    """One host's benchmark report and where it was saved."""

    host: str
    report: dict[str, Any]
    saved: Path
    uploaded_bytes: int
    emulated: Optional[str] = None

    def emulation(self, variant_result: dict[str, Any]) -> Optional[str]:
        """What emulated one variant's run: the device benchmark's own record, else the agent's."""
        hw = variant_result.get("hardware")
        if isinstance(hw, dict) and "emulated" in hw:
            return hw.get("emulated") or None
        return self.emulated


def _bench_files(artifacts: Path) -> list[tuple[str, Path]]:
    manifest = load_artifacts(artifacts)
    files = [(f"model/{MANIFEST_NAME}", manifest.root / MANIFEST_NAME)]
    for name, v in manifest.variants.items():
        p = manifest.model_path(name)
        if not p.is_file():
            raise ArtifactsError(f"{p} (variant {name}) is missing; re-run the host pipeline")
        files.append((f"model/{v.path}", p))
    if manifest.golden is not None:
        files.append((f"model/{manifest.golden.path}", manifest.golden_path()))
    files += device_code_files()
    return files


def upload_bench_bundle(device: Device, artifacts: Path) -> tuple[str, int]:
    """Upload all variants + device code to bench/<hash>/ unless already there; returns (dir, bytes sent)."""
    files = _bench_files(artifacts)
    h = hashlib.sha256()
    for name, p in sorted(files):
        h.update(f"{name}\0{sha256_file(p)}\n".encode())
    bdir = posixpath.join(device.root, "bench", h.hexdigest()[:12])
    if device.exists(posixpath.join(bdir, COMPLETE)):
        return bdir, 0
    sent = 0
    for name, p in files:
        remote = posixpath.join(bdir, name)
        device.makedirs(posixpath.dirname(remote))
        device.put(p, remote)
        sent += p.stat().st_size
    device.put_bytes(b"", posixpath.join(bdir, COMPLETE))
    return bdir, sent


def run_bench(device: Device, artifacts: Optional[Path], variant: str = "all", out_dir: Path = Path("bench-results"),
              extra: tuple[str, ...] = (), timeout_s: float = 600.0) -> BenchResult:
    """Run the device benchmark on the target and save its JSON as ``<out_dir>/<host>-<time>.json``."""
    args = ["--dir", device.root, "--variant", variant, "--timeout-s", str(timeout_s)]
    sent = 0
    if artifacts is not None:
        bdir, sent = upload_bench_bundle(device, artifacts)
        args += ["--manifest", posixpath.join(bdir, "model", MANIFEST_NAME), "--code", posixpath.join(bdir, "code")]
    if extra:
        args += ["--", *extra]
    answer = device.agent(protocol.BENCH, *args, timeout_s=timeout_s + 60)
    report = answer["report"]
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device.target.label)
    path = out_dir / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    n = 1
    while path.exists():
        path = out_dir / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{n}.json"
        n += 1
    path.write_text(json.dumps({"host": device.target.label, "saved_at": time.time(), "emulated": answer.get("emulated"),
                                "report": report}, indent=1) + "\n")
    return BenchResult(device.target.label, report, path, sent, answer.get("emulated") or None)


def _variants(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(variant, its result) pairs from a device bench report, whatever its nesting."""
    v = report.get("variants", report.get("results"))
    if isinstance(v, dict):
        return [(str(k), x) for k, x in v.items() if isinstance(x, dict)]
    if isinstance(v, list):
        return [(str(x.get("variant", i)), x) for i, x in enumerate(v) if isinstance(x, dict)]
    return [(str(report.get("variant", "?")), report)]


def _get(d: dict[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _stage(r: dict[str, Any], stage: str, stat: str) -> Optional[float]:
    for path in (("stages_ms", stage, stat), ("stages", stage, stat), ("latency_ms", stage, stat), (stage, stat)):
        v = _get(r, *path)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def format_bench(results: list[BenchResult]) -> str:
    """Variants (rows) by hosts: runtime, load, first inference, invoke and total p50/p99, accuracy, peak RSS."""
    head = ["variant", "host", "runtime", "load ms", "first ms", "invoke p50 ms", "invoke p99 ms",
            "total p50 ms", "total p99 ms", "accuracy", "peak RSS MiB"]
    body = []
    emulated = [res.emulation(r) for res in results for _, r in _variants(res.report)]
    flagged = any(emulated)
    if flagged:
        head.insert(2, "hardware")
    marks = iter(emulated)
    for res in results:
        for name, r in _variants(res.report):
            mark = next(marks)
            rt = r.get("runtime") or res.report.get("runtime")
            if isinstance(rt, dict):
                rt = " ".join(str(x) for x in (rt.get("name"), rt.get("version")) if x)
            elif rt and r.get("runtime_version"):
                rt = f"{rt} {r['runtime_version']}"
            rss_kb = r.get("peak_rss_kb")
            rss_mib = float(rss_kb) / 1024 if isinstance(rss_kb, (int, float)) else None
            acc = r.get("frame_accuracy", r.get("accuracy"))
            row = [name, res.host, _fmt(rt), _fmt(r.get("load_ms")), _fmt(r.get("first_inference_ms")),
                   _fmt(_stage(r, "invoke", "p50_ms")), _fmt(_stage(r, "invoke", "p99_ms")),
                   _fmt(_stage(r, "total", "p50_ms")), _fmt(_stage(r, "total", "p99_ms")),
                   _fmt(acc, ".4f"), _fmt(rss_mib, ".1f")]
            if flagged:
                row.insert(2, emulated_label(mark))
            body.append(row)
    order = {v: i for i, v in enumerate(VARIANTS)}
    body.sort(key=lambda row: (order.get(row[0], 99), row[0], row[1]))  # a variant's hosts side by side
    return table(head, body) + (f"\n{EMULATED_NOTE}" if flagged else "")
