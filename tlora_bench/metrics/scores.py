"""IS, DINO-IS and TS from embeddings (docs/decisions.md section 5). Pure numpy: no models here.

IS of a concept is the mean of the full real x generated cosine matrix. Every generated image is compared
with the same real set, so that mean equals the mean over generated images of each one's mean similarity to
the real set: the per-image number stored in each result row, averaged later, gives the matrix mean exactly.
"""

from __future__ import annotations

import re

import numpy as np

from tlora_bench.prompts import PLACEHOLDER

# TS text variants of the authors' evaluator (docs/decisions.md section 5, Decision): the headline drops {0}
# and the class word ("a in the jungle"); the other keeps the class word ("a dog in the jungle").
TS_VARIANTS = ("class_removed", "class_kept")
TS_HEADLINE = "class_removed"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) cosine similarities between the rows of a (n, d) and b (m, d)."""
    return _unit(a) @ _unit(b).T


def image_similarity(real: np.ndarray, generated: np.ndarray) -> float:
    """IS / DINO-IS: the mean of the full real x generated cosine matrix."""
    return float(cosine_matrix(real, generated).mean())


def per_image_similarity(real: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """(m,) mean cosine of each generated image to the real set; their mean is `image_similarity`."""
    return cosine_matrix(real, generated).mean(axis=0)


def text_similarity(text: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(m,) TS of each image: the cosine between one text embedding (d,) and each image embedding (m, d)."""
    return cosine_matrix(np.asarray(text)[None, :], images)[0]


def clipscore_scale(cosine: np.ndarray | float) -> np.ndarray:
    """TS at torchmetrics' CLIPScore scale, per image: 100 * max(cos, 0); NaN (no value) stays NaN.

    torchmetrics clips the mean of a batch, max(100 * mean cos, 0): the same number for one image at a time,
    which is how this one is defined (docs/evaluation.md, "Published protocols, side by side").
    """
    return 100.0 * np.maximum(np.asarray(cosine, dtype=np.float64), 0.0)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def ts_texts(template: str, class_word: str) -> dict[str, str]:
    """The text of each TS variant for a prompt template; the token (sks) never appears in it."""
    return {"class_removed": _collapse(template.replace(PLACEHOLDER, "")),
            "class_kept": _collapse(template.replace(PLACEHOLDER, class_word))}
