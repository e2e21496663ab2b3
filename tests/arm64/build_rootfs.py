"""Build (once) the emulated 64-bit Raspberry Pi OS target: Debian Bookworm arm64 under qemu-user.

Raspberry Pi OS Bookworm is Debian Bookworm for arm64 with Python 3.11. This script makes that
software stack on an x86 host, cached outside the repository:

1. ``binfmt_misc`` mounted and the ``qemu-aarch64`` handler registered (from
   ``/usr/lib/binfmt.d/qemu-aarch64.conf``, flag F so the chroot needs no qemu binary of its own);
2. ``debootstrap --arch=arm64 --variant=minbase`` of Bookworm with python3, venv, pip and
   openssh-server into ``$EDGEKIT_ARM64_ROOT`` (default ``/var/cache/edgekit/bookworm-arm64``);
3. a wheelhouse in ``$EDGEKIT_WHEELHOUSE`` (default ``/var/cache/edgekit/wheelhouse-cp311-aarch64``)
   downloaded on the host with ``pip download --platform ... --only-binary=:all:``, because pip
   inside the emulated root cannot reach the index (TLS fails there, like a Pi on a closed network);
4. two virtual environments inside the root, installed offline from that wheelhouse:
   ``/opt/edgekit/venv-tflite`` (tflite-runtime 2.14.0 + numpy<2) and
   ``/opt/edgekit/venv-litert`` (ai-edge-litert);
5. on the host, an x86 venv with the same tflite-runtime (``$EDGEKIT_HOST_TFLITE_VENV``), so
   parity compares the same runtime on both architectures.

Each stage writes a stamp when it completes and is redone only when its stamp is missing or
records a different recipe. Run as root: ``python tests/arm64/build_rootfs.py [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

SUITE = "bookworm"
ARCH = "arm64"
# Packages beyond minbase: what a Pi running the kit has (python3 + venv + pip, sshd for deploy).
INCLUDE = ("python3", "python3-venv", "python3-pip", "openssh-server", "procps", "ca-certificates")
ROOTFS_RECIPE_VERSION = 1
DEFAULT_CACHE = Path("/var/cache/edgekit")
DEFAULT_ROOT = DEFAULT_CACHE / f"{SUITE}-{ARCH}"
DEFAULT_WHEELHOUSE = DEFAULT_CACHE / "wheelhouse-cp311-aarch64"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
STAMP_NAME = ".edgekit-rootfs.json"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")

TARGET_PYTHON = (3, 11)
# Bookworm has glibc 2.36: every manylinux tag up to it is installable there.
TARGET_PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, 37)), "linux_aarch64")

# venv name inside the root → requirements installed offline into it.
VENVS: dict[str, tuple[str, ...]] = {
    "tflite": ("numpy<2", "tflite-runtime==2.14.0"),
    "litert": ("ai-edge-litert",),
}
VENV_DIR = "/opt/edgekit"  # inside the root


class BuildError(Exception):
    """A stage of the build failed; the message says which and what to do."""


@dataclass(frozen=True)
class Paths:
    """Where the root filesystem and the wheelhouse live (both overridable by env vars)."""

    root: Path
    wheelhouse: Path

    @classmethod
    def from_env(cls) -> Paths:
        """Paths from ``EDGEKIT_ARM64_ROOT`` / ``EDGEKIT_WHEELHOUSE`` or the defaults."""
        return cls(
            Path(os.environ.get("EDGEKIT_ARM64_ROOT", str(DEFAULT_ROOT))),
            Path(os.environ.get("EDGEKIT_WHEELHOUSE", str(DEFAULT_WHEELHOUSE))),
        )

    def venv_python(self, name: str) -> str:
        """Path of a venv's python *inside* the root (for chroot)."""
        return f"{VENV_DIR}/venv-{name}/bin/python"


@dataclass(frozen=True)
class StageResult:
    """What one stage did and how long it took."""

    stage: str
    action: str  # "built" | "cached"
    seconds: float
    detail: str


def log(msg: str) -> None:
    """Progress on stderr, so --json stdout stays clean."""
    print(f"[arm64] {msg}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], what: str, timeout_s: float = 1800, capture: bool = False) -> str:
    """Run a command; on failure raise BuildError naming the stage and the tail of its output."""
    try:  # its own process group: a timeout stops the stage and every child it started (debootstrap, chroot, pip)
        p = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError as e:
        raise BuildError(f"{what}: {cmd[0]} is not installed ({e}); `apt-get install debootstrap qemu-user-static binfmt-support`") from e
    try:
        stdout, stderr = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise BuildError(f"{what}: `{' '.join(cmd[:4])} …` did not finish in {timeout_s:.0f} s") from e
    except BaseException:  # Ctrl-C: the stage goes with the builder
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    if p.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {p.returncode}): {' '.join(cmd[:6])} …\n{tail}")
    return stdout if capture else ""


# ---------------------------------------------------------------- binfmt / qemu


def binfmt_problem() -> Optional[str]:
    """Why aarch64 binaries cannot run here, or None when they can (no side effects)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, binfmt_misc); run the arm64 tests with sudo or as root"
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists() and not shutil.which("qemu-aarch64-static"):
        return "qemu-user-static is not installed: `apt-get install qemu-user-static binfmt-support`"
    if not BINFMT_CONF.exists():
        return f"{BINFMT_CONF} is missing: `apt-get install qemu-user-static binfmt-support`"
    return None


def ensure_binfmt() -> str:
    """Mount binfmt_misc if needed and register qemu-aarch64; returns what was done."""
    problem = binfmt_problem()
    if problem:
        raise BuildError(problem)
    done = []
    if not (BINFMT_DIR / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc")
        done.append("mounted binfmt_misc")
    entry = BINFMT_DIR / "qemu-aarch64"
    if not entry.exists():
        line = next(
            (ln.strip() for ln in BINFMT_CONF.read_text().splitlines() if ln.strip() and not ln.startswith("#")), ""
        )
        if not line:
            raise BuildError(f"{BINFMT_CONF} holds no binfmt line")
        try:
            (BINFMT_DIR / "register").write_text(line)
        except OSError as e:
            raise BuildError(
                f"could not register qemu-aarch64 with binfmt_misc ({e}); try `update-binfmts --enable qemu-aarch64`"
            ) from e
        done.append("registered qemu-aarch64")
    status = entry.read_text().splitlines()[0].strip()
    if status != "enabled":
        (entry).write_text("1")
        done.append("enabled qemu-aarch64")
    return ", ".join(done) or "qemu-aarch64 already registered"


# ---------------------------------------------------------------- mounts


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    r = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].encode().decode("unicode_escape")
        if mp == r or mp.startswith(r + "/"):
            found.append(mp)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    """Unmount everything under ``root``; raise rather than leave a mount a later rm could follow."""
    for _ in range(3):
        left = mounts_under(root)
        if not left:
            return
        for mp in left:
            subprocess.run(["umount", mp], capture_output=True)
        for mp in mounts_under(root):
            subprocess.run(["umount", "--lazy", mp], capture_output=True)
    left = mounts_under(root)
    if left:
        raise BuildError(f"could not unmount {', '.join(left)}; unmount them by hand before removing {root}")


def safe_rmtree(path: Path) -> None:
    """rm -rf that refuses to cross into a mount (never follows a bind mount into the host)."""
    if not path.exists():
        return
    unmount_all(path)
    if str(path.resolve()) in ("/", "/var", "/var/cache", "/tmp", str(Path.home())):
        raise BuildError(f"refusing to remove {path}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


# ---------------------------------------------------------------- stage 1: rootfs


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses ($EDGEKIT_DEBIAN_MIRROR overrides)."""
    if os.environ.get("EDGEKIT_DEBIAN_MIRROR"):
        return os.environ["EDGEKIT_DEBIAN_MIRROR"]
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.suffix in (".list", ".sources") and p.is_file():
            texts.append(p.read_text())
    for text in texts:
        for m in re.finditer(r"^\s*URIs:\s*(\S+)", text, re.M):  # deb822
            if re.search(r"/debian/?$", m.group(1)):
                return m.group(1).rstrip("/")
        for m in re.finditer(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):  # one-line
            if re.search(r"/debian/?$", m.group(1)):
                return m.group(1).rstrip("/")
    return DEFAULT_MIRROR


def rootfs_recipe() -> dict[str, object]:
    """What the root is built from; a different recipe means a rebuild."""
    return {"version": ROOTFS_RECIPE_VERSION, "suite": SUITE, "arch": ARCH, "variant": "minbase", "include": list(INCLUDE)}


def read_stamp(root: Path) -> dict[str, object]:
    """The root's stamp (empty when missing or unreadable)."""
    try:
        data = json.loads((root / STAMP_NAME).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_stamp(root: Path, **updates: object) -> None:
    """Merge ``updates`` into the root's stamp."""
    data = read_stamp(root)
    data.update(updates)
    (root / STAMP_NAME).write_text(json.dumps(data, indent=2) + "\n")


def chroot_python(root: Path, code: str, python: str = "/usr/bin/python3", timeout_s: float = 600) -> str:
    """Run Python code inside the root (under qemu) and return its stdout."""
    return run(["chroot", str(root), python, "-c", code], f"running {python} inside {root}", timeout_s, capture=True)


def probe(root: Path) -> dict[str, str]:
    """Machine and Python version as the emulated root reports them."""
    out = chroot_python(root, "import platform, json; print(json.dumps([platform.machine(), platform.python_version()]))")
    machine, pyver = json.loads(out.strip().splitlines()[-1])
    return {"machine": machine, "python": pyver}


def debootstrap(dest: Path, suite: str, include: Sequence[str], mirror: str, timeout_s: float = 3600,
                before_configure: Optional[Callable[[Path], None]] = None) -> None:
    """``debootstrap --arch=arm64 --variant=minbase`` of ``suite`` with ``include`` into ``dest`` (binfmt must be on).

    The one home of the debootstrap call: the qemu-user root here and the whole-machine images
    (tests/vm/build_image.py) both come from it. ``before_configure(dest)`` runs between the
    unpacking (``--foreign``) and the emulated second stage that configures the packages, so
    files that steer their maintainer scripts (an initramfs policy, say) are there in time.
    """
    base = ["debootstrap", f"--arch={ARCH}", "--variant=minbase", f"--include={','.join(include)}"]
    if before_configure is None:
        run([*base, suite, str(dest), mirror], f"debootstrap of {suite}", timeout_s=timeout_s)
    else:
        run([*base, "--foreign", suite, str(dest), mirror], f"debootstrap (unpacking) of {suite}", timeout_s=timeout_s)
        before_configure(dest)
        # binfmt's F flag runs the chroot's aarch64 binaries with the host's qemu: nothing to copy in.
        run(["chroot", str(dest), "/debootstrap/debootstrap", "--second-stage"], f"debootstrap --second-stage of {suite}",
            timeout_s=timeout_s)
    unmount_all(dest)  # debootstrap mounts /proc and /sys itself and usually, not always, unmounts them


def ensure_rootfs(root: Path, force: bool = False) -> StageResult:
    """debootstrap the arm64 root unless a root with the same recipe is already there."""
    t0 = time.monotonic()
    stamp = read_stamp(root)
    if not force and stamp.get("rootfs") == rootfs_recipe():
        return StageResult("rootfs", "cached", time.monotonic() - t0, str(root))
    mirror = debian_mirror()
    partial = root.with_name(root.name + ".partial")
    safe_rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {SUITE} {ARCH} from {mirror} into {partial} (about 4 minutes, 350 MB)…")
    debootstrap(partial, SUITE, INCLUDE, mirror)
    info = probe(partial)
    want = f"{TARGET_PYTHON[0]}.{TARGET_PYTHON[1]}."
    if info["machine"] != "aarch64" or not info["python"].startswith(want):
        raise BuildError(f"the new root reports {info}; expected aarch64 and Python {want}x")
    # apt inside the root would try to start services; a Pi image has none of that problem.
    (partial / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
    (partial / "usr/sbin/policy-rc.d").chmod(0o755)
    write_stamp(partial, rootfs=rootfs_recipe(), mirror=mirror, probe=info)
    safe_rmtree(root)
    partial.rename(root)
    return StageResult("rootfs", "built", time.monotonic() - t0, f"{root} ({info['machine']}, Python {info['python']})")


# ---------------------------------------------------------------- stage 2: wheelhouse


def pip_download_args(requirements: Sequence[str], dest: Path, python: tuple[int, int] = TARGET_PYTHON) -> list[str]:
    """`pip download` for the target's platform and Python, wheels only."""
    pyv = f"{python[0]}{python[1]}"
    args = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "-d", str(dest)]
    for plat in TARGET_PLATFORMS:
        args += ["--platform", plat]
    args += ["--python-version", f"{python[0]}.{python[1]}", "--implementation", "cp", "--abi", f"cp{pyv}"]
    return args + list(requirements)


def wheelhouse_recipe() -> str:
    """Hash of every requirement set and platform list the wheelhouse was downloaded for."""
    blob = json.dumps({"venvs": VENVS, "platforms": TARGET_PLATFORMS, "python": TARGET_PYTHON}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_wheelhouse(wheelhouse: Path, force: bool = False) -> StageResult:
    """Download the aarch64 cp311 wheels for every venv on the host, once."""
    t0 = time.monotonic()
    stamp = wheelhouse / ".edgekit-wheelhouse"
    if not force and stamp.exists() and stamp.read_text().strip() == wheelhouse_recipe():
        n = len(list(wheelhouse.glob("*.whl")))
        return StageResult("wheelhouse", "cached", time.monotonic() - t0, f"{wheelhouse} ({n} wheels)")
    wheelhouse.mkdir(parents=True, exist_ok=True)
    # Separate downloads: tflite-runtime pins numpy<2, ai-edge-litert brings its own numpy.
    for name, reqs in VENVS.items():
        log(f"pip download for venv-{name}: {' '.join(reqs)} (aarch64, cp311)…")
        run(pip_download_args(reqs, wheelhouse), f"downloading wheels for venv-{name}", timeout_s=1800)
    stamp.write_text(wheelhouse_recipe() + "\n")
    n = len(list(wheelhouse.glob("*.whl")))
    return StageResult("wheelhouse", "built", time.monotonic() - t0, f"{wheelhouse} ({n} wheels)")


# ---------------------------------------------------------------- stage 3: venvs


def ensure_venvs(paths: Paths, force: bool = False) -> list[StageResult]:
    """Create each venv inside the root and install its wheels offline (--no-index)."""
    results = []
    stamp = read_stamp(paths.root)
    done = dict(stamp.get("venvs", {}) or {})  # type: ignore[call-overload]
    for name, reqs in VENVS.items():
        t0 = time.monotonic()
        recipe = f"{wheelhouse_recipe()}:{','.join(reqs)}"
        py = paths.venv_python(name)
        if not force and done.get(name) == recipe and (paths.root / py.lstrip("/")).exists():
            results.append(StageResult(f"venv-{name}", "cached", time.monotonic() - t0, py))
            continue
        venv = f"{VENV_DIR}/venv-{name}"
        safe_rmtree(paths.root / venv.lstrip("/"))
        inside_wh = paths.root / "opt/edgekit/wheelhouse"
        safe_rmtree(inside_wh)
        shutil.copytree(paths.wheelhouse, inside_wh)  # copied, not bind-mounted: nothing left mounted
        log(f"creating {venv} inside the root and installing {' '.join(reqs)} offline (emulated, a few minutes)…")
        run(["chroot", str(paths.root), "/usr/bin/python3", "-m", "venv", venv], f"creating {venv}", timeout_s=900)
        run(
            ["chroot", str(paths.root), py, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
             "--find-links", "/opt/edgekit/wheelhouse", *reqs],
            f"pip install --no-index into {venv}",
            timeout_s=1800,
        )
        done[name] = recipe
        write_stamp(paths.root, venvs=done)
        results.append(StageResult(f"venv-{name}", "built", time.monotonic() - t0, py))
    return results


HOST_TFLITE_VENV = Path(os.environ.get("EDGEKIT_HOST_TFLITE_VENV", str(DEFAULT_CACHE / "host-tflite-runtime-venv")))


def ensure_host_tflite_venv(venv: Path = HOST_TFLITE_VENV, force: bool = False) -> StageResult:
    """An x86 venv with the same tflite-runtime + numpy<2 as the device, so parity can compare like with like.

    tflite-runtime has no wheel past Python 3.11: on a newer host this stage is skipped.
    """
    t0 = time.monotonic()
    reqs = VENVS["tflite"]
    stamp = venv / ".edgekit-reqs"
    if sys.version_info[:2] > (3, 11):
        return StageResult("host-tflite", "skipped", 0.0, f"host Python {sys.version_info[0]}.{sys.version_info[1]} > 3.11 has no tflite-runtime wheel")
    if not force and stamp.exists() and stamp.read_text().strip() == ",".join(reqs):
        return StageResult("host-tflite", "cached", time.monotonic() - t0, str(venv))
    safe_rmtree(venv)
    run([sys.executable, "-m", "venv", str(venv)], f"creating {venv}")
    run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs], f"pip install into {venv}")
    stamp.write_text(",".join(reqs) + "\n")
    return StageResult("host-tflite", "built", time.monotonic() - t0, str(venv))


def is_ready(paths: Paths) -> Optional[str]:
    """None when root, wheelhouse and venvs are all built with the current recipes, else what is missing."""
    stamp = read_stamp(paths.root)
    if stamp.get("rootfs") != rootfs_recipe():
        return f"no arm64 root with the current recipe at {paths.root}"
    wh = paths.wheelhouse / ".edgekit-wheelhouse"
    if not wh.exists() or wh.read_text().strip() != wheelhouse_recipe():
        return f"no wheelhouse with the current recipe at {paths.wheelhouse}"
    venvs = stamp.get("venvs") or {}
    for name, reqs in VENVS.items():
        if not isinstance(venvs, dict) or venvs.get(name) != f"{wheelhouse_recipe()}:{','.join(reqs)}":
            return f"venv-{name} is not built in {paths.root}"
    return None


def build(paths: Paths, force: bool = False) -> list[StageResult]:
    """Every stage in order; cached stages take milliseconds."""
    t0 = time.monotonic()
    results = [StageResult("binfmt", "checked", 0.0, ensure_binfmt())]
    results[0] = StageResult("binfmt", "checked", time.monotonic() - t0, results[0].detail)
    results.append(ensure_rootfs(paths.root, force))
    results.append(ensure_wheelhouse(paths.wheelhouse, force))
    results.extend(ensure_venvs(paths, force))
    results.append(ensure_host_tflite_venv(force=force))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: build or refresh the cached arm64 target."""
    ap = argparse.ArgumentParser(
        description=(
            "Build the emulated Raspberry Pi OS (Debian Bookworm arm64, Python 3.11) target under qemu-user, "
            "cached outside the repo. Needs root, debootstrap, qemu-user-static and binfmt-support. "
            "A cold build takes about 10 minutes and ~1 GB; a warm run checks stamps and returns in seconds."
        )
    )
    ap.add_argument("--root", type=Path, default=Paths.from_env().root, help="root filesystem dir (env EDGEKIT_ARM64_ROOT; default: %(default)s)")
    ap.add_argument("--wheelhouse", type=Path, default=Paths.from_env().wheelhouse, help="wheel cache (env EDGEKIT_WHEELHOUSE; default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="rebuild every stage even when its stamp matches (default: off)")
    ap.add_argument("--json", action="store_true", help="print the stage results as JSON on stdout")
    args = ap.parse_args(argv)
    paths = Paths(args.root, args.wheelhouse)
    try:
        results = build(paths, args.force)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the next run resumes from the last completed stage", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.stage:<12} {r.action:<8} {r.seconds:8.1f} s  {r.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
