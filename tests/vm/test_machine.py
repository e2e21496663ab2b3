"""The machine itself: a real arm64 kernel, systemd as PID 1, a Pi-like user, a closed network, a power cut that loses RAM."""

from __future__ import annotations

import os
import time

from build_image import RELEASES, ensure_image
from machine import PiVM

PYTHON = {name: r.python for name, r in RELEASES.items()}


def test_real_kernel_and_systemd_as_pid1(pi: PiVM) -> None:
    out = pi.ssh("cat /proc/1/comm; uname -m; uname -r; systemctl is-system-running --wait; "
                 "grep -m1 'CPU part' /proc/cpuinfo; . /etc/os-release; echo $VERSION_CODENAME").stdout.split("\n")
    comm, machine, kernel, state, cpu_part, codename = (s.strip() for s in out[:6])
    assert comm == "systemd"
    assert machine == "aarch64"
    assert kernel == pi.image.info["kernel"], "the kernel booted is the Debian one the image recorded"
    failed = pi.ssh("systemctl --failed --plain --no-legend").stdout.strip()
    assert state == "running", f"system state {state}; failed units: {failed}"
    assert cpu_part.endswith("0xd08"), cpu_part  # Cortex-A72, as in a Pi 4
    assert codename == pi.image.release


def test_python_matches_the_release(pi: PiVM) -> None:
    major, minor = PYTHON[pi.image.release]
    out = pi.ssh("/usr/bin/python3 -c 'import sys, venv, ensurepip; print(sys.version_info[0], sys.version_info[1])'").stdout
    assert out.split() == [str(major), str(minor)]


def test_pi_user_as_on_raspberry_pi_os(pi: PiVM) -> None:
    groups = pi.ssh("id -nG").stdout.split()
    assert {"video", "sudo", "adm"} <= set(groups), groups
    assert pi.ssh("sudo -n true", check=False).returncode == 0, "passwordless sudo"
    # The journal is persistent (it survives reboots and power cuts) and pi may read it (adm).
    machine_id = pi.ssh("cat /etc/machine-id").stdout.strip()
    assert pi.ssh(f"test -d /var/log/journal/{machine_id}", check=False).returncode == 0
    assert "systemd" in pi.ssh("journalctl -b -n 200 --no-pager -q").stdout.lower()


def test_network_reaches_nothing(pi: PiVM) -> None:
    # restrict=on: the guest cannot open connections out (not to the host, not to the internet).
    code = (
        "import socket\n"
        "for addr in (('10.0.2.2', 22), ('10.0.2.2', 80), ('151.101.0.223', 443)):\n"
        "    try:\n"
        "        socket.create_connection(addr, timeout=3).close(); print('open', addr)\n"
        "    except OSError:\n"
        "        print('closed', addr)\n"
    )
    out = pi.python(code)
    assert "open" not in out.split(), out


def test_power_cut_loses_what_was_not_flushed_and_keeps_what_was(pi: PiVM) -> None:
    base_mtime = os.stat(pi.image.disk).st_mtime_ns
    payload = "x" * 65536
    code = (
        "import os\n"
        f"data = {payload!r}.encode()\n"
        "def put(path, sync):\n"
        "    with open(path, 'wb') as f:\n"
        "        f.write(data)\n"
        "        if sync:\n"
        "            f.flush(); os.fsync(f.fileno())\n"
        "    if sync:\n"
        "        d = os.open(os.path.dirname(path), os.O_RDONLY); os.fsync(d); os.close(d)\n"
        "put('/home/pi/synced.bin', True)\n"
        "put('/home/pi/unsynced.bin', False)\n"
        "print('written')\n"
    )
    assert pi.python(code).strip() == "written"
    pi.power_cut()  # within milliseconds: long before ext4's 5 s commit or the 30 s writeback
    pi.start()
    out = pi.ssh("wc -c < /home/pi/synced.bin; if [ -e /home/pi/unsynced.bin ]; then wc -c < /home/pi/unsynced.bin; "
                 "else echo missing; fi").stdout.split()
    assert out[0] == str(len(payload)), "an fsynced file and its directory entry survive the cut"
    assert out[1] != str(len(payload)), "a write nobody flushed was in RAM only and is gone"
    assert os.stat(pi.image.disk).st_mtime_ns == base_mtime, "the cached image is never written"
    pi.ssh("rm -f /home/pi/synced.bin /home/pi/unsynced.bin; sync")


def test_boot_to_ssh_is_recorded(pi: PiVM) -> None:
    boots = [b for b in pi.boots if b.ssh_s is not None]
    assert boots and all(b.boot_id for b in boots)
    # EMULATED (qemu TCG): recorded, not a goal. The harness's boot timeout is the only limit.
    print(f"EMULATED boot-to-SSH on {pi.image.release}: " + ", ".join(f"{b.how} {b.ssh_s:.1f} s" for b in boots))


def test_cached_image_is_reused(pi: PiVM) -> None:
    t0 = time.monotonic()
    image, action = ensure_image(pi.image.release)
    assert action == "cached" and image.dir == pi.image.dir
    assert time.monotonic() - t0 < 10
