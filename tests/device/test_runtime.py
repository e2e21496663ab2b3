"""The runtime picker and the engine's refusals: wrong hash, not TFLite, spec mismatch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.engine import open_engine
from device.errors import ModelError, RuntimeNotFound
from device.manifest import Manifest, load_manifest
from device.runtime import RUNTIMES, install_hint, load_runtime


def test_auto_picks_an_installed_runtime_and_reports_it() -> None:
    rt = load_runtime("auto")
    assert rt.name in ("tflite-runtime", "ai-edge-litert", "tensorflow")
    assert rt.version != "" and callable(rt.interpreter_class)


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(RuntimeNotFound, match="unknown runtime"):
        load_runtime("onnx")


# A finder that makes one runtime's import fail the way broken wheels do: missing, or built
# against numpy 1 and imported under numpy 2 (which raises AttributeError, not ImportError).
_BLOCK = """
import sys
class Broken:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {top!r}:
            raise {exc}
        return None
sys.meta_path.insert(0, Broken())
sys.modules.pop({top!r}, None)
from device.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("name", "exc"),
    [
        ("ai-edge-litert", "ModuleNotFoundError(\"No module named 'ai_edge_litert'\")"),
        ("ai-edge-litert", "AttributeError('_ARRAY_API not found')"),
        ("tensorflow", "ModuleNotFoundError(\"No module named 'tensorflow'\")"),
    ],
)
def test_a_forced_runtime_that_will_not_import_is_one_line_with_what_to_install(device_artifacts: Path, name: str, exc: str) -> None:
    top = RUNTIMES[name].split(".")[0]
    code = _BLOCK.format(top=top, exc=exc)
    argv = ["bench", "--manifest", str(device_artifacts), "--runtime", name, "--runs", "1", "--warmup", "0", "--json"]
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("edgekit-device: error: no TFLite runtime could be imported") and name in lines[0]
    assert exc.split("(")[0] in lines[0] and "pip install" in lines[0]


def test_no_runtime_at_all_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "for n in ('tflite_runtime', 'ai_edge_litert', 'tensorflow'): sys.modules[n] = None\n"
        "from device.runtime import load_runtime\n"
        "from device.errors import RuntimeNotFound\n"
        "try:\n    load_runtime('auto')\nexcept RuntimeNotFound as e:\n    print(e)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "pip install" in p.stdout and "tflite-runtime" in p.stdout
    assert "armv7l" in install_hint("armv7l") and "ai-edge-litert" in install_hint("aarch64", (3, 12))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_engine_runs_int8_and_float_through_the_same_code(manifest: Manifest) -> None:
    for variant in ("int8", "float32"):
        e = open_engine(manifest, variant, threads=1)
        x = np.zeros(e.input_spec.shape, np.dtype(e.input_spec.dtype))
        assert e.run(x).shape == tuple(manifest.variant(variant).output.shape)


def test_wrong_hash_is_refused(device_artifacts: Path, tmp_path: Path) -> None:
    d = _copy(device_artifacts, tmp_path / "a")
    p = d / "model_int8.tflite"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        open_engine(load_manifest(d), "int8")


def test_truncated_or_non_tflite_file_is_refused(device_artifacts: Path, tmp_path: Path) -> None:
    d = _copy(device_artifacts, tmp_path / "b")
    (d / "model_int8.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a TFLite model"):
        open_engine(load_manifest(d), "int8")


def test_input_spec_that_differs_from_the_manifest_is_refused(device_artifacts: Path, tmp_path: Path) -> None:
    d = _copy(device_artifacts, tmp_path / "c")
    doc = json.loads((d / "manifest.json").read_text())
    doc["variants"]["int8"]["input"]["zero_point"] = 0
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="different runs"):
        open_engine(load_manifest(d), "int8")


def test_a_manifest_input_shape_the_model_does_not_have_is_refused(device_artifacts: Path, tmp_path: Path) -> None:
    d = _copy(device_artifacts, tmp_path / "s")
    doc = json.loads((d / "manifest.json").read_text())
    doc["preprocess"]["size"] = [32, 32]  # a consistent manifest, but not this model's
    for v in doc["variants"].values():
        v["input"]["shape"] = [1, 32, 32, 1]
    doc["input"]["shape"] = [1, 32, 32, 1]
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match=r"input is .*\[1, 28, 28, 1\].* manifest says .*\[1, 32, 32, 1\]"):
        open_engine(load_manifest(d), "float32")
