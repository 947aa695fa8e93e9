"""Image and mask loading: any PIL-readable file becomes RGB; crop and resize as the training recipe says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tlora_bench.concepts.manifest import check_inside
from tlora_bench.errors import TloraBenchError

# Transparent pixels are composited onto white: a cut-out product photo reads as a studio shot.
TRANSPARENT_FILL = (255, 255, 255)


def _open(path: str | Path, folder: str | Path | None = None) -> Image.Image:
    path = check_inside(path, folder)
    if not path.is_file():
        raise TloraBenchError(f"image file not found: '{path}'; check the concept folder (--data-dir)")
    image = None
    try:
        image = Image.open(path)
        if getattr(image, "n_frames", 1) > 1:  # animated GIF, WebP, multi-page TIFF: the first frame
            image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if image is not None:  # else its file stays open until exit, and Python warns of it after the error line
            image.close()
        raise TloraBenchError(f"cannot read image '{path}' ({e}); replace the file or remove it "
                              "from the concept's manifest") from None
    return image


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale to 8-bit L, scaling instead of clipping (PIL's convert clips)."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    else:  # "I;16*" is 16-bit; "I" holds 16-bit PNGs in recent Pillow, 8-bit values otherwise
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 1.0
    return Image.fromarray(np.clip(array * scale + 0.5, 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image (RGB, RGBA, L, LA, P, CMYK, I;16, F, ...) as RGB, upright per its EXIF orientation."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_FILL, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, folder: str | Path | None = None) -> Image.Image:
    """Load an image file (its first frame) as an upright RGB image; an unreadable file, or one that resolves
    outside `folder` (default: its own folder), is a one-line error naming it."""
    return to_rgb(_open(path, folder))


def center_crop(image: Image.Image) -> Image.Image:
    """The largest centered square (docs/decisions.md section 3: center crop to square)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize(image: Image.Image, size: int) -> Image.Image:
    """Resize to size x size with LANCZOS (docs/decisions.md section 3)."""
    if size < 1:
        raise TloraBenchError(f"image size must be a positive number of pixels, got {size}")
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.LANCZOS)


def load_training_image(path: str | Path, size: int, folder: str | Path | None = None) -> Image.Image:
    """The training recipe's preprocessing: load, center crop to square, LANCZOS resize, no flips."""
    return resize(center_crop(load_image(path, folder)), size)


def load_mask(path: str | Path, size: tuple[int, int] | None = None,
              folder: str | Path | None = None) -> np.ndarray:
    """A foreground mask file (white = object) as a boolean (H, W) array, optionally resized (nearest)."""
    image = ImageOps.exif_transpose(_open(path, folder))
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_8bit(image)
    image = image.convert("L")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.Resampling.NEAREST)
    return np.asarray(image) >= 128


def crop_resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask prepared like its image (center crop, resize) but with nearest sampling, so it stays binary."""
    image = center_crop(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"))
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST)) >= 128
