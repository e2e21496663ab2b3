"""bench/precision_parity's verdict: a paired mean with a t interval, judged against ±0.2 points."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

PATH = Path(__file__).resolve().parents[2] / "bench" / "precision_parity.py"


def _load() -> ModuleType:
    """Import the script by path, leaving sys.path alone (tests/vm has a `machine` module, and so has bench/)."""
    spec = importlib.util.spec_from_file_location("precision_parity", PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_path_before, _machine_before = list(sys.path), sys.modules.get("machine")
_pp = _load()
_path_after, _machine_after = list(sys.path), sys.modules.get("machine")
main, paired_summary, t95 = _pp.main, _pp.paired_summary, _pp.t95


def test_importing_the_script_leaves_sys_path_and_the_machine_module_alone() -> None:
    # bench/ on sys.path (or bench/machine.py cached as `machine`) broke the collection of tests/vm in CI
    assert _path_after == _path_before and _machine_after is _machine_before


def test_a_worked_example_of_three_seeds() -> None:
    # diffs -0.5, -0.1, +0.3: mean -0.1, sd 0.4, half-width 4.303 * 0.4 / sqrt(3) = 0.994
    s = paired_summary([-0.5, -0.1, 0.3])
    assert s["mean"] == pytest.approx(-0.1) and s["sd"] == pytest.approx(0.4)
    assert s["ci95"] == pytest.approx(4.303 * 0.4 / math.sqrt(3))
    assert s["verdict"].startswith("not settled")


def test_a_tight_interval_inside_the_goal_is_met_and_one_outside_is_missed() -> None:
    assert paired_summary([0.05, -0.05, 0.0, 0.02, -0.01])["verdict"].startswith("met")
    assert paired_summary([-1.0, -1.1, -0.9])["verdict"].startswith("missed")
    assert paired_summary([0.6, 0.7, 0.65])["verdict"].startswith("missed")


def test_one_seed_gives_no_interval() -> None:
    s = paired_summary([-0.3])
    assert s["ci95"] is None and s["n"] == 1


def test_t_quantiles_never_narrower_than_the_true_ones() -> None:
    assert t95(4) == pytest.approx(2.776) and t95(11) == pytest.approx(2.228) and t95(500) == 1.96
    assert t95(40) == pytest.approx(2.042)  # between 30 and 120: the 30-dof value, a little wide


def _saved(path: Path, machine: str, seeds: dict[int, tuple[float, float]]) -> Path:
    rows = [{"seed": k, "float32": {"accuracy": a, "int8_accuracy": a, "train_seconds": 1.0},
             "mixed_bfloat16": {"accuracy": b, "int8_accuracy": b, "train_seconds": 1.0}, "diff_points": 100 * (b - a)}
            for k, (a, b) in seeds.items()]
    path.write_text(json.dumps({"machine": machine, "float32_isa_cap": "AVX2", "quick": False, "seeds": rows}))
    return path


def test_reuse_pools_the_seeds_of_saved_runs_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _saved(tmp_path / "a.json", "cpu X", {42: (0.930, 0.928), 7: (0.927, 0.926)})
    b = _saved(tmp_path / "b.json", "cpu X", {7: (0.5, 0.5), 1: (0.929, 0.931)})  # seed 7 again: the first one counts
    assert main(["--reuse", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in out["seeds"]] == [42, 7, 1]
    assert out["summary"]["n"] == 3 and out["summary"]["mean"] == pytest.approx((-0.2 - 0.1 + 0.2) / 3)
    assert main(["--reuse", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "mean bf16 - float32: -0.03 points" in table and "goal (within ±0.2): not settled" in table


def test_reuse_refuses_runs_from_different_machines(tmp_path: Path) -> None:
    a = _saved(tmp_path / "a.json", "cpu X", {42: (0.93, 0.93)})
    b = _saved(tmp_path / "b.json", "cpu Y", {7: (0.93, 0.93)})
    with pytest.raises(SystemExit, match="different machines"):
        main(["--reuse", str(a), str(b)])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read"):
        main(["--reuse", str(tmp_path / "bad.json")])
