"""tune: every variant at 1, 2 and 4 threads, XNNPACK on and off, measured on the device; the fastest within the gate, recorded.

**What is measured, and where.** ``python -m device sweep`` (``device.sweep``) runs on the device
with the current release's own interpreter and runtime, on the golden set: p50/p99 of invoke
and of the daemon's whole per-frame pipeline, CPU time per frame, top-1 against the labels and
against float32, and what the interpreter did with each setting (XNNPACK nodes, worker threads).
The daemon is paused meanwhile (``--keep-daemon-running`` leaves it) and started again after.

**Where the variants come from.** A release holds the one variant it runs. ``tune`` uploads every
variant of the artifacts *beside* it, into ``bench/<hash>/`` on the device, once per content
(``deploy.bench.upload_bench_bundle``, as ``deploy bench --artifacts`` does), rather than making
every release carry every variant: a release is what the daemon runs, what the golden check
verified and what a rollback restores. Carrying all four variants would upload and keep about 7 times
the model bytes on every push (785 KB against 107 KB for int8 here; far more for larger models
on an SD card), and would put unverified models into releases: tflite-runtime 2.14 cannot even
load the ``dynamic`` variant (FULLY_CONNECTED version 12), so a release of all variants could
not pass a golden check of all of them. Here a variant that fails to load is a failed row, and
the variant ``push --variant auto`` then pushes gets its own golden check, as every push does.
``--artifacts`` defaults to the folder the current release was pushed from (``release.json``),
when it is on this host and its manifest is the one on the device; failing that, ``tune``
measures the current release's variant alone (threads and XNNPACK), and says so.

**The choice** is ``device.tuning.choose`` (the fastest p50 of total within the gate, ties to
the least CPU). It is written to ``<remote-dir>/tuning.json`` on the device, durably, by the
agent (``deploy.agent.tune``); ``push --variant auto`` reads it (``auto_config``). Timings from
an emulated device are marked EMULATED and nothing is chosen from them without ``--allow-emulated``.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from deploy.agent import protocol
from deploy.bench import upload_bench_bundle
from deploy.errors import DeployError, HealthError
from deploy.layout import DEFAULT_VARIANT, load_artifacts
from deploy.remote import Device
from deploy.supervisor import wait_healthy
from device.errors import one_line
from device.manifest import MANIFEST_NAME, Manifest, sha256_file
from device.runtime import XNNPACK_SETTINGS
from device.tuning import (
    DEFAULT_THREADS,
    GATE_POINTS,
    TIE_PCT,
    Choice,
    Config,
    SweepReport,
    choose,
    format_table,
)

AUTO = "auto"  # push --variant auto


class TuneError(DeployError):
    """The tuning sweep could not run or its answer could not be read."""


@dataclass(frozen=True)
class TuneOptions:
    """What to measure and how to judge it."""

    artifacts: Optional[Path] = None
    variants: tuple[str, ...] = ()  # empty: every variant the manifest names and the device holds
    budget_ms: Optional[float] = None
    allow_emulated: bool = False
    threads: tuple[int, ...] = DEFAULT_THREADS
    xnnpack: tuple[str, ...] = XNNPACK_SETTINGS
    frames: int = 300
    warmup: int = 20
    rounds: int = 3
    golden_count: Optional[int] = None
    gate_points: float = GATE_POINTS
    tie_pct: float = TIE_PCT
    record: bool = True
    pause_daemon: bool = True
    timeout_s: float = 3600.0
    lock_timeout_s: float = 0.0
    health_timeout_s: float = 30.0

    def sweep_args(self) -> list[str]:
        """The options ``python -m device sweep`` gets on the device."""
        args = ["--threads", ",".join(str(t) for t in self.threads), "--xnnpack", ",".join(self.xnnpack),
                "--frames", str(self.frames), "--warmup", str(self.warmup), "--rounds", str(self.rounds),
                "--gate-points", repr(self.gate_points), "--tie-pct", repr(self.tie_pct)]
        if self.golden_count is not None:
            args += ["--golden-count", str(self.golden_count)]
        for v in self.variants:
            args += ["--variant", v]
        return args


@dataclass(frozen=True)
class TuneResult:
    """One host's sweep, the choice, and what was recorded."""

    host: str
    report: SweepReport
    choice: Optional[Choice]
    budget_ms: Optional[float]
    meets_budget: Optional[bool]
    record: Optional[dict[str, Any]]
    record_path: Optional[str]
    refused: Optional[str]
    swept: str  # what was measured: the uploaded bundle of DIR, or the current release's variant
    uploaded_bytes: int = 0
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    steps: tuple[str, ...] = field(default_factory=tuple)
    restart_problem: Optional[str] = None  # the daemon paused for the sweep did not come back healthy

    @property
    def ok(self) -> bool:
        """A choice was made (and recorded, unless --no-record), the budget, if any, is met, and the daemon runs again."""
        return self.choice is not None and self.refused is None and self.meets_budget is not False and not self.restart_problem

    @property
    def summary(self) -> str:
        """One line for the result table."""
        return self._verdict() + (f"; but {self.restart_problem}" if self.restart_problem else "")

    def _verdict(self) -> str:
        emu = f"EMULATED ({self.report.emulated}) · " if self.report.emulated else ""
        if self.choice is None:
            return emu + (self.refused or f"no configuration is within {self.report.gate_points:g} points of float32's golden "
                                          "accuracy; nothing recorded")
        r = self.choice.result
        assert r.total is not None
        text = (f"{emu}fastest within the gate: {self.choice.config.label} (total p50 {r.total.p50_ms:.3f} ms, "
                f"p99 {r.total.p99_ms:.3f} ms)")
        if self.budget_ms is not None:
            text += f"; budget {self.budget_ms:g} ms {'met' if self.meets_budget else 'NOT met'} (p99 of total)"
        if self.refused:
            return f"{text}; {self.refused}"
        return text + (f"; recorded in {self.record_path}" if self.record else "; not recorded (--no-record)")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: the whole report as well as the choice."""
        return {"host": self.host, "ok": self.ok, "report": self.report.to_json(),
                "choice": self.choice.to_json() if self.choice else None, "budget_ms": self.budget_ms,
                "meets_budget": self.meets_budget, "record": self.record, "record_path": self.record_path,
                "refused": self.refused, "emulated": self.report.emulated, "swept": self.swept,
                "uploaded_bytes": self.uploaded_bytes, "notes": list(self.notes), "elapsed_s": round(self.elapsed_s, 3),
                "steps": list(self.steps), "restart_problem": self.restart_problem}

    def format(self) -> str:
        """The table with this host's verdict under it."""
        lines = [f"== {self.host}: {self.swept}", format_table(self.report, self.choice)]
        lines += [f"note: {n}" for n in self.notes]
        if self.choice is not None and self.budget_ms is not None and self.choice.result.total is not None:
            t = self.choice.result.total
            lines.append(f"budget {self.budget_ms:g} ms per frame: {'met' if self.meets_budget else 'NOT met'} by the choice "
                         f"(p99 of total {t.p99_ms:.3f} ms, p50 {t.p50_ms:.3f} ms)")
        if self.refused:
            lines.append(self.refused)
        elif self.record:
            lines.append(f"recorded in {self.record_path}: `python -m deploy push --artifacts DIR --variant auto` runs it")
        elif self.choice is None:
            lines.append(f"no configuration is within {self.report.gate_points:g} points of float32's golden accuracy; "
                         "nothing recorded")
        if self.restart_problem:
            lines.append(f"but {self.restart_problem}")
        return "\n".join(lines)


def _local_artifacts(answer: dict[str, Any]) -> Optional[Path]:
    """The folder the current release was pushed from, if it is on this host and still holds the manifest on the device."""
    where = answer.get("artifacts")
    if not where or not answer.get("manifest_sha256"):
        return None
    p = Path(str(where))
    manifest = p / MANIFEST_NAME
    try:
        return p if manifest.is_file() and sha256_file(manifest) == answer["manifest_sha256"] else None
    except OSError:
        return None


def _record(opts: TuneOptions, report: SweepReport, choice: Choice, answer: dict[str, Any], meets: Optional[bool]) -> dict[str, Any]:
    r = choice.result
    models = {str(k): str(v) for k, v in (answer.get("models") or {}).items()}
    hw = report.hardware
    return {
        **choice.config.to_json(), "runtime": report.runtime, "runtime_version": report.runtime_version,
        "model_sha256": models.get(choice.config.variant, ""), "models": models,
        "measured": {"total_p50_ms": r.total.p50_ms if r.total else None, "total_p99_ms": r.total.p99_ms if r.total else None,
                     "invoke_p50_ms": r.invoke.p50_ms if r.invoke else None, "invoke_p99_ms": r.invoke.p99_ms if r.invoke else None,
                     "cpu_per_frame_ms": r.cpu_per_frame_ms, "golden_accuracy": r.golden_accuracy,
                     "float32_accuracy": report.reference_accuracy, "float32_agreement": r.float32_agreement,
                     "golden_count": r.golden_count, "delegate_nodes": r.delegate_nodes, "worker_threads": r.worker_threads},
        "gate_points": report.gate_points, "tie_pct": opts.tie_pct, "budget_ms": opts.budget_ms, "meets_budget": meets,
        "emulated": report.emulated,
        "hardware": f"{hw.get('model') or hw.get('cpu_model') or 'unknown'} ({hw.get('machine')}, {hw.get('cpu_count')} CPUs)",
        "reason": choice.reason, "release": answer.get("release"), "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
    }


def tune(device: Device, opts: TuneOptions, log: Callable[[str], None] = lambda s: None) -> TuneResult:
    """Measure, choose, record on one device (under its lock: a push meanwhile fails at once, naming this)."""
    t0 = time.monotonic()
    label = device.target.label
    notes: list[str] = []
    steps: list[str] = []
    with device.locked("tune", opts.lock_timeout_s):
        seen = device.agent(protocol.TUNED, "--dir", device.root)
        if not seen.get("current"):
            raise TuneError(f"{label} has no release yet: push one first (`python -m deploy push --artifacts DIR`); "
                            "tune measures with the runtime a release installed")
        artifacts = opts.artifacts
        if artifacts is None:
            artifacts = _local_artifacts(seen)
            if artifacts is not None:
                steps.append(f"artifacts: {artifacts}, where release {seen['current']} was pushed from")
        args = ["--dir", device.root, "--timeout-s", str(opts.timeout_s)]
        sent, count = 0, 1
        if artifacts is not None:
            count = len(opts.variants) or len(load_artifacts(artifacts).variants)
            bdir, sent = upload_bench_bundle(device, artifacts)
            args += ["--manifest", posixpath.join(bdir, "model", MANIFEST_NAME), "--code", posixpath.join(bdir, "code")]
            swept = f"every variant of {artifacts} (uploaded beside release {seen['current']}, {sent} bytes sent)"
        else:
            swept = f"the variant of release {seen['current']} ({seen.get('release_variant')}) only"
            notes.append(f"only {seen.get('release_variant')} was measured: the release holds one variant and the folder it "
                         f"was pushed from ({seen.get('artifacts')}) is not on this host as it was; pass --artifacts DIR "
                         "to compare every variant")
        if not opts.pause_daemon:
            args.append("--no-pause")
        log(f"{label}: measuring {swept}: up to {count * len(opts.threads) * len(opts.xnnpack)} configurations, "
            f"{opts.frames} frames and {opts.golden_count or 'all'} golden images each; this takes a while (the daemon is "
            f"{'left running' if not opts.pause_daemon else 'paused meanwhile'})")
        answer = device.agent(protocol.TUNE, *args, "--", *opts.sweep_args(), timeout_s=opts.timeout_s + 120)
        try:
            report = SweepReport.from_json(answer["report"])
        except (KeyError, TypeError, ValueError) as e:
            raise TuneError(f"{label}: the device's sweep report is not readable ({type(e).__name__}: {e}); "
                            "host and device code differ: push again") from None
        restart_problem = None  # the measurements stand either way: kept, printed and recorded
        if answer.get("paused"):
            if answer.get("restart_error"):
                restart_problem = (f"the daemon paused for the sweep did not start again: {one_line(str(answer['restart_error']))}; "
                                   "run `python -m deploy start`")
            else:
                try:
                    wait_healthy(device, str(answer["release"]), opts.health_timeout_s)
                    steps.append(f"daemon paused for the sweep, started again and healthy (release {answer['release']})")
                except HealthError as e:
                    restart_problem = (f"after the sweep, {one_line(str(e))}; see `python -m deploy status` and `logs`, "
                                       "or give it longer with --health-timeout-s")
        choice = choose(report, opts.tie_pct, opts.budget_ms)
        meets = None
        if choice is not None and opts.budget_ms is not None and choice.result.total is not None:
            meets = choice.result.total.p99_ms <= opts.budget_ms
        refused = None
        if report.emulated and not opts.allow_emulated:
            refused = (f"EMULATED ({report.emulated}): measured and printed, but nothing chosen from emulated timings; "
                       "pass --allow-emulated to record a choice anyway")
            choice_for_record = None
        else:
            choice_for_record = choice
        record = path = None
        if choice_for_record is not None and opts.record:
            rec = _record(opts, report, choice_for_record, answer, meets)
            out = device.agent(protocol.TUNE_RECORD, "--dir", device.root, "--record", json.dumps(rec))
            record, path = out.get("record"), out.get("path")
            steps.append(f"recorded {choice_for_record.config.label} in {path}")
    return TuneResult(label, report, choice if refused is None else None, opts.budget_ms, meets, record, path, refused, swept,
                      sent, tuple(notes), time.monotonic() - t0, tuple(steps), restart_problem)


@dataclass(frozen=True)
class AutoConfig:
    """What ``push --variant auto`` runs, and the one line that says why."""

    variant: str
    threads: Optional[int]
    xnnpack: Optional[str]
    tuned: bool
    note: str


def _fallback_variant(manifest: Manifest) -> str:
    return DEFAULT_VARIANT if DEFAULT_VARIANT in manifest.variants else next(iter(manifest.variants))


def auto_config(device: Device, manifest: Manifest, runtime: str, threads: Optional[int] = None,
                xnnpack: Optional[str] = None) -> AutoConfig:
    """``--variant auto``: the device's recorded choice when it was measured on these models with this runtime.

    Otherwise (never tuned, other models, another runtime) the push's default variant with the runtime's
    default threads and XNNPACK, and a note that says so. Explicit ``threads``/``xnnpack`` win over the record.
    """
    rec = device.agent(protocol.TUNED, "--dir", device.root).get("record")
    fallback = _fallback_variant(manifest)
    explicit = "".join(f", {k} {v} (given)" for k, v in (("threads", threads), ("XNNPACK", xnnpack)) if v is not None)
    used = (f"using {fallback} with {'the runtime default threads' if threads is None else f'{threads} threads'} and XNNPACK "
            f"{xnnpack or 'on (the runtime default)'}")
    if not isinstance(rec, dict):
        return AutoConfig(fallback, threads, xnnpack, False,
                          f"--variant auto: {device.target.label} was never tuned (`python -m deploy tune` records a "
                          f"choice); {used}")
    what = f"{Config(str(rec.get('variant')), int(rec['threads']), str(rec.get('xnnpack'))).label} (tuned {rec.get('tuned_at')})"
    v = str(rec.get("variant"))
    if v not in manifest.variants or manifest.variants[v].sha256 != rec.get("model_sha256"):
        return AutoConfig(fallback, threads, xnnpack, False,
                          f"--variant auto: the choice recorded on {device.target.label}, {what}, was measured on other "
                          f"models than {manifest.root} holds; {used}. Run `python -m deploy tune` again")
    if rec.get("runtime") != runtime:
        return AutoConfig(fallback, threads, xnnpack, False,
                          f"--variant auto: the choice recorded on {device.target.label}, {what}, was measured on "
                          f"{rec.get('runtime')} {rec.get('runtime_version')}, this push runs {runtime}; {used}. Run "
                          "`python -m deploy tune` again after it")
    m = rec.get("measured") or {}
    emu = f", from EMULATED ({rec['emulated']}) timings" if rec.get("emulated") else ""
    t = int(rec["threads"]) if threads is None else threads
    x = str(rec["xnnpack"]) if xnnpack is None else xnnpack
    return AutoConfig(v, t, x, True,
                      f"--variant auto: {what} as tuned on this device{emu} (total p50 {float(m.get('total_p50_ms') or 0):.3f} ms, "
                      f"golden {100 * float(m.get('golden_accuracy') or 0):.2f} %){explicit}")
