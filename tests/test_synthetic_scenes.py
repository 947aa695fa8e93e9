"""The synthetic scene world: every attribute of a render is read back exactly by the judges, on held-out
jittered renders and with pixel noise; captions name what a scene holds; bad attribute names are refused."""

from __future__ import annotations

import numpy as np
import pytest

from tlora_bench.synthetic.judges import ATTRIBUTES, judge, judge_accuracy
from tlora_bench.synthetic.scenes import (
    BACKGROUNDS,
    COLORS,
    RESOLUTION,
    SPOT,
    Scene,
    all_scenes,
    caption,
    render,
)


def test_the_palettes_are_far_apart():
    """Every object colour and the spot are at least 100 (RGB) from every background and from each other."""
    objects = [*COLORS.values(), SPOT]
    pairs = [(a, b) for a in objects for b in BACKGROUNDS.values()]
    pairs += [(a, b) for i, a in enumerate(objects) for b in objects[i + 1:]]
    assert min(np.linalg.norm(np.subtract(a, b)) for a, b in pairs) >= 100


@pytest.mark.parametrize(("seed", "noise"), [(1, 0.0), (2, 8.0)])
def test_the_judges_read_every_attribute_of_held_out_renders(seed, noise):
    """The acceptance bar (docs/synthetic.md): at least 98% per attribute; measured: 100% on every combination
    of the vocabulary jittered, and on every other one with Gaussian noise of 8 per channel as well."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()[::2] if noise else all_scenes()  # half of them with noise: CI's time
    images = [render(scene, rng) for scene in scenes]
    if noise:
        images = [np.clip(image + rng.normal(0, noise, image.shape), 0, 255) for image in images]
    accuracy = judge_accuracy(scenes, images)
    assert set(accuracy) == set(ATTRIBUTES)
    assert min(accuracy.values()) >= 0.98, accuracy


def test_an_empty_background_has_no_object():
    image = np.empty((RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS["sand"]
    judged = judge(image)
    assert judged.background == "sand" and judged.shape is None and judged.color is None


def test_a_render_is_deterministic_and_jitter_moves_it():
    scene = Scene("sky", "triangle", "red", "left", "small", "dotted")
    assert np.array_equal(render(scene), render(scene))
    first, second = render(scene, np.random.default_rng(0)), render(scene, np.random.default_rng(1))
    assert first.shape == (RESOLUTION, RESOLUTION, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)


def test_captions_name_the_scene():
    assert caption(Scene("sky", "triangle", "red", "left", "small", "dotted")) == \
        "a small dotted red triangle on the left, sky background"
    assert caption(Scene("night", "circle", "blue", "center")) == "a blue circle in the center, night background"
    assert len({caption(scene) for scene in all_scenes()}) == len(all_scenes())


def test_an_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        Scene("sky", "hexagon", "red", "left")
