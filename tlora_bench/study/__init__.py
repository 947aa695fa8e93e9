"""The blind pairwise user study of paper §4.5 (docs/decisions.md section 6): make rater forms, analyze answers.

`make` turns a folder of generated images into self-contained HTML forms (one per rater) and an answer key;
`analyze` joins the raters' CSVs with the key into win rates (Wilson intervals, exact binomial tests) and,
with more than two methods, Bradley-Terry strengths, and the raters' agreement (Krippendorff's alpha, Fleiss'
kappa). docs/study.md describes the workflow.
"""

from tlora_bench.study.questions import QUESTIONS

__all__ = ["QUESTIONS"]
