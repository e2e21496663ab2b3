"""Build (once) a whole emulated Raspberry Pi: a Debian arm64 disk image, kernel and initrd for qemu-system-aarch64.

Raspberry Pi OS is Debian for arm64: Trixie (Debian 13, Python 3.13) today, Bookworm
(Debian 12, Python 3.11) before it. For each release this script makes, cached outside the
repository in ``$EDGEKIT_VM_CACHE/<release>-<key>/`` (default ``/var/cache/edgekit/vm``):

1. a ``debootstrap --arch=arm64`` root (the shared call in ``tests/arm64/build_rootfs.py``, run
   through qemu-user and binfmt_misc) with systemd as init, udev, journald, OpenSSH, sudo,
   python3 with venv and pip, kmod, and Debian's own arm64 kernel package;
2. Raspberry Pi OS habits: a user ``pi`` in ``video`` (and ``adm``, so it reads the journal)
   with passwordless sudo (``/etc/sudoers.d/010_pi-nopasswd``), hostname ``raspberrypi``,
   ext4 root mounted ``noatime``, a persistent journal; plus what the emulator needs: a static
   address on qemu's user network, and ``seed-ssh-keys.service``, which installs the SSH host
   key and the ``pi`` user's authorized key from a small seed disk each session attaches
   (as Raspberry Pi Imager's first-boot settings do), before sshd starts;
3. an initrd made by the root's own ``update-initramfs`` (virtio and ext4 are modules in
   Debian's kernel), and the kernel and initrd copied out for ``-kernel``/``-initrd``;
4. ``rootfs.img``: a sparse raw ext4 image made from the root with ``mke2fs -d`` (no loop
   mount), sized to the root plus room for releases, venvs and logs.

``<key>`` hashes the inputs: this script, the shared debootstrap code, the package list and the
release. The kernel is whatever Debian's ``linux-image-arm64`` is on the day of the build; its
version is recorded in ``image.json``, and ``--refresh`` rebuilds against the archive as it is
now. Tests never write to the cached image: each session boots a qcow2 overlay on top of it.

Run as root: ``python tests/vm/build_image.py [--release bookworm|trixie|all] [--json]``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "arm64"))

from build_rootfs import (  # noqa: E402
    BuildError,
    binfmt_problem,
    debian_mirror,
    debootstrap,
    ensure_binfmt,
    run,
    safe_rmtree,
)

DEFAULT_CACHE = Path("/var/cache/edgekit/vm")
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Release:
    """One Raspberry Pi OS generation, as the Debian release it is built on."""

    name: str
    debian: str
    python: tuple[int, int]


RELEASES = {
    "bookworm": Release("bookworm", "12", (3, 11)),
    "trixie": Release("trixie", "13", (3, 13)),
}

# What the image has beyond minbase: init, devices, logs, remote login, the Pi's Python, the kernel.
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "kmod",
    "openssh-server", "sudo",
    "python3", "python3-venv", "python3-pip",
    "linux-image-arm64", "initramfs-tools",
    "e2fsprogs", "procps", "iproute2", "ca-certificates",
)
# Packages one release needs beyond PACKAGES (none today: systemd-networkd is in systemd on both).
EXTRA_PACKAGES: dict[str, tuple[str, ...]] = {}

# The initrd needs only what mounts the root on qemu's virt board: the rest loads from the root.
INITRD_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "ext4", "crc32c_generic")
# Timers that would fire mid-test (apt downloads, scrubs): a test machine, not a Pi in the field.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service",
                "fstrim.timer", "systemd-networkd-wait-online.service")
# Room on the disk beyond the built root: releases, one venv per runtime, logs, results.
FREE_SPACE_BYTES = 1536 * 2**20
PI_GROUPS = ("adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "users", "input", "render", "netdev")
EMULATED_AS = "qemu-system-aarch64"
# Address on qemu's user network (slirp): the guest is always 10.0.2.15, the host 10.0.2.2.
GUEST_ADDRESS = "10.0.2.15/24"
SEED_SERIAL = "edgekit-seed"

# The daemon's unit allows 60 s from start to READY=1, right for a Pi; under qemu TCG on a shared
# host its start-up (runtime import, model load, frames pre-rendered) takes minutes.
EMULATED_DROPIN = """# This Pi is emulated (qemu TCG, far slower than a Pi): start-up gets ten times the unit's own limit.
[Service]
TimeoutStartSec=600
"""

SEED_SCRIPT = f"""#!/bin/sh
# Install this session's SSH host key and the pi user's authorized key from the seed disk.
# The disk is a plain tar archive that the test harness attaches with serial={SEED_SERIAL}.
set -eu
seed=/dev/disk/by-id/virtio-{SEED_SERIAL}
i=0
while [ ! -e "$seed" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e "$seed" ]; then
    echo "seed-ssh-keys: no seed disk; generating host keys so sshd can start"
    ssh-keygen -A
    exit 0
fi
d=$(mktemp -d)
tar -xf "$seed" -C "$d"
rm -f /etc/ssh/ssh_host_*
install -m 600 "$d/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 644 "$d/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 700 -o pi -g pi /home/pi/.ssh
install -m 600 -o pi -g pi "$d/authorized_keys" /home/pi/.ssh/authorized_keys
rm -rf "$d"
sync
echo "seed-ssh-keys: host key $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)"
"""

SEED_UNIT = """[Unit]
Description=Install SSH keys from the edgekit seed disk
DefaultDependencies=no
After=local-fs.target systemd-udevd.service
Before=ssh.service
Wants=systemd-udevd.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/seed-ssh-keys
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


def log(msg: str) -> None:
    """Progress on stderr, so --json stdout stays clean."""
    print(f"[vm] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """Where images live (``$EDGEKIT_VM_CACHE`` or the default)."""
    return Path(os.environ.get("EDGEKIT_VM_CACHE", str(DEFAULT_CACHE)))


def packages(release: Release) -> tuple[str, ...]:
    """The packages debootstrap installs for ``release``."""
    return PACKAGES + EXTRA_PACKAGES.get(release.name, ())


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _same(recorded: object, current: object) -> bool:
    """A recipe read back from JSON equals the current one (tuples come back as lists)."""
    return bool(json.loads(json.dumps(current)) == recorded)


def root_recipe(release: Release) -> dict[str, Any]:
    """What the debootstrap stage depends on: the release, the packages, the initrd policy, the shared debootstrap code."""
    shared = HERE.parent / "arm64" / "build_rootfs.py"
    return {
        "version": RECIPE_VERSION,
        "release": asdict(release),
        "packages": list(packages(release)),
        "initrd_modules": list(INITRD_MODULES),
        "prepare": hashlib.sha256(inspect.getsource(prepare_second_stage).encode()).hexdigest(),
        "shared": hashlib.sha256(shared.read_bytes()).hexdigest(),
    }


def recipe(release: Release) -> dict[str, Any]:
    """Everything an image is built from (the debootstrap stage and this whole script); its hash names the cache folder."""
    return {"root": root_recipe(release), "script": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}


def recipe_key(release: Release) -> str:
    """Short hash of ``recipe(release)``."""
    return _key(recipe(release))


@dataclass(frozen=True)
class Image:
    """A built image: the files qemu boots and what the build recorded about them."""

    release: str
    dir: Path
    info: dict[str, Any]

    @property
    def disk(self) -> Path:
        """The cached ext4 image (never written by tests: they boot an overlay)."""
        return self.dir / "rootfs.img"

    @property
    def kernel(self) -> Path:
        """The Debian arm64 kernel (``-kernel``)."""
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        """The root's own initramfs (``-initrd``)."""
        return self.dir / "initrd.img"


def image_dir(release: Release) -> Path:
    """The cache folder for the current recipe of ``release``."""
    return cache_root() / f"{release.name}-{recipe_key(release)}"


def root_dir(release: Release) -> Path:
    """The cached debootstrap root of ``release`` (kept, so a change to the configuration alone costs minutes, not a debootstrap)."""
    return cache_root() / f"{release.name}-debootstrap-{_key(root_recipe(release))}"


def cached_image(release: Release) -> Optional[Image]:
    """The built image for the current recipe, or None."""
    d = image_dir(release)
    try:
        info = json.loads((d / "image.json").read_text())
    except (OSError, ValueError):
        return None
    if not _same(info.get("recipe"), recipe(release)) or not all((d / f).is_file() for f in ("rootfs.img", "vmlinuz", "initrd.img")):
        return None
    return Image(release.name, d, info)


def chroot(root: Path, *argv: str, what: str, timeout_s: float = 1800) -> str:
    """Run a command inside the arm64 root (under qemu-user) with a clean environment."""
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
           "DEBIAN_FRONTEND=noninteractive", "HOME=/root"]
    return run(["chroot", str(root), *env, *argv], what, timeout_s=timeout_s, capture=True)


def write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    """Write a file inside the root (host side), creating its folder."""
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_symlink():
        p.unlink()
    p.write_text(text)
    p.chmod(mode)


def configure(root: Path, release: Release) -> None:
    """Turn the debootstrap root into a Pi-like machine that boots under qemu."""
    write(root, "/etc/hostname", "raspberrypi\n")
    write(root, "/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    write(root, "/etc/fstab", "# the root is the first virtio disk; Raspberry Pi OS mounts it noatime too\n"
                              "/dev/vda  /  ext4  defaults,noatime  0  1\n")
    write(root, "/etc/resolv.conf", "nameserver 10.0.2.3\n")
    # One machine id per image: every session's boot is a normal boot, not a first boot.
    write(root, "/etc/machine-id", uuid.uuid4().hex + "\n", 0o444)

    existing = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    groups = [g for g in PI_GROUPS if g in existing]
    users = {line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()}
    if "pi" not in users:
        chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", ",".join(groups), "pi",
               what="creating the pi user")
    chroot(root, "usermod", "--password", "*", "pi", what="pi: key login only")
    write(root, "/etc/sudoers.d/010_pi-nopasswd", "pi ALL=(ALL) NOPASSWD: ALL\n", 0o440)

    write(root, "/etc/systemd/network/10-qemu.network",
          f"[Match]\nType=ether\n\n[Network]\nAddress={GUEST_ADDRESS}\nGateway=10.0.2.2\nDNS=10.0.2.3\n")
    write(root, "/etc/ssh/sshd_config.d/edgekit.conf",
          "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
          "PermitRootLogin no\nUseDNS no\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    write(root, "/usr/local/sbin/seed-ssh-keys", SEED_SCRIPT, 0o755)
    write(root, "/etc/systemd/system/seed-ssh-keys.service", SEED_UNIT)

    # A persistent journal survives reboots and power cuts, so the tests can read it afterwards.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
    write(root, "/etc/systemd/journald.conf.d/edgekit.conf", "[Journal]\nStorage=persistent\n")
    # Timings taken here are qemu's (TCG), not a Pi's: say so to every login and every service.
    write(root, "/etc/environment", f"EDGEKIT_EMULATED={EMULATED_AS}\n")
    write(root, "/etc/systemd/system.conf.d/edgekit-emulated.conf",
          f"[Manager]\nDefaultEnvironment=EDGEKIT_EMULATED={EMULATED_AS}\n")
    # A prefix drop-in: applies to every edgekit-*.service the deploy agent installs.
    write(root, "/etc/systemd/system/edgekit-.service.d/emulated.conf", EMULATED_DROPIN)

    chroot(root, "systemctl", "enable", "systemd-networkd.service", "ssh.service", "seed-ssh-keys.service",
           what="enabling networkd, sshd and the seed service")
    chroot(root, "systemctl", "mask", *MASKED_UNITS, what="masking timers that would fire mid-test")
    # (The journal folder's group and ACLs, for adm, are set at every boot by systemd-tmpfiles-setup.)

    # What apt downloaded is not part of a Pi image.
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / d).glob("*"):
            if p.is_file():
                p.unlink()


def prepare_second_stage(root: Path) -> None:
    """Between debootstrap's unpacking and its emulated second stage: two things that save most of its time.

    1. An initrd with only the modules in INITRD_MODULES, decided before the kernel package is
       configured: the default (MODULES=most) copies hundreds of modules, each through emulated
       tools. The list goes in modules.d/ (not the conffile /etc/initramfs-tools/modules), so
       dpkg asks nothing.
    2. The suite's Packages index cut down, here on the host, to the stanzas of the packages
       debootstrap installs: the second stage filters the whole index (56 MB for Trixie) with
       an emulated perl, which alone takes longer than the rest. The result is the same
       /var/lib/dpkg/available; apt's lists are removed from the image anyway.
    """
    write(root, "/etc/initramfs-tools/conf.d/edgekit.conf", "MODULES=list\nCOMPRESS=gzip\n")
    write(root, "/usr/share/initramfs-tools/modules.d/edgekit", "".join(m + "\n" for m in INITRD_MODULES))
    names = set((root / "debootstrap/required").read_text().split()) | set((root / "debootstrap/base").read_text().split())
    for index in (root / "var/lib/apt/lists").glob("*_Packages"):
        stanzas = index.read_text(encoding="utf-8", errors="surrogateescape").split("\n\n")
        keep = [st for st in stanzas if (m := re.match(r"Package: (\S+)", st)) and m.group(1) in names]
        index.write_text("\n\n".join(keep) + "\n\n", encoding="utf-8", errors="surrogateescape")


def kernel_files(root: Path) -> tuple[Path, Path, str]:
    """(vmlinuz, initrd, kernel version) of the one kernel installed in the root."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise BuildError(f"expected one kernel in {root / 'boot'}, found {[k.name for k in kernels]}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise BuildError(f"update-initramfs made no {initrd}")
    return kernels[0], initrd, version


def du_bytes(path: Path) -> int:
    """Bytes used under ``path`` (as du counts them, one file system)."""
    out = run(["du", "-sx", "--block-size=1", str(path)], f"measuring {path}", capture=True)
    return int(out.split()[0])


def make_disk(root: Path, image: Path) -> int:
    """A sparse ext4 image holding ``root`` (mke2fs -d: no loop mount); returns its apparent size."""
    used = du_bytes(root)
    size = ((int(used * 1.15) + FREE_SPACE_BYTES) // 2**20 + 1) * 2**20
    image.unlink(missing_ok=True)
    run(["truncate", "-s", str(size), str(image)], "sizing the disk image")
    run(["mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", str(root), "-F", str(image)], "mke2fs -d", timeout_s=900)
    run(["e2fsck", "-fn", str(image)], "checking the new file system")
    return size


def allocated_bytes(path: Path) -> int:
    """Bytes a sparse file really occupies."""
    return path.stat().st_blocks * 512


def root_stamp(release: Release) -> Path:
    """The record of a finished debootstrap stage (beside the root, so it is not copied into images)."""
    return root_dir(release).with_name(root_dir(release).name + ".json")


def ensure_root(release: Release) -> tuple[Path, dict[str, Any]]:
    """The debootstrap root of ``release`` (built once per root recipe) and its record (mirror, seconds)."""
    final = root_dir(release)
    try:
        done = json.loads(root_stamp(release).read_text())
        if _same(done.get("recipe"), root_recipe(release)) and final.is_dir():
            return final, done
    except (OSError, ValueError):
        pass
    partial = final.with_name(final.name + ".partial")
    safe_rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    log(f"{release.name}: debootstrap arm64 from {mirror} (the second stage runs emulated: 10-25 minutes)…")
    t0 = time.monotonic()
    try:
        debootstrap(partial, release.name, packages(release), mirror, before_configure=prepare_second_stage)
    except BaseException:
        safe_rmtree(partial)  # a failed stage leaves nothing behind (the next run starts it again)
        raise
    done = {"recipe": root_recipe(release), "mirror": mirror, "seconds": round(time.monotonic() - t0, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_model()}
    safe_rmtree(final)
    partial.rename(final)
    root_stamp(release).write_text(json.dumps(done, indent=2) + "\n")
    for old in cache_root().glob(f"{release.name}-debootstrap-*"):  # earlier recipes: superseded
        if old != final and old.is_dir():
            safe_rmtree(old)
            old.with_name(old.name + ".json").unlink(missing_ok=True)
    return final, done


def build_image(release: Release) -> Image:
    """Build the image for ``release`` into its cache folder (the debootstrap stage only if its recipe changed)."""
    partial = image_dir(release).with_name(image_dir(release).name + ".partial")
    try:
        return _build_image(release)
    except BaseException:
        safe_rmtree(partial)
        raise


def _build_image(release: Release) -> Image:
    t0 = time.monotonic()
    final = image_dir(release)
    partial = final.with_name(final.name + ".partial")
    safe_rmtree(partial)
    root = partial / "root"
    root.parent.mkdir(parents=True)
    steps: dict[str, float] = {}
    t = time.monotonic()
    pristine, done = ensure_root(release)
    mirror = str(done.get("mirror", ""))
    steps["root_stage_s"] = time.monotonic() - t
    t = time.monotonic()
    run(["cp", "-a", "--reflink=auto", str(pristine), str(root)], "copying the debootstrap root", timeout_s=900)
    steps["copy_s"] = time.monotonic() - t
    log(f"{release.name}: configuring…")
    t = time.monotonic()
    configure(root, release)
    steps["configure_s"] = time.monotonic() - t
    vmlinuz, initrd, kver = kernel_files(root)
    shutil.copy2(vmlinuz, partial / "vmlinuz")
    shutil.copy2(initrd, partial / "initrd.img")
    pyver = chroot(root, "python3", "-c", "import platform; print(platform.python_version())", what="python version").strip()
    if not pyver.startswith("{}.{}.".format(*release.python)):
        raise BuildError(f"{release.name}: the root has Python {pyver}, expected {release.python[0]}.{release.python[1]}")
    dpkg = chroot(root, "dpkg-query", "-W", "-f", "${Package} ${Version}\n", what="listing packages")
    versions = dict(line.split(" ", 1) for line in dpkg.splitlines() if " " in line)
    root_bytes = du_bytes(root)
    log(f"{release.name}: mke2fs -d ({root_bytes / 2**20:.0f} MiB of files)…")
    t = time.monotonic()
    size = make_disk(root, partial / "rootfs.img")
    steps["mke2fs_s"] = time.monotonic() - t
    safe_rmtree(root)
    info = {
        "recipe": recipe(release),
        "release": release.name,
        "debian": release.debian,
        "mirror": mirror,
        "kernel": kver,
        "kernel_package": versions.get(f"linux-image-{kver}", ""),
        "python": pyver,
        "systemd": versions.get("systemd", ""),
        "openssh": versions.get("openssh-server", ""),
        "packages": len(versions),
        "root_bytes": root_bytes,
        "disk_bytes": size,
        "disk_allocated_bytes": allocated_bytes(partial / "rootfs.img"),
        "kernel_bytes": (partial / "vmlinuz").stat().st_size,
        "initrd_bytes": (partial / "initrd.img").stat().st_size,
        "build_s": round(time.monotonic() - t0, 1),
        "debootstrap_cold_s": done.get("seconds"),
        **{k: round(v, 1) for k, v in steps.items()},
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu": cpu_model(),
    }
    (partial / "image.json").write_text(json.dumps(info, indent=2) + "\n")
    safe_rmtree(final)
    partial.rename(final)
    for old in cache_root().glob(f"{release.name}-*"):  # earlier images: superseded
        if old != final and old.is_dir() and "-debootstrap-" not in old.name:
            safe_rmtree(old)
    return Image(release.name, final, info)


def cpu_model() -> str:
    """The host CPU (figures are only meaningful beside it)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def build_problem() -> Optional[str]:
    """Why images cannot be built or booted here, or None (no side effects)."""
    problem = binfmt_problem()
    if problem:
        return problem
    for tool, pkg in (("qemu-system-aarch64", "qemu-system-arm"), ("qemu-img", "qemu-utils"), ("mke2fs", "e2fsprogs"),
                      ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: `apt-get install {pkg}`"
    return None


def ensure_image(name: str, refresh: bool = False) -> tuple[Image, str]:
    """The image for release ``name``, built if missing; returns it and "cached" or "built"."""
    if name not in RELEASES:
        raise BuildError(f"unknown release {name!r}; choose one of {', '.join(RELEASES)}")
    release = RELEASES[name]
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session building the same image: wait for it
        image = None if refresh else cached_image(release)
        if image is not None:
            return image, "cached"
        problem = build_problem()
        if problem:
            raise BuildError(problem)
        ensure_binfmt()
        return build_image(release), "built"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: build or reuse the cached VM images."""
    ap = argparse.ArgumentParser(
        description="Build the emulated Raspberry Pi images (Debian arm64 Bookworm and Trixie, systemd, a Debian kernel) "
                    "for qemu-system-aarch64, cached in $EDGEKIT_VM_CACHE. Needs root, debootstrap, qemu-user-static, "
                    "binfmt-support, qemu-system-arm, qemu-utils and e2fsprogs. A warm run only checks the cache.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--release", default="all", choices=[*RELEASES, "all"], help="which image")
    ap.add_argument("--refresh", action="store_true", help="rebuild even when cached (takes the archive's newest kernel and packages)")
    ap.add_argument("--json", action="store_true", help="print what each image recorded as JSON on stdout")
    args = ap.parse_args(argv)
    names = list(RELEASES) if args.release == "all" else [args.release]
    out = []
    try:
        for name in names:
            t0 = time.monotonic()
            image, action = ensure_image(name, args.refresh)
            out.append({"release": name, "action": action, "seconds": round(time.monotonic() - t0, 1), "dir": str(image.dir),
                        **{k: v for k, v in image.info.items() if k != "recipe"}})
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the next run starts that image again", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for o in out:
            print(f"{o['release']:<9} {o['action']:<7} kernel {o['kernel']}, Python {o['python']}, "
                  f"disk {o['disk_bytes'] / 2**30:.2f} GiB ({o['disk_allocated_bytes'] / 2**20:.0f} MiB allocated), "
                  f"cold build {o['build_s']:.0f} s  {o['dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
