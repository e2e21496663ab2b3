"""The camera gap's 95 % interval: paired frames (the same image raw and through a camera), so it rests on the discordant pairs."""

from __future__ import annotations

import numpy as np
import pytest

from host.evaluate_camera import CameraEval


def _eval(raw_hit: np.ndarray, cam_hit: np.ndarray) -> CameraEval:
    return CameraEval.from_hits("int8", cam_hit, raw_hit, by_format={}, by_polarity={})


def test_the_gap_and_its_interval_come_from_the_frames_the_camera_lost_and_gained() -> None:
    # 100 frames: 10 right raw and wrong through the camera, 2 the other way round, 80 right both ways
    raw = np.array([True] * 90 + [False] * 10)
    cam = np.array([True] * 80 + [False] * 10 + [True] * 2 + [False] * 8)
    e = _eval(raw, cam)
    assert (e.frames, e.lost, e.gained) == (100, 10, 2)
    assert e.raw_accuracy == pytest.approx(0.90) and e.accuracy == pytest.approx(0.82)
    assert e.gap_points == pytest.approx(8.0)
    # sd of the mean paired difference: sqrt((b + c) - (b - c)^2 / n) / n = sqrt(12 - 0.64) / 100
    assert e.gap_ci95_points == pytest.approx(1.96 * np.sqrt(11.36), rel=1e-3)
    assert e.to_json()["gap_ci95_points"] == pytest.approx(e.gap_ci95_points)


def test_the_interval_covers_the_true_gap_about_95_times_in_100() -> None:
    # each frame: lost with p 0.03, gained with p 0.01, so the true gap is 2 points
    rng = np.random.default_rng(7)
    covered, trials, n = 0, 2000, 1000
    for _ in range(trials):
        u = rng.random(n)
        raw = u >= 0.01  # the 1 % the camera gains were wrong raw
        cam = (u >= 0.04) | (u < 0.01)  # the 3 % in [0.01, 0.04) are lost
        e = _eval(raw, cam)
        covered += abs(e.gap_points - 2.0) <= e.gap_ci95_points
    assert 0.93 <= covered / trials <= 0.97


def test_no_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="no camera-like frames"):
        _eval(np.zeros(0, bool), np.zeros(0, bool))
