"""Image folders through Keras's loader: real files, the device's crop and resize, every bad-input rule."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from imagefolders import fashion, framed_rgb, grey_folder, needs_idx, rgb_folder, write_images

from device.preprocess import Preprocessor
from host.data import load_data
from host.errors import ConfigError, DataError
from host.folder import check_classes, contract_for, load_folder, parse_folder_spec

pytestmark = needs_idx


def test_grey_pngs_load_pixel_exact_at_their_own_size(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "d", per_class=12)
    fd = load_folder(root, progress=False)
    assert (fd.size, fd.color) == ((28, 28), "grayscale")  # decided from the files
    assert fd.class_names == ("sneaker", "trouser", "tshirt") and fd.images.shape == (36, 28, 28, 1)
    from PIL import Image

    for img, name, label in zip(fd.images, fd.names, fd.labels):
        assert np.array_equal(img[..., 0], np.asarray(Image.open(root / name)))
        assert fd.class_names[label] == name.split("/")[0]


@pytest.mark.parametrize("sizes", [[(112, 84), (84, 112)], [(100, 75), (75, 130)]])
def test_training_sees_what_the_device_makes_of_a_frame(tmp_path: Path, sizes: list[tuple[int, int]]) -> None:
    """The loader's crop_to_aspect_ratio + area against the device's own preprocessing, for the folder's contract.

    Keras's smart_resize crops a whole-pixel centred window (start int(margin / 2)); the device a
    fractional one. With whole blocks (112x84 → 28) the two are the same window and the same
    numbers; with an odd margin (130 - 75 = 55) they sit half a source pixel apart, and on the
    window Keras chose the device gives the same numbers again.
    """
    x, y = fashion()
    rng = np.random.default_rng(0)
    frames = [framed_rgb(x[i], int(y[i]), rng, sizes[i % 2]) for i in range(12)]
    for c in ("a", "b"):
        write_images(tmp_path / "d" / c, frames, fmt="png")
    device = Preprocessor(contract_for((28, 28), "rgb"))  # the folder's contract: contrast none, polarity any, [0, 1]
    fd = load_folder(tmp_path / "d", image_size=28, color="rgb", progress=False)
    for img, name in zip(fd.images, fd.names):
        frame = frames[int(Path(name).stem[3:])]
        h, w = frame.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        window = np.ascontiguousarray(frame[y0 : y0 + side, x0 : x0 + side])
        np.testing.assert_allclose(img.astype(np.float32), device.image(window, "RGB") * 255.0, atol=0.51)
        whole = np.abs(img.astype(np.float32) - device.image(frame, "RGB") * 255.0)
        if (h - side) % 2 == 0 and (w - side) % 2 == 0:
            assert whole.max() <= 0.51
        else:  # half a source pixel apart: measured mean 0.9-3.1 of 255 on these garments
            assert whole.mean() <= 5.0


def test_rgb_photos_of_any_size_default_to_96_rgb(tmp_path: Path) -> None:
    root = rgb_folder(tmp_path / "d", per_class=12)
    fd = load_folder(root, progress=False)
    assert (fd.size, fd.color) == ((96, 96), "rgb") and fd.images.shape[1:] == (96, 96, 3)
    fd = load_folder(root, image_size=64, color="grayscale", progress=False)
    assert fd.images.shape[1:] == (64, 64, 1)


def test_unreadable_files_are_skipped_named_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = grey_folder(tmp_path / "d", per_class=12)
    good = (root / "tshirt" / "img00000.png").read_bytes()
    (root / "tshirt" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "tshirt" / "empty.jpg").write_bytes(b"")
    (root / "sneaker" / "._IMG_0001.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a Mac's resource fork
    (root / "sneaker" / "notes.txt").write_text("not an image, not listed")
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    with caplog.at_level(logging.WARNING):
        s = load_data(f"folder:{root}", progress=False)
    assert s.labels == ("sneaker", "trouser", "tshirt")
    bad = dict(s.data["unreadable_examples"])
    assert s.data["unreadable"] == 3 and set(bad) == {"tshirt/truncated.png", "tshirt/empty.jpg", "sneaker/._IMG_0001.jpg"}
    assert "Invalid PNG data" in bad["tshirt/truncated.png"] and "empty" in bad["tshirt/empty.jpg"]
    assert len(s.train_x) + len(s.val_x) + len(s.test_x) == 36
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1 and "tshirt/truncated.png" in warning[0] and "\n" not in warning[0]


def test_duplicates_conflicts_and_imbalance_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = grey_folder(tmp_path / "d", per_class=12)
    grey_folder(tmp_path / "d", classes=(1,), per_class=40, start=100)  # trousers: 12 + 40
    shutil.copy(root / "tshirt" / "img00000.png", root / "tshirt" / "again.png")
    shutil.copy(root / "tshirt" / "img00001.png", root / "sneaker" / "wrong-folder.png")
    with caplog.at_level(logging.WARNING):
        s = load_data(f"folder:{root}", progress=False)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert s.data["duplicates"] == 1 and s.data["conflicts"] == 1
    assert "1 duplicate image counted once" in text and "sneaker/wrong-folder.png = tshirt/img00001.png" in text
    assert "class imbalance" in text and "'trouser'" in text


def test_exif_rotation_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    root = rgb_folder(tmp_path / "d", per_class=12)
    p = root / "tshirt" / "img00000.jpg"
    im = Image.open(p)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as a phone held upright writes
    im.save(p, exif=exif)
    with caplog.at_level(logging.WARNING):
        s = load_data(f"folder:{root}", progress=False)
    assert s.data["exif_rotated"] == 1 and any("EXIF rotation" in r.getMessage() and "tshirt/img00000.jpg" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: None, "holds no class folders"),
        (lambda r: write_images(r, fashion()[0][:3]), "holds 3 images directly; move them into one subfolder per class"),
        (lambda r: grey_folder(r, classes=(0,), per_class=12), "one class folder ('tshirt'); a classifier needs at least two"),
        (lambda r: (r / "cat").mkdir() or (r / "dog").mkdir(), "hold no images"),
        (lambda r: grey_folder(r, per_class=12) and (r / "tshirt").rename(r / "tshirt "), "'tshirt ' is not a valid file name on the Pi"),
        (lambda r: grey_folder(r, per_class=12) and (r / "tshirt").rename(r / "t\nshirt"), "control character"),
    ],
)
def test_bad_folders_are_refused_in_one_line(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "d"
    root.mkdir()
    make(root)
    with pytest.raises(DataError) as e:
        load_data(f"folder:{root}", progress=False)
    assert message in str(e.value) and "\n" not in str(e.value).replace("t\nshirt", "")


def test_too_few_images_names_the_class(tmp_path: Path) -> None:
    root = grey_folder(tmp_path / "d", per_class=12)
    for p in sorted((root / "sneaker").iterdir())[3:]:
        p.unlink()
    with pytest.raises(DataError, match=r"'sneaker' has 3 \(after duplicates, conflicts and unreadable files"):
        load_data(f"folder:{root}", progress=False)


def test_folder_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        parse_folder_spec(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        parse_folder_spec(f"folder:{tmp_path / 'f'}")
    with pytest.raises(DataError, match="needs a folder"):
        parse_folder_spec("folder:")
    with pytest.raises(ConfigError, match="fashion_mnist or folder:DIR"):
        load_data("imagenet")
    with pytest.raises(ConfigError, match="apply to --data folder"):
        load_data("fashion_mnist", image_size=96)


def test_class_check_happens_before_any_decoding(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="one class folder"):
        check_classes(tmp_path)


def test_imbalance_counts_every_split_and_report_md_states_it() -> None:
    from host.folder import imbalance
    from host.report import data_section

    per_class = {"cup": {"train": 8, "validation": 1, "test": 1}, "pen": {"train": 26, "validation": 2, "test": 3}, "mug": {"train": 16, "validation": 2, "test": 2}}
    assert imbalance(per_class) == (3.1, "pen", "cup") and imbalance({}) is None
    base = {"kind": "folder", "dir": "/d", "image_size": 28, "color": "grayscale", "per_class": per_class}

    def lines(ratio: float, big: str, small: str) -> list[str]:
        return data_section([], [], {"data": {**base, "imbalance": {"ratio": ratio, "largest": big, "smallest": small, "warn_above": 3.0}}})

    assert "- Class imbalance: `pen` has 3.1x the images of `cup` (beyond the 3x that is warned about: add images to the small classes)." in lines(3.1, "pen", "cup")
    assert "- Class imbalance: `pen` has 2.0x the images of `cup`." in lines(2.0, "pen", "cup")
    assert "- Every class has the same number of images." in lines(1.0, "cup", "cup")


@needs_idx
def test_a_hidden_class_folder_with_images_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Keras's loader skips folders whose name starts with '.'; a class left out that way is said, not silent."""
    root = grey_folder(tmp_path / "d")
    shutil.move(str(root / "trouser"), str(root / ".trouser"))
    (root / ".git").mkdir()  # no images: not a class anyone meant, no warning
    with caplog.at_level(logging.WARNING):
        assert check_classes(root) == ["sneaker", "tshirt"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and ".trouser (40 images)" in lines[0] and "rename" in lines[0] and ".git" not in lines[0], lines
