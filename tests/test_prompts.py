from __future__ import annotations

from pathlib import Path

import pytest

from tlora_bench.concepts import bundled_manifest, load_manifest
from tlora_bench.errors import TloraBenchError
from tlora_bench.prompts import (
    DRIFT_PROMPTS,
    DRIFT_SETS,
    PLACEHOLDER,
    base_template,
    drift_prompts,
    load_prompt_set,
    prompt_items,
    prompt_set_for,
    seed_for,
)


@pytest.mark.parametrize("name", ["live", "object"])
def test_prompt_sets_have_31_templates_with_one_placeholder(name: str):
    templates = load_prompt_set(name)
    assert len(templates) == 31 and len(set(templates)) == 31
    assert all(t.count("{0}") == 1 and "  " not in t and "\n" not in t for t in templates)


def test_prompt_text_follows_the_paper_exactly():
    live, obj = load_prompt_set("live"), load_prompt_set("object")
    assert live[0] == obj[0] == "a chocolate-colored {0}"
    assert "a {0} swimming " in live and "a {0} sleeping " in live  # trailing spaces kept
    assert "a {0} dressed wearing a tuxedo performing on a stage in the spotlight" in live
    assert live[-1] == ("a {0} wearing a pirate hat exploring a sandy beach at the sunset with a boat floating "
                        "in the background")  # a line break in the paper is page layout: one space
    assert obj[-1] == ("a {0} on a sandy beach next to the sand castle at the sunset with a floating boat in the "
                       "background")
    assert "a {0} in a wizard's robe in a magical forest at midnight, accented with purples and sparkling silver " \
           "tones" in live
    assert base_template() == "a photo of a {0}"


def test_seed_rule_worked_example():
    # "a {0}": a=97, ' '=32, '{'=123, '0'=48, '}'=125 -> 425; image 2, base seed 0 -> 427; base seed 10 -> 437.
    assert seed_for("a {0}", 2) == 427 and seed_for("a {0}", 2, base_seed=10) == 437
    # The base prompt's code points sum to 1385, so its 15 images take seeds 1385..1399.
    (dog6,) = bundled_manifest().select("dog6")
    base = [item for item in prompt_items(dog6) if item.is_base]
    assert [item.seed for item in base] == list(range(1385, 1400))
    assert base[0].prompt == "a photo of a sks dog"


def test_seeds_depend_on_the_template_not_on_the_concept():
    cat, dog = bundled_manifest().select("cat,dog")
    seeds = lambda c: {(i.template, i.image_index): i.seed for i in prompt_items(c)}  # noqa: E731
    assert seeds(cat) == seeds(dog)


def test_dreambooth25_is_800_pairs_and_4250_images():
    concepts = bundled_manifest().select("dreambooth25")
    items = {c.id: prompt_items(c) for c in concepts}
    assert len({(cid, i.template) for cid, its in items.items() for i in its}) == 800
    assert sum(len(its) for its in items.values()) == 4250
    assert all(len(its) == 31 * 5 + 15 for its in items.values())


def test_live_concepts_take_the_live_set():
    (dog, teapot) = bundled_manifest().select("dog6,teapot")
    assert {i.template for i in prompt_items(dog)} - {base_template()} == set(load_prompt_set("live"))
    assert {i.template for i in prompt_items(teapot)} - {base_template()} == set(load_prompt_set("object"))
    assert prompt_items(dog, token="zwx")[15].prompt.startswith("a chocolate-colored zwx dog")


def test_a_manifest_names_each_concept_s_prompt_set(tmp_path: Path):
    (tmp_path / "mine.txt").write_text("a {0} on the moon\n")
    (tmp_path / "manifest.toml").write_text(
        '[[concepts]]\nid = "a"\nclass_word = "dog"\nimages = ["a.jpg"]\nprompts = "object"\nlive = true\n'
        '[[concepts]]\nid = "b"\nclass_word = "dog"\nimages = ["a.jpg"]\nprompts = "mine.txt"\n'
        '[[concepts]]\nid = "c"\nclass_word = "dog"\nimages = ["a.jpg"]\nlive = true\n')
    a, b, c = load_manifest(tmp_path / "manifest.toml").select(None)
    assert prompt_set_for(a) == "object" and prompt_set_for(c) == "live"  # the named set wins over `live`
    assert [i.template for i in prompt_items(b, base_images=1, images_per_prompt=1)][1:] == ["a {0} on the moon"]


def test_every_drift_set_has_the_configurable_count_and_names_no_concept():
    for name in DRIFT_SETS:
        prompts = drift_prompts(name)
        assert len(prompts) == DRIFT_PROMPTS and len(set(prompts)) == DRIFT_PROMPTS, name
        assert not any(PLACEHOLDER in p for p in prompts)
    with pytest.raises(TloraBenchError, match="unknown drift prompt set 'drfit'; did you mean 'drift'"):
        drift_prompts("drfit")


def test_user_prompt_file(tmp_path: Path):
    good = tmp_path / "mine.txt"
    good.write_text("a {0} on the moon\n\na {0} in a box \n")
    assert load_prompt_set(str(good)) == ("a {0} on the moon", "a {0} in a box ")
    bad = tmp_path / "bad.txt"
    bad.write_text("a dog on the moon\n")
    with pytest.raises(TloraBenchError, match=r"bad.txt: prompt 1 .* must contain \{0\} exactly once"):
        load_prompt_set(str(bad))
    with pytest.raises(TloraBenchError, match="unknown prompt set 'lve'; did you mean 'live'"):
        load_prompt_set("lve")


@pytest.mark.parametrize("token", ["", "two words", "a{0}", "{", "tab\there"])
def test_a_token_that_is_not_one_word_is_refused_wherever_prompts_are_made(token: str):
    from tlora_bench.config import RunConfig

    with pytest.raises(TloraBenchError, match="token must be one word without spaces or braces"):
        prompt_items(bundled_manifest().get("dog6"), token=token)
    with pytest.raises(TloraBenchError, match="config key 'token'"):
        RunConfig(token=token)
