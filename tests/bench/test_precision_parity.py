"""bench/precision_parity's verdict: a paired mean with a t interval, judged against ±0.2 points."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from precision_parity import paired_summary, t95


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
