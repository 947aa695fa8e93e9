"""The paper's three questions, verbatim (docs/decisions.md section 6); forms and analysis share this one list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    number: int  # what the answer CSV's `question` column holds
    name: str  # the column stem of results/paper/user_study_table3.csv, so results line up with Table 3
    text: str  # shown to raters word for word: changing it changes what the study measures


QUESTIONS: tuple[Question, ...] = (
    Question(1, "concept_preservation", "Which image more accurately represents the original concept?"),
    Question(2, "text_alignment", "Which image aligns more closely with the text prompt?"),
    Question(3, "overall", "Which image overall demonstrates better alignment with the prompt and preserves the "
                           "identity of the concept?"),
)
QUESTION_NUMBERS: frozenset[int] = frozenset(q.number for q in QUESTIONS)
ANSWERS: tuple[str, str] = ("left", "right")  # no tie option, as in the paper
