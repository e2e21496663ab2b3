"""Labels: which names can be a class folder on the Pi (one rule, in device.labels, for device, deploy and host)."""

from __future__ import annotations

import pytest

from device.labels import check_label, label_problem


@pytest.mark.parametrize("name", ["cat", "Ankle boot", "T-shirt_top", "café", "0", "a" * 255, "x.y", "-dash", "a:b", "red ball"])
def test_valid_names(name: str) -> None:
    assert label_problem(name) is None
    assert check_label(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "not a folder name"),
        ("..", "not a folder name"),
        ("T-shirt/top", "'/'"),
        ("nul\0byte", "NUL"),
        ("é" * 128, "255 bytes"),
        ("two\nlines", "control character"),
        ("tab\there", "control character"),
        ("cat ", "white space"),
        (" cat", "white space"),
        (".hidden", "hidden"),
        ("bad\udcff", "UTF-8"),
    ],
)
def test_invalid_names_say_why_in_one_line(name: str, why: str) -> None:
    problem = label_problem(name)
    assert problem is not None and why in problem
    with pytest.raises(ValueError, match="not a valid file name on the Pi") as e:
        check_label(name, "--label")
    assert "\n" not in str(e.value).replace(repr(name), "") and str(e.value).startswith("--label ")
