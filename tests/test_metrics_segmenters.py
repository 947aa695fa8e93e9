"""Segmenters and black-fill masking (docs/decisions.md section 5, Masking)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.metrics_helpers import blob_image, save_tiny_grounded_sam
from tlora_bench.concepts import bundled_manifest, load_image, load_mask
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics import apply_mask, load_segmenter, mask_iou


def _square(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    lo, hi = size // 4, size - size // 4
    mask[lo:hi, lo:hi] = True
    return mask


def test_masking_changes_only_background_pixels_to_black():
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 255, (20, 30, 3), dtype=np.uint8)  # no black pixel to begin with
    mask = rng.random((20, 30)) > 0.5
    out = np.asarray(apply_mask(Image.fromarray(pixels), mask))
    assert out.shape == pixels.shape  # same resolution, no crop
    assert np.array_equal(out[mask], pixels[mask])
    assert np.all(out[~mask] == 0)
    with pytest.raises(ValueError, match="does not match"):
        apply_mask(Image.fromarray(pixels), mask.T)


def test_mask_iou_by_hand():
    a = np.zeros((2, 4), dtype=bool)
    b = np.zeros((2, 4), dtype=bool)
    a[0, :3] = True  # 3 pixels
    b[0, 1:] = True  # 3 pixels, 2 shared: IoU = 2 / 4
    assert mask_iou(a, b) == pytest.approx(0.5)
    assert mask_iou(a, a) == 1.0 and mask_iou(a, ~a) == 0.0


def test_grabcut_finds_a_bright_square_on_a_dark_background(tmp_path: Path):
    image = load_image(blob_image(tmp_path / "blob.png", size=64))
    mask = load_segmenter("grabcut").segment(image, "dog")
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert mask_iou(mask, _square(64)) > 0.9
    # downscaled work, full-size answer
    big = image.resize((600, 600), Image.Resampling.NEAREST)
    big_mask = load_segmenter("grabcut").segment(big, "dog")
    assert big_mask.shape == (600, 600) and mask_iou(big_mask, _square(600)) > 0.9
    assert np.array_equal(load_segmenter("grabcut").segment(image, "dog"), mask)  # deterministic


def test_grabcut_finds_nothing_in_a_flat_image():
    flat = Image.new("RGB", (40, 40), (120, 120, 120))
    assert not load_segmenter("grabcut").segment(flat, "dog").any()
    assert not load_segmenter("grabcut").segment(Image.new("RGB", (3, 3)), "dog").any()  # too small


def test_none_keeps_everything_and_provided_finds_nothing_without_a_file():
    image = Image.new("RGB", (8, 6))
    assert load_segmenter("none").segment(image, "dog").all()
    assert load_segmenter("none").segment(image, "dog").shape == (6, 8)
    assert not load_segmenter("provided").segment(image, "dog").any()


def test_unknown_segmenter_did_you_mean():
    with pytest.raises(TloraBenchError, match="unknown segmenter 'grabcat'; did you mean 'grabcut'"):
        load_segmenter("grabcat")


def test_grabcut_on_a_real_training_image_is_a_plausible_mask(data_root: Path):
    concept = bundled_manifest().get("dog6")
    image = load_image(concept.train_image_path(data_root))
    mask = load_segmenter("grabcut").segment(image, concept.class_word)
    truth = load_mask(concept.mask_path(data_root), image.size)
    assert mask.shape == truth.shape and 0 < mask.mean() < 1
    assert mask_iou(mask, truth) > mask_iou(np.ones_like(truth), truth)  # better than "everything is the dog"


# ---- grounded-sam: the real transformers code path, on tiny random models saved to a folder ----------------

@pytest.fixture(scope="module")
def tiny_grounded_sam(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_grounded_sam(tmp_path_factory.mktemp("grounded-sam"))


def test_grounded_sam_loads_local_folders_and_returns_a_mask_of_the_image_size(tiny_grounded_sam, tmp_path,
                                                                             monkeypatch):
    from tlora_bench.metrics import grounded_sam

    detector_dir, sam_dir = tiny_grounded_sam
    segmenter = load_segmenter("grounded-sam", weights={"grounding-dino": str(detector_dir), "sam": str(sam_dir)})
    assert "local:" in segmenter.identity and str(detector_dir) in segmenter.identity
    image = load_image(blob_image(tmp_path / "b.png", size=48))
    mask = segmenter.segment(image, "Dog")  # random weights: any box or none, never a crash
    assert mask.shape == (48, 48) and mask.dtype == bool
    # With no thresholds every query is a detection, so SAM runs inside the best box.
    monkeypatch.setattr(grounded_sam, "BOX_THRESHOLD", 0.0)
    monkeypatch.setattr(grounded_sam, "TEXT_THRESHOLD", 0.0)
    box = segmenter.best_box(image, "dog")
    assert box is not None and len(box) == 4
    mask = segmenter.segment(image, "dog")
    assert mask.shape == (48, 48) and mask.dtype == bool
    assert np.array_equal(mask, segmenter.segment(image, "dog"))  # eval mode: the same mask every time


def test_grounded_sam_missing_weights_is_one_line_naming_the_model_and_the_fix():
    with pytest.raises(TloraBenchError) as error:
        load_segmenter("grounded-sam")
    message = str(error.value)
    assert "\n" not in message and "IDEA-Research/grounding-dino-tiny" in message
    assert "HF_HUB_OFFLINE" in message and "--segmenter grabcut" in message

