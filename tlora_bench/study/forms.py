"""Render one rater's self-contained HTML form: images inlined as data URIs, no network, no method names."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2

from tlora_bench.concepts import load_image
from tlora_bench.errors import TloraBenchError
from tlora_bench.study.questions import QUESTIONS

TEMPLATE = "form.html.j2"


@dataclass(frozen=True)
class FormTrial:
    """What a rater may see of a trial: the opaque id, the reference, the prompt and two anonymous images."""

    trial_id: str
    concept: str
    prompt: str
    reference: str  # data: URI of the concept's training image
    left: str  # data: URI
    right: str


def encode_image(path: Path, size: int) -> str:
    """A JPEG data URI at most `size` px on the long side: keeps forms small, and re-encoding strips metadata."""
    try:
        image = load_image(path)
    except TloraBenchError:
        raise
    except Exception as e:  # PIL raises many types for broken files; the user needs the path, not the type
        raise TloraBenchError(f"cannot read image '{path}' ({e})") from None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Autoescape everything: concept ids, class words and prompts come from user manifests and image indexes.
    return jinja2.Environment(loader=jinja2.PackageLoader("tlora_bench.study", "."),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def render_form(rater_id: str, study_id: str, trials: list[FormTrial]) -> str:
    """One rater's page; its saved answers carry `study_id`, so they are never checked against another key."""
    for trial in trials:
        for uri in (trial.reference, trial.left, trial.right):
            if not uri.startswith("data:image/"):  # a path here would reveal the method and need the network
                raise ValueError(f"trial {trial.trial_id}: images must be data: URIs")
    return _environment().get_template(TEMPLATE).render(rater_id=rater_id, study_id=study_id, trials=trials,
                                                        questions=QUESTIONS)
