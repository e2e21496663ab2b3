"""The host benches print their figures with the machine they came from (CPU, flags, precision)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}


def bench(script: str, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True, env=env, timeout=timeout_s)


def test_host_pipeline_figures_name_the_machine_and_the_camera_gap(artifacts: Path) -> None:
    r = bench("host_pipeline.py", "--reuse", str(artifacts), "--json")
    assert r.returncode in (0, 3), r.stderr  # 3: a goal missed (the fixture trains one brief epoch)
    f = json.loads(r.stdout)
    assert set(f["cpu"]["flags"]) == FLAGS and f["cpu"]["model"] and f["precision"] in ("float32", "mixed_bfloat16")
    int8 = f["variants"]["int8"]
    assert 0 < int8["camera_like_accuracy"] <= 1 and 0 < int8["camera_like_raw_accuracy"] <= 1
    assert "camera_gap" in f["targets"] and "raw" in f["targets"]["camera_gap"]["figure"]
    text = bench("host_pipeline.py", "--reuse", str(artifacts)).stdout
    assert text.startswith("machine: ") and "training precision" in text and "camera" in text


@pytest.mark.slow
def test_train_speed_quick_capped_at_avx2() -> None:
    r = bench("train_speed.py", "--quick", "--json", "--precision", "float32", "--onednn-isa", "AVX2")
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads(r.stdout)
    assert f["precision"] == "float32" and f["cpu_info"]["onednn_isa_cap"] == "AVX2"
    assert f["onednn_isa"] is None or "AVX2" in f["onednn_isa"]  # oneDNN's own word on the ISA it used
    assert f["images"] == 4096 and f["steps"] == 16 and set(f["cpu_info"]["flags"]) == FLAGS
    for key in ("input_wall_s", "epoch_wall_s", "epoch_cached_wall_s", "step_min_ms"):
        assert f[key] > 0, key


@pytest.mark.slow
def test_model_cost_quick_rows_are_the_recipe_cuts_then_the_candidates() -> None:
    r = bench("model_cost.py", "--quick", "--json", "--onednn-isa", "AVX2")
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads(r.stdout)
    assert f["cpu_info"]["onednn_isa_cap"] == "AVX2" and set(f["cpu_info"]["flags"]) == FLAGS
    stages = [row for row in f["rows"] if row["kind"] == "stage"]
    assert [row["name"] for row in stages] == ["stage 1 (convs 1-1)", "stages 1-2 (convs 1-3)", "stages 1-3 (convs 1-5)"]
    recipe = stages[-1]
    assert recipe["params"] == 93_658 and recipe["multiply_adds"] == 5_555_344 and recipe["ratio_to_recipe"] == 1.0
    assert [s["multiply_adds"] for s in stages] == sorted(s["multiply_adds"] for s in stages)  # each cut adds compute
    assert len(f["rows"]) > len(stages) and all(row["step_us_per_image_min"] > 0 for row in f["rows"])
    # the dense-work ceiling: a step's FLOP rate is 6 x its multiply-adds over its time, as a share of the matmul's
    assert f["matmul_size"] == 1024 and f["matmul_gflops"] > 0
    for row in f["rows"]:
        assert row["step_gflops"] == pytest.approx(6 * row["multiply_adds"] / row["step_us_per_image_min"] / 1e3)
        assert row["share_of_matmul"] == pytest.approx(row["step_gflops"] / f["matmul_gflops"])


def test_model_cost_refuses_a_round_count_below_one_in_one_line() -> None:
    r = bench("model_cost.py", "--rounds", "0")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ")


@pytest.mark.slow
def test_shape_accuracy_quick_trains_the_recipe_and_a_candidate_and_reads_its_own_json(tfds_dir: Path, tmp_path: Path) -> None:
    r = bench("shape_accuracy.py", "--quick", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads(r.stdout)
    recipe, candidate = f["shapes"]
    assert recipe["shape"] == "recipe" and recipe["params"] == 93_658 and recipe["multiply_adds"] == 5_555_344
    assert recipe["mean_points_from_recipe"] is None and candidate["mean_points_from_recipe"] is not None
    assert candidate["multiply_adds"] != recipe["multiply_adds"] and f["onednn_isa"] == "AVX2"
    for run in f["runs"]:
        assert run["seed"] == 42 and run["precision"] == "float32" and run["test_images"] == 2000
        assert 0.1 < run["accuracy"] <= 1 and run["epochs_run"] == 1
    saved = tmp_path / "a.json"
    saved.write_text(r.stdout)
    table = bench("shape_accuracy.py", "--reuse", str(saved))
    assert table.returncode == 0 and table.stdout.startswith("machine: ") and candidate["shape"] in table.stdout


@pytest.mark.parametrize("args", [["--shapes", "no such shape"], ["--jobs", "0"], ["--reuse", "/nonexistent.json"],
                                  ["--train", "batch_size"], ["--train", "seed=1"], ["--train", "batch_size=1.5"],
                                  ["--train", "batch_size=0"], ["--train", "peak_lr=fast"], ["--train", "optimizer=adam"]])
def test_shape_accuracy_bad_input_is_one_error_line(args: list[str]) -> None:
    r = bench("shape_accuracy.py", *args)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: "), r.stderr


def test_shape_accuracy_pairs_a_shape_only_with_the_recipe_trained_as_long_on_the_same_seed() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("shape_accuracy", ROOT / "bench" / "shape_accuracy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = lambda shape, epochs, seed, acc: {"shape": shape, "epochs": epochs, "seed": seed, "accuracy": acc,  # noqa: E731
                                            "params": 1, "multiply_adds": 1}
    rows = module.summarise([run("recipe", 28, 42, 0.93), run("recipe", 20, 42, 0.92), run("recipe", 28, 7, 0.90),
                             run("cheap", 28, 42, 0.925), run("cheap", 28, 1, 0.5), run("cheap", 20, 7, 0.8)])
    by = {(r["shape"], r["epochs"]): r for r in rows}
    assert set(by) == {("recipe", 28), ("recipe", 20), ("cheap", 28), ("cheap", 20)}
    assert by["cheap", 28]["mean_points_from_recipe"] == pytest.approx(-0.5)  # seed 42 only: no recipe run with seed 1
    assert by["cheap", 28]["mean_accuracy"] == pytest.approx(0.7125)
    assert by["cheap", 20]["mean_points_from_recipe"] is None  # no 20-epoch recipe run with seed 7
    assert by["recipe", 28]["mean_points_from_recipe"] is None


def test_shape_accuracy_a_training_change_is_its_own_row_compared_with_the_recipe_as_it_is() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("shape_accuracy", ROOT / "bench" / "shape_accuracy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_train(["batch_size=128", "peak_lr=2e-3"]) == {"batch_size": 128, "peak_lr": 0.002}
    assert module.parse_train(["optimizer=sgd", "peak_lr=0.1"]) == {"optimizer": "sgd", "peak_lr": 0.1}
    run = lambda train, seed, acc: {"shape": "recipe", "train": train, "epochs": 28, "seed": seed,  # noqa: E731
                                    "accuracy": acc, "params": 1, "multiply_adds": 1}
    rows = module.summarise([run({}, 42, 0.93), run({}, 7, 0.92), run({"batch_size": 128}, 42, 0.935), run({"batch_size": 128}, 7, 0.93)])
    by = {r["shape"]: r for r in rows}
    assert set(by) == {"recipe", "recipe, batch_size=128"}
    assert by["recipe, batch_size=128"]["mean_points_from_recipe"] == pytest.approx(0.75)
    assert by["recipe"]["mean_points_from_recipe"] is None
