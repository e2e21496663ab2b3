"""Labels: which names can be a class folder on the Pi, and how labels.txt is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.errors import DataError
from host.labels import check_labels, label_problem, read_labels_file


@pytest.mark.parametrize("name", ["cat", "Ankle boot", "T-shirt_top", "café", "0", "a" * 255, "x.y", "-dash", "a:b"])
def test_valid_names(name: str) -> None:
    assert label_problem(name) is None


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
def test_invalid_names_say_why(name: str, why: str) -> None:
    problem = label_problem(name)
    assert problem is not None and why in problem


def test_check_labels_names_the_label_and_refuses_repeats() -> None:
    check_labels(["cat", "dog"], "label")
    with pytest.raises(DataError, match=r"class folder 'cat ' is not a valid file name on the Pi: .*white space"):
        check_labels(["dog", "cat "], "class folder")
    with pytest.raises(DataError, match="appears twice"):
        check_labels(["cat", "cat"], "label")


def test_read_labels_plain_teachable_machine_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "labels.txt"
    p.write_text("cat\r\ndog  \nbird\n\n\n")
    assert read_labels_file(p) == ("cat", "dog", "bird")
    p.write_text("0 Class 1\n1 Class 2\n2 Background noise\n")  # Teachable Machine's format
    assert read_labels_file(p) == ("Class 1", "Class 2", "Background noise")
    p.write_text("0 zero\n2 two\n")  # not its own index on every line: kept as written
    assert read_labels_file(p) == ("0 zero", "2 two")
    p.write_bytes("\ufeffcat\ndog\n".encode())
    assert read_labels_file(p) == ("cat", "dog")


def test_read_labels_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_labels_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        read_labels_file(tmp_path / "empty.txt")
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match="line 2 is blank"):
        read_labels_file(tmp_path / "gap.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(DataError, match="cannot read"):
        read_labels_file(tmp_path / "bin.txt")
