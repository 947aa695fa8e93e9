"""Win-rate statistics: Wilson score interval, exact binomial test, Bradley-Terry strengths and their ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
# Gamma-prior strength of the MAP Bradley-Terry fit: a method that won every comparison would have an
# infinite maximum-likelihood strength; this keeps strengths (and bootstrap replicates) finite.
BT_ALPHA = 1.0
# Log-strengths closer than this are a tie: far below any difference a study can resolve (a win probability of
# 0.50000025), far above the fits' convergence error (1e-8), so identical win records always share a rank.
STRENGTH_TIE_TOL = 1e-6


def wilson_interval(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; sound at small n and at 0 or n wins, unlike the normal one."""
    if n <= 0:
        return (math.nan, math.nan)
    p = wins / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 or n wins the bound is exactly 0 or 1; rounding would leave it 1e-17 off, on the wrong side of the rate.
    low = 0.0 if wins == 0 else max(0.0, centre - half)
    high = 1.0 if wins == n else min(1.0, centre + half)
    return (low, high)


def binomial_p(wins: int, n: int) -> float:
    """Two-sided exact binomial test of 'no preference' (p = 0.5)."""
    if n <= 0:
        return math.nan
    from scipy.stats import binomtest  # imported here: scipy is slow to import and only analysis needs it

    return float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def win_matrix(n_items: int, comparisons: Sequence[tuple[int, int]]) -> np.ndarray:
    """W[i, j] = how often item i beat item j."""
    matrix = np.zeros((n_items, n_items))
    for winner, loser in comparisons:
        matrix[winner, loser] += 1
    return matrix


def mm_fit(wins: np.ndarray, alpha: float = BT_ALPHA, max_iter: int = 10_000, tol: float = 1e-8) -> np.ndarray:
    """Hunter's (2004) MM algorithm on a win matrix, with choix's Gamma prior (same fixed point as
    choix.mm_pairwise) but vectorised over the matrix, so thousands of bootstrap fits take a second."""
    n_items = wins.shape[0]
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    params = np.zeros(n_items)
    for _ in range(max_iter):
        weights = np.exp(params - params.mean())
        weights *= n_items / weights.sum()
        denoms = (games / (weights[:, None] + weights[None, :])).sum(axis=1)
        new = np.log((total_wins + alpha) / (denoms + alpha))
        new -= new.mean()
        if np.abs(new - params).sum() < tol:
            return new
        params = new
    raise RuntimeError(f"Bradley-Terry MM fit did not converge after {max_iter} iterations")


def bradley_terry(n_items: int, comparisons: Sequence[tuple[int, int]], alpha: float = BT_ALPHA,
                  use_choix: bool = True) -> tuple[np.ndarray, str]:
    """Log-strengths (mean 0) from (winner, loser) index pairs, and the name of the fitter that ran.

    choix is used when installed (a maintained implementation); otherwise the built-in MM, same estimator.
    """
    if use_choix:
        try:
            import choix
        except ImportError:
            pass
        else:
            params = choix.mm_pairwise(n_items, list(comparisons), alpha=alpha, max_iter=10_000, tol=1e-8)
            return np.asarray(params, dtype=float), "choix.mm_pairwise"
    return mm_fit(win_matrix(n_items, comparisons), alpha), "mm"


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per-column percentile bootstrap interval of a (replicates, items) array."""
    tail = (1 - level) / 2 * 100
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def competition_ranks(values: np.ndarray, tol: float = STRENGTH_TIE_TOL) -> np.ndarray:
    """Rank 1 for the largest value; values within `tol` share a rank and the next one skips ("1, 1, 3").

    A rank is one plus the number of values clearly above, so an argsort's arbitrary order among equal
    strengths never ranks one of two identical win records above the other.
    """
    values = np.asarray(values, dtype=float)
    return 1 + (values[None, :] > values[:, None] + tol).sum(axis=1)
