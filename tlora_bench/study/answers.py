"""Read raters' answer CSVs (as the form saves them) and check every row against the answer key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tlora_bench.errors import TloraBenchError, did_you_mean
from tlora_bench.fileio import read_csv_rows
from tlora_bench.study.keyfile import Trial, key_study_id
from tlora_bench.study.questions import ANSWERS, QUESTION_NUMBERS

COLUMNS = ("study_id", "rater", "trial_id", "question", "answer")


@dataclass(frozen=True)
class Answer:
    rater: str
    trial_id: str
    question: int
    answer: str  # "left" or "right"
    source: str  # "FILE row N", for messages


def _parse(raw: Mapping[str, str | None], where: str, key: Mapping[str, Trial]) -> Answer:
    study_id, rater, trial_id, question, answer = ((raw.get(c) or "").strip() for c in COLUMNS)
    # The study first: another study's trial ids may match this key's by chance, and its left/right would then
    # count for the wrong methods.
    if not study_id:
        raise TloraBenchError(f"{where}: empty study_id; pass the CSV a form of study '{key_study_id(key)}' saved")
    if study_id != key_study_id(key):
        raise TloraBenchError(f"{where} belongs to study '{study_id}', not to this key's study "
                              f"'{key_study_id(key)}'; analyze it with the key.csv of its own study")
    if not rater:
        raise TloraBenchError(f"{where}: empty rater")
    if trial_id not in key:
        raise TloraBenchError(f"{where}: trial id '{trial_id}' is not in the answer key of study '{study_id}'"
                              f"{did_you_mean(trial_id, key)}; was the file edited?")
    if question not in {str(n) for n in QUESTION_NUMBERS}:  # not isdigit(): '²' is a digit int() refuses
        raise TloraBenchError(f"{where}: question must be one of {sorted(QUESTION_NUMBERS)}, got {question!r}")
    if answer.lower() not in ANSWERS:
        raise TloraBenchError(f"{where}: answer must be 'left' or 'right' (no ties), got {answer!r}")
    return Answer(rater, trial_id, int(question), answer.lower(), where)


def read_answers(paths: Sequence[str | Path], key: Mapping[str, Trial]) -> list[Answer]:
    """Every answer of every file, validated; a problem is one line naming the file and 1-based data row."""
    answers: list[Answer] = []
    seen: dict[tuple[str, str, int], str] = {}  # across files: one rater must not answer a question twice
    for path in map(Path, paths):
        first_row: dict[tuple[str, str], int] = {}
        asked: dict[tuple[str, str], set[int]] = {}
        rows = read_csv_rows(path, COLUMNS, "an answer file", f"pass the CSV a form of study "
                             f"'{key_study_id(key)}' saved (columns {', '.join(COLUMNS)})")
        for number, raw in rows:
            answer = _parse(raw, f"{path} row {number}", key)
            slot = (answer.rater, answer.trial_id, answer.question)
            if slot in seen:
                raise TloraBenchError(f"{path} row {number}: rater '{answer.rater}' answered question "
                                      f"{answer.question} of trial '{answer.trial_id}' twice (first at {seen[slot]})")
            seen[slot] = answer.source
            first_row.setdefault(slot[:2], number)
            asked.setdefault(slot[:2], set()).add(answer.question)
            answers.append(answer)
        for (rater, trial_id), questions in asked.items():
            if questions != QUESTION_NUMBERS:
                lacking = ", ".join(str(q) for q in sorted(QUESTION_NUMBERS - questions))
                raise TloraBenchError(f"{path} row {first_row[(rater, trial_id)]}: rater '{rater}' answered trial "
                                      f"'{trial_id}' but not question(s) {lacking}; a trial needs all three")
        if not asked:
            raise TloraBenchError(f"answer file '{path}' holds no answers")
    return answers
