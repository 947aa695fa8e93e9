"""The overfitting metrics on constructed ground truth (docs/evaluation.md, "Overfitting").

A bundled concept's foreground, cut out with its ground-truth mask, is pasted onto known backgrounds at known
positions and scales; images are embedded by a deterministic pixel extractor (cosine = pixel correlation),
so what each metric must say is known in advance: background copy ranks the backgrounds by their known
blend with the training one, layout copy falls as the known shift grows, diversity is zero for identical
images and rises with known noise, drift is zero for the base model's own images.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlora_bench.concepts.manifest import load_manifest
from tlora_bench.layout import ImageRecord, base_model_folder, write_images_index
from tlora_bench.metrics.evaluate import EvalOptions, evaluate_folder
from tlora_bench.metrics.extractors import EXTRACTORS, PIXEL_GRID
from tlora_bench.metrics.overfitting import diversity, drift, layout_copy, mask_grid
from tlora_bench.prompts import base_template, drift_prompts, seed_for

CONCEPTS = Path(__file__).resolve().parent.parent / "concepts"
SIZE = 96  # canvas side
CENTRE = (SIZE // 2, SIZE // 2)
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)
SHIFTS = (0, 4, 8, 16, 24)
NOISE = (0, 10, 30, 60)


@pytest.fixture(scope="module", autouse=True)
def pixel_extractor():
    EXTRACTORS.register(PIXEL_GRID.name, PIXEL_GRID)
    yield
    EXTRACTORS.unregister(PIXEL_GRID.name)


def foreground(height: int = 40) -> tuple[Image.Image, Image.Image]:
    """dog6's dog, cut out of 02.jpg along its ground-truth mask, `height` pixels tall."""
    image = Image.open(CONCEPTS / "dog6" / "02.jpg").convert("RGB")
    mask = Image.open(CONCEPTS / "dog6" / "02_mask.png").convert("L").point(lambda v: 255 if v >= 128 else 0)
    box = mask.getbbox()
    image, mask = image.crop(box), mask.crop(box)
    size = (max(1, round(image.width * height / image.height)), height)
    return image.resize(size, Image.Resampling.LANCZOS), mask.resize(size, Image.Resampling.NEAREST)


def texture(seed: int) -> np.ndarray:
    """A smooth random background (SIZE, SIZE, 3), float 0..255."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float64)


def paste(background: np.ndarray, centre: tuple[int, int], scale: float = 1.0) -> tuple[Image.Image, np.ndarray]:
    """The foreground pasted with its centre at `centre` (x, y); the image and its exact mask."""
    fg, fg_mask = foreground()
    if scale != 1.0:
        size = (round(fg.width * scale), round(fg.height * scale))
        fg, fg_mask = fg.resize(size, Image.Resampling.LANCZOS), fg_mask.resize(size, Image.Resampling.NEAREST)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    mask = Image.new("L", canvas.size, 0)
    corner = (centre[0] - fg.width // 2, centre[1] - fg.height // 2)
    canvas.paste(fg, corner, fg_mask)
    mask.paste(fg_mask, corner)
    return canvas, np.asarray(mask) >= 128


def save(folder: Path, name: str, image: Image.Image, mask: np.ndarray | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)
    if mask is not None:
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / name.replace(".png", "_mask.png"))
    return name


def build(root: Path) -> tuple[Path, Path]:
    """The training image (the dog on background 0), a manifest, and one method's generated images."""
    train, train_mask = paste(texture(0), CENTRE)
    save(root / "data" / "gt", "00.png", train, train_mask)
    manifest = root / "concepts.toml"
    manifest.write_text('[dataset]\nname = "gt"\nroot = "data"\n\n[[concepts]]\nid = "gt"\nclass_word = "dog"\n'
                        'train_image = "00.png"\nimages = ["00.png"]\n')
    gen, rows = root / "gen" / "m" / "gt", []

    def add(template: str, index: int, image: Image.Image, mask: np.ndarray | None, kind: str = "concept"):
        name = save(gen, f"{len(rows):03d}.png", image, mask)
        rows.append(ImageRecord(file=name, template=template, image_index=index, seed=seed_for(template, index),
                                kind=kind))

    add(base_template(), 0, train, train_mask)
    for alpha in BLENDS:  # the training background blended into another by a known amount
        add(f"a {{0}} blend {alpha}", 0, *paste((1 - alpha) * texture(0) + alpha * texture(1), CENTRE))
    for shift in SHIFTS:  # on another background, moved right by a known number of pixels
        add(f"a {{0}} shift {shift}", 0, *paste(texture(2), (CENTRE[0] + shift, CENTRE[1])))
    add("a {0} half size", 0, *paste(texture(2), CENTRE, scale=0.5))
    rng = np.random.default_rng(7)
    for sigma in NOISE:  # three images of one prompt, apart by known noise
        for index in range(3):
            noisy = texture(3) + rng.normal(0, sigma, (SIZE, SIZE, 3)) if sigma else texture(3)
            add(f"a {{0}} noise {sigma}", index, *paste(noisy, CENTRE))
    base_rows, base_folder = [], base_model_folder(root / "gen", 0)
    for n, prompt in enumerate(drift_prompts()[:len(BLENDS)]):
        base_image = Image.fromarray(texture(10 + n).astype(np.uint8))
        base_rows.append(ImageRecord(file=save(base_folder, f"d{n:02d}.png", base_image), template=prompt,
                                     image_index=0, seed=seed_for(prompt, 0), kind="drift"))
        moved = (1 - BLENDS[n]) * texture(10 + n) + BLENDS[n] * texture(20 + n)  # alpha 0: the base image itself
        add(prompt, 0, Image.fromarray(moved.astype(np.uint8)), None, kind="drift")
    write_images_index(base_folder, base_rows)
    write_images_index(gen, rows)
    return manifest, root / "gen"


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("ground-truth")
    manifest, gen = build(root)
    options = EvalOptions(segmenter="provided", dino="pixel-grid", tiny_models=True, bootstrap=10)
    result = evaluate_folder(gen, manifest=load_manifest(manifest), data_root=None, options=options)
    return result.scores.set_index("template")


def test_background_copy_is_highest_on_the_training_background_and_ranks_the_blends(scores):
    values = [scores.loc[f"a {{0}} blend {alpha}", "background_copy"] for alpha in BLENDS]
    assert values[0] == pytest.approx(1.0, abs=1e-5)  # the training background itself
    assert all(a > b for a, b in itertools.pairwise(values)), values


def test_layout_copy_falls_monotonically_as_the_known_shift_grows(scores):
    rows = [scores.loc[f"a {{0}} shift {shift}"] for shift in SHIFTS]
    ious = [row["layout_iou"] for row in rows]
    assert ious[0] == pytest.approx(1.0, abs=0.02)
    assert all(a > b for a, b in itertools.pairwise(ious)), ious
    for shift, row in zip(SHIFTS, rows, strict=True):  # the centroid moves by the shift, a fraction of the side
        assert row["layout_shift"] == pytest.approx(shift / SIZE, abs=1.5 / 64)
        assert row["layout_area"] == pytest.approx(1.0, abs=0.08)
    half = scores.loc["a {0} half size"]
    assert half["layout_area"] == pytest.approx(0.25, abs=0.05)
    assert half["layout_iou"] == pytest.approx(0.25, abs=0.05)  # inside the training mask: IoU = area ratio


def test_diversity_is_zero_for_identical_images_and_rises_with_known_noise(scores):
    values = [scores.loc[f"a {{0}} noise {sigma}", "diversity"].mean() for sigma in NOISE]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in itertools.pairwise(values)), values


def test_drift_is_zero_for_the_base_models_own_image_and_rises_with_the_known_change(scores):
    values = [scores.loc[prompt, "drift"] for prompt in drift_prompts()[:len(BLENDS)]]
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in itertools.pairwise(values)), values
    assert set(scores.loc[list(drift_prompts()[:len(BLENDS)]), "prompt_kind"]) == {"drift"}


def test_the_metrics_are_computed_on_their_own_prompts_only(scores):
    base = scores.loc[base_template()]
    assert np.isnan(base["layout_iou"]) and np.isnan(base["background_copy"]) and np.isnan(base["drift"])
    assert scores.loc[scores["prompt_kind"] == "drift", ["ts", "layout_iou", "diversity"]].isna().all().all()


def test_layout_copy_edge_cases():
    train = mask_grid(np.pad(np.ones((8, 8), bool), 12))
    assert layout_copy(np.zeros_like(train), train)[0] == 0.0  # no subject generated: nothing copied
    assert np.isnan(layout_copy(np.zeros_like(train), train)[1])  # and no centroid to compare
    assert all(np.isnan(layout_copy(train, np.zeros_like(train))))  # no training subject: nothing to compare
    assert np.isnan(diversity(np.ones((1, 4)))).all()
    assert drift(np.eye(3), np.eye(3)) == pytest.approx(np.zeros(3))


def test_a_metric_that_cannot_be_computed_is_empty_with_its_reason(tmp_path):
    """A folder made by another tool, scored without masks and without drift images: those cells are empty
    (never zero), and evaluation.json says why."""
    import json

    from tests.metrics_helpers import make_project

    manifest, gen = make_project(tmp_path)
    result = evaluate_folder(gen, manifest=load_manifest(manifest), data_root=None,
                             options=EvalOptions(segmenter="none", tiny_models=True, bootstrap=10))
    reasons = json.loads((gen / "evaluation" / "evaluation.json").read_text())["unavailable"]
    assert set(reasons) == {"background_copy", "layout_iou", "layout_shift", "layout_area", "drift"}
    assert "segmenter 'none'" in reasons["layout_iou"] and "drift" in reasons["drift"]
    table = result.per_method.set_index("metric")
    assert table.loc[list(reasons), "mean"].isna().all()
    assert table.loc["diversity", "mean"].notna().all()  # the base prompt has several images
