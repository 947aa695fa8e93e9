"""Draw the study's trials from a folder of generated images and write the forms and the answer key."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlora_bench.concepts import Manifest, resolve_data_root
from tlora_bench.errors import TloraBenchError, unknown_name_error
from tlora_bench.fileio import atomic_write_text, differing_keys, read_json, sha256_file
from tlora_bench.layout import IMAGES_DIR, ImageRecord, find_indexed_folders
from tlora_bench.limits import check_seed
from tlora_bench.prompts import format_prompt
from tlora_bench.study.forms import FormTrial, encode_image, render_form
from tlora_bench.study.keyfile import KEY_FILE, Trial, write_key

# The rater sees "V* dog": V* names the concept shown in the reference image (as in the paper's prompts),
# the class word keeps the sentence readable. The real token (e.g. "sks") would mean nothing to a rater.
DISPLAY_TOKEN = "V*"
SETTINGS_FILE = "study.json"
# Hashed into every study id: a change to how studies are drawn gives new ids, never an old study's.
STUDY_FORMAT = "tlora-bench-study/2"
MIN_IMAGE_SIZE = 16  # px on the long side: smaller shows raters nothing to judge


@dataclass(frozen=True)
class _Slot:
    """One (concept, template) of one method: its images by image_index."""

    folder: Path
    records: dict[int, ImageRecord]


def images_folder(path: str | Path) -> Path:
    """A run folder keeps its images under RUN/images; a plain images folder is used as is."""
    path = Path(path)
    return path / IMAGES_DIR if (path / IMAGES_DIR).is_dir() else path


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """'a:b,a:c' -> [('a', 'b'), ('a', 'c')]; win rates are reported for the first method of each pair."""
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in spec.split(",")):
        a, sep, b = item.partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise TloraBenchError(f"--pairs: '{item}' is not METHOD_A:METHOD_B (e.g. tlora-64:lora-64)")
        a, b = a.strip(), b.strip()
        if a == b:
            raise TloraBenchError(f"--pairs: '{item}' compares a method with itself")
        if (a, b) in pairs or (b, a) in pairs:
            raise TloraBenchError(f"--pairs: '{item}' is listed twice")
        pairs.append((a, b))
    return pairs


def _index(images_dir: Path) -> dict[str, dict[tuple[str, str], _Slot]]:
    """{method_label: {(concept, template): slot}} for every indexed folder."""
    by_method: dict[str, dict[tuple[str, str], _Slot]] = {}
    for folder in find_indexed_folders(images_dir):
        slots = by_method.setdefault(folder.method_label, {})
        for record in folder.records:
            slot = slots.setdefault((folder.concept_id, record.template), _Slot(folder.folder, {}))
            slot.records[record.image_index] = record
    return by_method


def _shared_indices(a: _Slot, b: _Slot) -> list[int]:
    """Image indices both methods generated with the same seed, so a trial differs only in the method."""
    return sorted(i for i in a.records.keys() & b.records.keys() if a.records[i].seed == b.records[i].seed)


def _relative(images_dir: Path, slot: _Slot, record: ImageRecord) -> str:
    return (slot.folder / record.file).relative_to(images_dir).as_posix()


def _opaque_ids(rng: np.random.Generator, count: int) -> list[str]:
    """Random ids, so neither the id nor its order hints at the pair or the sides."""
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"t{int(rng.integers(0, 16**8)):08x}")
    return sorted(ids, key=lambda _: rng.random())


def draw_trials(images_dir: Path, pairs: Sequence[tuple[str, str]], n: int, seed: int,
                manifest: Manifest) -> list[Trial]:
    """n unique (concept, template) per pair, one random shared image index each, sides balanced at random; the
    trial and study ids are left empty for `identify`, which needs the whole study."""
    if n < 1:
        raise TloraBenchError(f"--n must be at least 1, got {n}")
    by_method = _index(images_dir)
    rng = np.random.default_rng(seed)
    drawn: list[tuple[str, str, str, _Slot, _Slot, int, bool]] = []
    for a, b in pairs:
        for label in (a, b):
            if label not in by_method:
                raise unknown_name_error(f"method label in '{images_dir}'", label, by_method)
        candidates = sorted(key for key in by_method[a].keys() & by_method[b].keys()
                            if _shared_indices(by_method[a][key], by_method[b][key]))
        if len(candidates) < n:
            raise TloraBenchError(f"pair {a}:{b} has only {len(candidates)} unique (concept, template) pairs "
                                  f"with an image of the same seed from both methods; --n asks for {n}")
        chosen = [candidates[i] for i in sorted(rng.choice(len(candidates), size=n, replace=False))]
        # Exactly half (rounded at random) of the trials put method_a on the left, in a random order, so a
        # side bias of raters cannot favour either method; per-trial coin flips could leave 40/60 splits.
        sides = np.array([True] * (n // 2) + [False] * (n // 2) + ([bool(rng.integers(2))] if n % 2 else []))
        rng.shuffle(sides)
        for (concept, template), a_left in zip(chosen, sides, strict=True):
            slot_a, slot_b = by_method[a][(concept, template)], by_method[b][(concept, template)]
            shared = _shared_indices(slot_a, slot_b)
            drawn.append((a, b, concept, slot_a, slot_b, shared[int(rng.integers(len(shared)))], bool(a_left)))
    for concept in sorted({d[2] for d in drawn}):
        if concept not in manifest.concepts:
            raise unknown_name_error(f"concept (in '{images_dir}') of manifest '{manifest.name}'", concept,
                                     manifest.concepts)
    trials = []
    for a, b, concept, slot_a, slot_b, index, a_left in drawn:
        rec_a, rec_b = slot_a.records[index], slot_b.records[index]
        phrase = f"{DISPLAY_TOKEN} {manifest.get(concept).class_word}"
        trials.append(Trial(  # the ids come once the whole study is known: `identify`
            trial_id="", study_id="", pair=f"{a}:{b}", method_a=a, method_b=b, concept=concept,
            template=rec_a.template, prompt=format_prompt(rec_a.template, phrase),
            image_index_a=index, image_index_b=index, seed_a=rec_a.seed, seed_b=rec_b.seed,
            file_a=_relative(images_dir, slot_a, rec_a), file_b=_relative(images_dir, slot_b, rec_b),
            left=a if a_left else b, right=b if a_left else a, study_seed=seed))
    return trials


def study_digest(settings: Mapping[str, object], trials: Sequence[Trial], images_dir: Path,
                 references: Mapping[str, Path]) -> str:
    """sha256 of what a study is: its settings (not where its folder lies), every trial and the bytes of every
    image it shows. Two studies differ in it unless they show raters the same thing, even with one seed."""
    digest = hashlib.sha256(json.dumps({"format": STUDY_FORMAT, **{k: v for k, v in settings.items()
                                                                    if k != "images_dir"}}, sort_keys=True).encode())
    for trial in trials:
        digest.update(json.dumps(dataclasses.asdict(trial), sort_keys=True).encode())
    files = sorted({f for t in trials for f in (t.file_a, t.file_b)})
    for name, path in [*((f, images_dir / f) for f in files), *sorted(references.items())]:
        digest.update(f"{name}:{sha256_file(path)}".encode())
    return digest.hexdigest()


def identify(trials: Sequence[Trial], digest: str) -> list[Trial]:
    """The study id (the digest's first 16 hex digits) and trial ids on every trial. The ids are drawn from the
    digest's other digits, which no form shows: unique to the study, and no rater can work out the draw order
    (and so the pair) from the study id a form carries."""
    study_id = digest[:16]
    ids = _opaque_ids(np.random.default_rng(int(digest[16:48], 16)), len(trials))
    return [dataclasses.replace(t, trial_id=i, study_id=study_id) for t, i in zip(trials, ids, strict=True)]


def rater_order(trials: Sequence[Trial], rater: int, seed: int) -> list[Trial]:
    """Each rater's own shuffled order (seeded by study seed and rater number, so it is reproducible)."""
    order = np.random.default_rng([seed, rater]).permutation(len(trials))
    return [trials[i] for i in order]


def _refuse_another_study(out: Path, settings: dict, study_id: str) -> None:
    """Forms may already be with raters: their key must never be replaced by another study's. The same settings
    and images remake the same files (the draw is seeded), so that is allowed."""
    if not out.is_dir():
        return
    existing = [p.name for p in (out / KEY_FILE, out / SETTINGS_FILE) if p.exists()]
    existing += sorted(p.name for p in out.glob("rater-*.html"))
    if not existing:
        return
    fix = "its forms may be out with raters, so it is kept: pass another --out"
    previous = read_json(out / SETTINGS_FILE, fix) if (out / SETTINGS_FILE).is_file() else {}
    differ = differing_keys(previous, settings) if isinstance(previous, dict) else ["study.json"]
    differ = [key for key in differ if key not in ("trials", "study_id")]  # the draw's results, not settings
    if not differ and previous.get("study_id", study_id) != study_id:  # a study.json before study ids has none
        differ = [f"images (it is study '{previous['study_id']}', these images make study '{study_id}')"]
    if differ:
        raise TloraBenchError(f"'{out}' already holds a study ({', '.join(existing[:3])}) with other "
                              f"{', '.join(differ)}; {fix}")


def make_study(images_dir: str | Path, pairs: Sequence[tuple[str, str]], n: int, raters: int, seed: int,
               out: Path, manifest: Manifest, data_dir: str | Path | None = None,
               image_size: int = 512) -> list[Path]:
    """Write rater-01.html ... and key.csv (+ study.json, the settings) into `out`; return the forms."""
    if raters < 1:
        raise TloraBenchError(f"--raters must be at least 1, got {raters}")
    check_seed(seed, "--seed")
    if image_size < MIN_IMAGE_SIZE:
        raise TloraBenchError(f"--image-size must be at least {MIN_IMAGE_SIZE} px, got {image_size}")
    images_dir = images_folder(images_dir)
    settings = {"images_dir": str(images_dir), "pairs": [f"{a}:{b}" for a, b in pairs], "n": n, "raters": raters,
                "seed": seed, "manifest": manifest.name, "image_size": image_size, "display_token": DISPLAY_TOKEN}
    trials = draw_trials(images_dir, pairs, n, seed, manifest)
    # User manifests hold absolute concept folders; only the bundled one needs a data folder (as in cli.py).
    chosen = [manifest.get(c) for c in sorted({t.concept for t in trials})]
    needs_root = any(not Path(c.folder or c.id).is_absolute() for c in chosen)
    root = resolve_data_root(data_dir, manifest.name) if needs_root else None
    references: dict[str, str] = {}
    reference_files: dict[str, Path] = {}
    for concept in (c.id for c in chosen):
        path = manifest.get(concept).train_image_path(root)
        if not path.is_file():
            raise TloraBenchError(f"training image of concept '{concept}' not found at '{path}'; "
                                  "pass --data-dir or set TLORA_BENCH_DATA")
        references[concept], reference_files[concept] = encode_image(path, image_size), path
    # Encode every generated image once: raters share them, and re-encoding drops any metadata (PNG text
    # chunks may hold the method or the adapter path) before it reaches a form.
    generated = {f: encode_image(images_dir / f, image_size) for t in trials for f in (t.file_a, t.file_b)}
    trials = identify(trials, study_digest(settings, trials, images_dir, reference_files))  # images all readable
    study_id = trials[0].study_id
    _refuse_another_study(out, settings, study_id)
    out.mkdir(parents=True, exist_ok=True)
    write_key(out / KEY_FILE, trials)
    atomic_write_text(out / SETTINGS_FILE,
                      json.dumps({"study_id": study_id, **settings, "trials": len(trials)}, indent=2) + "\n")
    forms = []
    for rater in range(1, raters + 1):
        rater_id = f"rater-{rater:02d}"
        rows = []
        for t in rater_order(trials, rater, seed):
            file_left, file_right = (t.file_a, t.file_b) if t.left == t.method_a else (t.file_b, t.file_a)
            rows.append(FormTrial(trial_id=t.trial_id, concept=t.concept, prompt=t.prompt,
                                  reference=references[t.concept], left=generated[file_left],
                                  right=generated[file_right]))
        path = out / f"{rater_id}.html"
        atomic_write_text(path, render_form(rater_id, study_id, rows))
        forms.append(path)
    return forms
