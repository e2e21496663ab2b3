"""`.ci/pytest_run` fails CI when a marker it relies on executed no test, also when every test was skipped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / ".ci" / "pytest_run"
INI = "[pytest]\nmarkers =\n    slow: slow\n    arm64: arm64\naddopts = -p no:cacheprovider\n"


def _run(tmp: Path, body: str, markers: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp / "pytest.ini").write_text(INI)
    (tmp / "test_demo.py").write_text("import pytest\n\n" + body)
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # only the plugin under test: faster start
    return subprocess.run([str(RUN), "demo", markers, "-q", *args], capture_output=True, text=True, timeout=120, cwd=tmp,
                          env=env)


@pytest.mark.parametrize(("body", "markers", "args", "code", "says"), [
    ("@pytest.mark.arm64\ndef test_a():\n    pytest.skip('no qemu')\n", "arm64", ["-m", "arm64"], 1, "executed no test"),
    ("def test_a():\n    pytest.skip('no root')\n\ndef test_b():\n    pytest.skip('no root')\n", "-", [], 1, "executed no test"),
    ("@pytest.mark.arm64\ndef test_a():\n    pass\n", "arm64", ["-m", "not arm64"], 1, "executed no test"),
    ("def test_a():\n    pass\n\n@pytest.mark.slow\ndef test_b():\n    pytest.skip('no sshd')\n", "slow", [], 1,
     "no test marked slow passed"),
    ("def test_a():\n    assert False\n", "-", [], 1, "failed (pytest exit 1)"),
    ("@pytest.mark.slow\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip('x')\n", "slow", [], 0, "1 passed (slow 1)"),
])
def test_pytest_run_counts_what_passed(tmp_path: Path, body: str, markers: str, args: list[str], code: int, says: str) -> None:
    p = _run(tmp_path, body, markers, *args)
    assert p.returncode == code and says in p.stdout, p.stdout + p.stderr
