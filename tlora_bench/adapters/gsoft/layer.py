"""GSOFT: Group-and-Shuffle orthogonal fine-tuning (Gorbunov et al. 2024; docs/decisions.md section 2).

    G    = Pᵀ · blockdiag(L_1..L_k) · P · blockdiag(R_1..R_k)      an orthogonal n x n matrix
    L_i  = (I + S)(I − S)⁻¹,  S = ½(X − Xᵀ)                         Cayley of a skew matrix; X = 0 at init
    W'   = diag(s) · W · G_in                                       single-sided
    W'   = diag(s) · G_out · W · G_in                               double-sided (default)
    b'   = diag(s) · [G_out ·] b                                    q/k/v with a bias (FLUX's)
    b'   = b                                                        an output projection (to_out.0)

The bias sits where the authors' attention processors put it, per projection (docs/decisions.md §2): q/k/v call
`attn.to_q(x)` with the bias inside, so their bias is rotated and scaled with the output,
diag(s) · G_out · (W · G_in · x + b); the output projection is `F.linear(x, W)` then the scale, with its bias
added last, unrotated: diag(s) · G_out · W · G_in · x + b. Merging folds both into the layer: weight W' and
bias b'. SD-XL's attention projections have no bias but to_out.0.
P is the perfect shuffle: view the n-vector as (b, k) and transpose, so each block of the second factor
mixes entries from different blocks of the first. s is a learnable per-output-channel scale (ones at init).
Not in PEFT: written here. Every block of a factor is processed at once (batched solve and batched
matmul over the k blocks), never in a Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tlora_bench.adapters.config import matches_target
from tlora_bench.adapters.gsoft.config import OUTPUT_PROJECTIONS, GSOFTConfig
from tlora_bench.adapters.layer import AdapterLayer
from tlora_bench.adapters.timestep import TimestepState


def cayley(x: torch.Tensor) -> torch.Tensor:
    """(I + S)(I − S)⁻¹ with S = ½(X − Xᵀ), for a batch of square blocks (k, b, b): one batched solve."""
    skew = 0.5 * (x - x.transpose(-1, -2))
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).expand_as(skew)
    # Y (I − S) = I + S. I − S is never singular (a real skew S has imaginary eigenvalues), so the error
    # check of linalg.solve, a device sync, is skipped.
    return torch.linalg.solve_ex(eye - skew, eye + skew, left=False)[0]


def _blockdiag_matmul(blocks: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """blockdiag(blocks) @ m for blocks (k, b, b) and m (k·b, cols): one batched matmul."""
    k, b, _ = blocks.shape
    return (blocks @ m.reshape(k, b, -1)).reshape(k * b, -1)


def _shuffle(m: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """P @ m (or Pᵀ @ m) on the rows of m: P views the n-vector as (b, k) and transposes it to (k, b)."""
    n = m.shape[0]
    shape = (k, n // k) if inverse else (n // k, k)
    return m.reshape(*shape, -1).transpose(0, 1).reshape(n, -1)


def gs_matmul(left: torch.Tensor, right: torch.Tensor, m: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """G @ m (or Gᵀ @ m) for G = Pᵀ · blockdiag(left) · P · blockdiag(right), both factors of Cayley blocks."""
    k = left.shape[0]
    if transpose:  # Gᵀ = Rᵀ · Pᵀ · Lᵀ · P
        m = _blockdiag_matmul(left.transpose(-1, -2), _shuffle(m, k))
        return _blockdiag_matmul(right.transpose(-1, -2), _shuffle(m, k, inverse=True))
    m = _shuffle(_blockdiag_matmul(right, m), k)
    return _shuffle(_blockdiag_matmul(left, m), k, inverse=True)


class GSOFTLinear(AdapterLayer):
    """A Linear layer with weight diag(s) · [G_out ·] W · G_in, built once per forward pass."""

    def __init__(self, base_layer: nn.Linear, config: GSOFTConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        out_features, in_features = base_layer.weight.shape
        sides = {"in": in_features, "out": out_features} if config.double_sided else {"in": in_features}
        device = base_layer.weight.device
        for side, features in sides.items():  # X of each Cayley factor, one (b x b) matrix per block
            block = features // config.nblocks
            for factor in ("L", "R"):
                self.register_parameter(f"{side}_{factor}", nn.Parameter(
                    torch.empty(config.nblocks, block, block, device=device, dtype=dtype)))
        self.scale = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        self._merged_bias: torch.Tensor | None = None  # b' while merged; not a buffer, never saved
        self.bias_outside = matches_target(name, OUTPUT_PROJECTIONS)  # b added last, unrotated, unscaled
        if init and device.type != "meta":
            self._init_identity()

    @torch.no_grad()
    def _init_identity(self) -> None:
        for name, parameter in self.named_parameters(recurse=False):
            parameter.fill_(1.0 if name == "scale" else 0.0)  # X = 0 -> every block is I; s = 1

    def cayley_factors(self) -> dict[str, torch.Tensor]:
        """The Cayley blocks of every factor ("in_L", "in_R"[, "out_L", "out_R"]). Factors with the same block
        shape share one batched solve: fewer, larger kernels (the blocks are tiny, so launches dominate)."""
        names = [name for name, _ in self.named_parameters(recurse=False) if name != "scale"]
        by_shape: dict[torch.Size, list[str]] = {}
        for name in names:
            by_shape.setdefault(getattr(self, name).shape, []).append(name)
        blocks = {}
        for group in by_shape.values():
            stacked = cayley(torch.cat([getattr(self, name) for name in group]))
            blocks.update(zip(group, stacked.chunk(len(group)), strict=True))
        return blocks

    def rotation(self, side: str = "in") -> torch.Tensor:
        """The dense orthogonal G of one side ("in" or "out"), for checks and inspection."""
        blocks = self.cayley_factors()
        left, right = blocks[f"{side}_L"], blocks[f"{side}_R"]
        eye = torch.eye(left.shape[0] * left.shape[1], dtype=left.dtype, device=left.device)
        return gs_matmul(left, right, eye)

    def _adapted(self, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W', b') in the adapter's dtype, from one evaluation of the Cayley factors; b' is None for a layer
        without a bias (or when not asked for)."""
        blocks = self.cayley_factors()
        weight = self.base_layer.weight.to(self.scale.dtype)
        # W · G_in = (G_inᵀ · Wᵀ)ᵀ: the rotation acts on the rows of Wᵀ.
        rotated = gs_matmul(blocks["in_L"], blocks["in_R"], weight.T, transpose=True).T
        base_bias = self.base_layer.bias if bias else None
        if base_bias is None or self.bias_outside:
            if self.config.double_sided:
                rotated = gs_matmul(blocks["out_L"], blocks["out_R"], rotated)
            return self.scale[:, None] * rotated, None if base_bias is None else base_bias.to(self.scale.dtype)
        inner = torch.cat([rotated, base_bias.to(self.scale.dtype)[:, None]], dim=1)  # [W G_in | b]
        if self.config.double_sided:  # one rotation of both: the bias is rotated with the weight
            inner = gs_matmul(blocks["out_L"], blocks["out_R"], inner)
        scaled = self.scale[:, None] * inner
        return scaled[:, :-1], scaled[:, -1]

    def adapted_weight(self) -> torch.Tensor:
        """diag(s) · [G_out ·] W · G_in in the adapter's dtype (paper's W', docs/decisions.md section 2)."""
        return self._adapted(bias=False)[0]

    def adapted_bias(self) -> torch.Tensor | None:
        """b' in the adapter's dtype: diag(s) · [G_out ·] b, or b itself on an output projection (the authors'
        placement); None without a bias."""
        return self._adapted()[1]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self._adapted()
        base_bias = self.base_layer.bias
        return F.linear(x, weight.to(self.base_layer.weight.dtype),
                        None if bias is None else bias.to(base_bias.dtype))

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        return self.adapted_weight().to(self.base_layer.weight.dtype)

    def merge(self, t: float | None = None) -> None:
        """Fold W' into the weight and b' into the bias (AdapterLayer keeps only a merged weight)."""
        super().merge(t)
        bias = self.base_layer.bias
        if bias is not None:
            with torch.no_grad():
                self._merged_bias = self.adapted_bias().to(bias.dtype)

    def unmerge(self) -> None:
        super().unmerge()
        self._merged_bias = None

    def forward_with_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        bias = self._merged_bias if self._merged_bias is not None else self.base_layer.bias
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        config: GSOFTConfig = self.config
        return (f"{super().extra_repr()}, nblocks={config.nblocks}, double_sided={config.double_sided}, "
                f"bias={'outside' if self.bias_outside else 'inside'}")
