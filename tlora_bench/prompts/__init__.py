"""Prompt sets (paper appendix D), the base prompt, and the seed rule (docs/decisions.md section 4).

Templates hold `{0}` where the paper writes V*; it is replaced by "<token> <class word>" ("sks dog").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from tlora_bench.concepts.manifest import Concept
from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.limits import check_seed
from tlora_bench.resources import read_bundled_text

PLACEHOLDER = "{0}"
BUNDLED_SETS = ("live", "object", "base", "synthetic")  # synthetic: the synthetic concepts' (docs/synthetic.md)
DRIFT_SET = "drift"  # prompts that name no concept: how far an adapter moves the base model (docs/evaluation.md)
DRIFT_SETS = (DRIFT_SET, "synthetic-drift")  # a backend names its own (the synthetic model's words are few)
DRIFT_PROMPTS = 10  # in every drift set: `drift_prompts` (a config key) counts in that range
DEFAULT_TOKEN = "sks"
IMAGES_PER_PROMPT = 5  # contextual prompts (docs/decisions.md section 4)
IMAGES_PER_BASE_PROMPT = 15  # the base prompt "a photo of a {0}", used for IS and DINO-IS
MAX_IMAGES_PER_PROMPT = 10_000  # far above any protocol's count; more is a typo, not a study


def check_token(token: object) -> None:
    """The token stands for V* in every prompt: one word (`--token`, `--set token=`); braces would read as
    a template field where prompts are formatted."""
    if not isinstance(token, str) or not token or not token.isprintable() or any(
            c.isspace() or c in "{}" for c in token):
        raise TloraBenchError(f"token must be one word without spaces or braces, got {token!r}; e.g. --token "
                              f"{DEFAULT_TOKEN}")


@dataclass(frozen=True)
class PromptItem:
    """One image to generate: which template, the prompt fed to the model, its index and its seed."""

    template: str
    prompt: str
    image_index: int
    seed: int
    is_base: bool
    kind: str = "concept"  # "concept": a template of the concept's prompts; "drift": a prompt naming no concept


def parse_templates(text: str, source: str) -> tuple[str, ...]:
    """Templates from a text file, one per line. Trailing spaces are part of a prompt and are kept."""
    templates = tuple(line.rstrip("\r") for line in text.split("\n") if line.strip())
    for number, template in enumerate(templates, 1):
        if template.count(PLACEHOLDER) != 1:
            raise TloraBenchError(f"{source}: prompt {number} {template!r} must contain {PLACEHOLDER} exactly "
                                  "once, where the concept goes (the paper's V*)")
    if not templates:
        raise TloraBenchError(f"{source}: no prompts; write one template per line, e.g. 'a {{0}} on the beach'")
    return templates


@functools.cache
def load_prompt_set(name: str) -> tuple[str, ...]:
    """A bundled set ('live', 'object', 'base') or a path to a user's .txt file of templates."""
    if name.endswith(".txt"):
        path = Path(name)
        if not path.is_file():
            raise TloraBenchError(f"prompt file not found: '{path}'")
        return parse_templates(path.read_text(encoding="utf-8"), str(path))
    if name not in BUNDLED_SETS:
        raise unknown_name_error("prompt set", name, BUNDLED_SETS)
    text = read_bundled_text("prompts", f"{name}.txt")
    return parse_templates(text, f"{name}.txt")


@functools.cache
def drift_prompts(name: str = DRIFT_SET) -> tuple[str, ...]:
    """A bundled drift set (prompts/<name>.txt): plain prompts with no {0}, never naming a concept's class."""
    if name not in DRIFT_SETS:
        raise unknown_name_error("drift prompt set", name, DRIFT_SETS)
    prompts = tuple(line.strip() for line in read_bundled_text("prompts", f"{name}.txt").split("\n")
                    if line.strip())
    for prompt in prompts:
        if PLACEHOLDER in prompt:
            raise TloraBenchError(f"{name}.txt: prompt {prompt!r} must not hold {PLACEHOLDER}")
    return prompts


def drift_items(base_seed: int, images: int, prompts: int | None = None,
                prompt_set: str = DRIFT_SET) -> list[PromptItem]:
    """`images` images of each prompt of a drift set (the first `prompts` of them; None: all), seeded by the
    seed rule like every prompt: an adapted model's and the base model's image of a prompt and index share
    their seed, so they differ only by the adapter."""
    if not 0 <= images <= MAX_IMAGES_PER_PROMPT:
        raise TloraBenchError(f"drift images per prompt must be from 0 to {MAX_IMAGES_PER_PROMPT:,}, got {images}")
    check_seed(base_seed, "the base seed")
    bundled = drift_prompts(prompt_set)
    if prompts is not None and not 1 <= prompts <= len(bundled):
        raise TloraBenchError(f"drift prompts must be from 1 to {len(bundled)} (prompts/{prompt_set}.txt), got "
                              f"{prompts}")
    return [PromptItem(template=p, prompt=p, image_index=i, seed=seed_for(p, i, base_seed), is_base=False,
                       kind="drift")
            for p in bundled[:prompts] for i in range(images)]


def base_template() -> str:
    return load_prompt_set("base")[0]


def prompt_set_for(concept: Concept) -> str:
    """The concept's own set when its manifest names one; else the paper's rule: pets take the live set,
    everything else the object set."""
    return concept.prompts or ("live" if concept.live else "object")


def subject_phrase(concept: Concept, token: str = DEFAULT_TOKEN) -> str:
    check_token(token)
    return f"{token} {concept.class_word}"


def format_prompt(template: str, subject: str) -> str:
    return template.replace(PLACEHOLDER, subject)


def seed_for(template: str, image_index: int, base_seed: int = 0) -> int:
    """docs/decisions.md section 4: sum of the template's code points + image index + base seed."""
    return sum(ord(c) for c in template) + image_index + base_seed


def prompt_items(concept: Concept, token: str = DEFAULT_TOKEN, base_seed: int = 0,
                 images_per_prompt: int = IMAGES_PER_PROMPT,
                 base_images: int = IMAGES_PER_BASE_PROMPT, prompt_set: str | None = None) -> list[PromptItem]:
    """Every image to generate for a concept: the base prompt first, then each contextual prompt."""
    for count in (images_per_prompt, base_images):
        if not 1 <= count <= MAX_IMAGES_PER_PROMPT:
            raise TloraBenchError(f"images per prompt must be from 1 to {MAX_IMAGES_PER_PROMPT:,}, got {count}")
    check_seed(base_seed, "the base seed")
    subject = subject_phrase(concept, token)
    plan = [(base_template(), base_images, True)]
    plan += [(t, images_per_prompt, False) for t in load_prompt_set(prompt_set or prompt_set_for(concept))]
    return [PromptItem(template=t, prompt=format_prompt(t, subject), image_index=i,
                       seed=seed_for(t, i, base_seed), is_base=is_base)
            for t, count, is_base in plan for i in range(count)]
