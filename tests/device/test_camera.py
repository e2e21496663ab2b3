"""How the camera is configured for a model: streams from the contract, picamera2's colour spaces, the fake's rendering."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from device.cli import build_parser, camera_config
from device.fake_picamera2 import FakePicamera2
from device.frames import DEFAULT_CAMERA, CameraConfig, SyntheticSource, lores_for
from device.manifest import Preprocess, parse_manifest
from device.pi_camera import PiCameraSource
from device.preprocess import Preprocessor


@pytest.mark.parametrize(
    ("contract", "lores"),
    [
        (Preprocess(), (112, 84)),  # Fashion-MNIST: today's 3x3 grid, the ISP's 64-pixel minimum
        (Preprocess(crop="object"), (112, 84)),
        (Preprocess(size=(96, 96)), (128, 96)),
        (Preprocess(size=(96, 96), color="rgb"), (256, 192)),  # chroma on the model's grid
        (Preprocess(size=(96, 96), color="rgb", crop="none"), (192, 192)),  # the ISP stretches 4:3 to 1:1
        (Preprocess(size=(224, 224), color="rgb"), (598, 448)),
        (Preprocess(size=(300, 300), color="rgb"), (400, 300)),  # k=2 does not fit in 640x480: k=1
        (Preprocess(size=(480, 640), color="rgb"), (640, 480)),  # nothing smaller fits: main's size
        (Preprocess(size=(64, 48), color="rgb", crop="none"), (96, 128)),
    ],
)
def test_lores_is_a_whole_multiple_of_the_model_grid(contract: Preprocess, lores: tuple[int, int]) -> None:
    assert lores_for(contract) == lores
    cfg = CameraConfig.for_contract(contract)
    assert cfg.lores_size == lores and cfg.stream == "lores" and cfg.colour_space == "sYCC"
    assert CameraConfig.for_contract(Preprocess()) == DEFAULT_CAMERA


def test_fake_camera_mirrors_picamera2_colour_spaces_and_vc4_lores_rule() -> None:
    cam = FakePicamera2(images=np.zeros((1, 28, 28), np.uint8))
    try:
        small = cam.create_video_configuration(main={"size": (640, 480), "format": "RGB888"}, lores={"size": (112, 84)})
        big = cam.create_video_configuration(main={"size": (1920, 1080), "format": "RGB888"})
        assert str(small["colour_space"]) == "SMPTE170M" and str(big["colour_space"]) == "Rec709"  # picamera2's video defaults
        assert small["lores"]["format"] == "YUV420"
        with pytest.raises(RuntimeError, match="lores stream must be YUV"):
            cam.configure(cam.create_video_configuration(main={"size": (640, 480)}, lores={"size": (112, 84), "format": "RGB888"}))
        cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "RGB888"},
                                                     lores={"size": (112, 84), "format": "YUV420"}, colour_space="sYCC"))
        cfg = cam.camera_configuration()
        assert cfg is not None and str(cfg["colour_space"]) == "sYCC"
    finally:
        cam.close()
    pisp = FakePicamera2(platform="pisp")  # the Pi 5 allows RGB on lores
    try:
        pisp.configure(pisp.create_video_configuration(main={"size": (640, 480)}, lores={"size": (256, 192), "format": "RGB888"}))
    finally:
        pisp.close()


def test_pi_camera_source_reads_back_the_colour_space_the_camera_settled() -> None:
    class Limited(FakePicamera2):  # a camera that ignores the request and keeps picamera2's video default
        def configure(self, config):  # type: ignore[no-untyped-def]
            super().configure({**config, "colour_space": None})

    img = np.zeros((1, 96, 96, 3), np.uint8)
    img[0, 20:70, 30:60] = (200, 40, 40)
    contract = Preprocess(size=(96, 96), color="rgb", contrast="none", polarity="any")
    config = CameraConfig.for_contract(contract)
    frames = {}
    for name, factory in (("sYCC", lambda: FakePicamera2(images=img)), ("SMPTE170M", lambda: Limited(images=img))):
        src = PiCameraSource(config, factory=factory)
        try:
            frames[name] = src.read()
        finally:
            src.close()
    assert frames["sYCC"].colour_space == "sYCC" and frames["SMPTE170M"].colour_space == "SMPTE170M"
    assert frames["SMPTE170M"].pixels[:192].max() <= 235  # limited-range Y
    p = Preprocessor(contract)
    out = {k: p.image(f.pixels, f.fmt, f.size, f.colour_space) for k, f in frames.items()}
    np.testing.assert_allclose(out["SMPTE170M"], out["sYCC"], atol=0.03)  # each decoded with its own range


def test_a_lores_stream_of_another_aspect_is_stretched_from_mains_field_of_view() -> None:
    img = np.zeros((28, 28), np.uint8)
    img[:, 13:15] = 255  # a vertical bar in the middle of the centred square
    cam = FakePicamera2(images=img[None])
    try:
        cam.configure(cam.create_video_configuration(main={"size": (640, 480), "format": "RGB888"},
                                                     lores={"size": (192, 192), "format": "YUV420"}))
        cam.start()
        y = cam.capture_array("lores")[:192, :192].astype(float)
        main = cam.capture_array("main").astype(float).mean(axis=2)
    finally:
        cam.close()
    # the garment's square is 480 of main's 640 columns: 144 of lores's 192, centred (a stretch, not a crop):
    # the bar (2 of 28 columns) is 10.3 lores pixels wide, not the 13.7 of a square filling lores
    dark_cols = np.flatnonzero(y[96] < y[96].max() * 0.7)
    assert abs(dark_cols.mean() - 96) < 2 and 9 <= dark_cols.size <= 12, dark_cols
    assert abs(np.flatnonzero(main[240] < main[240].max() * 0.7).mean() - 320) < 2


def test_fake_camera_renders_colour_photos_as_picamera2_lays_them_out() -> None:
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, ..., 0] = 200  # a red photo
    cam = FakePicamera2(images=img)
    try:
        cam.configure(cam.create_video_configuration(main={"size": (320, 240), "format": "RGB888"},
                                                     lores={"size": (120, 90), "format": "YUV420"}))
        cam.start()
        main, lores = cam.capture_array("main"), cam.capture_array("lores")
        cfg = cam.camera_configuration()
        assert cfg is not None and cfg["lores"]["stride"] == 128
    finally:
        cam.close()
    assert main.shape == (240, 320, 3) and main[120, 160, 2] > 150 and main[120, 160, 0] < 40  # B,G,R in memory
    assert lores.shape == (135, 128) and lores[0, 120:].min() == 0xEE  # padded rows, junk in the padding
    v_plane = lores[90:].reshape(-1)[45 * 64 : 90 * 64].reshape(45, 64)[:, :60]
    assert v_plane.mean() > 180  # red: high Cr
    for fmt, red_at in (("XBGR8888", 0), ("XRGB8888", 2), ("BGR888", 0)):
        cam = FakePicamera2(images=img)
        try:
            cam.configure(cam.create_video_configuration(main={"size": (320, 240), "format": fmt}))
            cam.start()
            px = cam.capture_array("main")
        finally:
            cam.close()
        assert px.shape[2] == (4 if fmt.startswith("X") else 3) and px[120, 160, red_at] > 150


def test_synthetic_source_renders_rgb_images_for_rgb_models() -> None:
    img = np.zeros((2, 96, 96, 3), np.uint8)
    img[0, ..., 1] = 180
    img[1, ..., 2] = 180
    contract = Preprocess(size=(96, 96), color="rgb", contrast="none", polarity="any")
    src = SyntheticSource(img, [0, 1], CameraConfig.for_contract(contract))
    p = Preprocessor(contract)
    f0, f1 = src.read(), src.read()
    assert f0.fmt == "YUV420" and f0.colour_space == "sYCC" and f0.label == 0
    g = p.image(f0.pixels, f0.fmt, f0.size, f0.colour_space).reshape(-1, 3).mean(axis=0)
    b = p.image(f1.pixels, f1.fmt, f1.size, f1.colour_space).reshape(-1, 3).mean(axis=0)
    assert g.argmax() == 1 and b.argmax() == 2


def test_the_daemons_builder_configures_the_camera_from_the_contract(tmp_path: Path) -> None:
    from tests.device.test_manifest import rgb_manifest

    m = parse_manifest(rgb_manifest(crop="center"), tmp_path)
    args = build_parser().parse_args(["bench", "--manifest", str(tmp_path)])
    assert camera_config(args, m).lores_size == (256, 192)
    args = build_parser().parse_args(["run", "--manifest", str(tmp_path), "--lores", "320x240", "--fps", "15"])
    cfg = camera_config(args, m)
    assert cfg.lores_size == (320, 240) and cfg.frame_rate == 15.0
    assert isinstance(args, argparse.Namespace)


def test_a_colour_space_the_preprocessing_cannot_convert_is_refused_when_the_camera_opens() -> None:
    from device.errors import SourceError

    opened: list[FakePicamera2] = []

    class Odd(FakePicamera2):  # a libcamera that settles on a colour space without a Y'CbCr matrix
        def camera_configuration(self):  # type: ignore[no-untyped-def]
            return {**(super().camera_configuration() or {}), "colour_space": "Rec709/Rec709/None/Full"}

    def factory() -> FakePicamera2:
        opened.append(Odd())
        return opened[-1]

    with pytest.raises(SourceError, match=r"settled on a colour space .* 'Rec709/Rec709/None/Full' has no Y'CbCr encoding"):
        PiCameraSource(CameraConfig(), factory=factory)
    assert opened[0].closed  # and the camera is not left busy


def test_synthetic_frames_are_rendered_when_first_read_so_the_daemon_starts_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering 1,000 golden frames before the first read kept READY=1 waiting for minutes on an emulated Pi."""
    from device import scene

    rendered: list[int] = []
    real = scene.render_gray
    monkeypatch.setattr(scene, "render_gray", lambda *a, **k: rendered.append(1) or real(*a, **k))
    imgs = np.random.default_rng(3).integers(0, 255, (6, 28, 28), dtype=np.uint8)
    src = SyntheticSource(imgs, list(range(6)))
    assert len(src) == 6 and rendered == []
    first = [src.read() for _ in range(8)]  # one pass and two frames of the next: each image rendered once
    assert len(rendered) == 6
    assert [f.label for f in first] == [0, 1, 2, 3, 4, 5, 0, 1] and np.array_equal(first[6].pixels, first[0].pixels)
    # The same frames as rendering them all first (the bench does, so its timed reads do no rendering).
    ahead = SyntheticSource(imgs, list(range(6)))
    ahead.prerender(4)
    assert len(rendered) == 10
    again = [ahead.read() for _ in range(6)]
    assert len(rendered) == 12
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(first, again))
