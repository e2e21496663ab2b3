"""Test helper: the built arm64 root as a live target — mounts, commands inside it, and an sshd.

``Arm64Session`` (a context manager) takes an exclusive lock on the root, mounts what programs
inside need (``/proc``, ``/sys``, a private ``/dev`` on tmpfs with its own devpts instance — never
a bind mount of the host's ``/dev``, so a later ``rm -rf`` cannot walk into the host), and on exit
kills every process whose root is this root, then unmounts everything under it, deepest first.

``ChrootSshd`` starts the root's own aarch64 ``/usr/sbin/sshd`` under ``chroot`` on a 127.0.0.1
high port with a temporary host key and authorized key, and returns an ``SshTarget`` that the
deploy CLI can use like any other host (``root@127.0.0.1:PORT`` with identity and known-hosts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_rootfs import BuildError, Paths, mounts_under, unmount_all

# The CPU qemu emulates: a Raspberry Pi 4's Cortex-A72 by default, so the instruction set
# (HWCAP) the runtimes detect is a Pi's, not qemu's "max" (SVE, dot product, ...).
# EDGEKIT_ARM64_CPU=cortex-a76 is a Pi 5; =cortex-a53 a Pi 3 / Zero 2.
CPU_PARTS = {"cortex-a53": "0xd03", "cortex-a72": "0xd08", "cortex-a76": "0xd0b"}
QEMU_CPU = os.environ.get("EDGEKIT_ARM64_CPU", "cortex-a72")

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "QEMU_CPU": QEMU_CPU,
}


def arm_cpuinfo(cpu: str = QEMU_CPU, count: Optional[int] = None) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel writes it for ``cpu`` (CPU lines only, no board model).

    qemu-user passes the host's x86 /proc/cpuinfo through; the cpuinfo library inside
    ai-edge-litert 2.3 dereferences NULL parsing it on aarch64 (a segfault in Interpreter()).
    A real Pi's kernel describes its ARM cores, so the emulated root shows that.
    """
    n = count or os.cpu_count() or 1
    part = CPU_PARTS.get(cpu, CPU_PARTS["cortex-a72"])
    features = "fp asimd evtstrm crc32 cpuid" + (" atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" if cpu == "cortex-a76" else "")
    return "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n"
        for i in range(n)
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pids_in_root(root: Path) -> list[int]:
    """Processes whose root directory is ``root`` (what this session started inside it)."""
    r = str(root.resolve())
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "root") == r:
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def kill_root_processes(root: Path, grace_s: float = 3.0) -> int:
    """SIGTERM, then SIGKILL, every process running inside ``root``; returns how many there were."""
    pids = pids_in_root(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pids_in_root(root):
        time.sleep(0.1)
    for pid in pids_in_root(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pids_in_root(root):
        time.sleep(0.1)
    return len(pids)


HOLDER_ENV = "EDGEKIT_ARM64_SESSION_HOLDER"


def _holder_is_ancestor(root: Path) -> bool:
    """Whether the session on ``root`` is held by one of this process's ancestors (told by the environment)."""
    pid_s, _, held_root = os.environ.get(HOLDER_ENV, "").partition(":")
    if not pid_s.isdigit() or held_root != str(root):
        return False
    pid = os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        if pid == int(pid_s):
            return True
    return False


class Arm64Session:
    """The arm64 root, locked and mounted for the duration of a ``with`` block."""

    def __init__(self, paths: Optional[Paths] = None):
        self.paths = paths or Paths.from_env()
        self.root = self.paths.root
        self._lock: Optional[IO[str]] = None
        self.borrowed = False
        self.workdir_inside = f"/tmp/edgekit-session-{secrets.token_hex(4)}"
        # What the session's own clean-up left in the root, seen while it still held the lock (after
        # that, the next run waiting for the root mounts it again and a check would see its mounts).
        self.left_pids: list[int] = []
        self.left_mounts: list[str] = []

    @property
    def workdir(self) -> Path:
        """This session's scratch folder, seen from the host."""
        return self.root / self.workdir_inside.lstrip("/")

    def __enter__(self) -> Arm64Session:
        lock_path = self.root.with_name(self.root.name + ".lock")
        self._lock = open(lock_path, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _holder_is_ancestor(self.root):
                # A child of the process holding the session (a bench run from a test): waiting would
                # deadlock, so it borrows the mounted root and leaves the parent's processes and mounts alone.
                self._lock.close()
                self._lock = None
                self.borrowed = True
                self.workdir.mkdir(parents=True)
                return self
            fcntl.flock(self._lock, fcntl.LOCK_EX)  # another run holds it: wait our turn
        os.environ[HOLDER_ENV] = f"{os.getpid()}:{self.root}"
        try:
            # A session killed with SIGKILL leaves processes and mounts; we hold the lock, so they are stale.
            kill_root_processes(self.root)
            unmount_all(self.root)
            self._mount()
            self.workdir.mkdir(parents=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.borrowed:
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)
            return
        os.environ.pop(HOLDER_ENV, None)
        try:
            kill_root_processes(self.root)
            unmount_all(self.root)
            if self.workdir.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(self.workdir)], check=False)
            self.left_pids, self.left_mounts = pids_in_root(self.root), mounts_under(self.root)
        finally:
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
                self._lock = None

    def _mount(self) -> None:
        r = self.root

        def mount(*args: str) -> None:
            p = subprocess.run(["mount", *args], capture_output=True, text=True)
            if p.returncode != 0:
                raise BuildError(f"mount {' '.join(args)} failed: {p.stderr.strip()}")

        mount("-t", "proc", "proc", str(r / "proc"))
        # The runtimes' CPU detection reads /sys topology and /proc/cpuinfo, as on a Pi.
        mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(r / "sys"))
        cpuinfo = r / ".edgekit-cpuinfo"
        cpuinfo.write_text(arm_cpuinfo())
        mount("--bind", str(cpuinfo), str(r / "proc/cpuinfo"))  # a file of the root's own, not the host's
        dev = r / "dev"
        mount("-t", "tmpfs", "-o", "mode=755,size=1m,nosuid", "edgekit-dev", str(dev))
        for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                   ("urandom", 1, 9), ("tty", 5, 0)):
            node = dev / name
            if subprocess.run(["mknod", "-m", "666", str(node), "c", str(major), str(minor)], capture_output=True).returncode:
                # No CAP_MKNOD (some containers): bind the single host device file instead.
                node.touch()
                mount("--bind", f"/dev/{name}", str(node))
        (dev / "pts").mkdir()
        (dev / "shm").mkdir()
        mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts", str(dev / "pts"))
        os.symlink("pts/ptmx", dev / "ptmx")
        mount("-t", "tmpfs", "-o", "mode=1777,size=64m", "edgekit-shm", str(dev / "shm"))
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            os.symlink(target, dev / name)
        (r / "run/sshd").mkdir(parents=True, exist_ok=True)

    def run(self, argv: Sequence[str], timeout_s: float = 600, check: bool = True,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the root (emulated aarch64); raise with its output when it fails."""
        p = subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True, timeout=timeout_s,
                           env={**CHROOT_ENV, **(env or {})})
        if check and p.returncode != 0:
            raise BuildError(f"inside the arm64 root, {' '.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
        return p

    def copy_in(self, src: Path, name: str) -> str:
        """Copy a host file or folder into this session's scratch folder; return its path inside."""
        dest = self.workdir / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return f"{self.workdir_inside}/{name}"


@dataclass(frozen=True)
class SshTarget:
    """How to reach the sshd inside the root, in the form deploy's CLI takes."""

    user: str
    host: str
    port: int
    identity: Path
    known_hosts: Path
    remote_dir: str

    @property
    def spec(self) -> str:
        """``USER@HOST:PORT`` for ``--host``."""
        return f"{self.user}@{self.host}:{self.port}"


class ChrootSshd:
    """The root's own aarch64 OpenSSH server, run under chroot on a loopback port."""

    def __init__(self, session: Arm64Session, client_dir: Path):
        self.session = session
        self.client_dir = client_dir
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = client_dir / "sshd.log"

    def start(self, timeout_s: float = 60.0) -> SshTarget:
        """Generate keys, write a config, start sshd and wait for its banner."""
        s = self.session
        port = free_port()
        # one folder and one device root per server: each test module gets a Pi of its own
        conf_inside = f"{s.workdir_inside}/sshd-{port}"
        conf = s.workdir / f"sshd-{port}"
        conf.mkdir(mode=0o700)
        self.client_dir.mkdir(parents=True, exist_ok=True)
        host_key = conf / "ssh_host_ed25519_key"
        client_key = self.client_dir / "id_ed25519"
        for key in (host_key, client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-arm64", "-f", str(key)], check=True)
        shutil.copy(client_key.with_suffix(".pub"), conf / "authorized_keys")
        (conf / "sshd_config").write_text(
            "\n".join([
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {conf_inside}/ssh_host_ed25519_key",
                f"AuthorizedKeysFile {conf_inside}/authorized_keys",
                f"PidFile {conf_inside}/sshd.pid",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                # Sessions start with a clean environment: tell their qemu which CPU to be, and let
                # anything that reports timings see that it runs emulated.
                f"SetEnv QEMU_CPU={QEMU_CPU} EDGEKIT_EMULATED=qemu-user-aarch64",
                "",
            ])
        )
        known = self.client_dir / "known_hosts"
        pub = (conf / "ssh_host_ed25519_key.pub").read_text().split()
        known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["chroot", str(s.root), "/usr/sbin/sshd", "-D", "-e", "-f", f"{conf_inside}/sshd_config"],
                stdout=log, stderr=subprocess.STDOUT, env=CHROOT_ENV, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BuildError(f"sshd inside the arm64 root exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    if c.recv(64).startswith(b"SSH-2.0-"):
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise BuildError(f"sshd inside the arm64 root did not answer on port {port} within {timeout_s:.0f} s")
        return SshTarget("root", "127.0.0.1", port, client_key, known, f"{s.workdir_inside}/edgekit-{port}")

    def stop(self) -> None:
        """Stop sshd (the session's teardown also kills anything it left behind)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def running_sshd(session: Arm64Session, client_dir: Path) -> Iterator[SshTarget]:
    """sshd inside the root for the duration of a ``with`` block."""
    sshd = ChrootSshd(session, client_dir)
    try:
        yield sshd.start()
    finally:
        sshd.stop()


def deploy_cli(*args: str, timeout_s: float) -> tuple[int, Any, str]:
    """Run ``python -m deploy ... --json`` on the host; returns exit code, parsed JSON, output for messages."""
    p = subprocess.run([sys.executable, "-m", "deploy", *args, "--json"], capture_output=True, text=True, timeout=timeout_s)
    try:
        data = json.loads(p.stdout)
    except json.JSONDecodeError:
        data = None
    return p.returncode, data, f"stdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-2000:]}"
