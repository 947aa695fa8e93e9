"""Colorfulness of a generated image (Hasler and Suesstrunk 2003): sigma_rgyb + 0.3 * mu_rgyb on 0..255 pixels, where
rg = R - G and yb = (R + G) / 2 - B. 0 for a grey image; a few dozen for a natural photograph."""

import numpy as np

from tlora_bench import Metric, MetricInput


def colorfulness(item: MetricInput) -> float:
    rgb = np.asarray(item.image.convert("RGB"), dtype=np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


METRIC = Metric(name="colorfulness", label="colorfulness", higher_is_better=True,
                scale="Hasler-Suesstrunk colorfulness, 0 (grey) and up", aggregation="contextual", score=colorfulness)
