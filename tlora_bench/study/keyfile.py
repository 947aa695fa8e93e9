"""The answer key (`key.csv`): one row per trial, the only file that says which method is on which side."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_text, read_csv_rows

KEY_FILE = "key.csv"


@dataclass(frozen=True)
class Trial:
    """One comparison: the same concept, template and seed from two methods, one on each side."""

    trial_id: str  # opaque: the only thing the form and the answers share with the key
    pair: str  # "method_a:method_b" as given to --pairs; win rates are those of method_a
    method_a: str
    method_b: str
    concept: str
    template: str
    prompt: str  # what the rater reads (the template with {0} -> "V* <class word>")
    image_index_a: int
    image_index_b: int
    seed_a: int | None
    seed_b: int | None
    file_a: str  # relative to the images folder: <method>/<concept>/<file>
    file_b: str
    left: str  # the method shown on the left
    right: str
    study_seed: int  # the --seed that drew this trial, its image and its sides
    study_id: str  # the study's id (docs/study.md): every form and answer file of the study carries it

    def winner(self, answer: str) -> str:
        return self.left if answer == "left" else self.right

    def loser(self, answer: str) -> str:
        return self.right if answer == "left" else self.left


COLUMNS = tuple(f.name for f in fields(Trial))
_INTS = {"image_index_a", "image_index_b", "study_seed"}
_OPTIONAL_INTS = {"seed_a", "seed_b"}


def write_key(path: Path, trials: list[Trial]) -> Path:
    lines = [",".join(COLUMNS)]
    for trial in trials:
        row = asdict(trial)
        lines.append(_csv_line([("" if row[c] is None else str(row[c])) for c in COLUMNS]))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _csv_line(values: list[str]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def read_key(path: str | Path) -> dict[str, Trial]:
    """Parse key.csv into {trial_id: Trial}, every trial of one study; a malformed key is a one-line error naming
    the file and row."""
    path = Path(path)
    trials: dict[str, Trial] = {}
    rows = read_csv_rows(path, [c for c in COLUMNS if c != "study_id"], "a study answer key",
                         "pass the key.csv written by `tlora-bench study make`")
    if rows and "study_id" not in rows[0][1]:  # the header has no such column
        raise TloraBenchError(f"answer key '{path}' has no study_id column: it was made by an older tlora-bench, "
                              "whose keys cannot tell their own study's answers from another's; remake the study "
                              "with `tlora-bench study make` and send raters its new forms")
    for number, raw in rows:
        trial = _parse_row(raw, f"{path} row {number}")
        if trial.trial_id in trials:
            raise TloraBenchError(f"{path} row {number}: trial id '{trial.trial_id}' is listed twice")
        first = next(iter(trials.values()), trial)
        if trial.study_id != first.study_id:
            raise TloraBenchError(f"{path} row {number}: study id '{trial.study_id}' differs from row 1's "
                                  f"'{first.study_id}': one key holds one study; use the key.csv `study make` wrote")
        trials[trial.trial_id] = trial
    if not trials:
        raise TloraBenchError(f"answer key '{path}' lists no trials")
    return trials


def key_study_id(key: Mapping[str, Trial]) -> str:
    """The one study id of a key read by `read_key`."""
    return next(iter(key.values())).study_id


def _parse_row(raw: dict[str, str], where: str) -> Trial:
    values: dict[str, object] = {}
    for column in COLUMNS:
        text = (raw.get(column) or "").strip()
        if column in _INTS or (column in _OPTIONAL_INTS and text):
            try:
                values[column] = int(text)
            except ValueError:
                raise TloraBenchError(f"{where}: '{column}' must be an integer, got {text!r}") from None
        elif column in _OPTIONAL_INTS:
            values[column] = None
        else:
            values[column] = text
    trial = Trial(**values)  # type: ignore[arg-type]
    if {trial.left, trial.right} != {trial.method_a, trial.method_b} or not trial.trial_id or not trial.study_id:
        raise TloraBenchError(f"{where}: left/right must be the pair's two methods, trial_id and study_id non-empty")
    return trial
