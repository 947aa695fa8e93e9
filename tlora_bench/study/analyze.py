"""Join answers with the key: win rates per pair and question, Bradley-Terry strengths across methods, and the
raters' agreement (docs/study.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tlora_bench.fileio import atomic_write_text
from tlora_bench.limits import check_bootstrap, check_seed
from tlora_bench.study.agreement import agreement, answer_category
from tlora_bench.study.answers import Answer, read_answers
from tlora_bench.study.keyfile import Trial, read_key
from tlora_bench.study.questions import QUESTIONS
from tlora_bench.study.stats import (
    binomial_p,
    bradley_terry,
    competition_ranks,
    mm_fit,
    percentile_interval,
    wilson_interval,
)

ANALYSIS_FILE = "analysis.csv"
BT_FILE = "bradley_terry.csv"
AGREEMENT_FILE = "agreement.csv"
PLOT_FILE = "win_rates.png"
ALL_PAIRS = "all"  # the agreement rows over every pair; a pair is "a:b", so it cannot be named this
NO_ANSWERS = "no answers: no interval"
ONE_CONCEPT = "one concept: the interval says nothing about concept-to-concept variation"
ONE_TRIAL = "one trial: every bootstrap replicate resamples it, so the interval is a point"


def win_rates(answers: Sequence[Answer], key: Mapping[str, Trial]) -> pd.DataFrame:
    """One row per (pair, question): the first method's wins, win rate, Wilson 95% interval, binomial p."""
    pairs = sorted({(t.pair, t.method_a, t.method_b) for t in key.values()}, key=lambda p: p[0])
    rows = []
    for pair, a, b in pairs:
        for q in QUESTIONS:
            mine = [x for x in answers if x.question == q.number and key[x.trial_id].pair == pair]
            wins = sum(key[x.trial_id].winner(x.answer) == a for x in mine)
            n = len(mine)
            low, high = wilson_interval(wins, n)
            trials = {x.trial_id for x in mine}
            rows.append({
                "pair": pair, "method_a": a, "method_b": b, "question": q.number, "question_name": q.name,
                "n": n, "wins_a": wins, "win_rate_a": wins / n if n else float("nan"), "ci_low": low,
                "ci_high": high, "p_value": binomial_p(wins, n),
                "trials": len(trials), "raters": len({x.rater for x in mine}),
                "a_left_share": (sum(key[x.trial_id].left == a for x in mine) / n) if n else float("nan"),
                **degeneracy(trials, key),
            })
    return pd.DataFrame(rows)


def degeneracy(trial_ids: set[str], key: Mapping[str, Trial], point: bool = False) -> dict[str, object]:
    """`concepts`, `interval_degenerate` and `interval_note` of an interval resting on these trials; `point`: it
    is a bootstrap over one trial in all, so every replicate is the same.

    Trials, not concepts, are what the intervals resample, so with one concept an interval only tells how much
    the answers on that concept vary.
    """
    concepts = len({key[t].concept for t in trial_ids})
    note = (NO_ANSWERS if not trial_ids else ONE_TRIAL if point else ONE_CONCEPT if concepts == 1 else "")
    return {"concepts": concepts, "interval_degenerate": bool(note), "interval_note": note}


def _units(answers: Sequence[Answer], key: Mapping[str, Trial], question: int, pair: str) -> list[dict[str, str]]:
    """The trial-question units of one question (of one pair, or of ALL_PAIRS): rater -> answer category."""
    units: dict[str, dict[str, str]] = {}
    for x in answers:
        if x.question == question and pair in (ALL_PAIRS, key[x.trial_id].pair):
            units.setdefault(x.trial_id, {})[x.rater] = answer_category(key[x.trial_id], x.answer)
    return list(units.values())


def agreement_table(answers: Sequence[Answer], key: Mapping[str, Trial]) -> pd.DataFrame:
    """Krippendorff's alpha and Fleiss' kappa per pair and question, and per question over all pairs."""
    pairs = sorted({t.pair for t in key.values()})
    rows = [{"pair": pair, "question": q.number, "question_name": q.name,
             **agreement(_units(answers, key, q.number, pair))}
            for pair in [*pairs, ALL_PAIRS] for q in QUESTIONS]
    return pd.DataFrame(rows)


def _showing(method: str, trial_ids: Sequence[str], key: Mapping[str, Trial]) -> set[str]:
    return {t for t in trial_ids if method in (key[t].method_a, key[t].method_b)}


def bradley_terry_table(answers: Sequence[Answer], key: Mapping[str, Trial], bootstrap: int = 1000,
                        seed: int = 0) -> pd.DataFrame:
    """Log-strengths (mean 0) per question with percentile intervals from resampling whole trials.

    Trials, not single answers, are resampled: the raters' answers to one trial share its images, so they
    are not independent, and resampling answers would make the intervals too narrow.
    """
    methods = sorted({m for t in key.values() for m in (t.method_a, t.method_b)})
    index = {m: i for i, m in enumerate(methods)}
    trial_ids = sorted({x.trial_id for x in answers})
    trial_row = {t: i for i, t in enumerate(trial_ids)}
    rng = np.random.default_rng(seed)
    rows = []
    for q in QUESTIONS:
        per_trial = np.zeros((len(trial_ids), len(methods), len(methods)))
        comparisons = []
        for x in answers:
            if x.question != q.number:
                continue
            trial = key[x.trial_id]
            winner, loser = index[trial.winner(x.answer)], index[trial.loser(x.answer)]
            per_trial[trial_row[x.trial_id], winner, loser] += 1
            comparisons.append((winner, loser))
        strengths, fitter = bradley_terry(len(methods), comparisons)
        # Replicates use the vectorised MM (the same estimator as choix.mm_pairwise, a test checks they agree):
        # choix loops over comparisons in Python, too slow for a thousand refits.
        counts = rng.multinomial(len(trial_ids), np.full(len(trial_ids), 1 / len(trial_ids)), size=bootstrap)
        replicates = np.array([mm_fit(np.tensordot(c, per_trial, axes=1)) for c in counts])
        low, high = percentile_interval(replicates)
        ranks = competition_ranks(strengths)  # equal strengths (identical records) share a rank
        for i, method in enumerate(methods):
            rows.append({"question": q.number, "question_name": q.name, "method": method,
                         "strength": strengths[i], "ci_low": low[i], "ci_high": high[i], "rank": int(ranks[i]),
                         "comparisons": int(per_trial[:, i, :].sum() + per_trial[:, :, i].sum()),
                         "fit": f"{fitter}; bootstrap: mm", "bootstrap": bootstrap,
                         **degeneracy(_showing(method, trial_ids, key), key, point=len(trial_ids) == 1)})
    table = pd.DataFrame(rows)
    return table.sort_values(["question", "rank", "method"], kind="stable").reset_index(drop=True)


def analyze(answer_files: Sequence[str | Path], key_path: str | Path, out: Path, bootstrap: int = 1000,
            seed: int = 0, plot: bool = True) -> dict[str, pd.DataFrame]:
    """Write analysis.csv, agreement.csv, bradley_terry.csv (more than two methods) and win_rates.png into `out`.

    Every table carries the rater agreement it rests on: per pair in analysis.csv, over all pairs in
    bradley_terry.csv (its strengths pool the pairs) and in the plot's title.
    """
    check_seed(seed, "--seed")
    key = read_key(key_path)
    check_bootstrap(bootstrap, "--bootstrap", items=len(key))  # each replicate resamples the trials
    answers = read_answers(answer_files, key)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"agreement": agreement_table(answers, key)}
    overall = tables["agreement"][tables["agreement"]["pair"] == ALL_PAIRS].drop(columns="pair")
    tables["win_rates"] = win_rates(answers, key).merge(tables["agreement"], how="left",
                                                    on=["pair", "question", "question_name"])
    atomic_write_text(out / ANALYSIS_FILE, tables["win_rates"].to_csv(index=False))
    atomic_write_text(out / AGREEMENT_FILE, tables["agreement"].to_csv(index=False))
    if len({m for t in key.values() for m in (t.method_a, t.method_b)}) > 2:
        table = bradley_terry_table(answers, key, bootstrap, seed)
        tables["bradley_terry"] = table.merge(overall, on=["question", "question_name"], how="left")
        atomic_write_text(out / BT_FILE, tables["bradley_terry"].to_csv(index=False))
    if plot:
        from tlora_bench.study.plot import plot_win_rates  # matplotlib is slow to import

        plot_win_rates(tables["win_rates"], out / PLOT_FILE, overall)
    return tables
