"""Tiny study fixtures (no tests here): a hand-made folder of generated images, 3 methods x 2 concepts."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.conftest import TINY_MANIFEST, make_tiny_dataset, write_image
from tlora_bench.layout import ImageRecord, write_images_index
from tlora_bench.prompts import seed_for

METHODS = ("alpha-a", "beta-b", "gamma-c")
TEMPLATES = ("a photo of {0}", "{0} on the beach", "{0} in the jungle", "a <b>{0}</b> oil painting")
EVIL_CLASS = "<script>x</script>"  # must reach the forms escaped, never as markup


def make_manifest(root: Path) -> Path:
    """TINY_MANIFEST with a class word that is markup, and its data folders beside it."""
    make_tiny_dataset(root, {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg", "02.jpg"]})
    path = root / "tiny.toml"
    path.write_text(TINY_MANIFEST.replace('class_word = "dog"', f'class_word = "{EVIL_CLASS}"'))
    return path


def make_images(root: Path, methods: tuple[str, ...] = METHODS, per_template: int = 2) -> Path:
    """DIR/<method>/<concept>/images.jsonl with small PNGs; same seeds across methods, as the sampler does."""
    for m, method in enumerate(methods):
        for c, concept in enumerate(("rex", "mug")):
            folder = root / method / concept
            rows = []
            for t, template in enumerate(TEMPLATES):
                for i in range(per_template):
                    name = f"img_{t}_{i}.png"
                    write_image(folder / name, seed=1000 * m + 100 * c + 10 * t + i)
                    rows.append(ImageRecord(file=name, template=template, image_index=i, seed=seed_for(template, i),
                                            method=method, rank=None, prompt=template.replace("{0}", "sks x")))
            write_images_index(folder, rows)
    return root


def write_answers(path: Path, rows: list[tuple[str, str, int, str]], study_id: str | None) -> Path:
    """An answer CSV exactly as the form's JavaScript writes it: (rater, trial_id, question, answer) rows of study
    `study_id`; None writes the columns of forms from before study ids."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(["rater", "trial_id", "question", "answer"] if study_id is None else
                        ["study_id", "rater", "trial_id", "question", "answer"])
        writer.writerows(rows if study_id is None else [(study_id, *row) for row in rows])
    return path


def read_key_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
