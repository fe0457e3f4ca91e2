"""Every supported format, mode and bit depth reads to one convention: float32 [H, W, C] in [0, 1]."""

import numpy as np
import pytest
import tifffile
from conftest import shared_data
from PIL import Image

from medrepro.core.errors import DataError
from medrepro.datamodules.transforms.image_reader import read_image

GRAY = (np.arange(16 * 20).reshape(16, 20) % 256).astype(np.uint8)
EXPECTED = GRAY.astype(np.float32)[:, :, None] / 255


def lossless_variants(tmp_path):
    """The same 8-bit gray picture stored in every lossless way we support."""
    files = {}
    for ext in ("png", "bmp", "tif"):
        files[f"L.{ext}"] = tmp_path / f"l.{ext}"
        Image.fromarray(GRAY, "L").save(files[f"L.{ext}"])
    rgb = np.repeat(GRAY[:, :, None], 3, axis=2)
    files["RGB.png"] = tmp_path / "rgb.png"
    Image.fromarray(rgb, "RGB").save(files["RGB.png"])
    files["RGBA.png"] = tmp_path / "rgba.png"
    rgba = np.concatenate([rgb, np.full_like(GRAY[:, :, None], 77)], axis=2)
    Image.fromarray(rgba, "RGBA").save(files["RGBA.png"])
    files["P.png"] = tmp_path / "p.png"
    Image.fromarray(GRAY, "L").convert("P").save(files["P.png"])  # a gray palette
    wide = GRAY.astype(np.uint16) * 257  # the same picture at 16 bits
    files["I;16.png"] = tmp_path / "i16.png"
    Image.fromarray(wide).save(files["I;16.png"])
    files["16-bit.tif"] = tmp_path / "i16.tif"
    tifffile.imwrite(files["16-bit.tif"], wide)
    files["8-bit tifffile"] = tmp_path / "u8.tiff"
    tifffile.imwrite(files["8-bit tifffile"], GRAY)
    return files


def test_every_lossless_mode_and_depth_reads_the_same(tmp_path):
    for name, path in lossless_variants(tmp_path).items():
        image = read_image(path, channels=1)
        assert image.dtype == np.float32 and image.shape == (16, 20, 1), name
        np.testing.assert_allclose(image, EXPECTED, atol=1.5 / 255, err_msg=name)


def test_palette_mode_is_really_palette(tmp_path):
    path = lossless_variants(tmp_path)["P.png"]
    assert Image.open(path).mode == "P"
    with Image.open(tmp_path / "i16.png") as img:
        assert img.mode in ("I;16", "I")


def test_three_channels_repeat_gray_and_keep_colour(tmp_path):
    gray = read_image(lossless_variants(tmp_path)["L.png"], channels=3)
    assert gray.shape == (16, 20, 3)
    np.testing.assert_array_equal(gray[:, :, 0], gray[:, :, 2])
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 255  # pure red
    Image.fromarray(colour).save(tmp_path / "red.png")
    np.testing.assert_allclose(read_image(tmp_path / "red.png", 3)[0, 0], [1, 0, 0])
    # luma: 0.299 for pure red, as Pillow's convert("L")
    assert read_image(tmp_path / "red.png", 1)[0, 0, 0] == pytest.approx(0.299, abs=1e-3)


def test_planar_rgb_tiff_reads_as_colour(tmp_path):
    planar = np.zeros((3, 6, 8), np.uint8)
    planar[1] = 255  # green plane
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_allclose(read_image(tmp_path / "planar.tif", 3)[2, 3], [0, 1, 0])


def test_jpeg_reads_close_to_its_source(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    Image.fromarray(smooth).save(tmp_path / "x.jpeg", quality=95)
    image = read_image(tmp_path / "x.jpeg")
    assert np.abs(image[:, :, 0] - smooth / 255).mean() < 0.01


def test_unreadable_files_raise_one_clear_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(GRAY).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("empty.png", "text.jpg", "cut.png", "missing.png"):
        with pytest.raises(DataError, match="Cannot read image"):
            read_image(tmp_path / name)


def test_multi_page_tiff_is_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "stack.tif") as tif:
        for _ in range(3):
            tif.write(np.zeros((8, 8), np.uint16))
    with pytest.raises(DataError, match="multi-page"):
        read_image(tmp_path / "stack.tif")


def test_real_brain_mri_samples_of_every_mode_read():
    root = shared_data("brain_mri_sample")
    modes = set()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with Image.open(path) as img:
                modes.add(img.mode)
            for channels in (1, 3):
                image = read_image(path, channels)
                assert image.shape[2] == channels and 0 <= image.min() and image.max() <= 1
                assert image.max() > 0.3  # a real picture, not black
    assert {"L", "RGB"} <= modes
