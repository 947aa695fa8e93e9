"""The synthetic concepts: a user manifest rendered into the cache, whose images the judges read as the
concepts' scenes, held out of pretraining (docs/synthetic.md)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlora_bench.concepts.manifest import load_manifest
from tlora_bench.concepts.validate import check_concepts
from tlora_bench.prompts import DEFAULT_TOKEN, drift_prompts, load_prompt_set, prompt_items, prompt_set_for
from tlora_bench.synthetic.concepts import CLASS_WORD, CONCEPTS, concept_scene, concepts_manifest
from tlora_bench.synthetic.judges import judge
from tlora_bench.synthetic.pretrain import held_out
from tlora_bench.synthetic.scenes import BACKGROUNDS, POSITIONS
from tlora_bench.train import TRAIN_PROMPT


def test_the_manifest_is_rendered_once_and_its_images_are_the_concepts_scenes():
    path = concepts_manifest()
    assert concepts_manifest() == path  # found, not written again
    manifest = load_manifest(path)
    assert list(manifest.concepts) == [c.id for c in CONCEPTS]
    assert check_concepts(manifest.concepts.values(), None) == []
    for concept in CONCEPTS:
        entry = manifest.get(concept.id)
        assert held_out(concept.scene) and concept_scene(concept.id) == concept.scene
        for name, scene in zip(entry.images, concept.views(), strict=True):
            image = np.asarray(Image.open(entry.dir(None) / name))
            mask = np.asarray(Image.open(entry.mask_path(None, name))) > 0
            assert all(judge(image).agrees(scene).values()), (concept.id, name)
            assert 0 < mask.mean() < 0.2 and judge(image).background == scene.background
        train = concept.views()[0]
        assert entry.train_image == entry.images[0] and train == concept.scene
        others = concept.views()[1:]
        assert all(v.background != train.background and v.position != train.position for v in others)


def test_the_synthetic_prompts_ask_every_background_and_position_in_the_model_s_words():
    from tlora_bench.models import backend_spec
    from tlora_bench.synthetic.model import scene_tokenizer

    tokenizer = scene_tokenizer()
    unknown = tokenizer.convert_tokens_to_ids("[UNK]")
    concept = load_manifest(concepts_manifest()).get(CONCEPTS[0].id)
    items = prompt_items(concept)
    assert prompt_set_for(concept) == "synthetic"
    asked = [asked_scene(item.template) for item in items if not item.is_base]
    assert len(set(asked)) == len(BACKGROUNDS) * len(POSITIONS) == len(load_prompt_set("synthetic"))
    drift = drift_prompts(backend_spec("synthetic").drift_prompts)
    training = TRAIN_PROMPT.format(token=DEFAULT_TOKEN, class_word=CLASS_WORD)
    for text in [item.prompt for item in items] + list(drift) + [training]:
        assert unknown not in tokenizer(text).input_ids, text
    assert not any(CLASS_WORD in prompt for prompt in drift)  # drift prompts name no concept


def asked_scene(template: str) -> tuple[str, str]:
    """(background, position) a synthetic template asks for."""
    words = template.replace(",", " ").split()
    return words[words.index("background") - 1], next(p for p in POSITIONS if p in words)
