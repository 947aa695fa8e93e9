"""Every folder and file name of a run folder (docs/design.md, "The run folder"), and the layout of generated
images that `tlora-bench evaluate` scores, with the one writer of its index.

    DIR/<method_label>/<concept_id>/images.jsonl    one JSON object per line, one line per image
    DIR/<method_label>/<concept_id>/<files>         the images, in that folder or any sub-folder

Keys of a line: `file` (path relative to the index's folder), `template` (the prompt template with `{0}`),
`image_index` (int), all three required; `seed` (int), `method` (str, default: the <method_label> folder name),
`rank` (int or null), `prompt` (the text fed to the model, informational) and `kind` optional. `kind` is
"concept" (the default) or "drift": a drift image's `template` is a prompt naming no concept (no `{0}`), and
it is compared with the base model's image of the same prompt and seed, which live in

    DIR/_base_model/seed-<s>/images.jsonl           the base model's drift images, one folder per base seed

The sampler writes this layout and other tools can too (docs/evaluation.md, "Layout").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tlora_bench.errors import TloraBenchError, did_you_mean
from tlora_bench.fileio import atomic_write_text, read_file_bytes
from tlora_bench.prompts import PLACEHOLDER

# A run folder: config.json, provenance.json, jobs/<label>/<concept>/seed-<s>/, images/, evaluation/,
# leaderboard.csv, summary.json, report/.
CONFIG_FILE = "config.json"
PROVENANCE_FILE = "provenance.json"
LEADERBOARD_FILE = "leaderboard.csv"
SUMMARY_FILE = "summary.json"
JOBS_DIR = "jobs"
IMAGES_DIR = "images"  # the image layout below, one folder per method label
EVALUATION_DIR = "evaluation"  # `tlora-bench evaluate DIR` writes DIR/evaluation unless --out says otherwise
REPORT_DIR = "report"
# A job folder: job.json (its spec and content hash, first), train/, then done.json or failed.json (last).
JOB_FILE = "job.json"
DONE_FILE = "done.json"
FAILED_FILE = "failed.json"
TRAIN_DIR = "train"
# A training folder: train_spec.json claims it, checkpoint.pt while it runs, adapter.safetensors when finished.
ADAPTER_FILE = "adapter.safetensors"
SPEC_FILE = "train_spec.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
# An evaluation folder and a report folder.
SCORED_FILE = "scored.json"  # the digest of what the current scores were made from (a run's evaluation/)
PER_METHOD_FILE = "per_method.csv"
SCORES_FILE = "scores.csv"  # one row per scored image
COST_KEY = "cost"  # done.json's record of what the job cost; the leaderboards give each column's median
COST_COLUMNS = ("trainable_parameters", "adapter_bytes", "train_seconds_per_step", "peak_memory_bytes",
                "sample_seconds_per_image")
EVALUATION_FILE = "evaluation.json"  # written last: its presence means the evaluation finished
REPORT_PAGE = "report.html"
REPORT_MARKDOWN = "leaderboard.md"
INDEX_FILE = "images.jsonl"
BASE_MODEL_DIR = "_base_model"  # images/_base_model/seed-<s>/: the base model's drift images, shared by all methods
KINDS = ("concept", "drift")


def job_folder(label: str, concept: str, seed: int) -> PurePosixPath:
    """jobs/<label>/<concept>/seed-<s>, relative to the run folder."""
    return PurePosixPath(JOBS_DIR, label, concept, f"seed-{seed}")

_REQUIRED = ("file", "template", "image_index")
_OPTIONAL = ("seed", "method", "rank", "prompt", "kind")


@dataclass(frozen=True)
class ImageRecord:
    """One generated image as its index line describes it."""

    file: str  # relative to the folder of images.jsonl, '/'-separated
    template: str  # the prompt template with {0}, exactly as the prompt set holds it
    image_index: int
    seed: int | None = None
    method: str | None = None  # None: the <method_label> folder name
    rank: int | None = None
    prompt: str | None = None
    kind: str = "concept"  # or "drift": a prompt that names no concept (its template holds no {0})


@dataclass(frozen=True)
class IndexedFolder:
    """One DIR/<method_label>/<concept_id> folder and its parsed index."""

    method_label: str
    concept_id: str
    folder: Path
    records: tuple[ImageRecord, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_record(raw: Any, where: str) -> ImageRecord:
    """Validate one index entry; `where` names the file and line in the one-line error."""
    if not isinstance(raw, Mapping):
        raise TloraBenchError(f"{where}: each line must be a JSON object with file, template, image_index")
    for key in raw:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise TloraBenchError(f"{where}: unknown key {key!r}{did_you_mean(key, (*_REQUIRED, *_OPTIONAL))} "
                                  f"(allowed: {', '.join((*_REQUIRED, *_OPTIONAL))})")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise TloraBenchError(f"{where}: missing required key '{missing[0]}' (required: {', '.join(_REQUIRED)})")
    file, template, kind = raw["file"], raw["template"], raw.get("kind", "concept")
    if kind not in KINDS:
        raise TloraBenchError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    path = PurePosixPath(file) if isinstance(file, str) else None
    if path is None or not file or path.is_absolute() or ".." in path.parts or "\\" in file:
        raise TloraBenchError(f"{where}: 'file' must be a relative '/'-separated path inside the folder, "
                              f"got {file!r}")
    if kind == "drift" and (not isinstance(template, str) or not template.strip() or PLACEHOLDER in template):
        raise TloraBenchError(f"{where}: a drift image's 'template' must be its prompt, without {PLACEHOLDER}, "
                              f"got {template!r}")
    if kind == "concept" and (not isinstance(template, str) or template.count(PLACEHOLDER) != 1):
        raise TloraBenchError(f"{where}: 'template' must be the prompt template with {PLACEHOLDER} exactly once "
                              f"where the concept goes, got {template!r}")
    for key in ("image_index", "seed", "rank"):
        value = raw.get(key)
        if (key == "image_index" or value is not None) and not _is_int(value):
            raise TloraBenchError(f"{where}: '{key}' must be an integer, got {value!r}")
    if raw["image_index"] < 0:
        raise TloraBenchError(f"{where}: 'image_index' must be 0 or more, got {raw['image_index']}")
    for key in ("method", "prompt"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise TloraBenchError(f"{where}: '{key}' must be a string, got {raw[key]!r}")
    return ImageRecord(file=file, template=template, image_index=raw["image_index"], seed=raw.get("seed"),
                       method=raw.get("method"), rank=raw.get("rank"), prompt=raw.get("prompt"), kind=kind)


def _check_unique(records: list[ImageRecord], where: str) -> None:
    files, slots = set(), set()
    for record in records:
        slot = (record.method, record.rank, record.template, record.image_index)
        if record.file in files:
            raise TloraBenchError(f"{where}: file {record.file!r} is listed twice")
        if slot in slots:
            raise TloraBenchError(f"{where}: two images share template {record.template!r} and image_index "
                                  f"{record.image_index}; each (template, image_index) must be unique")
        files.add(record.file)
        slots.add(slot)


def write_images_index(folder: str | Path, rows: Iterable[ImageRecord | Mapping[str, Any]]) -> Path:
    """Write `folder/images.jsonl` atomically (the whole index at once), after validating every row.

    The sampler and tests use this one function, so what is written always reads back.
    """
    folder = Path(folder)
    target = folder / INDEX_FILE
    records = []
    for number, row in enumerate(rows, 1):
        raw = asdict(row) if isinstance(row, ImageRecord) else dict(row)
        records.append(_check_record(raw, f"{target} row {number}"))
    _check_unique(records, str(target))
    lines = [json.dumps({k: v for k, v in asdict(r).items()
                         if (v is not None or k == "rank") and not (k == "kind" and v == "concept")},
                        ensure_ascii=False)
             for r in records]
    atomic_write_text(target, "".join(line + "\n" for line in lines))
    return target


def read_images_index(path: str | Path) -> list[ImageRecord]:
    """Parse and validate an images.jsonl file; any problem is a one-line error naming the file and line."""
    path = Path(path)
    data = read_file_bytes(path, "a JSON-lines file, one JSON object per image")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise TloraBenchError(f"{path} line {line}: not UTF-8 text (byte {e.start}: {e.reason}); expected a "
                              "JSON-lines file, one JSON object per image") from None
    records = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise TloraBenchError(f"{path} line {number}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an integer too long, nesting too deep
            raise TloraBenchError(f"{path} line {number}: not valid JSON ({type(e).__name__}: "
                                  f"{' '.join(str(e).split())})") from None
        records.append(_check_record(raw, f"{path} line {number}"))
    if not records:
        raise TloraBenchError(f"'{path}' lists no images; write one JSON line per image (docs/evaluation.md)")
    _check_unique(records, str(path))
    return records


def find_indexed_folders(images_dir: str | Path, skip: Iterable[Path] = ()) -> list[IndexedFolder]:
    """Every DIR/<method_label>/<concept_id>/images.jsonl, sorted; hidden folders and `skip` are ignored."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise TloraBenchError(f"folder of generated images '{images_dir}' does not exist")
    skipped = {Path(p).resolve() for p in skip}
    found = []
    for index in sorted(images_dir.glob(f"*/*/{INDEX_FILE}")):
        concept_dir = index.parent
        method_dir = concept_dir.parent
        if (method_dir.name.startswith(".") or concept_dir.name.startswith(".") or method_dir.name == BASE_MODEL_DIR
                or method_dir.resolve() in skipped):
            continue
        found.append(IndexedFolder(method_label=method_dir.name, concept_id=concept_dir.name, folder=concept_dir,
                                   records=tuple(read_images_index(index))))
    if not found:
        hint = ""
        if (images_dir / INDEX_FILE).is_file():
            hint = " (this is a concept folder: pass the folder two levels up)"
        elif any(images_dir.glob(f"*/{INDEX_FILE}")):
            hint = " (this is a method folder: pass the folder one level up)"
        raise TloraBenchError(f"no '{INDEX_FILE}' found as '{images_dir}/<method>/<concept>/{INDEX_FILE}'{hint}; "
                              "see docs/evaluation.md for the layout")
    return found


def base_model_folder(images_dir: str | Path, base_seed: int) -> Path:
    """DIR/_base_model/seed-<s>: the base model's drift images for one base seed."""
    return Path(images_dir) / BASE_MODEL_DIR / f"seed-{base_seed}"


def find_base_images(images_dir: str | Path) -> dict[tuple[str, int | None], Path]:
    """The base model's drift images under DIR/_base_model/*/images.jsonl, by (prompt, seed); empty if none."""
    found: dict[tuple[str, int | None], Path] = {}
    for index in sorted((Path(images_dir) / BASE_MODEL_DIR).glob(f"*/{INDEX_FILE}")):
        for record in read_images_index(index):
            found[(record.template, record.seed)] = index.parent / record.file
    return found
