from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlora_bench.concepts import center_crop, crop_resize_mask, load_image, load_mask, load_training_image, resize
from tlora_bench.errors import TloraBenchError


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_rgba_is_composited_on_white(tmp_path: Path):
    array = np.zeros((4, 4, 4), dtype=np.uint8)
    array[..., 0] = 200  # red everywhere, but only the left half is opaque
    array[:, :2, 3] = 255
    image = load_image(_save(Image.fromarray(array, mode="RGBA"), tmp_path / "a.png"))
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert (pixels[:, :2] == [200, 0, 0]).all() and (pixels[:, 2:] == 255).all()


def test_grayscale_becomes_three_equal_channels(tmp_path: Path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    pixels = np.asarray(load_image(_save(Image.fromarray(gray, mode="L"), tmp_path / "g.png")))
    assert pixels.shape == (4, 4, 3) and (pixels == gray[..., None]).all()


def test_palette_with_transparency(tmp_path: Path):
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    palette_image.paste(1, (0, 0, 2, 4))
    path = _save(palette_image, tmp_path / "p.png", transparency=0)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :2] == [40, 50, 60]).all()  # opaque palette entry keeps its colour
    assert (pixels[:, 2:] == 255).all()  # transparent entry becomes white


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 257 * 128], [65535, 257 * 64]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode in ("I;16", "I")  # really a 16-bit file
    pixels = np.asarray(load_image(path))[..., 0]
    assert pixels.tolist() == [[0, 128], [255, 64]]


def test_exif_rotation_is_applied(tmp_path: Path):
    array = np.zeros((2, 4, 3), dtype=np.uint8)  # wide image, top-left pixel white
    array[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = _save(Image.fromarray(array), tmp_path / "r.png", exif=exif.tobytes())
    image = load_image(path)
    assert image.size == (2, 4)  # tall once upright
    assert (np.asarray(image)[0, 1] == 255).all()  # top-left moved to top-right


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_corrupt_image_is_a_one_line_error_naming_the_file(tmp_path: Path, content: bytes | None):
    path = tmp_path / "broken.jpg"
    if content is None:  # a real JPEG cut in half
        Image.fromarray(np.full((64, 64, 3), 7, dtype=np.uint8)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(TloraBenchError, match=r"cannot read image .*broken\.jpg") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_missing_image(tmp_path: Path):
    with pytest.raises(TloraBenchError, match="image file not found"):
        load_image(tmp_path / "nope.jpg")


def test_center_crop_and_lanczos_resize():
    image = Image.fromarray(np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3))
    cropped = center_crop(image)
    assert cropped.size == (6, 6)
    assert np.array_equal(np.asarray(cropped), np.asarray(image)[:, 2:8])
    assert resize(cropped, 3).size == (3, 3)
    with pytest.raises(TloraBenchError):
        resize(cropped, 0)


def test_training_image_preprocessing(tmp_path: Path):
    path = _save(Image.fromarray(np.zeros((30, 20, 3), dtype=np.uint8)), tmp_path / "t.jpg")
    assert load_training_image(path, 8).size == (8, 8)


def test_mask_is_boolean_and_stays_binary_when_resized(tmp_path: Path):
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:8, 8:12] = 255
    loaded = load_mask(_save(Image.fromarray(mask), tmp_path / "m.png"))
    assert loaded.dtype == bool and loaded.sum() == 24
    small = crop_resize_mask(loaded, 5)
    assert small.dtype == bool and small.shape == (5, 5) and small.any() and not small.all()


def test_real_training_image_and_mask(data_root: Path):
    image = load_image(data_root / "dog6" / "02.jpg")
    mask = load_mask(data_root / "dog6" / "02_mask.png")
    assert image.mode == "RGB" and mask.shape == (image.height, image.width)
    assert 0.05 < mask.mean() < 0.95
