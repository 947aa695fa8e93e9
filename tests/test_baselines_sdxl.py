"""Trainable-parameter counts on the SD-XL UNet (meta device, no weights), derived by hand from layer shapes,
and the `tlora-bench methods` command that prints them.

SD-XL attention shapes (SDXL_UNET_CONFIG): transformer blocks of width 640 (down_blocks.1: 2 x 2 blocks,
up_blocks.1: 3 x 2) = 10 blocks, and of width 1280 (down_blocks.2: 2 x 10, mid: 10, up_blocks.0: 3 x 10)
= 60 blocks. Each block has attn1 (to_q, to_k, to_v, to_out.0: all d x d) and attn2 (to_q, to_out.0: d x d;
to_k, to_v: 2048 -> d, the two text encoders' 768 + 1280 features). 70 blocks x 8 = 560 linears.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tlora_bench.adapters import METHODS, attach_adapters, count_trainable, detach_adapters, make_config
from tlora_bench.adapters.svdiff.layer import memory_footprint
from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.models.sdxl import SDXL_UNET_PARAMETERS, sdxl_unet_on_meta
from tlora_bench.planner.catalog import method_rows

# LoRA r=64: a d_in -> d_out linear has 64·(d_in + d_out).
#   640 block:  attn1 4 x 64·1280 = 327,680; attn2 to_q, to_out 81,920 each; to_k, to_v 64·(2048+640) = 172,032
#               each -> 835,584 per block, x 10 = 8,355,840
#   1280 block: attn1 4 x 163,840 = 655,360; attn2 163,840 x 2 + 64·(2048+1280) = 212,992 x 2 -> 1,409,024 per
#               block, x 60 = 84,541,440
#   total 92,897,280 (docs/decisions.md section 1)
LORA_64 = 92_897_280
# Ortho-LoRA / T-LoRA r=64 add S (64 values) per linear: 560 x 64 = 35,840.
ORTHO_64 = LORA_64 + 35_840
# OFT with N blocks: N skew blocks of size b = d_in / N, each b(b-1)/2 parameters (PEFT's OFTRotationModule).
#   OFT-32: d_in 640 -> b 20: 32·190 = 6,080; 1280 -> b 40: 32·780 = 24,960; 2048 -> b 64: 32·2,016 = 64,512
#     640 block:  6 x 6,080 + 2 x 64,512 = 165,504, x 10 = 1,655,040
#     1280 block: 6 x 24,960 + 2 x 64,512 = 278,784, x 60 = 16,727,040            total 18,382,080
#   OFT-16: 640 -> b 40: 16·780 = 12,480; 1280 -> b 80: 16·3,160 = 50,560; 2048 -> b 128: 16·8,128 = 130,048
#     640 block:  6 x 12,480 + 2 x 130,048 = 334,976, x 10 = 3,349,760
#     1280 block: 6 x 50,560 + 2 x 130,048 = 563,456, x 60 = 33,807,360           total 37,157,120
OFT_32, OFT_16 = 18_382_080, 37_157_120
# GSOFT with k blocks: each side of n features has two factors of k full b x b matrices X (b = n / k), i.e.
# 2n²/k parameters; plus the scale s (d_out values).
#   GSOFT-64 (double-sided): side 640: 12,800; 1280: 51,200; 2048: 131,072
#     640 block:  6 x (12,800 + 12,800 + 640) + 2 x (131,072 + 12,800 + 640) = 157,440 + 289,024 = 446,464, x 10
#                 = 4,464,640
#     1280 block: 6 x (51,200 + 51,200 + 1,280) + 2 x (131,072 + 51,200 + 1,280) = 622,080 + 367,104 = 989,184,
#                 x 60 = 59,351,040                                                 total 63,815,680
#   GSOFT-32 (double-sided): side 640: 25,600; 1280: 102,400; 2048: 262,144
#     640 block:  6 x 51,840 + 2 x 288,384 = 887,808, x 10 = 8,878,080
#     1280 block: 6 x 206,080 + 2 x 365,824 = 1,968,128, x 60 = 118,087,680        total 126,965,760
#   GSOFT-64 single-sided (input side + scale):
#     640 block:  6 x 13,440 + 2 x 131,712 = 344,064, x 10 = 3,440,640
#     1280 block: 6 x 52,480 + 2 x 132,352 = 579,584, x 60 = 34,775,040            total 38,215,680
GSOFT_64, GSOFT_32, GSOFT_64_SINGLE = 63_815_680, 126_965_760, 38_215_680
# SVDiff: one shift per singular value, min(out, in·kh·kw), for each of the 794 Linear/Conv layers, and one
# per norm layer (46 GroupNorm + 210 LayerNorm = 256).
#   conv_in (4·9 = 36 -> 320): 36; time_embedding 320->1280, 1280->1280: 1,600; add_embedding 2816->1280,
#     1280->1280: 2,560                                                                             4,196
#   resnets (conv1, time_emb_proj, conv2, and a 1x1 shortcut when channels change): each layer's min is its
#     out channels, except the 320->640 and 640->1280 shortcuts (min = in channels).
#     down_blocks.0: 2 x 3·320 = 1,920; down_blocks.1: 3·640 + 320 = 2,240 and 1,920; down_blocks.2:
#     3·1280 + 640 = 4,480 and 3,840; mid: 2 x 3,840; up_blocks.0: 3 x 4·1280 = 15,360; up_blocks.1:
#     3 x 4·640 = 7,680; up_blocks.2: 3 x 4·320 = 3,840                                              48,960
#   transformers of width d: proj_in, proj_out: d each; per block attn1 4d, attn2 4d (to_k, to_v:
#     min(2048, d) = d), ff proj d->8d: d, ff out 4d->d: d, i.e. 10d. Width 640, 2 blocks: 14,080, x 5
#     = 70,400; width 1280, 10 blocks: 130,560, x 6 = 783,360                                        853,760
#   downsamplers 320 + 640, upsamplers 1280 + 640, conv_out (320·9 -> 4): 4                            2,884
#   shifts 4,196 + 48,960 + 853,760 + 2,884 = 909,800, plus 256 norm shifts                   total 910,056
SVDIFF = 910_056


@pytest.fixture(scope="module")
def sdxl():
    return sdxl_unet_on_meta()


def _count(model, label: str, **overrides) -> int:
    attach_adapters(model, make_config(label, **overrides), init=False)
    try:
        return count_trainable(model)
    finally:
        detach_adapters(model)


def test_meta_unet_has_the_checkpoint_shapes(sdxl):
    assert all(p.device.type == "meta" for p in sdxl.parameters())
    assert sum(p.numel() for p in sdxl.parameters()) == SDXL_UNET_PARAMETERS


@pytest.mark.parametrize("label, overrides, expected", [
    ("lora-64", {}, LORA_64),
    ("vanilla-tlora-64", {}, LORA_64),
    ("ortho-lora-64", {}, ORTHO_64),
    ("tlora-64", {}, ORTHO_64),
    ("oft-32", {}, OFT_32),
    ("oft-16", {}, OFT_16),
    ("gsoft-64", {}, GSOFT_64),
    ("gsoft-32", {}, GSOFT_32),
    ("gsoft-64", {"double_sided": False}, GSOFT_64_SINGLE),
    ("svdiff", {}, SVDIFF),
])
def test_sdxl_trainable_counts_match_the_hand_derivation(sdxl, label: str, overrides: dict, expected: int):
    assert _count(sdxl, label, **overrides) == expected


@pytest.mark.parametrize("label, expected", [("oft-32", OFT_32), ("gsoft-64", GSOFT_64), ("svdiff", SVDIFF)])
def test_default_init_also_builds_on_meta(sdxl, label: str, expected: int):
    # No init on the meta device even when one is asked for (no SVD, no zero fill): shapes only.
    attach_adapters(sdxl, make_config(label))
    try:
        assert count_trainable(sdxl) == expected
    finally:
        detach_adapters(sdxl)


def test_svdiff_memory_on_sdxl_agrees_with_reference(sdxl):
    footprint = memory_footprint(sdxl)
    assert (footprint.layers, footprint.norm_layers, footprint.shifts) == (794, 256, SVDIFF)
    # docs/decisions.md section 2: "the frozen U and Vᵀ of the 794 layers take about 13.7 GiB in fp32".
    assert round(footprint.gib(footprint.factors), 1) == 13.7
    # The adapted weights are the whole UNet but its biases, embeddings' biases and norm biases.
    assert footprint.weights < SDXL_UNET_PARAMETERS and footprint.gib(footprint.weights) > 9.5


def test_catalog_lists_every_method_with_its_defaults(sdxl):
    rows = {row.method: row for row in method_rows("sdxl", 64)}
    assert list(rows) == METHODS.names()
    expected = {"lora": ("lora-64", LORA_64, 500), "tlora": ("tlora-64", ORTHO_64, 800),
                "oft": ("oft-32", OFT_32, 800), "gsoft": ("gsoft-64", GSOFT_64, 800),
                "svdiff": ("svdiff", SVDIFF, 1600)}
    for method, (label, count, steps) in expected.items():
        assert (rows[method].label, rows[method].trainable, rows[method].steps) == (label, count, steps)
    assert (rows["svdiff"].lr, rows["svdiff"].weight_decay) == (1e-3, 0.01)
    assert (rows["oft"].lr, rows["oft"].weight_decay) == (1e-4, 1e-4)
    assert not rows["tlora"].mergeable and rows["oft"].mergeable and rows["svdiff"].size_meaning == ""


def test_catalog_on_the_tiny_unet_reports_impossible_sizes():
    rows = {row.method: row for row in method_rows("tiny", 4)}
    # The tiny UNet's attention is 64 wide: 64 blocks would be 1x1 rotations.
    assert rows["gsoft"].trainable is None and "valid block counts" in rows["gsoft"].note
    assert rows["lora"].trainable > 0 and rows["svdiff"].trainable > 0


def test_methods_command_prints_the_sdxl_counts():
    result = CliRunner().invoke(main, ["methods"], catch_exceptions=False)
    assert result.exit_code == 0
    for fragment in ("lora-64", "92,897,280", "oft-32", "18,382,080", "gsoft-64", "63,815,680", "svdiff",
                     "910,056", "on the sdxl UNet"):
        assert fragment in result.output, fragment


def test_methods_command_rejects_a_bad_rank():
    result = CliRunner().invoke(main, ["methods", "--rank", "0"])
    assert result.exit_code == 1 and result.stderr.strip() == "error: rank must be a positive integer, got 0"


@pytest.mark.parametrize("label", ["oft-7", "gsoft-7", "tlora-2000", "lora-2000", "oft-32", "gsoft-64", "svdiff"])
def test_size_check_names_the_problem_attaching_meets(label: str):
    """The size check builds one layer per shape; its verdict and message are those of attaching every layer."""
    from tlora_bench.planner.sizes import size_problem

    skeleton = sdxl_unet_on_meta()
    try:
        attach_adapters(skeleton, make_config(label), init=False)
        expected = None
    except TloraBenchError as e:
        expected = str(e)
    assert size_problem("sdxl", make_config(label)) == expected
