from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.adapter_helpers import mlp, train_steps
from tlora_bench.adapters import adapter_layers, attach_adapters, make_config
from tlora_bench.adapters.io import save_adapter
from tlora_bench.adapters.rank_analysis import adapter_ranks, effective_rank
from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError


def test_effective_rank_hand_example():
    values = torch.tensor([1.0, 4.0, 2.0, 3.0])  # sorted: 4 3 2 1, cumulative share .4 .7 .9 1.0
    assert effective_rank(values, 0.95) == 4
    assert effective_rank(values, 0.90) == 3
    assert effective_rank(values, 0.40) == 1
    assert effective_rank(torch.zeros(3)) == 0
    with pytest.raises(TloraBenchError, match="energy must be in"):
        effective_rank(values, 1.5)


def _adapter_file(tmp_path: Path, label: str, rank_one: bool = False) -> Path:
    model = mlp()
    attach_adapters(model, make_config(label, target_modules=("0", "2")))
    train_steps(model, torch.randn(4, 12), torch.tensor([100.0, 300.0, 500.0, 700.0]), steps=2)
    if rank_one:  # make every B exactly rank one: one effective component
        for layer in adapter_layers(model).values():
            with torch.no_grad():
                layer.B.copy_(torch.outer(torch.arange(1.0, layer.B.shape[0] + 1), torch.ones(layer.B.shape[1])))
    return save_adapter(model, tmp_path / f"{label}.safetensors")


def test_adapter_ranks_of_a_file(tmp_path: Path):
    rows = adapter_ranks(_adapter_file(tmp_path, "lora-6", rank_one=True))
    assert [row.layer for row in rows] == ["0", "2"]
    assert all(row.rank == 6 and row.effective_rank == 1 for row in rows)
    full = adapter_ranks(_adapter_file(tmp_path, "tlora-6"))  # orthonormal-ish init: (nearly) full rank
    assert all(row.effective_rank >= 5 and len(row.singular_values) == 6 for row in full)


def test_rank_cli_prints_a_table_and_saves_a_plot(tmp_path: Path):
    path = _adapter_file(tmp_path, "ortho-lora-4")
    plot = tmp_path / "ranks.png"
    result = CliRunner().invoke(main, ["adapter", "rank", str(path), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "2 layers; mean effective rank" in result.output and plot.stat().st_size > 1000
    info = CliRunner().invoke(main, ["adapter", "info", str(path)])
    assert info.exit_code == 0 and "ortho-lora" in info.output and '"r": 4' in info.output


def test_rank_cli_errors(tmp_path: Path):
    missing = CliRunner().invoke(main, ["adapter", "rank", str(tmp_path / "none.safetensors")])
    assert missing.exit_code == 1 and "adapter file not found" in missing.stderr
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    result = CliRunner().invoke(main, ["adapter", "info", str(junk)])
    assert result.exit_code == 1 and "not a readable safetensors file" in result.stderr


def test_a_plot_we_cannot_write_is_refused_before_the_table(tmp_path: Path):
    path = _adapter_file(tmp_path, "lora-4")
    result = CliRunner().invoke(main, ["adapter", "rank", str(path), "--plot", str(tmp_path / "ranks.txt")])
    assert result.exit_code == 1 and "cannot write a '.txt' figure; name a .png, .svg or .pdf file" in result.stderr
    assert result.stdout == "" and not (tmp_path / "ranks.txt").exists()
