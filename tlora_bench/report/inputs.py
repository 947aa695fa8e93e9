"""Read what `tlora-bench run` or `tlora-bench evaluate` left in a folder: files only, no torch.

A run folder holds config.json, provenance.json, jobs/, images/, evaluation/, leaderboard.csv and
summary.json; a folder scored by `tlora-bench evaluate` holds only DIR/<method>/<concept>/images.jsonl and
DIR/evaluation/. Only evaluation/per_method.csv is required; everything else is read when present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tlora_bench.concepts.manifest import manifest_path_of
from tlora_bench.errors import TloraBenchError
from tlora_bench.layout import (
    ADAPTER_FILE,
    BASE_MODEL_DIR,
    CONFIG_FILE,
    DONE_FILE,
    EVALUATION_DIR,
    EVALUATION_FILE,
    FAILED_FILE,
    IMAGES_DIR,
    INDEX_FILE,
    JOB_FILE,
    JOBS_DIR,
    LEADERBOARD_FILE,
    LOG_FILE,
    PER_METHOD_FILE,
    PROVENANCE_FILE,
    REPORT_DIR,
    SCORES_FILE,
    SUMMARY_FILE,
    TRAIN_DIR,
)
from tlora_bench.metrics.registry import metric_names

SCORES_COLUMNS = ("method_label", "concept", "template", "image_index", "seed")  # what pairing matches on
PER_METHOD_COLUMNS = ("method_label", "method", "rank", "metric", "mean", "ci_low", "ci_high", "n_concepts")
_NOT_METHODS = {EVALUATION_DIR, REPORT_DIR, JOBS_DIR, BASE_MODEL_DIR}
COUNT_COLUMNS = frozenset({"rank", "mean", "ci_low", "ci_high", "n_concepts", "n_images", "n_base_images",
                           "n_ts_prompts", "concepts_scored", "concepts_planned", "failed_jobs"})


@dataclass(frozen=True)
class JobInfo:
    """One jobs/<label>/<concept>/seed-<s>/ folder."""

    label: str
    image_label: str
    concept: str
    seed: int
    method: str | None  # train.method, e.g. "lora-64"
    train_images: int | None
    identity: dict[str, Any]  # job.json `method`: name, family, size, rank, label ({} in folders from before it)
    status: str  # done, failed or unfinished
    folder: Path
    imported: str | None = None  # the adapter file it scored instead of training (job.json `import`)
    train: dict[str, Any] = field(default_factory=dict)  # job.json `train`: its TrainSpec, steps included

    @property
    def train_log(self) -> Path:
        return self.folder / TRAIN_DIR / LOG_FILE

    @property
    def adapter(self) -> Path:
        return self.folder / TRAIN_DIR / ADAPTER_FILE


@dataclass
class RunFolder:
    """Everything the report reads, each part None (or empty) when the folder does not have it."""

    root: Path
    images_dir: Path
    per_method: pd.DataFrame
    per_concept: pd.DataFrame | None = None
    per_prompt: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None  # per image (evaluation/scores.csv): the paired comparisons' input
    config: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    run_leaderboard: pd.DataFrame | None = None
    jobs: list[JobInfo] = field(default_factory=list)
    indexes: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (label, concept)
    problems: list[str] = field(default_factory=list)

    @property
    def model(self) -> str | None:
        return (self.config or {}).get("model")

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.root.name)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent; a broken one is a one-line error naming it."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TloraBenchError(f"cannot read '{path}' ({e}); restore or delete the file and run the report again") \
            from None
    if not isinstance(value, dict):
        raise TloraBenchError(f"'{path}' must hold a JSON object; restore it from the run that wrote it")
    return value


def read_csv(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TloraBenchError(f"cannot read '{path}' ({e}); re-run `tlora-bench evaluate` to write it again") \
            from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise TloraBenchError(f"'{path}' has no column '{missing[0]}'; re-run `tlora-bench evaluate` to write it "
                              "again with this version")
    _check_numeric(path, table)
    return table


def numeric_columns() -> frozenset[str]:
    """The columns that must hold numbers: counts, intervals and every registered metric's scores."""
    return COUNT_COLUMNS | set(metric_names())


def _check_numeric(path: Path, table: pd.DataFrame) -> None:
    """Scores and counts are numbers (blank allowed): a hand-edited cell is one line, not a traceback later."""
    numeric = numeric_columns()
    columns = [c for c in table.columns if c in numeric or c.endswith(("_mean", "_ci_low", "_ci_high"))]
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise TloraBenchError(f"'{path}' row {row + 2}, column '{column}': {table[column].iloc[row]!r} is not a "
                                  "number; re-run `tlora-bench evaluate` (or the run) to write it again")
        table[column] = values


def _read_jobs(root: Path, problems: list[str]) -> list[JobInfo]:
    jobs = []
    for path in sorted(root.glob(f"{JOBS_DIR}/*/*/seed-*/{JOB_FILE}")):
        try:
            job = read_json(path) or {}
        except TloraBenchError as e:
            problems.append(str(e))
            continue
        train = job.get("train") or {}
        folder = path.parent
        status = "done" if (folder / DONE_FILE).is_file() else (
            "failed" if (folder / FAILED_FILE).is_file() else "unfinished")
        label = str(job.get("label", folder.parent.parent.name))
        jobs.append(JobInfo(label=label, image_label=str(job.get("image_label") or label),
                            concept=str(job.get("concept", folder.parent.name)), seed=int(job.get("seed", 0)),
                            method=train.get("method"), train_images=train.get("train_images"),
                            identity=job.get("method") if isinstance(job.get("method"), dict) else {},
                            status=status, folder=folder,
                            imported=(job.get("import") or {}).get("file") if isinstance(job.get("import"), dict)
                            else None, train=train if isinstance(train, dict) else {}))
    return jobs


def read_index(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The lines of an images.jsonl that name a file and a template; bad lines are noted and skipped."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{path} line {number}: not valid JSON (skipped)")
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str) and isinstance(record.get("template"),
                                                                                           str):
            records.append(record)
        else:
            problems.append(f"{path} line {number}: no 'file' or 'template' (skipped)")
    return records


def _read_indexes(images_dir: Path, problems: list[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    indexes = {}
    for path in sorted(images_dir.glob(f"*/*/{INDEX_FILE}")):
        method_dir, concept_dir = path.parent.parent, path.parent
        if method_dir.name.startswith(".") or concept_dir.name.startswith(".") or method_dir.name in _NOT_METHODS:
            continue
        indexes[(method_dir.name, concept_dir.name)] = read_index(path, problems)
    return indexes


def _scoring_hint(root: Path) -> str:
    """How to write root/evaluation/: a run folder's run scores its finished jobs again when re-run."""
    if not ((root / CONFIG_FILE).is_file() and (root / IMAGES_DIR).is_dir()):
        return f"with `tlora-bench evaluate {root}` (or let `tlora-bench run` finish)"
    try:
        concepts = str((read_json(root / CONFIG_FILE) or {}).get("concepts") or "")
    except TloraBenchError:
        concepts = ""
    manifest = f" --manifest {concepts}" if manifest_path_of(concepts) else ""
    return (f"(re-run the same `tlora-bench run` command, or `tlora-bench evaluate {root / IMAGES_DIR} --out "
            f"{root / EVALUATION_DIR}{manifest}`)")


def missing_images(run: RunFolder) -> list[Path]:
    """The images the indexes list that are not there (a stat each: cheap for a run of 30,000 images)."""
    return [path for (label, concept), records in run.indexes.items()
            for path in (run.images_dir / label / concept / record["file"] for record in records)
            if not path.is_file()]


def images_problem(paths: list[Path]) -> str:
    """One line for listed images that are missing or unreadable, naming the first few."""
    paths = list(dict.fromkeys(paths))
    named = ", ".join(f"'{path}'" for path in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (f"{len(paths)} images listed in images.jsonl are missing or unreadable: {named}; re-run the run (or "
            "`tlora-bench generate`) to make them again, then score again")


def load_run(root: str | Path) -> RunFolder:
    """Read a run folder or an evaluated folder; the one-line error says what to run when it is neither."""
    root = Path(root)
    if not root.is_dir():
        raise TloraBenchError(f"folder '{root}' does not exist; pass a folder written by `tlora-bench run` or "
                              "scored by `tlora-bench evaluate`")
    evaluation_dir = root / EVALUATION_DIR
    per_method = read_csv(evaluation_dir / PER_METHOD_FILE, PER_METHOD_COLUMNS)
    if per_method is None:
        raise TloraBenchError(f"'{evaluation_dir / PER_METHOD_FILE}' not found; score the folder first "
                              f"{_scoring_hint(root)}")
    if not (evaluation_dir / EVALUATION_FILE).is_file():  # written last: without it the tables may be stale
        raise TloraBenchError(f"'{evaluation_dir}' has no {EVALUATION_FILE}: its scoring did not finish (it stopped, "
                              f"or is still running); score the folder again {_scoring_hint(root)}")
    problems: list[str] = []
    images_dir = root / IMAGES_DIR if (root / IMAGES_DIR).is_dir() else root
    leaderboard = read_csv(root / LEADERBOARD_FILE)
    return RunFolder(
        root=root, images_dir=images_dir, per_method=per_method,
        per_concept=read_csv(evaluation_dir / "per_concept.csv"),
        per_prompt=read_csv(evaluation_dir / "per_prompt.csv"),
        scores=read_csv(evaluation_dir / SCORES_FILE, SCORES_COLUMNS),
        config=read_json(root / CONFIG_FILE), provenance=read_json(root / PROVENANCE_FILE),
        evaluation=read_json(evaluation_dir / EVALUATION_FILE), summary=read_json(root / SUMMARY_FILE),
        run_leaderboard=leaderboard, jobs=_read_jobs(root, problems), indexes=_read_indexes(images_dir, problems),
        problems=problems)
