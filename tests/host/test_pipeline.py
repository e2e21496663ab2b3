"""Output-folder safety and the command line (real subprocesses, real errors, no tracebacks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host.errors import ConfigError, OutputError
from host.pipeline import check_output, run_pipeline, staged_output, train_step


def host_cli(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True, timeout=timeout_s)


def test_non_empty_out_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(OutputError, match=r"not empty.*--force"):
        run_pipeline(tmp_path, epochs=1)
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_out_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output(f)
    with pytest.raises(OutputError), staged_output(f / "sub"):
        pass


def test_non_positive_epochs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        run_pipeline(tmp_path / "out", epochs=0)


def test_failure_leaves_the_old_folder_and_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old run")
    with pytest.raises(RuntimeError), staged_output(out, force=True) as stage:
        (stage / "half.tflite").write_bytes(b"half")
        raise RuntimeError("converter crashed")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_success_with_force_replaces_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old run")
    with staged_output(out, force=True) as stage:
        (stage / "new.txt").write_text("new run")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_cli_help_explains_the_steps() -> None:
    r = host_cli("--help")
    assert r.returncode == 0
    for word in ("run", "train", "convert", "evaluate", "dataset-fashion-mnist"):
        assert word in r.stdout
    r = host_cli("run", "--help")
    assert "--epochs" in r.stdout and "default" in r.stdout


@pytest.mark.parametrize("epochs", ["0", "-1", "two"])
def test_cli_bad_epochs(tmp_path: Path, epochs: str) -> None:
    r = host_cli("run", "--out", str(tmp_path / "o"), "--epochs", epochs)
    assert r.returncode == 2 and "positive integer" in r.stderr and "Traceback" not in r.stderr


def test_cli_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    r = host_cli("run", "--out", str(tmp_path))
    assert r.returncode == 1 and "not empty" in r.stderr and "Traceback" not in r.stderr


def test_cli_convert_without_saved_model(tmp_path: Path) -> None:
    r = host_cli("convert", "--out", str(tmp_path))
    assert r.returncode == 1 and "no SavedModel" in r.stderr and "host train" in r.stderr
    assert "Traceback" not in r.stderr
    r = host_cli("evaluate", "--out", str(tmp_path / "missing"))
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_no_data_source(tmp_path: Path) -> None:
    r = host_cli("train", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--tfds-dir", str(tmp_path / "tfds"), "--offline")
    assert r.returncode == 1 and "--data-dir" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_step_writes_what_convert_needs(tmp_path: Path, tfds_dir: Path) -> None:
    out = train_step(tmp_path / "work", epochs=1, train_limit=512, tfds_dir=tfds_dir, progress=False)
    assert (out / "saved_model" / "1" / "saved_model.pb").is_file() and (out / "model.keras").is_file()
    info = json.loads((out / "training.json").read_text())
    assert info["train_images"] == 512 and info["epochs_run"] == 1 and info["params"] <= 100_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_cli_convert_then_evaluate_a_trained_folder(tmp_path: Path, artifacts: Path) -> None:
    out = tmp_path / "work"
    out.mkdir()
    shutil.copytree(artifacts / "saved_model", out / "saved_model")
    for name in ("model.keras", "training.json"):
        shutil.copy(artifacts / name, out / name)
    r = host_cli("evaluate", "--out", str(out), "--quiet")
    assert r.returncode == 1 and "host convert" in r.stderr and "Traceback" not in r.stderr
    r = host_cli("convert", "--out", str(out), "--quiet", "--optimization", "OPTIMIZE_FOR_SIZE")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "deprecated" in r.stderr
    assert sorted(p.name for p in out.glob("*.tflite")) == [f"model_{v}.tflite" for v in ("dynamic", "float16", "float32", "int8")]
    r = host_cli("evaluate", "--out", str(out), "--quiet", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert set(summary["variants"]) == {"float32", "dynamic", "float16", "int8"}
    # same SavedModel, same seeded representative set: the same accuracies as the pipeline's own run
    manifest = json.loads((artifacts / "manifest.json").read_text())
    for v, d in summary["variants"].items():
        assert d["accuracy"] == pytest.approx(manifest["variants"][v]["accuracy"], abs=0.002)
    assert (out / "manifest.json").is_file() and (out / "report.md").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_one_training_path_fashion_takes_the_recipe_a_folder_its_own_rule() -> None:
    import numpy as np

    from device.manifest import Preprocess
    from host.choose import AUTO
    from host.data import Splits
    from host.pipeline import FOLDER_SHIFT_PX, train_config
    from host.recipe import fashion_mnist
    from host.train import DEFAULT_EPOCHS

    def splits(size: int, kind: str) -> Splits:
        x, y = np.zeros((40, size, size, 1), np.uint8), np.arange(40) % 4
        return Splits(x, y, x, y, None, None, x, y, "test", labels=("a", "b", "c", "d"),
                      preprocess=Preprocess(size=(size, size)), data={"kind": kind})

    fashion = train_config(splits(28, "fashion_mnist"), None, 7, AUTO, precision="float32")
    assert fashion == fashion_mnist(DEFAULT_EPOCHS, 7, "float32")
    folder = train_config(splits(96, "folder"), None, 7, AUTO, flip=False, precision="mixed_bfloat16")
    assert folder.precision == "mixed_bfloat16" and not folder.augment.flip and folder.augment.camera_fraction == 0
    assert folder.augment.shift == FOLDER_SHIFT_PX / 96 and folder.batch_size < fashion.batch_size
