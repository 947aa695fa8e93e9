"""The report's figures, each saved as PNG, SVG and PDF; a figure whose data the folder lacks is skipped (None).

matplotlib's object API (Figure, no pyplot): no global backend state, nothing opens a window. Every figure gives
a method the same colour, and lists methods in the leaderboard's row order (docs/report.md, "Figures").
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, ScalarFormatter

from tlora_bench.adapters.registry import low_rank_methods
from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes
from tlora_bench.metrics.registry import Metric, get_metric
from tlora_bench.report.inputs import JobInfo, RunFolder
from tlora_bench.report.paper import method_key, paper_tables
from tlora_bench.report.pareto import FRONTIERS, Frontier, on_front, staircase

# The figures plot the headline image metric against the headline text metric (docs/evaluation.md); their
# labels and the paper's columns come from the metric registry.
IMAGE_METRIC, TEXT_METRIC = "is_masked", "ts"
FORMATS = ("png", "svg", "pdf")
# tab10, then tab20's light shades: 20 distinct colours before any repeats, fixed here so that the rcParams of
# whoever imports this cannot change a method's colour.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")
LOSS_SMOOTHING = 25  # logged losses per moving-average window of the loss plot (docs/report.md, "Figures")
CELL_DECIMALS = (2, 5)  # the fewest and most decimals of a heat-map cell
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per method family in the rank plot
NEUTRAL = "0.35"  # lines that belong to no one method: a method family, the paper's curve, a frontier


def _headline() -> tuple[Metric, Metric]:
    return get_metric(IMAGE_METRIC), get_metric(TEXT_METRIC)


def _paper_column(metric: Metric) -> str:
    return metric.paper.column if metric.paper is not None else metric.name


def method_colors(order: Iterable[str]) -> dict[str, str]:
    """Each method label its palette colour, assigned in `order` (the leaderboard's rows); every figure asks
    this, so a method keeps its colour across figures. Past the palette's end the colours repeat."""
    labels = dict.fromkeys(str(label) for label in order)
    return {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(labels)}


def _colors(order: Sequence[str] | None, shown: Iterable[str]) -> dict[str, str]:
    # Labels outside the leaderboard (a job it does not list) go after it, so they cannot shift anyone's colour.
    return method_colors([*(order or ()), *(str(label) for label in shown)])


def _ranked(labels: Iterable[str], order: Sequence[str] | None) -> list[str]:
    """`labels` (deduplicated) in leaderboard order, unknown ones after it in their own order."""
    position = {label: index for index, label in enumerate(dict.fromkeys(str(label) for label in order or ()))}
    unique = list(dict.fromkeys(str(label) for label in labels))
    return sorted(unique, key=lambda label: position.get(label, len(position)))  # stable: unknown keep theirs


def save(figure: Figure, folder: Path, name: str) -> Path:
    """Write name.png, name.svg and name.pdf (each atomically); return the PNG."""
    if figure.get_layout_engine() is None:  # tight_layout would replace (with a warning) a figure's own engine
        figure.tight_layout()
    for suffix in FORMATS:
        buffer = io.BytesIO()
        # No dates in the vector files: the same figure makes the same bytes, run after run.
        metadata = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[suffix]
        figure.savefig(buffer, format=suffix, dpi=110, metadata=metadata)
        atomic_write_bytes(folder / f"{name}.{suffix}", buffer.getvalue())
    return folder / f"{name}.png"


def interval_errors(board: pd.DataFrame, metric: str) -> np.ndarray:
    """(2, n) distances from the mean to the interval's ends (0 where an end is missing)."""
    mean = board[f"{metric}_mean"].to_numpy(float)
    errors = np.abs(np.vstack([mean - board[f"{metric}_ci_low"].to_numpy(float),
                               board[f"{metric}_ci_high"].to_numpy(float) - mean]))
    return np.nan_to_num(errors)


def is_vs_ts(board: pd.DataFrame, order: Sequence[str] | None = None) -> Figure | None:
    """Masked CLIP-IS against TS per method with 95% intervals; the paper's point for each matched method."""
    image, text = _headline()
    board = board.dropna(subset=[f"{image.name}_mean", f"{text.name}_mean"])
    if board.empty:
        return None
    colors = _colors(order if order is not None else board["method_label"], board["method_label"])
    figure = Figure(figsize=(6.5, 5))
    axes = figure.add_subplot()
    for _, row in board.iterrows():
        label = str(row["method_label"])
        one = board.loc[[row.name]]
        axes.errorbar(one[f"{text.name}_mean"], one[f"{image.name}_mean"], xerr=interval_errors(one, text.name),
                      yerr=interval_errors(one, image.name), fmt="o", color=colors[label], capsize=3, label=label)
        if pd.notna(row["paper_table"]):
            axes.scatter([row[f"paper_{_paper_column(text)}"]], [row[f"paper_{_paper_column(image)}"]], marker="*",
                         s=120, color=colors[label], edgecolor="black", label=f"{label} (paper, {row['paper_table']})")
    axes.set(xlabel=f"{text.label} (text similarity, headline)", ylabel=image.label, title="IS against TS")
    axes.legend(fontsize=7)
    return figure


def _rank_axis(axes: Axes, ranks: Iterable[float]) -> None:
    """A log axis ticked at the ranks shown when there are several (ranks double: 4, 8, ..., 64); a linear one
    around the single rank otherwise, where a log axis would have one unlabelled tick."""
    shown = sorted({float(r) for r in ranks if np.isfinite(r)})
    if len(shown) > 1:
        axes.set_xscale("log", base=2)
        axes.xaxis.set_minor_locator(NullLocator())
    elif shown:
        margin = max(1.0, shown[0] / 2)
        axes.set_xlim(shown[0] - margin, shown[0] + margin)
    axes.xaxis.set_major_locator(FixedLocator(shown))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("rank r")


def _family_of(board: pd.DataFrame) -> pd.Series:
    return pd.Series([method_key(str(row["method"])).name for _, row in board.iterrows()], index=board.index)


def _draw_ours(axes: Axes, metric: Metric, group: pd.DataFrame, colors: dict[str, str], marker: str) -> None:
    """One family: a neutral line through its ranks, each rank's point and interval in its method's colour."""
    ranks = group["rank"].to_numpy(float)
    axes.plot(ranks, group[f"{metric.name}_mean"].to_numpy(float), color=NEUTRAL, linewidth=1, zorder=1)
    errors = interval_errors(group, metric.name)
    for index, (_, row) in enumerate(group.iterrows()):
        axes.errorbar([ranks[index]], [row[f"{metric.name}_mean"]], yerr=errors[:, [index]], fmt=marker,
                      color=colors[str(row["method_label"])], capsize=3, label=str(row["method_label"]), zorder=2)


def _draw_paper(axes: Axes, metric: Metric, ours: pd.DataFrame, group: pd.DataFrame,
                colors: dict[str, str]) -> None:
    """The paper's values of one family, dashed; a star at a rank we ran takes that method's colour."""
    ranks, values = ours["rank_or_config"].astype(float).to_numpy(), ours[_paper_column(metric)].to_numpy(float)
    axes.plot(ranks, values, linestyle="--", color=NEUTRAL, linewidth=1, zorder=1)
    ran = {float(row["rank"]): colors[str(row["method_label"])] for _, row in group.iterrows()}
    axes.scatter(ranks, values, marker="*", s=70, color=[ran.get(r, NEUTRAL) for r in ranks], edgecolor="black",
                 linewidth=0.5, zorder=3)


def _rank_legend(figure: Figure, axes: Axes, families: list[str], with_paper: bool) -> None:
    handles = axes.get_legend_handles_labels()[0]
    handles += [Line2D([], [], color=NEUTRAL, marker=_MARKERS[i % len(_MARKERS)], label=f"{family} (ours)")
                for i, family in enumerate(families)]
    if with_paper:
        handles.append(Line2D([], [], color=NEUTRAL, linestyle="--", marker="*", markeredgecolor="black",
                              label="paper (Table 1)"))
    figure.legend(handles=handles, loc="outside right upper", fontsize=7)



def by_rank(board: pd.DataFrame, model: str | None, order: Sequence[str] | None = None) -> Figure | None:
    """IS and TS against rank r for rank-sized methods (paper Table 1), the paper's values dashed."""
    board = board.dropna(subset=["rank"])
    if board.empty:
        return None
    labels = _ranked(board["method_label"], order)
    colors = _colors(order if order is not None else labels, labels)
    board = board.assign(rank=board["rank"].astype(float), family=_family_of(board),
                         position=[labels.index(str(label)) for label in board["method_label"]])
    families = list(dict.fromkeys(board.sort_values("position")["family"]))
    paper = paper_tables()
    paper = paper[(paper["table"] == "table1") & (paper["model"] == (model or ""))]
    figure = Figure(figsize=(11, 4), layout="constrained")
    panels = tuple(zip(figure.subplots(1, 2), _headline(), strict=True))
    shown: list[float] = []
    for index, family in enumerate(families):
        group = board[board["family"] == family].sort_values("rank")
        ours = paper[paper["method"] == family]
        for axes, metric in panels:
            _draw_ours(axes, metric, group, colors, _MARKERS[index % len(_MARKERS)])
            if len(ours):
                _draw_paper(axes, metric, ours, group, colors)
        shown += [*group["rank"], *ours["rank_or_config"].astype(float)]
    for axes, metric in panels:
        _rank_axis(axes, shown)
        axes.set(ylabel=metric.label, title=f"{metric.label} by rank")
    _rank_legend(figure, panels[0][0], families, with_paper=any((paper["method"] == f).any() for f in families))
    return figure


def cell_decimals(values: np.ndarray, least: int = CELL_DECIMALS[0], most: int = CELL_DECIMALS[1]) -> int:
    """The fewest decimals, from `least` up to `most`, at which values that differ (at `most` decimals) still
    read differently."""
    known = np.asarray(values, float)
    known = known[np.isfinite(known)]
    distinct = len({f"{value:.{most}f}" for value in known})
    return next(d for d in range(least, most + 1) if len({f"{value:.{d}f}" for value in known}) == distinct)


def text_color(background: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with an RGB(A) background (WCAG relative luminance: 0.179 is
    where the two contrast ratios are equal)."""
    channels = np.asarray(background[:3], float)
    linear = np.where(channels <= 0.04045, channels / 12.92, ((channels + 0.055) / 1.055) ** 2.4)
    return "black" if float(linear @ [0.2126, 0.7152, 0.0722]) > 0.179 else "white"


def _concept_tables(concepts: pd.DataFrame, names: list[str], order: Sequence[str] | None) -> list[pd.DataFrame]:
    tables = [concepts.assign(method_label=concepts["method_label"].astype(str))
              .pivot_table(index="method_label", columns="concept", values=name, aggfunc="mean") for name in names]
    rows = _ranked(tables[0].index, order)
    return [table.reindex(rows) for table in tables]


def _label_rows(axes: Axes, labels: list[str], colors: dict[str, str]) -> None:
    """Row labels on a swatch of the method's colour, the text in black or white for contrast."""
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    for tick, label in zip(axes.get_yticklabels(), labels, strict=True):
        tick.set_bbox({"facecolor": colors[label], "edgecolor": "none", "boxstyle": "round,pad=0.2"})
        tick.set_color(text_color(to_rgb(colors[label])))


def _write_cells(axes: Axes, image: AxesImage, values: np.ndarray) -> None:
    decimals = cell_decimals(values)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            axes.text(j, i, f"{value:.{decimals}f}", ha="center", va="center", fontsize=6,
                      color=text_color(image.cmap(image.norm(value))))


def heat_map(concepts: pd.DataFrame, order: Sequence[str] | None = None) -> Figure | None:
    """Method x concept: TS and masked CLIP-IS, one panel each, rows in leaderboard order, values in the cells."""
    shown = [get_metric(TEXT_METRIC), get_metric(IMAGE_METRIC)]
    if concepts.empty or not {m.name for m in shown} <= set(concepts.columns):
        return None
    # A metric with no value at all (TS of a run with only the base prompt) gets no panel.
    titles = {m.name: m.label for m in shown if concepts[m.name].notna().any()}
    if not titles:
        return None
    tables = _concept_tables(concepts, list(titles), order)
    labels = [str(label) for label in tables[0].index]
    colors = _colors(order if order is not None else labels, labels)
    rows, columns = tables[0].shape
    figure = Figure(figsize=(min(4 + 0.9 * columns, 30) * len(titles), 1.5 + 0.45 * rows))
    for axes, table, title in zip(np.atleast_1d(figure.subplots(1, len(titles))), tables, titles.values(),
                                  strict=True):
        values = table.to_numpy(float)
        image = axes.imshow(values, aspect="auto", cmap="viridis")
        axes.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=60, ha="right", fontsize=7)
        _label_rows(axes, labels, colors)
        if table.size <= 400:  # beyond that the text would be unreadably small
            _write_cells(axes, image, values)
        axes.set_title(title)
        figure.colorbar(image, ax=axes)
    return figure


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over the last `window` values (fewer at the start), as long as `values`;
    window <= 1 returns them as they are."""
    values = np.asarray(values, float)
    if window <= 1 or not len(values):
        return values.copy()
    # Averaging the deviations from the first value keeps a constant series exactly constant (no rounding).
    sums = np.concatenate([[0.0], np.cumsum(values - values[0])])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return values[0] + (sums[ends] - sums[starts]) / (ends - starts)


def _losses(job: JobInfo) -> list[tuple[int, float]]:
    points = []
    for line in job.train_log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            point = (int(entry["step"]), float(entry["loss"]))
        except (ValueError, KeyError, TypeError):
            continue
        if math.isfinite(point[1]):  # a NaN loss (a failed job) would blank a whole smoothing window
            points.append(point)
    return points


def loss_curves(jobs: list[JobInfo], order: Sequence[str] | None = None,
                smoothing: int = LOSS_SMOOTHING) -> Figure | None:
    """Training loss per step, one line per job in its method's colour, one legend entry per method; with
    smoothing > 1 the moving average over that many logged losses, the raw losses faint behind it."""
    logged = [job for job in jobs if job.train_log.is_file()]
    if not logged:
        return None
    labels = _ranked((job.image_label for job in logged), order)
    colors = _colors(order if order is not None else labels, labels)
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    seen: set[str] = set()
    for job in sorted(logged, key=lambda job: labels.index(job.image_label)):
        points = _losses(job)
        if not points:
            continue
        steps, losses = (np.asarray(part) for part in zip(*points, strict=True))
        color, label = colors[job.image_label], job.image_label
        if smoothing > 1:
            axes.plot(steps, losses, color=color, alpha=0.15, linewidth=0.6)
        axes.plot(steps, smooth(losses, smoothing), color=color, alpha=0.8, linewidth=1.2,
                  label=None if label in seen else label)
        seen.add(label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    title = f"Training loss (moving average over {smoothing} logged steps)" if smoothing > 1 else "Training loss"
    axes.set(xlabel="step", ylabel="loss", title=title)
    axes.legend(fontsize=7)
    return figure


def _adapter_bars(adapters: list[JobInfo], energy: float,
                  on_problem: Callable[[str], None]) -> list[tuple[JobInfo, float, int]] | None:
    """(job, mean effective rank, r) per readable adapter; None when torch is missing."""
    try:
        from tlora_bench.adapters.rank_analysis import adapter_ranks
    except ImportError as e:
        on_problem(f"effective-rank plot skipped: {e}")
        return None
    bars = []
    for job in adapters:
        try:
            rows = adapter_ranks(job.adapter, energy)
        except Exception as e:  # an unreadable adapter costs this one bar, not the report
            on_problem(f"effective rank of '{job.adapter}' skipped: {e}")
            continue
        if rows:
            bars.append((job, float(np.mean([row.effective_rank for row in rows])), rows[0].rank))
    return bars


def effective_ranks(jobs: list[JobInfo], energy: float = 0.95,
                    on_problem: Callable[[str], None] = lambda message: None,
                    order: Sequence[str] | None = None) -> Figure | None:
    """Mean effective rank of B over layers per adapter (paper Figure 4), beside r, in its method's colour;
    needs torch, lazily."""
    adapters = [job for job in jobs if job.adapter.is_file()
                and method_key(job.method or job.label, job.identity).name in low_rank_methods()]
    bars = _adapter_bars(adapters, energy, on_problem) if adapters else None
    if not bars:
        return None
    labels = _ranked((job.image_label for job, _, _ in bars), order)
    colors = _colors(order if order is not None else labels, labels)
    bars.sort(key=lambda bar: labels.index(bar[0].image_label))  # stable: concepts and seeds keep their order
    figure = Figure(figsize=(max(6, 0.35 * len(bars) + 2), 4))
    axes = figure.add_subplot()
    positions = range(len(bars))
    axes.bar(positions, [r for _, _, r in bars], color="lightgrey", label="r")
    seen: set[str] = set()
    for position, (job, mean, _) in zip(positions, bars, strict=True):
        axes.bar([position], [mean], color=colors[job.image_label], width=0.6,
                 label=None if job.image_label in seen else job.image_label)
        seen.add(job.image_label)
    axes.set_xticks(positions, [f"{job.image_label}/{job.concept}/s{job.seed}" for job, _, _ in bars], rotation=60,
                    ha="right", fontsize=7)
    axes.set(ylabel=f"rank (bars: mean effective rank at {energy:.0%} energy)", title="Effective rank of B per adapter")
    axes.legend(fontsize=7)
    return figure


def _axis_title(column: str, higher: bool) -> str:
    """A leaderboard column as an axis title: a metric's label, else the column's words; and its direction."""
    name = column.replace("_", " ")
    if column.endswith("_mean"):
        with contextlib.suppress(TloraBenchError):  # a column no registered metric names keeps its words
            name = get_metric(column.removesuffix("_mean")).label
    return f"{name}, {'higher' if higher else 'lower'} is better"


def _interval(board: pd.DataFrame, column: str) -> np.ndarray | None:
    """(2, n) error bars of a `<metric>_mean` column whose interval the board has; None for others (costs)."""
    stem = column.removesuffix("_mean")
    if column == stem or not {f"{stem}_ci_low", f"{stem}_ci_high"} <= set(board.columns):
        return None
    return interval_errors(board, stem)


def _log_worthy(values: np.ndarray) -> bool:
    """A positive count spanning more than a decade (trainable parameters: SVDiff's thousands beside LoRA's
    millions) reads on a log axis; on a linear one the small ones pile up at zero."""
    values = values[np.isfinite(values)]
    return bool(len(values)) and bool((values > 0).all()) and float(values.max() / values.min()) > 10


def _frontier_points(board: pd.DataFrame, frontier: Frontier) -> tuple[np.ndarray, np.ndarray] | None:
    if frontier.x not in board or frontier.y not in board:
        return None
    x = pd.to_numeric(board[frontier.x], errors="coerce").to_numpy(float)
    y = pd.to_numeric(board[frontier.y], errors="coerce").to_numpy(float)
    return (x, y) if (np.isfinite(x) & np.isfinite(y)).any() else None


def label_rows(x: np.ndarray, y: np.ndarray, tolerance: float = 0.01) -> list[int]:
    """Each point's line in the stack of labels at its spot: 0 for the first point there, 1 for the next that lies
    within `tolerance` of the data's span of it on both axes (methods that scored the same), and so on."""
    def scaled(values: np.ndarray) -> np.ndarray:
        finite = values[np.isfinite(values)]
        span = float(np.ptp(finite)) if finite.size else 0.0
        return values / span if span > 0 else np.zeros_like(values)

    sx, sy = scaled(np.asarray(x, float)), scaled(np.asarray(y, float))
    return [sum(abs(sx[j] - sx[i]) <= tolerance and abs(sy[j] - sy[i]) <= tolerance for j in range(i))
            for i in range(len(sx))]


def _draw_point(axes: Axes, x: float, y: float, errors: tuple[np.ndarray | None, np.ndarray | None], label: str,
                color: str, member: bool, row: int) -> None:
    """One method: filled when on the frontier, hollow when not, its label beside it (`row` lines down when
    others' labels share its spot)."""
    axes.errorbar([x], [y], xerr=errors[0], yerr=errors[1], fmt="o", color=color, markeredgecolor=color,
                  markerfacecolor=color if member else "none", markersize=7, capsize=3, label=label, zorder=3)
    axes.annotate(label, (x, y), xytext=(5, 4 - 9 * row), textcoords="offset points", fontsize=7, color=color)


def pareto_plot(board: pd.DataFrame, frontier: Frontier, order: Sequence[str] | None = None) -> Figure | None:
    """One frontier (tlora_bench.report.pareto): each method a point in its colour with its intervals, the
    members filled and joined by the staircase that bounds what they dominate; None without a point to draw."""
    points = _frontier_points(board, frontier)
    if points is None:
        return None
    x, y = points
    members = on_front(x, y, frontier.x_higher, frontier.y_higher)
    labels = [str(label) for label in board["method_label"]]
    colors = _colors(order if order is not None else labels, labels)
    xerr, yerr = _interval(board, frontier.x), _interval(board, frontier.y)
    figure = Figure(figsize=(6.5, 5))
    axes = figure.add_subplot()
    shown = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    for i, row in zip(shown, label_rows(x[shown], y[shown]), strict=True):
        errors = (None if xerr is None else xerr[:, [i]], None if yerr is None else yerr[:, [i]])
        _draw_point(axes, x[i], y[i], errors, labels[i], colors[labels[i]], bool(members[i]), row)
    line_x, line_y = staircase(x[members], y[members], frontier.x_higher, frontier.y_higher)
    (line,) = axes.plot(line_x, line_y, color=NEUTRAL, linestyle="--", linewidth=1, zorder=1,
                        label="Pareto frontier (filled: on it)")
    if xerr is None and _log_worthy(x):
        axes.set_xscale("log")
    axes.set(xlabel=_axis_title(frontier.x, frontier.x_higher), ylabel=_axis_title(frontier.y, frontier.y_higher),
             title=frontier.title or frontier.name)
    axes.legend(handles=[line], fontsize=7)  # the points carry their labels beside them
    return figure


def make_plots(run: RunFolder, board: pd.DataFrame, concepts: pd.DataFrame, folder: Path,
               on_problem: Callable[[str], None]) -> dict[str, Path]:
    """Every figure the folder has data for: name -> PNG path (an SVG and a PDF lie beside each). Every figure
    colours and orders the methods as the leaderboard's rows."""
    from tlora_bench.report.leakage import fidelity_vs_leakage  # it imports this module

    order = [str(label) for label in board["method_label"]]
    figures = {"is_vs_ts": is_vs_ts(board, order), "by_rank": by_rank(board, run.model, order),
               "heat_map": heat_map(concepts, order), "loss": loss_curves(run.jobs, order),
               "effective_rank": effective_ranks(run.jobs, on_problem=on_problem, order=order),
               **{f"pareto_{f.name}": pareto_plot(board, f, order) for f in FRONTIERS},
               "fidelity_vs_leakage": fidelity_vs_leakage(concepts, run.jobs, order)}
    return {name: save(figure, folder, name) for name, figure in figures.items() if figure is not None}
