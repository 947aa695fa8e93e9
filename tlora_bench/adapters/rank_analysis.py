"""Effective rank of trained low-rank adapters (paper Figures 4 and 9).

For each adapted layer: the singular values of its up matrix B, and the number of them needed to reach
95% of their sum. LoRA's B matrices turn out effectively low-rank on SD-XL; Ortho-LoRA's stay full rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tlora_bench.adapters.io import read_adapter_config, read_adapter_tensors
from tlora_bench.adapters.registry import low_rank_methods
from tlora_bench.errors import TloraBenchError


@dataclass(frozen=True)
class LayerRank:
    layer: str
    rank: int  # r: the number of columns of B
    effective_rank: int  # singular values needed for `energy` of their sum
    singular_values: tuple[float, ...]  # of B, descending


def effective_rank(singular_values: torch.Tensor, energy: float = 0.95) -> int:
    """The smallest k such that the k largest singular values reach `energy` of the sum of all of them."""
    if not 0 < energy <= 1:
        raise TloraBenchError(f"energy must be in (0, 1], got {energy}")
    values = torch.sort(singular_values.double().abs(), descending=True).values
    total = values.sum()
    if total == 0:
        return 0
    cumulative = torch.cumsum(values, 0) / total
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1


def adapter_ranks(path: str | os.PathLike, energy: float = 0.95) -> list[LayerRank]:
    """Per-layer singular values and effective rank of B for an adapter file."""
    config = read_adapter_config(path)
    if config.method not in low_rank_methods():
        raise TloraBenchError(f"effective rank applies to low-rank methods ({', '.join(low_rank_methods())}), "
                              f"not '{config.method}'")
    tensors = read_adapter_tensors(path)
    rows = []
    for key in sorted(k for k in tensors if k.endswith(".B")):
        matrix = tensors[key]
        if matrix.dim() != 2 or 0 in matrix.shape or not matrix.is_floating_point():
            raise TloraBenchError(f"adapter file '{path}': tensor '{key}' must be a non-empty 2-D float matrix, "
                                  f"got {matrix.dtype} of shape {tuple(matrix.shape)}")
        if not bool(torch.isfinite(matrix).all()):
            raise TloraBenchError(f"adapter file '{path}': tensor '{key}' holds NaN or infinite values; "
                                  "its training diverged, so it has no effective rank")
        try:
            values = torch.linalg.svdvals(matrix.double())
        except RuntimeError as e:  # LinAlgError: the SVD did not converge
            raise TloraBenchError(f"adapter file '{path}': SVD of tensor '{key}' failed "
                                  f"({' '.join(str(e).split())})") from None
        rows.append(LayerRank(layer=key[:-2], rank=matrix.shape[1],
                              effective_rank=effective_rank(values, energy),
                              singular_values=tuple(values.tolist())))
    if not rows:
        raise TloraBenchError(f"adapter file '{path}' has no B matrices (no tensor named '<layer>.B'); "
                              "it is damaged or holds no adapted layer")
    return rows


def format_rank_table(rows: list[LayerRank], energy: float = 0.95) -> str:
    width = max(len(row.layer) for row in rows)
    lines = [f"{'layer':<{width}}  {'r':>4}  {f'eff. rank ({energy:.0%})':>16}  {'σ_max':>9}  {'σ_min':>9}"]
    lines += [f"{row.layer:<{width}}  {row.rank:>4}  {row.effective_rank:>16}  {row.singular_values[0]:>9.3g}  "
              f"{row.singular_values[-1]:>9.3g}" for row in rows]
    mean = sum(row.effective_rank for row in rows) / len(rows)
    lines.append(f"{len(rows)} layers; mean effective rank {mean:.1f} of r = {rows[0].rank}")
    return "\n".join(lines)


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(path: str | os.PathLike) -> None:
    """Before any work: the figure's file type is one we write, and its folder can be written."""
    from tlora_bench.fileio import check_writable

    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise TloraBenchError(f"--plot '{path}': cannot write a '{suffix or 'no suffix'}' figure; name a "
                              f"{', '.join(PLOT_SUFFIXES[:-1])} or {PLOT_SUFFIXES[-1]} file")
    check_writable(Path(path).parent, "--plot")


def plot_ranks(rows: list[LayerRank], path: str | os.PathLike, title: str = "") -> Path:
    """Left: effective rank per layer against r. Right: each layer's normalised singular values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(range(len(rows)), [row.effective_rank for row in rows], width=1.0, color="tab:blue")
    left.axhline(rows[0].rank, color="black", linestyle="--", linewidth=1, label=f"r = {rows[0].rank}")
    left.set(xlabel="adapted layer", ylabel="effective rank (95% of Σσ)", ylim=(0, rows[0].rank * 1.05))
    left.legend()
    for row in rows:
        values = torch.tensor(row.singular_values)
        right.plot(range(1, len(values) + 1), (values / values[0]).tolist(), color="tab:orange", alpha=0.15)
    right.set(xlabel="singular value index", ylabel="σ_i / σ_1 of B", yscale="log")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
