"""The exact judges as run metrics: what each scores on renders whose truth is known, and that only a run with a
synthetic concept has their columns (docs/synthetic.md, "Judged metrics")."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlora_bench.concepts.manifest import bundled_manifest, load_manifest
from tlora_bench.metrics.judged import applies, asked_context
from tlora_bench.metrics.registry import MetricInput, applying_metrics, get_metric, metric_names, metric_scope
from tlora_bench.synthetic.concepts import CONCEPTS, concepts_manifest
from tlora_bench.synthetic.scenes import Scene, render

JUDGED = ("judged_fidelity", "judged_background_leakage", "judged_position_copying", "judged_context")
CONCEPT = CONCEPTS[0]  # red dotted diamond, sky background, on the left


def synthetic_concept():
    return load_manifest(concepts_manifest()).get(CONCEPT.id)


def scores(scene: Scene, template: str, concept=None) -> dict[str, float]:
    image = Image.fromarray(render(scene, np.random.default_rng(3)))
    item = MetricInput(image, Path("x.png"), template, template, concept or synthetic_concept(), ())
    return {name: get_metric(name).compute(item) for name in JUDGED}


def test_asked_context_reads_the_background_and_position_a_prompt_names():
    assert asked_context("a {0} on the left, sky background") == ("sky", "left")
    assert asked_context("a {0} in the center, night background") == ("night", "center")
    assert asked_context("a photo of a {0}") == (None, None)


def test_the_concept_where_asked_is_faithful_and_copies_nothing():
    asked = dataclasses.replace(CONCEPT.scene, background="sand", position="right")
    assert scores(asked, "a {0} on the right, sand background") == {
        "judged_fidelity": 1.0, "judged_background_leakage": 0.0, "judged_position_copying": 0.0,
        "judged_context": 1.0}


def test_the_training_scene_where_another_was_asked_is_leakage_and_copying():
    got = scores(CONCEPT.scene, "a {0} on the right, sand background")
    assert got == {"judged_fidelity": 1.0, "judged_background_leakage": 1.0, "judged_position_copying": 1.0,
                   "judged_context": 0.0}


def test_another_object_is_not_the_concept_and_an_unasked_context_has_no_value():
    plain = dataclasses.replace(CONCEPT.scene, pattern="plain")
    got = scores(plain, "a photo of a {0}")
    assert got["judged_fidelity"] == 0.0
    assert all(math.isnan(got[name]) for name in JUDGED[1:])  # the base prompt asks for no background or position
    same = scores(CONCEPT.scene, "a {0} on the left, sky background")  # asked the training context itself
    assert math.isnan(same["judged_background_leakage"]) and math.isnan(same["judged_position_copying"])
    assert same["judged_context"] == 1.0


def test_a_concept_that_is_not_synthetic_gets_no_value():
    dog = bundled_manifest().get("dog6")
    assert applies(synthetic_concept()) and not applies(dog)
    assert all(math.isnan(v) for v in scores(CONCEPT.scene, "a {0} on the left, sky background", dog).values())


def test_only_a_scope_with_a_synthetic_concept_holds_the_judged_metrics():
    assert not set(JUDGED) & set(metric_names())  # outside an evaluation or a report
    assert applying_metrics(bundled_manifest().concepts.values()) == frozenset()
    assert applying_metrics(load_manifest(concepts_manifest()).concepts.values()) == frozenset(JUDGED)
    with metric_scope(applying_metrics(bundled_manifest().concepts.values())):
        assert not set(JUDGED) & set(metric_names())
        assert "is_masked" in metric_names()  # the built-ins are in every scope
    with metric_scope(JUDGED):
        assert set(JUDGED) <= set(metric_names())


def test_applies_to_is_a_module_attr_of_a_metric_with_a_score_hook():
    from tlora_bench.errors import TloraBenchError
    from tlora_bench.metrics.registry import Metric

    with pytest.raises(TloraBenchError, match="module:attr"):
        Metric("mine", "Mine", score="pkg:score", applies_to="no_colon")
    with pytest.raises(TloraBenchError, match="score hook"):
        Metric("mine", "Mine", applies_to="pkg:applies")  # a built-in scores every concept
