"""Overfitting measured directly (docs/evaluation.md, "Overfitting"): what of the training image a generated
image copies, how alike a prompt's images are, how far the adapter moves the base model. Pure numpy.

    background copy   cosine (DINO) between the generated image's background and the training image's
                      background, each with its subject filled black: the training background leaking into
                      a prompt that asked for another
    layout copy       IoU of the generated subject's mask with the training image's, on one square grid (both
                      centre-cropped to a square, as the training image is for training), with the shift of the
                      mask centroid (a fraction of the image side) and the ratio of the areas (generated / train)
    diversity         mean pairwise 1 - cosine (DINO) between the images of one prompt: 0 is mode collapse
    drift             1 - cosine (DINO) between the base model's and the adapted model's image of a prompt that
                      names no concept, same seed
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from tlora_bench.metrics.scores import cosine_matrix

GRID = 64  # masks are compared on a GRID x GRID square, whatever the images' sizes


def mask_grid(mask: np.ndarray, size: int = GRID) -> np.ndarray:
    """A boolean (H, W) mask, centre-cropped to a square and resized to (size, size): a cell is object when at
    least half of its pixels are."""
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.ascontiguousarray(mask[top:top + side, left:left + side], dtype=np.uint8) * 255
    small = Image.fromarray(square, mode="L").resize((size, size), Image.Resampling.BOX)
    return np.asarray(small) >= 128


def pack_grid(grid: np.ndarray) -> np.ndarray:
    """A mask grid as the float32 vector the feature cache stores (its bits packed into bytes)."""
    return np.packbits(grid.astype(bool).ravel()).astype(np.float32)


def unpack_grid(packed: np.ndarray, size: int = GRID) -> np.ndarray:
    return np.unpackbits(np.asarray(packed, dtype=np.uint8))[:size * size].reshape(size, size).astype(bool)


def _centroid(grid: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(grid)
    return np.array([rows.mean(), cols.mean()]) + 0.5


def layout_copy(generated: np.ndarray, train: np.ndarray) -> tuple[float, float, float]:
    """(IoU, centroid shift, area ratio) of a generated mask grid against the training image's.

    No subject in the training mask: nothing to compare (all NaN). No subject in the generated image: IoU 0
    and area ratio 0 (nothing was copied), shift NaN (there is no centroid).
    """
    train_area = int(train.sum())
    if train_area == 0:
        return float("nan"), float("nan"), float("nan")
    area = int(generated.sum())
    if area == 0:
        return 0.0, float("nan"), 0.0
    iou = float(np.logical_and(generated, train).sum() / np.logical_or(generated, train).sum())
    shift = float(np.linalg.norm(_centroid(generated) - _centroid(train)) / train.shape[0])
    return iou, shift, area / train_area


def background_copy(train_background: np.ndarray, generated_backgrounds: np.ndarray) -> np.ndarray:
    """(m,) cosine of each generated background embedding (m, d) with the training image's (d,)."""
    return cosine_matrix(np.asarray(train_background)[None, :], generated_backgrounds)[0]


def diversity(features: np.ndarray) -> np.ndarray:
    """(n,) each image's mean 1 - cosine to the other n - 1 images of its prompt (their mean is the mean over
    pairs); NaN when the prompt has one image."""
    n = len(features)
    if n < 2:
        return np.full(n, np.nan)
    distance = 1.0 - np.clip(cosine_matrix(features, features), -1.0, 1.0)  # rounding must not go below 0
    np.fill_diagonal(distance, 0.0)
    return distance.sum(axis=1) / (n - 1)


def drift(base: np.ndarray, adapted: np.ndarray) -> np.ndarray:
    """(n,) 1 - cosine between row i of the base model's embeddings and row i of the adapted model's."""
    a = base / np.linalg.norm(base, axis=1, keepdims=True)
    b = adapted / np.linalg.norm(adapted, axis=1, keepdims=True)
    return 1.0 - np.clip(np.sum(a * b, axis=1, dtype=np.float64), -1.0, 1.0)
