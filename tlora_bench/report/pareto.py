"""Pareto frontiers of the leaderboard (docs/report.md, "Pareto view"): which methods no other beats on both axes.

Each frontier pairs two leaderboard columns with their directions. A method is on it when no other method is at
least as good on both and better on one; a method without a value on either axis is not on it. The leaderboard
marks members in one boolean column per frontier (`pareto_<name>`), and the plots draw the frontier line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Frontier:
    name: str  # the leaderboard column is pareto_<name>
    x: str  # leaderboard columns
    y: str
    x_higher: bool = True  # which way each axis is better
    y_higher: bool = True
    title: str = ""


FRONTIERS = (
    Frontier("is_ts", "ts_mean", "is_masked_mean", title="CLIP-IS (masked) against TS"),
    Frontier("dino_ts", "ts_mean", "dino_is_masked_mean", title="DINO-IS (masked) against TS"),
    Frontier("quality_cost", "trainable_parameters", "dino_is_masked_mean", x_higher=False,
             title="DINO-IS (masked) against trainable parameters"),
)


def on_front(x: np.ndarray, y: np.ndarray, x_higher: bool = True, y_higher: bool = True) -> np.ndarray:
    """(n,) booleans: the points no other point dominates (NaN points are never on the front)."""
    x = np.asarray(x, dtype=np.float64) * (1 if x_higher else -1)
    y = np.asarray(y, dtype=np.float64) * (1 if y_higher else -1)
    known = ~(np.isnan(x) | np.isnan(y))
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(known):
        others = known.copy()
        others[i] = False
        dominated = others & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front[i] = not dominated.any()
    return front


def mark_fronts(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with a pareto_<name> column per frontier whose two columns it has."""
    out = board.copy()
    for frontier in FRONTIERS:
        if frontier.x in out and frontier.y in out:
            out[f"pareto_{frontier.name}"] = on_front(pd.to_numeric(out[frontier.x], errors="coerce").to_numpy(float),
                                                      pd.to_numeric(out[frontier.y], errors="coerce").to_numpy(float),
                                                      frontier.x_higher, frontier.y_higher)
    return out


def staircase(x: np.ndarray, y: np.ndarray, x_higher: bool = True,
              y_higher: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The frontier's line through its members (x, y, NaN-free): the members sorted along x, and between each
    pair of neighbours a corner at their worse x and worse y, so the line bounds the region they dominate."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    x, y = np.asarray(x, dtype=np.float64)[order], np.asarray(y, dtype=np.float64)[order]
    if len(x) < 2:
        return x, y
    corner_x = (np.minimum if x_higher else np.maximum)(x[:-1], x[1:])
    corner_y = (np.minimum if y_higher else np.maximum)(y[:-1], y[1:])
    line_x, line_y = np.empty(2 * len(x) - 1), np.empty(2 * len(x) - 1)
    line_x[0::2], line_x[1::2], line_y[0::2], line_y[1::2] = x, corner_x, y, corner_y
    return line_x, line_y
