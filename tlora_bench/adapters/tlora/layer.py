"""One layer for the T-LoRA family: lora, vanilla-tlora, ortho-lora, tlora (docs/decisions.md section 1).

    lora            ΔW   = B A                          A ~ N(0, 1/r²), B = 0
    vanilla-tlora   ΔW_t = B M_t A                      as LoRA
    ortho-lora      ΔW   = B S A − B0 S0 A0             SVD init, frozen copies B0, S0, A0
    tlora           ΔW_t = B S M_t A − B0 S0 M_t A0     (paper eq. 6)

M_t keeps the first r(t) rank components. The SVD variants run one fused down/up pair of rank 2r (see
`low_rank_factors`), so the frozen branch costs no extra kernel launches; when the whole batch shares one r(t)
the pair is sliced to r(t) instead of masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tlora_bench.adapters.config import layer_seed
from tlora_bench.adapters.layer import AdapterLayer
from tlora_bench.adapters.timestep import TimestepState, rank_schedule
from tlora_bench.adapters.tlora.config import TLoRAConfig


def _svd_factors(matrix: torch.Tensor, r: int, components: str) -> tuple[torch.Tensor, ...]:
    """B0 = U[:, idx], S0 = S[idx], A0 = Vᵀ[idx, :] with correctly paired singular vectors (docs/decisions.md §1)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = s.numel()
    # middle: start = ceil((k - r) / 2), as the authors' code (docs/decisions.md §1)
    start = {"top": 0, "middle": (k - r + 1) // 2, "last": k - r}[components]
    return u[:, start:start + r], s[start:start + r], vh[start:start + r, :]


class TLoRALinear(AdapterLayer):
    """A Linear layer with a (T-)LoRA update; flags `mask` and `init` select the family member."""

    def __init__(self, base_layer: nn.Linear, config: TLoRAConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        out_features, in_features = base_layer.weight.shape
        r, device = config.r, base_layer.weight.device
        self.ortho = config.init == "svd"
        self.timestep_dependent = config.mask
        self.A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.empty(out_features, r, device=device, dtype=dtype))
        if self.ortho:
            self.S = nn.Parameter(torch.empty(r, device=device, dtype=dtype))
            self.register_buffer("A0", torch.empty_like(self.A.data))
            self.register_buffer("B0", torch.empty_like(self.B.data))
            self.register_buffer("S0", torch.empty_like(self.S.data))
        if init and device.type != "meta":
            self._init_factors()

    @torch.no_grad()
    def _init_factors(self) -> None:
        config: TLoRAConfig = self.config
        generator = torch.Generator().manual_seed(layer_seed(config.seed, self.name))
        if not self.ortho:  # LoRA init: A ~ N(0, std 1/r), B = 0 (docs/decisions.md section 1)
            self.A.copy_(torch.randn(self.A.shape, generator=generator) / config.r)
            self.B.zero_()
            return
        weight = self.base_layer.weight
        if config.svd_source == "R":  # R ~ N(0, std 1/r) of the layer's shape, from a seeded generator
            source = (torch.randn(weight.shape, generator=generator) / config.r).to(weight.device)
        else:
            source = weight.detach().float()
        b0, s0, a0 = _svd_factors(source.float(), config.r, config.svd_components)
        for trainable, frozen, value in ((self.A, self.A0, a0), (self.B, self.B0, b0), (self.S, self.S0, s0)):
            trainable.copy_(value)
            frozen.copy_(value)

    # -- forward -----------------------------------------------------------------------------------------
    def _ranks(self, batch: int) -> tuple[int, torch.Tensor | None]:
        """(rank to slice to, per-sample mask of shape (batch, rank) or None)."""
        config: TLoRAConfig = self.config
        if not config.mask:
            return config.r, None
        shared, per_sample = self.state.ranks(self.name, config.r, config.r_min, config.num_train_timesteps,
                                              config.gamma, batch)
        if shared is not None:
            return shared, None
        positions = torch.arange(config.r, device=per_sample.device)
        return config.r, (positions[None, :] < per_sample[:, None]).to(self.A.device)

    def low_rank_factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(down, up) of the update at `rank`, so that ΔW = up @ down.

        LoRA: A, B. SVD variants: B S A − B0 S0 A0 written as (B S − B0 S0) A + B0 S0 (A − A0), i.e.
        down [A; A − A0] and up [B S − B0 S0, B0 S0]. Both differences are exactly zero at init, so the
        adapted model starts exactly at the base model in any dtype, and training moves small differences
        instead of cancelling two large terms.
        """
        if not self.ortho:
            return self.A[:rank], self.B[:, :rank]
        a = self.A[:rank]
        bs, b0s0 = self.B[:, :rank] * self.S[:rank], self.B0[:, :rank] * self.S0[:rank]
        return torch.cat([a, a - self.A0[:rank]]), torch.cat([bs - b0s0, b0s0], dim=1)

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        rank, mask = self._ranks(x.shape[0])
        if self.merge_per_rank and mask is None and not torch.is_grad_enabled():
            return self.forward_with_weight(x, self._weight_at_rank(rank))
        out = self.base_layer(x)
        # Mixed precision as torch.autocast does it: fp32 factors (and their gradients and optimizer state), the
        # products in the activations' dtype; a bf16 input would otherwise make every projection's branch an
        # fp32 matmul over all tokens, many times slower on a GPU than the bf16 base layer beside it.
        down, up = (f.to(x.dtype) if x.dtype in (torch.bfloat16, torch.float16) else f
                    for f in self.low_rank_factors(rank))
        z = F.linear(x.to(down.dtype), down)
        if mask is not None:  # per-sample M_t: (batch, r), duplicated for the frozen branch
            mask = torch.cat([mask, mask], dim=1) if self.ortho else mask
            z = z * mask.view(mask.shape[0], *([1] * (z.ndim - 2)), mask.shape[1]).to(z.dtype)
        delta = F.linear(z, up)
        if self.config.scale != 1.0:
            delta = delta * self.config.scale
        return out + delta.to(out.dtype)

    # -- merge -------------------------------------------------------------------------------------------
    #: sampling: when the whole batch shares one r(t), fold ΔW at r(t) into one weight, kept until the rank
    #: changes (`set_merge_per_rank`). One matmul per projection instead of three: at SD-XL's token counts the
    #: fold costs a fraction of the low-rank branch it replaces.
    merge_per_rank: bool = False
    _rank_weight: tuple[int, torch.Tensor] | None = None

    def _weight_at_rank(self, rank: int) -> torch.Tensor:
        if self._rank_weight is None or self._rank_weight[0] != rank:
            with torch.no_grad():
                down, up = self.low_rank_factors(rank)
                weight = self.base_layer.weight
                delta = (up @ down) * self.config.scale
                self._rank_weight = (rank, (weight.to(delta.dtype) + delta).to(weight.dtype))
        return self._rank_weight[1]

    def set_merge_per_rank(self, enabled: bool) -> None:
        self.merge_per_rank, self._rank_weight = enabled, None

    def delta_weight(self, t: float | None = None) -> torch.Tensor:
        """ΔW_t, of the base weight's shape, in the adapter's dtype."""
        config: TLoRAConfig = self.config
        rank = config.r
        if config.mask:
            rank = int(rank_schedule(t, config.r, config.r_min, config.num_train_timesteps, config.gamma))
        down, up = self.low_rank_factors(rank)
        return (up @ down) * config.scale

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        weight = self.base_layer.weight
        return (weight.to(self.A.dtype) + self.delta_weight(t)).to(weight.dtype)

    def extra_repr(self) -> str:
        config: TLoRAConfig = self.config
        return f"{super().extra_repr()}, r={config.r}, r_min={config.r_min}, mask={config.mask}"
