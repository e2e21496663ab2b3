"""The device-side agent: one stdlib-only script that deploy ships to the device and runs over SSH.

It does everything that must happen *on* the device, in as few SSH round trips as possible:
probe (for ``doctor``), prepare/verify/activate a release, the shared virtual environment, the
pidfile supervisor (``supervise``) with ``start``/``stop``/``status``, health waits, ``/stats``
read on the device's loopback, logs, releases and benchmarks.

Runs with the device's own ``python3`` (3.9+), imports only the standard library (``device``
only inside the child processes that check and run the model) and answers with one JSON
object on the last line of stdout: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.

Layout under the remote directory::

    releases/<id>/        a complete, verified release (code/, model/, config.json, ...)
    staging/<id>/         a release being uploaded; renamed into releases/ once verified
    current -> releases/<id>   switched atomically (new symlink, then rename over it)
    history.json          ids in the order they became current (for rollback)
    venv/                 shared virtual environment (system site packages)
    wheelhouse/           wheels pushed for offline installs
    run/                  supervisor.pid, daemon.pid, state.json
    logs/                 daemon.log, supervisor.log, results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

VERIFIED_MARKER = ".verified"
RELEASE_META = "release.json"
REQ_MARKER = ".edgekit-requirements.sha256"
STALE_STAGING_S = 3600.0


class AgentError(Exception):
    """A failure reported back to the host as ``{"ok": false, "error": ...}``."""

    def __init__(self, message: str, kind: str = "agent", **data: Any):
        super().__init__(message)
        self.kind = kind
        self.data = data


# ---------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(str(tmp), str(path))


@contextlib.contextmanager
def _locked(root: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Serialise mutating operations on one remote directory (two pushes at once)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(root / ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise AgentError(
                        f"another deploy holds {root}/.lock for more than {timeout_s:.0f} s; "
                        "wait for it to finish and try again",
                        kind="locked",
                    ) from e
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024 * max(1, lines // 100 + 1)))
            data = f.read().decode(errors="replace")
    except OSError:
        return []
    out = data.splitlines()
    return out[-lines:] if lines > 0 else []


_ARCH_FAMILIES = (("x86", ("x86_64", "amd64", "x86", "i386", "i486", "i586", "i686")),)
_ARCH_PREFIXES = {"aarch64": "arm", "arm": "arm", "ppc": "ppc", "powerpc": "ppc", "riscv": "riscv", "s390": "s390",
                  "mips": "mips", "loongarch": "loongarch", "sparc": "sparc"}


def _arch_family(machine: str) -> str:
    m = machine.strip().lower()
    for family, names in _ARCH_FAMILIES:
        if m in names:
            return family
    for prefix, family in _ARCH_PREFIXES.items():
        if m.startswith(prefix):
            return family
    return m


def emulated() -> Optional[str]:
    """What emulates this machine, as ``device.hardware.detect_emulation`` decides it (kept stdlib-only here)."""
    declared = os.environ.get("EDGEKIT_EMULATED", "").strip()
    if declared.lower() not in ("", "0", "no", "false", "off", "none"):
        return declared
    machine = platform.machine()
    try:
        kernel = Path("/proc/sys/kernel/arch").read_text().strip()
    except OSError:
        return None
    if kernel and machine and _arch_family(kernel) != _arch_family(machine):
        try:
            qemu = Path(f"/proc/sys/fs/binfmt_misc/qemu-{machine}").read_text().startswith("enabled")
        except OSError:
            qemu = False
        return f"qemu-user-{machine}" if qemu else f"{machine}-on-{kernel}"
    return None


class Layout:
    """Paths under one remote directory."""

    def __init__(self, root: str):
        self.root = Path(os.path.expanduser(root)).absolute()
        self.releases = self.root / "releases"
        self.staging = self.root / "staging"
        self.current = self.root / "current"
        self.history = self.root / "history.json"
        self.venv = self.root / "venv"
        self.venv_python = self.venv / "bin" / "python"
        self.wheelhouse = self.root / "wheelhouse"
        self.run = self.root / "run"
        self.logs = self.root / "logs"
        self.supervisor_pid = self.run / "supervisor.pid"
        self.daemon_pid = self.run / "daemon.pid"
        self.state = self.run / "state.json"
        self.stop_flag = self.run / "stop"
        self.daemon_log = self.logs / "daemon.log"
        self.supervisor_log = self.logs / "supervisor.log"
        self.results = self.logs / "results.jsonl"
        self.bench = self.root / "bench"

    def python(self) -> str:
        """The venv's Python once it exists, else the one running the agent."""
        return str(self.venv_python) if self.venv_python.exists() else sys.executable

    def ensure(self) -> None:
        """Create the directories every command expects."""
        for d in (self.releases, self.staging, self.run, self.logs):
            d.mkdir(parents=True, exist_ok=True)

    def current_id(self) -> Optional[str]:
        """The id ``current`` points at, or None."""
        try:
            return os.path.basename(os.readlink(str(self.current)))
        except OSError:
            return None

    def is_complete(self, release_id: str) -> bool:
        """True when releases/<id> exists and was verified."""
        return (self.releases / release_id / VERIFIED_MARKER).is_file()

    def release_ids(self) -> list[str]:
        """Complete releases, oldest first (by verification time)."""
        out = []
        if self.releases.is_dir():
            for d in self.releases.iterdir():
                if (d / VERIFIED_MARKER).is_file():
                    out.append((float((d / VERIFIED_MARKER).stat().st_mtime), d.name))
        return [name for _, name in sorted(out)]


# ---------------------------------------------------------------- probe (doctor)


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(p).read_text().splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v.strip().strip('"')
            break
        except OSError:
            continue
    return out


def _try_imports(codes: dict[str, str], python: str) -> dict[str, dict[str, Any]]:
    """Run each import probe in its own child process, all at once (imports are slow on a Pi)."""
    procs = {}
    for name, code in codes.items():
        try:
            procs[name] = subprocess.Popen([python, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            procs[name] = e  # type: ignore[assignment]
    out: dict[str, dict[str, Any]] = {}
    for name, p in procs.items():
        if isinstance(p, OSError):
            out[name] = {"ok": False, "error": str(p)}
            continue
        try:
            stdout, stderr = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            out[name] = {"ok": False, "error": "import took over 120 s"}
            continue
        if p.returncode == 0:
            out[name] = {"ok": True, "version": stdout.strip()}
        else:
            out[name] = {"ok": False, "error": (stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
    return out


def _probe_key() -> str:
    """Changes when the interpreter or anything on its import path is installed or removed."""
    parts = [sys.executable, os.path.realpath(sys.executable)]
    for p in [os.path.realpath(sys.executable), *sys.path]:
        with contextlib.suppress(OSError):
            parts.append(f"{p}:{os.stat(p or '.').st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Facts doctor needs: arch, OS, Python, systemd, camera, disk, runtimes importable."""
    root = Path(os.path.expanduser(args.dir)).absolute()
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    du = shutil.disk_usage(str(existing))
    cache = root / "run" / "probe.json"
    key = _probe_key()
    if args.cached:
        old = _read_json(cache, {}) or {}
        if old.get("key") == key and isinstance(old.get("facts"), dict):
            return {**old["facts"], "free_bytes": du.free, "total_bytes": du.total, "cameras": _cameras(),
                    "emulated": emulated(), "cached": True}
    facts = _probe_facts(root, du)
    if cache.parent.is_dir():
        with contextlib.suppress(OSError):
            _write_json_atomic(cache, {"key": key, "facts": facts})
    return {**facts, "emulated": emulated()}  # per session, never cached: it comes from the session's environment


def _cameras() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []


def _probe_facts(root: Path, du: Any) -> dict[str, Any]:
    cams = _cameras()
    model = ""
    with contextlib.suppress(OSError):
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace")
    py = sys.executable
    checks = _try_imports({
        "numpy": "import numpy; print(numpy.__version__)",
        "tflite-runtime": "import tflite_runtime, tflite_runtime.interpreter as i; i.Interpreter; "
                          "print(getattr(tflite_runtime, '__version__', '?'))",
        "ai-edge-litert": "import ai_edge_litert.interpreter as i; i.Interpreter\n"
                          "try:\n from importlib.metadata import version; print(version('ai-edge-litert'))\n"
                          "except Exception: print('?')",
        # libcamera's list of connected cameras (a Pi 5 has /dev/video* nodes even without one).
        "picamera2": "import json; from picamera2 import Picamera2; "
                     "print(json.dumps([str(c.get('Model', '?')) for c in Picamera2.global_camera_info()]))",
        "venv": "import venv; print('ok')",
        "ensurepip": "import ensurepip; print('ok')",
        "pip": "import pip; print(pip.__version__)",
    }, py)
    runtimes = {k: checks[k] for k in ("numpy", "tflite-runtime", "ai-edge-litert", "picamera2")}
    models: list[str] = []
    if checks["picamera2"]["ok"]:
        with contextlib.suppress(ValueError):
            models = [str(m) for m in json.loads(checks["picamera2"].get("version") or "[]")]
    venv_ok = checks["venv"]["ok"]
    ensurepip_ok = checks["ensurepip"]["ok"]
    pip = checks["pip"]
    libc = platform.libc_ver()
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "kernel": platform.release(),
        "os_release": {k: v for k, v in _os_release().items() if k in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")},
        "python": ".".join(str(x) for x in sys.version_info[:3]),
        "python_executable": py,
        "libc": f"{libc[0]} {libc[1]}" if libc[0] else "",
        "systemd": Path("/run/systemd/system").is_dir(),
        "is_root": os.geteuid() == 0,
        "board": model,
        "cameras": cams,
        "camera_models": models,
        "remote_dir": str(root),
        "free_bytes": du.free,
        "total_bytes": du.total,
        "imports": runtimes,
        "venv_module": venv_ok,
        "ensurepip": ensurepip_ok,
        "pip": pip.get("version") if pip["ok"] else None,
    }


# ---------------------------------------------------------------- releases


def cmd_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Make the layout, clear stale staging, say whether the release is already there."""
    lay = Layout(args.dir)
    with _locked(lay.root):
        lay.ensure()
        now = time.time()
        for d in lay.staging.iterdir():
            # Our own id is re-uploaded from scratch; others are left alone unless abandoned.
            if d.name == args.id or now - d.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(str(d), ignore_errors=True)
        exists = lay.is_complete(args.id)
        if not exists:
            # A releases/<id> without its marker cannot come from us (we rename verified
            # dirs only), but do not trust it either.
            if (lay.releases / args.id).exists():
                shutil.rmtree(str(lay.releases / args.id), ignore_errors=True)
            (lay.staging / args.id).mkdir(parents=True)
        return {
            "root": str(lay.root),
            "exists": exists,
            "current": lay.current_id(),
            "staging": str(lay.staging / args.id),
            "releases": lay.release_ids(),
        }


def _check_files(rel: Path) -> dict[str, Any]:
    meta = _read_json(rel / RELEASE_META)
    if not isinstance(meta, dict) or "files" not in meta:
        raise AgentError(f"{rel}/{RELEASE_META} is missing or unreadable: the upload was incomplete; push again", kind="incomplete")
    bad = []
    for name, want in sorted(meta["files"].items()):
        p = rel / name
        if not p.is_file():
            bad.append(f"{name}: missing")
            continue
        if p.stat().st_size != want["bytes"]:
            bad.append(f"{name}: {p.stat().st_size} bytes, expected {want['bytes']}")
            continue
        got = _sha256(p)
        if got != want["sha256"]:
            bad.append(f"{name}: sha256 {got[:12]}…, expected {want['sha256'][:12]}…")
    if bad:
        raise AgentError(
            "files on the device differ from what the host sent (" + "; ".join(bad) + "): "
            "the upload was corrupted or interrupted; push again",
            kind="corrupt",
            files=bad,
        )
    return meta


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    """Check hashes on the device, run the golden inputs in a child process, then publish."""
    lay = Layout(args.dir)
    with _locked(lay.root):
        if lay.is_complete(args.id):
            return {"verified": True, "already": True}
        rel = lay.staging / args.id
        if not rel.is_dir():
            raise AgentError(f"no staged upload at {rel}; push again", kind="incomplete")
        meta = _check_files(rel)
        python = lay.python()
        env = dict(os.environ, PYTHONPATH=str(rel / "code"), PYTHONDONTWRITEBYTECODE="1")
        cmd = [python, str(rel / "code" / "edgekit_agent.py"), "golden", "--release", str(rel), "--count", str(args.count)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise AgentError(
                f"loading the model and running {args.count} golden inputs took over {args.timeout_s:.0f} s; "
                "the device is overloaded or the model too large",
                kind="golden",
            ) from None
        result = last_json(p.stdout)
        if p.returncode != 0 or not result or not result.get("ok"):
            reason = (result or {}).get("error") or (p.stderr.strip().splitlines() or ["no output"])[-1]
            raise AgentError(f"the model failed its check on the device: {reason}", kind="golden", detail=result)
        (rel / VERIFIED_MARKER).write_text(json.dumps({"verified_at": time.time(), "golden": result}))
        os.replace(str(rel), str(lay.releases / args.id))
        return {"verified": True, "already": False, "golden": result, "release": meta.get("id")}


def last_json(text: str) -> Optional[dict[str, Any]]:
    """The last line of ``text`` that is a JSON object, or None (shared with deploy.remote)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                out = json.loads(line)
                return out if isinstance(out, dict) else None
            except ValueError:
                return None
    return None


def cmd_golden(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the venv's Python: load the model with the device runtime, compare golden outputs."""
    import numpy as np  # only here: the rest of the agent is stdlib

    from device.engine import open_engine
    from device.manifest import load_manifest, sha256_file
    from device.quant import to_input, to_scores

    rel = Path(args.release)
    config = _read_json(rel / "config.json", {})
    variant = config["variant"]
    t0 = time.perf_counter()
    manifest = load_manifest(rel / "model" / "manifest.json")
    engine = open_engine(manifest, variant, runtime=config.get("runtime", "auto"))
    load_ms = (time.perf_counter() - t0) * 1e3
    gpath = manifest.golden_path()
    if manifest.golden is not None and sha256_file(gpath) != manifest.golden.sha256:
        raise AgentError(f"{gpath} does not match the manifest's sha256; push again", kind="golden")
    gold = np.load(str(gpath))
    key = "raw_" + variant
    if key not in gold:
        raise AgentError(f"{gpath} has no {key} outputs; re-run the host pipeline", kind="golden")
    n = min(int(args.count), len(gold["images"]))
    v = manifest.variant(variant)
    worst = 0.0
    agree = 0
    for i in range(n):
        x = to_input(gold["images"][i].astype(np.float32) / 255.0, engine.input_spec)
        got = to_scores(engine.run(x), v.output).reshape(-1)
        want = to_scores(gold[key][i], v.output).reshape(-1)
        worst = max(worst, float(np.max(np.abs(got - want))))
        agree += int(np.argmax(got) == np.argmax(want))
    tol = float(args.tolerance)
    ok = agree == n and worst <= tol
    out = {
        "ok": ok,
        "variant": variant,
        "runtime": engine.runtime.name,
        "runtime_version": engine.runtime.version,
        "count": n,
        "top1_agree": agree,
        "max_abs_diff": worst,
        "tolerance": tol,
        "load_ms": load_ms,
    }
    if not ok:
        out["error"] = (
            f"{variant} on {engine.runtime.name} {engine.runtime.version}: top-1 agrees on {agree}/{n} golden inputs, "
            f"largest score difference {worst:.4f} (allowed {tol}); the model or runtime is incompatible"
        )
    return out


def _history(lay: Layout) -> list[str]:
    h = _read_json(lay.history, [])
    return [x for x in h if isinstance(x, str)] if isinstance(h, list) else []


def _switch(lay: Layout, release_id: str) -> Optional[str]:
    """Point ``current`` at releases/<id> atomically; returns the previous id."""
    if not lay.is_complete(release_id):
        raise AgentError(f"release {release_id} is not on the device (or incomplete); push it first", kind="missing")
    previous = lay.current_id()
    tmp = lay.root / f".current.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(os.path.join("releases", release_id), str(tmp))
    os.replace(str(tmp), str(lay.current))  # rename(2) over the old link: never a moment without it
    hist = [x for x in _history(lay) if x != release_id] + [release_id]
    _write_json_atomic(lay.history, hist[-50:])
    return previous


def _prune(lay: Layout, keep: int) -> list[str]:
    cur = lay.current_id()
    hist = _history(lay)
    protect = {cur} | set(hist[-2:])
    ids = lay.release_ids()
    removed = []
    for rid in ids[: max(0, len(ids) - keep)]:
        if rid in protect:
            continue
        shutil.rmtree(str(lay.releases / rid), ignore_errors=True)
        removed.append(rid)
    return removed


def cmd_activate(args: argparse.Namespace) -> dict[str, Any]:
    """Switch ``current`` to a release and prune old ones."""
    lay = Layout(args.dir)
    with _locked(lay.root):
        previous = _switch(lay, args.id)
        removed = _prune(lay, args.keep) if args.keep > 0 else []
        return {"current": args.id, "previous": previous, "pruned": removed}


def cmd_rollback_target(args: argparse.Namespace) -> dict[str, Any]:
    """The release before the current one in history (that still exists)."""
    lay = Layout(args.dir)
    cur = lay.current_id()
    for rid in reversed(_history(lay)):
        if rid != cur and lay.is_complete(rid):
            return {"current": cur, "target": rid}
    raise AgentError("no earlier release to roll back to (only the current one is on the device)", kind="missing")


def cmd_releases(args: argparse.Namespace) -> dict[str, Any]:
    """List complete releases with their metadata."""
    lay = Layout(args.dir)
    cur = lay.current_id()
    out = []
    for rid in lay.release_ids():
        meta = _read_json(lay.releases / rid / RELEASE_META, {})
        out.append({
            "id": rid,
            "current": rid == cur,
            "variant": meta.get("variant"),
            "model_sha256": meta.get("model_sha256"),
            "created": meta.get("created"),
            "source": meta.get("source"),
            "verified_at": (lay.releases / rid / VERIFIED_MARKER).stat().st_mtime,
        })
    return {"current": cur, "releases": out, "history": _history(lay)}


# ---------------------------------------------------------------- venv


def _req_satisfied(python: str, requirements: Path) -> bool:
    code = r"""
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split('#')[0].strip()
    if not line or line.startswith('-'):
        continue
    r = Requirement(line)
    if r.marker is not None and not r.marker.evaluate():
        continue
    try:
        v = version(r.name)
    except PackageNotFoundError:
        sys.exit(1)
    if r.specifier and not r.specifier.contains(v, prereleases=True):
        sys.exit(1)
"""
    try:
        return subprocess.run([python, "-c", code, str(requirements)], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def cmd_venv(args: argparse.Namespace) -> dict[str, Any]:
    """Create the shared venv once; install requirements only when their hash changed."""
    lay = Layout(args.dir)
    req = Path(args.requirements)
    want = _sha256(req)
    steps: list[str] = []
    with _locked(lay.root, timeout_s=900):
        marker = lay.venv / REQ_MARKER
        if marker.is_file() and marker.read_text().strip() == want and lay.venv_python.exists():
            return {"venv": str(lay.venv), "changed": False, "steps": ["requirements unchanged"]}
        if not lay.venv_python.exists():
            shutil.rmtree(str(lay.venv), ignore_errors=True)
            # --without-pip: pip is bootstrapped only if something must be installed.
            p = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(lay.venv)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise AgentError(
                    f"`{sys.executable} -m venv` failed: {p.stderr.strip()[-400:]}. "
                    "On Debian/Raspberry Pi OS: `sudo apt install python3-venv`",
                    kind="venv",
                )
            steps.append("created venv (system site packages)")
        if _req_satisfied(str(lay.venv_python), req) and not args.force_install:
            steps.append("requirements already satisfied (system site packages); nothing installed")
        else:
            if subprocess.run([str(lay.venv_python), "-m", "pip", "--version"], capture_output=True).returncode != 0:
                p = subprocess.run([str(lay.venv_python), "-m", "ensurepip", "--default-pip"], capture_output=True, text=True)
                if p.returncode != 0:
                    raise AgentError(
                        f"cannot bootstrap pip in {lay.venv}: {p.stderr.strip()[-400:]}. "
                        "On Debian/Raspberry Pi OS: `sudo apt install python3-venv python3-pip`",
                        kind="venv",
                    )
                steps.append("bootstrapped pip")
            cmd = [str(lay.venv_python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(req)]
            if args.wheelhouse:
                cmd[4:4] = ["--no-index", "--find-links", str(lay.wheelhouse)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
            if p.returncode != 0:
                hint = ("the wheelhouse lacks a wheel for this device; rebuild it with --wheelhouse"
                        if args.wheelhouse else "the device may have no internet: use `push --wheelhouse DIR`")
                raise AgentError(f"pip install failed: {p.stderr.strip()[-600:]}. {hint}", kind="venv")
            steps.append("installed requirements" + (" from the wheelhouse" if args.wheelhouse else ""))
        marker.write_text(want + "\n")
        return {"venv": str(lay.venv), "changed": True, "steps": steps}


# ---------------------------------------------------------------- supervisor


def _daemon_command(lay: Layout, rel: Path, config: dict[str, Any]) -> list[str]:
    python = lay.python()
    cmd = [
        python, "-m", "device", "run",
        "--manifest", str(rel / "model" / "manifest.json"),
        "--variant", str(config["variant"]),
        "--source", str(config.get("source", "synthetic")),
        "--port", str(int(config["port"])),
        "--results", str(lay.results),
    ]
    return cmd + _runtime_args(config) + [str(x) for x in config.get("extra_args", [])]


def _runtime_args(config: dict[str, Any]) -> list[str]:
    """The daemon's --runtime/--threads options a release's config asks for."""
    args = []
    if config.get("runtime") and config["runtime"] != "auto":
        args += ["--runtime", str(config["runtime"])]
    if config.get("threads"):
        args += ["--threads", str(int(config["threads"]))]
    return args


def cmd_supervise(args: argparse.Namespace) -> dict[str, Any]:
    """The pidfile supervisor: run the daemon of ``current``, restart it on failure with backoff."""
    lay = Layout(args.dir)
    lay.ensure()
    stopping = {"flag": False}
    child: dict[str, Optional[subprocess.Popen[bytes]]] = {"p": None}

    def on_term(signum: int, frame: Any) -> None:
        stopping["flag"] = True
        p = child["p"]
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lay.supervisor_pid.write_text(f"{os.getpid()}\n")
    restarts = 0
    backoff_s = 1.0
    state: dict[str, Any] = {"supervisor_pid": os.getpid(), "restarts": 0, "started": time.time()}

    def log(msg: str) -> None:
        print(time.strftime("%Y-%m-%d %H:%M:%S"), msg, flush=True)

    try:
        while not stopping["flag"]:
            rid = lay.current_id()
            if rid is None or not lay.is_complete(rid):
                log(f"no complete current release ({rid}); waiting")
                time.sleep(2.0)
                continue
            rel = (lay.releases / rid).resolve()
            config = _read_json(rel / "config.json", {})
            cmd = _daemon_command(lay, rel, config)
            env = dict(os.environ, PYTHONPATH=str(rel / "code"), PYTHONUNBUFFERED="1")
            log(f"starting release {rid}: {' '.join(cmd)}")
            with open(lay.daemon_log, "ab") as out:
                p = subprocess.Popen(cmd, cwd=str(rel), env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            child["p"] = p
            lay.daemon_pid.write_text(f"{p.pid}\n")
            started = time.monotonic()
            state.update(release=rid, daemon_pid=p.pid, daemon_started=time.time(), port=config.get("port"),
                         variant=config.get("variant"), restarts=restarts, last_exit=state.get("last_exit"))
            _write_json_atomic(lay.state, state)
            if stopping["flag"]:  # a SIGTERM that arrived between the check and Popen
                p.send_signal(signal.SIGTERM)
            code = p.wait()
            ran_s = time.monotonic() - started
            state["last_exit"] = code
            with contextlib.suppress(FileNotFoundError):
                lay.daemon_pid.unlink()
            if stopping["flag"]:
                log(f"daemon exited with {code} after stop request")
                break
            restarts += 1
            if ran_s > 60:
                backoff_s = 1.0
            log(f"daemon exited with {code} after {ran_s:.1f} s; restart {restarts} in {backoff_s:.0f} s")
            state.update(restarts=restarts, daemon_pid=None)
            _write_json_atomic(lay.state, state)
            end = time.monotonic() + backoff_s
            while time.monotonic() < end and not stopping["flag"]:
                time.sleep(0.1)
            backoff_s = min(backoff_s * 2, 30.0)
    finally:
        last = child["p"]
        if last is not None and last.poll() is None:
            last.send_signal(signal.SIGTERM)
            try:
                last.wait(timeout=10)
            except subprocess.TimeoutExpired:
                last.kill()
                last.wait()
        for f in (lay.daemon_pid, lay.supervisor_pid):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        state.update(daemon_pid=None, supervisor_pid=None, stopped=time.time())
        _write_json_atomic(lay.state, state)
    return {"stopped": True}


def _supervisor_pid(lay: Layout) -> Optional[int]:
    pid = _read_pid(lay.supervisor_pid)
    if pid is not None and _pid_alive(pid) and "supervise" in _cmdline(pid) and str(lay.root) in _cmdline(pid):
        return pid
    return None


def _stop_process(lay: Layout, timeout_s: float) -> dict[str, Any]:
    pid = _supervisor_pid(lay)
    if pid is None:
        # A daemon left without its supervisor (supervisor SIGKILLed): stop it too.
        dpid = _read_pid(lay.daemon_pid)
        if dpid and _pid_alive(dpid) and "device" in _cmdline(dpid):
            os.kill(dpid, signal.SIGTERM)
            _wait_gone(dpid, timeout_s)
        return {"was_running": False}
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        dpid = _read_pid(lay.daemon_pid)
        if dpid and _pid_alive(dpid):
            os.kill(dpid, signal.SIGKILL)
        _wait_gone(pid, 5)
        return {"was_running": True, "killed": True}
    return {"was_running": True}


def _wait_gone(pid: int, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return not _pid_alive(pid)


def _start_process(lay: Layout) -> dict[str, Any]:
    pid = _supervisor_pid(lay)
    if pid is not None:
        return {"already_running": True, "supervisor_pid": pid}
    lay.ensure()
    agent = Path(__file__).resolve()
    with open(lay.supervisor_log, "ab") as out:
        p = subprocess.Popen(
            [sys.executable, str(agent), "supervise", "--dir", str(lay.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(lay.root), close_fds=True,
        )
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if _read_pid(lay.supervisor_pid) == p.pid:
            return {"already_running": False, "supervisor_pid": p.pid}
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise AgentError(
        "the supervisor did not start: " + " | ".join(_tail(lay.supervisor_log, 5)), kind="supervisor"
    )


def _require_current(lay: Layout) -> str:
    """The current release id; an error naming the fix when nothing was pushed yet."""
    rid = lay.current_id()
    if rid is None:
        raise AgentError("nothing to start: no release has been pushed to this directory; run `deploy push` first", kind="missing")
    return rid


def _unit_name(lay: Layout) -> str:
    return "edgekit-" + hashlib.sha256(str(lay.root).encode()).hexdigest()[:8] + ".service"


def render_unit(lay: Layout, rel: Path, config: dict[str, Any], user: str) -> str:
    """The device package's unit template (shipped in the release), filled for this release and directory."""
    # device.service is stdlib-only: import the release's own copy of it, then put back whatever
    # `device` modules the process had (tests call this in-process).
    def is_device(name: str) -> bool:
        return name == "device" or name.startswith("device.")

    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if is_device(m)]}
    sys.path.insert(0, str(rel / "code"))
    try:
        from device.service import render_unit as render
    finally:
        sys.path.pop(0)
        for name in [m for m in sys.modules if is_device(m)]:
            del sys.modules[name]
        sys.modules.update(saved)
    python = lay.python()
    # Paths go through `current`, so a switch + restart needs no new unit unless the config changed.
    text = render(manifest=str(lay.current / "model" / "manifest.json"), user=user, workdir=str(lay.current),
                  state_dir=str(lay.logs), python=python, variant=str(config["variant"]),
                  source=str(config.get("source", "synthetic")), port=int(config["port"]))
    extra = _runtime_args(config)
    lines = []
    for line in text.splitlines():
        if line.startswith("ExecStart=") and extra:
            line = line + " " + " ".join(extra)
        lines.append(line)
        if line.strip() == "[Service]":
            lines.append(f"Environment=PYTHONPATH={lay.current / 'code'}")
    return "\n".join(lines) + "\n"


def _systemctl(*argv: str) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.run([*prefix, "systemctl", *argv], capture_output=True, text=True, timeout=60)


def _main_pid(unit: str) -> Optional[int]:
    p = _systemctl("show", "-p", "MainPID", "--value", unit)
    try:
        pid = int(p.stdout.strip() or 0)
    except ValueError:
        return None
    return pid or None


def _systemd_start(lay: Layout, restart: bool) -> dict[str, Any]:
    import getpass

    unit = _unit_name(lay)
    rid = _require_current(lay)
    rel = (lay.releases / rid).resolve()
    config = _read_json(rel / "config.json", {})
    text = render_unit(lay, rel, config, getpass.getuser())
    path = Path("/etc/systemd/system") / unit
    if not path.exists() or path.read_text() != text:
        tmp = lay.run / unit
        tmp.write_text(text)
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        p = subprocess.run([*prefix, "install", "-m", "0644", str(tmp), str(path)], capture_output=True, text=True)
        if p.returncode != 0:
            raise AgentError(f"cannot install {path}: {p.stderr.strip()}; deploy as root or allow passwordless sudo, "
                             "or use --supervisor process", kind="supervisor")
        _systemctl("daemon-reload")
    p = _systemctl("restart" if restart else "start", unit)
    if p.returncode != 0:
        raise AgentError(f"systemctl {'restart' if restart else 'start'} {unit} failed: {p.stderr.strip()}; "
                         f"see `journalctl -u {unit}`", kind="supervisor")
    _systemctl("enable", unit)
    _write_json_atomic(lay.state, {"mode": "systemd", "unit": unit, "release": rid, "port": config.get("port"),
                                   "variant": config.get("variant"), "daemon_pid": _main_pid(unit), "restarts": 0})
    return {"unit": unit}


def cmd_control(args: argparse.Namespace) -> dict[str, Any]:
    """start / stop / restart the daemon with the chosen supervisor."""
    lay = Layout(args.dir)
    mode = args.mode
    if mode == "auto":
        mode = "systemd" if Path("/run/systemd/system").is_dir() else "process"
    out: dict[str, Any] = {"mode": mode}
    if mode == "systemd":
        unit = _unit_name(lay)
        if args.action == "stop":
            _systemctl("stop", unit)
            out["unit"] = unit
        else:
            out.update(_systemd_start(lay, restart=args.action == "restart"))
        return out
    if args.action in ("stop", "restart"):
        out["stop"] = _stop_process(lay, args.timeout_s)
    if args.action in ("start", "restart"):
        _require_current(lay)
        out["start"] = _start_process(lay)
    return out


# ---------------------------------------------------------------- health, stats, logs


def _http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def _state(lay: Layout) -> dict[str, Any]:
    st = _read_json(lay.state, {}) or {}
    if not isinstance(st, dict):
        return {}
    if st.get("mode") == "systemd" and st.get("unit"):
        st["daemon_pid"] = _main_pid(str(st["unit"]))  # systemd may have restarted it since
    return st


def _port(lay: Layout) -> Optional[int]:
    st = _state(lay)
    if st.get("port"):
        return int(st["port"])
    rid = lay.current_id()
    if rid:
        cfg = _read_json(lay.releases / rid / "config.json", {}) or {}
        if cfg.get("port"):
            return int(cfg["port"])
    return None


def cmd_wait(args: argparse.Namespace) -> dict[str, Any]:
    """Wait until the daemon of the current release answers /healthz and has classified frames."""
    lay = Layout(args.dir)
    want = lay.current_id()
    deadline = time.monotonic() + args.timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        st = _state(lay)
        if st.get("release") == want and st.get("daemon_pid") and _pid_alive(int(st["daemon_pid"])):
            port = int(st["port"])
            try:
                code, _ = _http_get(port, "/healthz")
                if code == 200:
                    code, body = _http_get(port, "/stats")
                    stats = json.loads(body.decode()) if code == 200 else {}
                    frames = int(stats.get("frames", 0) or 0)
                    if frames > 0:
                        return {"healthy": True, "release": want, "frames": frames, "stats": stats}
                    last = "healthy but no frame classified yet"
                else:
                    last = f"/healthz answered {code}"
            except (OSError, ValueError) as e:
                last = f"daemon not answering on 127.0.0.1:{port} ({e})"
        elif st.get("release") != want:
            last = f"supervisor has not started release {want} yet (running: {st.get('release')})"
        else:
            last = f"daemon not running (last exit code {st.get('last_exit')}, restarts {st.get('restarts', 0)})"
        time.sleep(0.2)
    raise AgentError(
        f"the daemon of release {want} was not healthy within {args.timeout_s:.0f} s: {last}",
        kind="unhealthy",
        log_tail=_tail(lay.daemon_log, 15),
    )


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    """Supervisor and daemon state plus the daemon's /stats, read on the device's loopback."""
    lay = Layout(args.dir)
    st = _state(lay)
    sup = _supervisor_pid(lay)
    dpid = st.get("daemon_pid")
    running = dpid is not None and _pid_alive(int(dpid))
    out: dict[str, Any] = {
        "current": lay.current_id(),
        "release": st.get("release"),
        "variant": st.get("variant"),
        "supervisor_pid": sup,
        "daemon_pid": dpid if running else None,
        "running": running,
        "restarts": st.get("restarts", 0),
        "last_exit": st.get("last_exit"),
        "port": _port(lay),
        "stats": None,
        "emulated": emulated(),
    }
    if running and out["port"]:
        try:
            code, body = _http_get(int(out["port"]), "/stats")
            out["stats"] = json.loads(body.decode()) if code == 200 else None
            out["stats_error"] = None if code == 200 else f"/stats answered {code}"
        except (OSError, ValueError) as e:
            out["stats_error"] = f"daemon not answering: {e}"
    return out


def cmd_logs(args: argparse.Namespace) -> dict[str, Any]:
    """The last lines of the daemon log, the supervisor log and the results file."""
    lay = Layout(args.dir)
    return {
        "daemon": _tail(lay.daemon_log, args.lines),
        "supervisor": _tail(lay.supervisor_log, args.lines),
        "results": _tail(lay.results, args.lines),
    }


def _present_variants(manifest: Path) -> tuple[list[str], list[str]]:
    """(variants whose model file is next to the manifest, all variants the manifest names)."""
    data = _read_json(manifest, None)
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict):
        raise AgentError(f"{manifest} is missing or not a manifest; push a release again", kind="missing")
    named = [str(k) for k in data["variants"]]
    present = [k for k, v in data["variants"].items()
               if isinstance(v, dict) and (manifest.parent / str(v.get("path", ""))).is_file()]
    return present, named


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``python -m device bench --json`` with the venv on the variants present on the device."""
    lay = Layout(args.dir)
    where = "the uploaded bundle"
    if args.manifest:
        manifest = Path(args.manifest)
        code = Path(args.code)
    else:
        rid = lay.current_id()
        if rid is None:
            raise AgentError("nothing to benchmark: push a release first or pass --artifacts", kind="missing")
        rel = (lay.releases / rid).resolve()
        manifest, code = rel / "model" / "manifest.json", rel / "code"
        where = f"release {rid} (current)"
    present, named = _present_variants(manifest)
    if args.variant == "all":
        variants = present
    elif args.variant in present:
        variants = [args.variant]
    else:
        known = "" if args.variant in named else f" (the manifest names {', '.join(named)})"
        raise AgentError(
            f"variant {args.variant!r} is not on the device{known}: {where} holds {', '.join(present) or 'no model'}. "
            f"Benchmark it with `python -m deploy bench --artifacts DIR --variant {args.variant}` (uploads every variant "
            f"for the benchmark) or make it current with `python -m deploy push --artifacts DIR --variant {args.variant}`",
            kind="missing", present=present)
    if not variants:
        raise AgentError(f"{where} holds no model file; push a release again", kind="missing")
    python = lay.python()
    env = dict(os.environ, PYTHONPATH=str(code))
    # One run for all when every variant is there, else one per present variant (a release holds one).
    runs = ["all"] if variants == named and len(named) > 1 else variants
    results: list[Any] = []
    commands = []
    report: dict[str, Any] = {}
    deadline = time.monotonic() + args.timeout_s
    for variant in runs:
        cmd = [python, "-m", "device", "bench", "--manifest", str(manifest), "--variant", variant, "--json", *args.extra]
        commands.append(" ".join(cmd))
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()), env=env,
                               cwd=str(lay.root))
        except subprocess.TimeoutExpired:
            raise AgentError(f"the benchmark ran over {args.timeout_s:.0f} s; pass fewer --runs", kind="bench") from None
        if p.returncode != 0:
            raise AgentError(f"`python -m device bench` failed (exit {p.returncode}): " + " | ".join(p.stderr.strip().splitlines()[-5:]),
                             kind="bench")
        try:
            one = json.loads(p.stdout)
        except ValueError:
            one = last_json(p.stdout)
            if one is None:
                raise AgentError("`python -m device bench --json` printed no JSON: " + p.stdout[-300:], kind="bench") from None
        part = one.get("results") if isinstance(one, dict) else None
        if isinstance(part, list):
            results += part
            report.update((k, v) for k, v in one.items() if k != "results")
        else:
            results.append(one)
    report["results"] = results
    return {"report": report, "variants": variants, "emulated": emulated(), "command": " && ".join(commands)}


# ---------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgekit_agent", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name: str, fn: Any, with_dir: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        if with_dir:
            p.add_argument("--dir", required=True)
        return p

    add("probe", cmd_probe).add_argument("--cached", action="store_true", help="reuse the last probe while nothing changed")
    add("prepare", cmd_prepare).add_argument("--id", required=True)
    p = add("verify", cmd_verify)
    p.add_argument("--id", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p = add("golden", cmd_golden, with_dir=False)
    p.add_argument("--release", required=True)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--tolerance", type=float, default=0.05)
    p = add("activate", cmd_activate)
    p.add_argument("--id", required=True)
    p.add_argument("--keep", type=int, default=3)
    add("rollback-target", cmd_rollback_target)
    add("releases", cmd_releases)
    p = add("venv", cmd_venv)
    p.add_argument("--requirements", required=True)
    p.add_argument("--wheelhouse", action="store_true")
    p.add_argument("--force-install", action="store_true")
    p.add_argument("--timeout-s", type=float, default=900.0)
    add("supervise", cmd_supervise)
    p = add("control", cmd_control)
    p.add_argument("action", choices=["start", "stop", "restart"])
    p.add_argument("--mode", choices=["auto", "systemd", "process"], default="auto")
    p.add_argument("--timeout-s", type=float, default=15.0)
    add("wait", cmd_wait).add_argument("--timeout-s", type=float, default=30.0)
    add("status", cmd_status)
    add("logs", cmd_logs).add_argument("--lines", type=int, default=20)
    p = add("bench", cmd_bench)
    p.add_argument("--variant", default="all")
    p.add_argument("--manifest", default="")
    p.add_argument("--code", default="")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("extra", nargs="*")
    return ap


def _execute(argv: list[str]) -> dict[str, Any]:
    """Run one agent command; the answer dict always has ``ok``."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        return {"ok": False, "error": f"bad agent command {argv!r}: host and device agent disagree", "kind": "internal"}
    try:
        return {"ok": True, **args.fn(args)}
    except AgentError as e:
        return {"ok": False, "error": str(e), "kind": e.kind, **e.data}
    except Exception as e:  # report, never a bare traceback the host cannot parse
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "kind": "internal"}


def serve() -> int:
    """Answer commands from stdin, one JSON argv list per line, one JSON answer per line.

    One SSH channel and one interpreter for a whole push instead of one per step; EOF on
    stdin (the host went away) ends it.
    """
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a command prints may corrupt the answer stream
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            argv = json.loads(line)
            answer = _execute([str(a) for a in argv]) if isinstance(argv, list) else {"ok": False, "error": "expected a list"}
        except ValueError as e:
            answer = {"ok": False, "error": f"bad request: {e}", "kind": "internal"}
        try:
            out.write(json.dumps(answer, default=str) + "\n")
            out.flush()
        except (BrokenPipeError, OSError):
            return 0
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run one agent command and print its JSON answer on the last line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return serve()
    if argv[:1] == ["supervise"] or "-h" in argv or "--help" in argv:
        args = _parser().parse_args(argv)
        args.fn(args)
        return 0
    answer = _execute(argv)
    print(json.dumps(answer, default=str))
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
