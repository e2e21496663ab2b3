"""Data: IDX parsing and count checks on the real files, the tfds splits, and the no-source error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from host import data
from host.errors import DataError

IDX = data.DEFAULT_IDX_DIR
needs_idx = pytest.mark.skipif(not (IDX / data.IDX_FILES["test_labels"]).is_file(), reason="dataset-fashion-mnist not installed")


@needs_idx
def test_read_idx_real_test_files_are_balanced() -> None:
    images = data.read_idx(IDX / data.IDX_FILES["test_images"])
    labels = data.read_idx(IDX / data.IDX_FILES["test_labels"])
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    data.check_counts(labels, "test", 10_000)
    assert images.max() > 200 and images.min() == 0  # light garment on dark background


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path: Path) -> None:
    bad = tmp_path / "t.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(bad)
    with gzip.open(bad, "wb") as f:
        f.write(b"PK\x03\x04junk")
    with pytest.raises(DataError, match="not an unsigned-byte IDX"):
        data.read_idx(bad)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(bad)


def test_check_counts_names_the_problem() -> None:
    labels = np.repeat(np.arange(10), 100)
    data.check_counts(labels, "x", 1000)
    labels[0] = 3
    with pytest.raises(DataError, match="per-class counts"):
        data.check_counts(labels, "x", 1000)
    with pytest.raises(DataError, match="has 999 labels"):
        data.check_counts(labels[:999], "x", 1000)


def test_missing_idx_files_name_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        data.load_idx_folder(tmp_path)


def test_no_source_at_all_names_both_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEFAULT_IDX_DIR", tmp_path / "nothing-here")
    with pytest.raises(DataError) as e:
        data.prepare(tfds_dir=tmp_path / "tfds", allow_download=False)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg


def test_data_dir_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        data.prepare(data_dir=tmp_path / "missing", tfds_dir=tmp_path / "tfds", allow_download=False)


@needs_idx
def test_seed_splits_from_tfds(tfds_dir: Path) -> None:
    s = data.load_splits(tfds_dir=tfds_dir, train_limit=1000, allow_download=False)
    assert s.train_x.shape == (1000, 28, 28, 1)
    assert (s.val_x.shape[0], s.seed_test_x.shape[0], s.test_x.shape[0]) == (6000, 6000, 10_000)
    assert s.test_x.dtype == np.uint8 and s.test_y.dtype == np.int64
    # the official test split holds exactly the IDX test images (tfds reorders them)
    idx = data.read_idx(IDX / data.IDX_FILES["test_images"])
    assert np.array_equal(np.sort(s.test_x.reshape(10_000, -1).sum(1)), np.sort(idx.reshape(10_000, -1).astype(np.int64).sum(1)))
    assert np.bincount(s.test_y).tolist() == [1000] * 10
