"""The report's figures (docs/report.md, "Figures"): one colour and order per method, readable cells, PNG + SVG +
PDF, rank and step axes, loss smoothing, and the Pareto plots. Inputs are built here; nothing is trained."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from tlora_bench.layout import ADAPTER_FILE, LOG_FILE, TRAIN_DIR
from tlora_bench.report.inputs import JobInfo, RunFolder
from tlora_bench.report.pareto import FRONTIERS, on_front
from tlora_bench.report.plots import (
    by_rank,
    cell_decimals,
    effective_ranks,
    heat_map,
    is_vs_ts,
    label_rows,
    loss_curves,
    make_plots,
    method_colors,
    pareto_plot,
    save,
    smooth,
    text_color,
)

# Not alphabetical, so that a figure that sorts its own way (or colours by its own index) shows.
ORDER = ["tlora-64", "lora-4", "tlora-4", "oft-8"]
FRONTIER = {f.name: f for f in FRONTIERS}


def make_board(order: list[str] = ORDER, ranks: list[int | None] | None = None, **columns: list[float]) -> pd.DataFrame:
    """A leaderboard-shaped frame: IS, TS and DINO-IS means with intervals, ranks, a paper row for one method."""
    n = len(order)
    ranks = [64, 4, 4, None][:n] if ranks is None else ranks
    rng = np.random.default_rng(1)
    board = pd.DataFrame({"method_label": order, "method": order, "rank": pd.array(ranks, dtype="Int64")})
    for metric in ("is_masked", "ts", "dino_is_masked"):
        mean = columns.pop(metric, list(rng.uniform(0.2, 0.9, n)))
        board[f"{metric}_mean"] = mean
        board[f"{metric}_ci_low"] = np.asarray(mean) - 0.01
        board[f"{metric}_ci_high"] = np.asarray(mean) + 0.02
    board["paper_table"] = [None] * n
    board.loc[0, "paper_table"] = "table2"
    board["paper_is"], board["paper_ts"] = [0.9] + [math.nan] * (n - 1), [0.25] + [math.nan] * (n - 1)
    for name, values in columns.items():
        board[name] = values
    return board


def make_concepts(order: list[str] = ORDER) -> pd.DataFrame:
    rows = [{"method_label": label, "concept": concept, "ts": 0.2 + 0.1 * i + 0.01 * c,
             "is_masked": 0.6 + 0.05 * i + 0.01 * c} for i, label in enumerate(sorted(order))
            for c, concept in enumerate(("dog6", "teapot"))]
    return pd.DataFrame(rows)


def make_job(root: Path, label: str, concept: str = "dog6", seed: int = 0, steps: range = range(4),
             adapter: bool = False) -> JobInfo:
    folder = root / label / concept / f"seed-{seed}"
    (folder / TRAIN_DIR).mkdir(parents=True)
    (folder / TRAIN_DIR / LOG_FILE).write_text("".join(
        json.dumps({"step": s, "loss": 0.5 + 0.1 * math.sin(s + seed)}) + "\n" for s in steps))
    if adapter:
        (folder / TRAIN_DIR / ADAPTER_FILE).write_bytes(b"not read: adapter_ranks is replaced")
    return JobInfo(label, label, concept, seed, label, 1, {}, "done", folder)


@pytest.fixture
def fake_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """adapter_ranks without torch: every adapter has r = 8 and effective rank 5 in each of two layers."""
    row = types.SimpleNamespace(effective_rank=5.0, rank=8)
    module = types.ModuleType("tlora_bench.adapters.rank_analysis")
    module.adapter_ranks = lambda path, energy: [row, row]
    monkeypatch.setitem(sys.modules, "tlora_bench.adapters.rank_analysis", module)


def artist_colors(figure: Figure) -> dict[str, set[str]]:
    """label -> the colours it is drawn in: error-bar points, legend lines and bars, row-label swatches."""
    found: dict[str, set[str]] = {}

    def add(label: str, color) -> None:
        found.setdefault(label, set()).add(to_hex(color))

    legends = [*figure.legends, *(axes.get_legend() for axes in figure.axes if axes.get_legend())]
    for axes in figure.axes:
        for container in axes.containers:
            if hasattr(container, "lines") and not container.get_label().startswith("_"):
                add(container.get_label(), container.lines[0].get_color())
        for tick in axes.get_yticklabels():
            if tick.get_bbox_patch() is not None:
                add(tick.get_text(), tick.get_bbox_patch().get_facecolor())
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.texts, strict=True):
            if isinstance(handle, Line2D):
                add(text.get_text(), handle.get_color())
            elif isinstance(handle, Rectangle):
                add(text.get_text(), handle.get_facecolor())
    return found


def test_the_same_method_has_the_same_colour_in_every_figure(tmp_path: Path, fake_ranks: None) -> None:
    board = make_board(trainable_parameters=[1e6, 4e4, 5e4, 2e3])
    jobs = [make_job(tmp_path, label, concept, seed, adapter=label != "oft-8") for label in reversed(ORDER)
            for concept in ("dog6", "teapot") for seed in (0, 1)]
    figures = {"is_vs_ts": is_vs_ts(board, ORDER), "by_rank": by_rank(board, "sdxl", ORDER),
               "heat_map": heat_map(make_concepts(), ORDER), "loss": loss_curves(jobs, ORDER),
               "effective_rank": effective_ranks(jobs, order=ORDER),
               **{name: pareto_plot(board, frontier, ORDER) for name, frontier in FRONTIER.items()}}
    expected = method_colors(ORDER)
    assert len(set(expected.values())) == len(ORDER)
    for name, figure in figures.items():
        assert figure is not None, name
        colors = {label: shades for label, shades in artist_colors(figure).items() if label in expected}
        drawn = [label for label in ORDER if name != "by_rank" or label != "oft-8"]  # oft-8 has no rank
        drawn = [label for label in drawn if name != "effective_rank" or label != "oft-8"]  # nor low-rank B
        assert set(colors) == set(drawn), name
        for label, shades in colors.items():
            assert shades == {expected[label]}, (name, label, shades)
    # The paper's star beside tlora-64 takes its colour.
    stars = [c for c in figures["is_vs_ts"].axes[0].collections if c.get_label().endswith("(paper, table2)")]
    assert [to_hex(c.get_facecolor()[0]) for c in stars] == [expected["tlora-64"]]


def test_colours_follow_the_leaderboard_order_not_the_data_order() -> None:
    colors = method_colors(ORDER)
    assert list(colors) == ORDER and method_colors(["tlora-64"])["tlora-64"] == colors["tlora-64"]
    shuffled = make_board().iloc[::-1].reset_index(drop=True)
    figure = is_vs_ts(shuffled, ORDER)
    assert {label: shades.pop() for label, shades in artist_colors(figure).items() if label in colors} == colors


def test_heat_map_rows_follow_the_leaderboard_order() -> None:
    figure = heat_map(make_concepts(), ORDER)
    panels = [axes for axes in figure.axes if axes.images]  # not the colour bars
    assert len(panels) == 2
    for axes in panels:
        assert [tick.get_text() for tick in axes.get_yticklabels()] == ORDER
        # Row i holds the values of ORDER[i]: make_concepts numbered the methods alphabetically.
        ts_dog6 = axes.images[0].get_array()[:, 0]
        if axes.get_title() == "TS":
            assert list(np.round(ts_dog6, 6)) == [round(0.2 + 0.1 * sorted(ORDER).index(m), 6) for m in ORDER]


def test_distinct_values_get_distinct_cell_text_in_a_contrasting_colour() -> None:
    concepts = make_concepts()
    concepts["ts"] = [0.5012, 0.5014, 0.5012, 0.7, 0.3, 0.31, 0.9, 0.1]  # 0.5012 and 0.5014 are both 0.50
    figure = heat_map(concepts, ORDER)
    axes = next(a for a in figure.axes if a.get_title() == "TS")
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in axes.texts}
    values = axes.images[0].get_array()
    texts = {}
    for (i, j), value in np.ndenumerate(values):
        texts.setdefault(cells[i, j].get_text(), set()).add(round(float(value), 9))
        image = axes.images[0]
        assert cells[i, j].get_color() == text_color(image.cmap(image.norm(value)))
    assert all(len(same) == 1 for same in texts.values()), texts
    assert "0.5012" in texts and "0.5014" in texts
    assert cell_decimals(np.array([0.51, 0.62, np.nan])) == 2 and cell_decimals(np.array([0.1, 0.1 + 1e-12])) == 2
    assert cell_decimals(np.array([0.12341, 0.12342])) == 5
    assert cell_decimals(np.array([0.1234561, 0.1234562])) == 2  # equal within the cap: no digits spent on them
    assert text_color((0.0, 0.0, 0.0)) == "white" and text_color((1.0, 1.0, 0.0)) == "black"


def test_save_writes_png_svg_and_pdf(tmp_path: Path) -> None:
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    path = save(figure, tmp_path / "plots", "line")
    assert path == tmp_path / "plots" / "line.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (tmp_path / "plots" / "line.svg").read_bytes()
    assert (tmp_path / "plots" / "line.pdf").read_bytes().startswith(b"%PDF")
    first = (tmp_path / "plots" / "line.pdf").read_bytes()
    save(figure, tmp_path / "plots", "line")
    assert (tmp_path / "plots" / "line.pdf").read_bytes() == first  # no creation date in it


def test_one_rank_gets_a_linear_axis_several_a_log_axis_ticked_at_them() -> None:
    one = by_rank(make_board(["a-64", "b-64"], ranks=[64, 64]), model=None)
    for axes in one.axes:
        assert axes.get_xscale() == "linear" and list(axes.get_xticks()) == [64]
    several = by_rank(make_board(["lora-4", "lora-16", "lora-64"], ranks=[4, 16, 64]), model=None)
    for axes in several.axes:
        assert axes.get_xscale() == "log" and list(axes.get_xticks()) == [4, 16, 64]


def test_loss_curves_integer_steps_and_one_legend_entry_per_method(tmp_path: Path) -> None:
    jobs = [make_job(tmp_path, "lora-4", seed=0), make_job(tmp_path, "lora-4", seed=1),
            make_job(tmp_path, "tlora-64", steps=range(3))]
    figure = loss_curves(jobs, ORDER, smoothing=1)
    axes = figure.axes[0]
    ticks = axes.get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
    assert [t.get_text() for t in axes.get_legend().texts] == ["tlora-64", "lora-4"]  # leaderboard order
    assert len(axes.lines) == 3


def test_loss_smoothing_draws_the_moving_average(tmp_path: Path) -> None:
    job = make_job(tmp_path, "lora-4", steps=range(10))
    axes = loss_curves([job], smoothing=3).axes[0]
    raw, smoothed = (line.get_ydata() for line in axes.lines)
    assert np.allclose(smoothed, smooth(raw, 3)) and not np.allclose(smoothed, raw)


def test_smoothing_keeps_a_constant_constant_and_the_length() -> None:
    for constant in (0.1, 0.3, 7.0):
        assert np.array_equal(smooth([constant] * 50, 7), np.full(50, constant))
    values = np.arange(10.0)
    out = smooth(values, 4)
    assert len(out) == len(values)
    assert out[:4] == pytest.approx([0, 0.5, 1, 1.5]) and out[-1] == pytest.approx(np.mean(values[-4:]))
    assert np.array_equal(smooth(values, 1), values) and len(smooth([], 5)) == 0


def test_pareto_fills_exactly_the_front_and_the_staircase_passes_through_it_in_x_order() -> None:
    board = make_board(["a", "b", "c", "d", "e"], ranks=[None] * 5, ts=[0.30, 0.20, 0.25, 0.10, 0.28],
                       is_masked=[0.60, 0.80, 0.70, 0.75, 0.50])  # d and e are dominated (by b, by a)
    expected = on_front(board["ts_mean"], board["is_masked_mean"])
    assert list(expected) == [True, True, True, False, False]
    axes = pareto_plot(board, FRONTIER["is_ts"]).axes[0]
    filled = {c.get_label(): c.lines[0].get_markerfacecolor() != "none" for c in axes.containers}
    assert filled == dict(zip(board["method_label"], expected, strict=True))
    (line,) = [line for line in axes.lines if line.get_label().startswith("Pareto")]
    xs, ys = line.get_xdata(), line.get_ydata()
    assert list(xs[0::2]) == [0.20, 0.25, 0.30] and list(ys[0::2]) == [0.80, 0.70, 0.60]  # b, c, a
    steps = zip(xs[:-1], xs[1:], ys[:-1], ys[1:], strict=True)
    assert all(x0 == x1 or y0 == y1 for x0, x1, y0, y1 in steps)  # each segment level or upright: a staircase
    assert list(ys[1::2]) == [0.70, 0.60]  # corners under the members: the line bounds what they dominate
    assert "higher is better" in axes.get_xlabel() and "higher is better" in axes.get_ylabel()
    assert sorted(t.get_text() for t in axes.texts) == ["a", "b", "c", "d", "e"]


def test_cost_frontier_lower_is_better_log_axis_without_error_bars() -> None:
    board = make_board(["a", "b", "c"], ranks=[None] * 3, dino_is_masked=[0.5, 0.6, 0.55],
                       trainable_parameters=[1e3, 1e6, 2e6])
    axes = pareto_plot(board, FRONTIER["quality_cost"]).axes[0]
    assert axes.get_xscale() == "log" and "lower is better" in axes.get_xlabel()
    filled = {c.get_label(): c.lines[0].get_markerfacecolor() != "none" for c in axes.containers}
    assert filled == {"a": True, "b": True, "c": False}
    assert all(c.has_xerr is False and c.has_yerr for c in axes.containers)


def test_a_board_without_trainable_parameters_gets_no_cost_plot(tmp_path: Path) -> None:
    board = make_board()
    assert pareto_plot(board, FRONTIER["quality_cost"]) is None
    assert pareto_plot(board.assign(trainable_parameters=math.nan), FRONTIER["quality_cost"]) is None
    assert pareto_plot(board.assign(ts_mean=math.nan), FRONTIER["is_ts"]) is None
    run = RunFolder(tmp_path, tmp_path, pd.DataFrame())
    plots = make_plots(run, board, make_concepts(), tmp_path / "plots", on_problem=lambda message: None)
    assert {"pareto_is_ts", "pareto_dino_ts"} <= set(plots) and "pareto_quality_cost" not in plots
    assert all(path.is_file() and path.with_suffix(".pdf").is_file() for path in plots.values())


def test_labels_of_methods_that_scored_the_same_are_stacked_not_drawn_over_each_other() -> None:
    board = make_board(["a", "b", "c", "d"], ranks=[None] * 4, ts=[0.30, 0.30, 0.20, 0.30],
                       is_masked=[0.60, 0.60, 0.80, 0.6001])  # a, b and d share one spot
    assert label_rows(board["ts_mean"].to_numpy(), board["is_masked_mean"].to_numpy()) == [0, 1, 0, 2]
    figure = pareto_plot(board, FRONTIER["is_ts"])
    figure.canvas.draw()
    boxes = {t.get_text(): t.get_window_extent() for t in figure.axes[0].texts}
    assert not any(boxes[i].overlaps(boxes[j]) for i, j in (("a", "b"), ("b", "d"), ("a", "d")))
    assert label_rows(np.array([1.0, 1.0]), np.array([2.0, 2.0])) == [0, 1]  # no span: every point at one spot
