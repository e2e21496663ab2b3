"""Boot a built image as a whole emulated Raspberry Pi under qemu-system-aarch64, reachable over SSH.

One ``PiVM`` is one machine with one disk for its whole life: a qcow2 overlay on the cached
image (``build_image.py``), so nothing a test does reaches the cache. The machine is
``-M virt -cpu cortex-a72`` (a Pi 4's core) with Debian's kernel and the root's own initrd;
systemd is PID 1. Networking is qemu's user mode with ``restrict=on`` (the guest reaches
nothing, as a Pi on a closed network) and one forward: SSH on ``127.0.0.1:<port>``. The serial
console is appended to ``console.log``.

Keys: each machine gets a fresh SSH host key and a client key. They reach the guest on a small
seed disk (a tar archive, serial ``edgekit-seed``) that the image's ``edgekit-seed.service``
installs before sshd starts; the host side writes a ``known_hosts`` file pinning that host key,
so the deploy CLI connects with strict host-key checking as it would to a real Pi.

Power: ``reboot()`` asks systemd (``sudo systemctl reboot``) and waits for a new boot id.
``power_cut()`` SIGKILLs qemu. The guest's page cache dies with the process, as a Pi's RAM
does when the power goes. The disk is ``cache=writeback``: a guest flush (fsync, a journal
commit) makes qemu write its qcow2 metadata and fdatasync the host file, while writes the guest
never flushed may be lost with qemu's in-memory qcow2 tables, like a card's volatile write
cache. (``cache=unsafe`` would be wrong here: it ignores flushes, so a SIGKILL could lose
even what the guest fsynced.) The host never crashes, so its own page cache is safe to use.

qemu always dies with the harness: ``PR_SET_PDEATHSIG`` kills it if the test process dies, and
``close()`` (or leaving the ``with`` block) SIGKILLs it on any failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shlex
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from build_image import SEED_SERIAL, Image

QEMU = "qemu-system-aarch64"
CPU = os.environ.get("EDGEKIT_VM_CPU", "cortex-a72")
MEMORY_MB = int(os.environ.get("EDGEKIT_VM_MEMORY_MB", "2048"))
SMP = int(os.environ.get("EDGEKIT_VM_SMP", "2"))
# Raspberry Pi OS's own cmdline has fsck.repair=yes: after a power cut the root is repaired at boot.
KERNEL_CMDLINE = "root=/dev/vda ro rootfstype=ext4 rootwait fsck.repair=yes console=ttyAMA0 panic=-1"
# Power-on to SSH took 213-286+ s at host load ~13 (2 cores): a boot gets 600 s before it counts as failed.
BOOT_TIMEOUT_S = float(os.environ.get("EDGEKIT_VM_BOOT_TIMEOUT_S", "600"))
CONNECT_TIMEOUT_S = float(os.environ.get("EDGEKIT_VM_CONNECT_TIMEOUT_S", "120"))
PR_SET_PDEATHSIG = 1


class VMError(Exception):
    """The emulated machine did not do what was asked; the message says what and where its console log is."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the qemu child: get SIGKILL when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)


@dataclass
class Boot:
    """One boot of the machine: when qemu started and when SSH first answered (EMULATED)."""

    started: float
    ssh_s: Optional[float] = None
    boot_id: str = ""
    how: str = "power-on"


@dataclass
class PiVM:
    """A whole emulated Pi on its own overlay disk; see the module docstring."""

    image: Image
    workdir: Path
    memory_mb: int = MEMORY_MB
    smp: int = SMP
    cpu: str = CPU
    user: str = "pi"
    port: int = 0
    proc: Optional[subprocess.Popen[bytes]] = None
    boots: list[Boot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.overlay = self.workdir / "disk.qcow2"
        self.console = self.workdir / "console.log"
        self.seed = self.workdir / "seed.tar"
        self.identity = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self._host_key = self.workdir / "ssh_host_ed25519_key"
        self.pid: Optional[int] = None  # qemu's pid when another process started it (``attach``)
        if not self.overlay.exists():
            self._make_disk()
        if not self.seed.exists():
            self._make_keys()

    @classmethod
    def attach(cls, workdir: Path) -> PiVM:
        """The machine a ``python tests/vm/machine.py`` keeper runs in ``workdir`` (its disk, keys and port)."""
        doc = json.loads((workdir / "machine.json").read_text())
        image = Image(doc["release"], Path(doc["image"]), json.loads((Path(doc["image"]) / "image.json").read_text()))
        vm = cls(image, workdir, memory_mb=doc["memory_mb"], smp=doc["smp"], cpu=doc["cpu"], port=doc["port"])
        vm.pid = int(doc["pid"])
        boot = Boot(time.monotonic(), how="attached")
        boot.boot_id = vm.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        boot.ssh_s = 0.0
        vm.boots.append(boot)
        return vm

    def save(self) -> None:
        """Write machine.json, so another process can ``attach`` to this running machine."""
        doc = {"release": self.image.release, "image": str(self.image.dir), "memory_mb": self.memory_mb, "smp": self.smp,
               "cpu": self.cpu, "port": self.port, "pid": self.proc.pid if self.proc else self.pid,
               "deploy_args": self.deploy_args()}
        (self.workdir / "machine.json").write_text(json.dumps(doc, indent=1) + "\n")

    # ------------------------------------------------------------ set-up

    def _make_disk(self) -> None:
        p = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.disk), "-F", "raw",
                            str(self.overlay)], capture_output=True, text=True)
        if p.returncode != 0:
            raise VMError(f"qemu-img could not make an overlay on {self.image.disk}: {p.stderr.strip()}")

    def _make_keys(self) -> None:
        _keygen(self.identity, "edgekit-vm-client")
        _keygen(self._host_key, "edgekit-vm-host")
        with tarfile.open(self.seed, "w") as tar:
            for name, src in (("ssh_host_ed25519_key", self._host_key),
                              ("ssh_host_ed25519_key.pub", self._host_key.with_suffix(".pub")),
                              ("authorized_keys", self.identity.with_suffix(".pub"))):
                data = src.read_bytes()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(data))

    def _write_known_hosts(self) -> None:
        kind, key = self._host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {key}\n")

    def qemu_argv(self) -> list[str]:
        """The qemu command line for this machine."""
        return [
            QEMU, "-M", "virt", "-cpu", self.cpu, "-smp", str(self.smp), "-m", str(self.memory_mb),
            "-nographic", "-monitor", "none",
            "-chardev", f"file,id=console,path={self.console},append=on", "-serial", "chardev:console",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", KERNEL_CMDLINE,
            # The root first, so it is /dev/vda; the seed second, read-only.
            "-drive", f"if=none,id=root,file={self.overlay},format=qcow2,cache=writeback,discard=unmap",
            "-device", "virtio-blk-pci,drive=root,serial=edgekit-root",
            "-drive", f"if=none,id=seed,file={self.seed},format=raw,readonly=on",
            "-device", f"virtio-blk-pci,drive=seed,serial={SEED_SERIAL}",
            "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM: the kernel is given directly
            "-device", "virtio-rng-pci",
        ]

    # ------------------------------------------------------------ power

    @property
    def running(self) -> bool:
        """True while qemu runs."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.pid is not None and Path(f"/proc/{self.pid}").exists()

    def start(self, timeout_s: float = BOOT_TIMEOUT_S) -> Boot:
        """Power on and wait until SSH logs in; returns the boot with its boot-to-SSH time."""
        if self.running:
            raise VMError("the machine is already running")
        for _attempt in range(3):
            self.port = self.port or free_port()
            self._write_known_hosts()
            with open(self.console, "ab") as c:
                c.write(f"\n===== edgekit: power on ({time.strftime('%H:%M:%S')}) =====\n".encode())
            boot = Boot(time.monotonic())
            self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=open(self.workdir / "qemu.stderr", "ab"),  # noqa: SIM115 - qemu owns it
                                         preexec_fn=_die_with_parent)
            time.sleep(0.5)
            if self.proc.poll() is not None:
                err = (self.workdir / "qemu.stderr").read_text()[-1000:]
                if "hostfwd" in err or "forwarding" in err:  # the port was taken between free_port and qemu
                    self.port = 0
                    continue
                raise VMError(f"qemu exited {self.proc.returncode} at start: {err.strip()}")
            break
        else:
            raise VMError("qemu could not bind a port for SSH three times")
        self.boots.append(boot)
        self._wait_ssh(boot, timeout_s)
        return boot

    def _wait_ssh(self, boot: Boot, timeout_s: float, old_boot_id: str = "") -> None:
        deadline = boot.started + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running:
                raise VMError(f"qemu exited {self.proc.returncode if self.proc else '?'} while booting; "
                              f"see {self.console}: {self.console_tail(5)}")
            if self._banner():
                p = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout_s=30)
                if p.returncode == 0 and p.stdout.strip() and p.stdout.strip() != old_boot_id:
                    boot.ssh_s = time.monotonic() - boot.started
                    boot.boot_id = p.stdout.strip()
                    return
                last = p.stderr.strip()[-300:] or "still the old boot"
            time.sleep(0.5)
        raise VMError(f"no SSH login within {timeout_s:.0f} s ({last}); see {self.console}: {self.console_tail(8)}")

    def _banner(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=3) as c:
                c.settimeout(3)
                return c.recv(16).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def reboot(self, timeout_s: float = BOOT_TIMEOUT_S) -> Boot:
        """``sudo systemctl reboot`` in the guest, then wait for SSH from the next boot."""
        old = self.boots[-1].boot_id if self.boots else ""
        self.ssh("sudo systemctl reboot", check=False, timeout_s=30)
        boot = Boot(time.monotonic(), how="reboot")
        self.boots.append(boot)
        self._wait_ssh(boot, timeout_s, old_boot_id=old)
        return boot

    def power_cut(self) -> None:
        """SIGKILL qemu: RAM and the guest's page cache are gone, as when a Pi loses power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        elif self.proc is None and self.running and self.pid is not None:  # attached: the keeper reaps it
            os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)
            self.pid = None
        with open(self.console, "ab") as c:
            c.write(f"\n===== edgekit: power cut ({time.strftime('%H:%M:%S')}) =====\n".encode())

    def close(self) -> None:
        """Stop the machine for good if this process started it (SIGKILL: the overlay is thrown away anyway)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)

    # ------------------------------------------------------------ talking to it

    def ssh_argv(self, command: str) -> list[str]:
        """OpenSSH client argv that runs ``command`` as pi, host key pinned."""
        return ["ssh", "-q", "-p", str(self.port), "-i", str(self.identity), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=6", f"{self.user}@127.0.0.1", command]

    def ssh(self, command: str, check: bool = True, timeout_s: float = 300,
            input_text: Optional[str] = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as pi; raise with its output when it fails and ``check``."""
        try:
            p = subprocess.run(self.ssh_argv(command), capture_output=True, text=True, timeout=timeout_s, input=input_text,
                               stdin=None if input_text is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            if check:
                raise VMError(f"`{command}` in the guest did not finish in {timeout_s:.0f} s") from e
            return subprocess.CompletedProcess(e.cmd, 124, "", f"timed out after {timeout_s:.0f} s")
        if check and p.returncode != 0:
            raise VMError(f"`{command}` in the guest exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p

    def python(self, code: str, sudo: bool = False, timeout_s: float = 300) -> str:
        """Run Python code with the guest's /usr/bin/python3; returns stdout."""
        cmd = ("sudo " if sudo else "") + "/usr/bin/python3 -"
        return self.ssh(cmd, input_text=code, timeout_s=timeout_s).stdout

    def python_json(self, code: str, sudo: bool = False, timeout_s: float = 300) -> object:
        """Run Python code that prints one JSON document last; returns it parsed."""
        out = self.python(code, sudo=sudo, timeout_s=timeout_s)
        return json.loads(out.strip().splitlines()[-1])

    def systemctl_show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` of a unit as a dict."""
        out = self.ssh(f"systemctl show {shlex.quote(unit)} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def console_tail(self, lines: int = 20) -> str:
        """The last lines of the serial console (kernel and systemd messages)."""
        try:
            return " | ".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console log)"

    @property
    def spec(self) -> str:
        """``pi@127.0.0.1:PORT`` for the deploy CLI's ``--host``."""
        return f"{self.user}@127.0.0.1:{self.port}"

    def deploy_args(self) -> list[str]:
        """The deploy CLI's target options that reach this machine (host key pinned)."""
        # sshd under TCG, beside a daemon busy classifying, can take longer than the CLI's 10 s default to send its banner.
        return ["--host", self.spec, "--identity", str(self.identity), "--known-hosts", str(self.known_hosts),
                "--connect-timeout-s", str(CONNECT_TIMEOUT_S)]


@contextlib.contextmanager
def booted(image: Image, workdir: Path, **kw: object) -> Iterator[PiVM]:
    """A started machine for the duration of a ``with`` block; qemu never outlives it."""
    vm = PiVM(image, workdir, **kw)  # type: ignore[arg-type]
    try:
        vm.start()
        yield vm
    finally:
        vm.close()


def qemu_pids(marker: Path) -> list[int]:
    """qemu processes whose command line mentions ``marker`` (a session folder): what a run left behind."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(QEMU.encode()) and any(str(marker).encode() in a for a in argv):
            out.append(int(p.name))
    return out


def run_deploy(args: Sequence[str], timeout_s: float = 1800, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """``python -m deploy ARGS`` from the repo under test."""
    import sys

    return subprocess.run([sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: boot one image and keep it running (for a look inside, or ``EDGEKIT_VM_ATTACH`` test runs)."""
    import argparse
    import sys

    from build_image import RELEASES, BuildError, ensure_image

    ap = argparse.ArgumentParser(description="Boot the emulated Pi of one release on a fresh overlay and keep it running "
                                             "until Ctrl-C; prints the deploy CLI's options that reach it. Tests attach "
                                             "to it with EDGEKIT_VM_ATTACH=WORKDIR.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--release", default="trixie", choices=list(RELEASES))
    ap.add_argument("--workdir", type=Path, required=True, help="folder for the overlay, keys, console log, machine.json")
    args = ap.parse_args(argv)
    try:
        image, _ = ensure_image(args.release)
        vm = PiVM(image, args.workdir)
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        boot = vm.start()
        vm.save()
        print(f"{args.release} up, SSH after {boot.ssh_s:.0f} s (EMULATED). Deploy options: {' '.join(vm.deploy_args())}",
              flush=True)
        while not stop["now"]:
            time.sleep(1)
    except (BuildError, VMError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(NameError):
            vm.close()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
