"""Exact process identity under qemu-user: a process's own ProcessRef is the one every other process sees.

qemu-user answers a process's reads of ``/proc/self/stat`` (and ``/proc/<its pid>/stat``)
itself, with a start time that is often one clock tick off the kernel's. The process supervisor
records itself that way, and the agent checks it from another process: with the two views
differing, every push to the emulated Pi failed with "the supervisor did not start".
"""

from __future__ import annotations

import json

import pytest
from arm64_target import Arm64Session

from deploy.agent.build import artifact

pytestmark = [pytest.mark.arm64, pytest.mark.slow]

CHECK = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from deploy.agent.procs import ProcessRef
child = ("import json, os, sys; sys.path.insert(0, sys.argv[1]); from deploy.agent.procs import ProcessRef; "
         "print(json.dumps(ProcessRef.of(os.getpid()).to_json()), flush=True); sys.stdin.read()")
out = []
for _ in range(int(sys.argv[2])):
    p = subprocess.Popen([sys.executable, "-c", child, sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    own = ProcessRef.from_json(json.loads(p.stdout.readline()))
    seen = ProcessRef.of(p.pid)
    out.append([own.to_json(), seen.to_json() if seen else None, own.alive()])
    p.stdin.close()
    p.wait()
print(json.dumps(out))
"""


def test_a_process_and_its_observer_agree_on_its_identity(arm64: Arm64Session) -> None:
    pyz = arm64.workdir / artifact().filename
    pyz.write_bytes(artifact().data)
    script = arm64.workdir / "procs_check.py"
    script.write_text(CHECK)
    inside = arm64.workdir_inside
    r = arm64.run(["/usr/bin/python3", f"{inside}/procs_check.py", f"{inside}/{pyz.name}", "8"], timeout_s=900)
    rows = json.loads(r.stdout)
    assert len(rows) == 8
    for own, seen, alive in rows:
        assert own == seen and alive, (own, seen)
