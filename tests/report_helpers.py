"""A hand-made evaluated folder with known numbers, for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tlora_bench.metrics.registry import metric_names

EVIL = "<script>alert(1)</script>"
BASE = "a photo of a {0}"
TEMPLATES = (BASE, "a {0} in the jungle " + EVIL, "a {0} on the beach", "a {0} in the snow")
CONCEPTS = {"dog6": "dog", "teapot": "teapot " + EVIL}
LABELS = {"tlora-64": ("tlora-64", 64), "lora-64": ("lora-64", 64), "evil" + EVIL: ("oft-32", None)}


def metric_value(label_index: int, metric_index: int) -> float:
    return round(0.5 + 0.1 * label_index + 0.01 * metric_index, 4)


def make_evaluated_folder(root: Path, model: str = "sdxl", labels: dict | None = None) -> Path:
    """DIR/<label>/<concept>/{images.jsonl,*.png}, DIR/evaluation/{per_method,per_concept,per_prompt}.csv,
    evaluation.json, and config.json with `model`; numbers follow metric_value(), one per registered metric in
    registry order."""
    labels = LABELS if labels is None else labels
    metrics = metric_names()
    rng = np.random.default_rng(0)
    method_rows, concept_rows, prompt_rows = [], [], []
    for i, (label, (method, rank)) in enumerate(labels.items()):
        for m, metric in enumerate(metrics):
            mean = metric_value(i, m)
            method_rows.append({"method_label": label, "method": method, "rank": rank, "metric": metric, "mean": mean,
                                "ci_low": mean - 0.02, "ci_high": mean + 0.02, "n_concepts": len(CONCEPTS)})
        for concept, class_word in CONCEPTS.items():
            folder = root / label / concept
            folder.mkdir(parents=True)
            lines = []
            for t, template in enumerate(TEMPLATES):
                for index in range(2):
                    name = f"p{t:02d}_i{index:02d}.png"
                    pixels = rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / name)
                    lines.append({"file": name, "template": template, "image_index": index, "seed": 100 * t + index,
                                  "method": method, "rank": rank})
                prompt_rows.append({"method_label": label, "concept": concept, "template": template, "n_images": 2})
            (folder / "images.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            concept_rows.append({"method_label": label, "method": method, "rank": rank, "concept": concept,
                                 "class_word": class_word, **{k: metric_value(i, m) for m, k in enumerate(metrics)},
                                 "n_base_images": 2, "n_ts_prompts": 3})
    evaluation = root / "evaluation"
    evaluation.mkdir()
    pd.DataFrame(method_rows).to_csv(evaluation / "per_method.csv", index=False)
    pd.DataFrame(concept_rows).to_csv(evaluation / "per_concept.csv", index=False)
    pd.DataFrame(prompt_rows).to_csv(evaluation / "per_prompt.csv", index=False)
    (evaluation / "evaluation.json").write_text(json.dumps(
        {"provenance": {"base_template": BASE, "manifest": "dreambooth", "segmenter": "grabcut " + EVIL}}))
    (root / "config.json").write_text(json.dumps({"name": "hand-made", "model": model}))
    return root
