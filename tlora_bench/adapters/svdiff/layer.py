"""SVDiff: spectral shifts of every Linear, Conv and norm layer (Han et al. 2023; docs/decisions.md section 2).

    W   = U · diag(σ) · Vᵀ                       thin SVD of the frozen weight, once, at attach (fp32)
    W_δ = U · diag(ReLU(σ + δ)) · Vᵀ             δ trainable, zeros at init
        = W + U · diag(ReLU(σ + δ) − σ) · Vᵀ     the form computed: exactly W at init, in any dtype

Conv weights are flattened to (out, in·kh·kw). A norm layer's weight w, seen as a 1 x C matrix, has the one
singular value ‖w‖, so it gets one scalar shift: W_δ = w · ReLU(‖w‖ + δ) / ‖w‖.

Files: by default an adapter file holds δ and σ only (7 MB for SD-XL, SVDiff's "compact parameter space");
U and Vᵀ are recomputed from the frozen base weight on load, and the file's σ must match the recomputed one,
so an adapter never loads onto another base model. U·diag(·)·Vᵀ does not depend on the sign convention of
the SVD, so a reload equals the trained adapter up to floating-point rounding of the SVD (bit for bit on the
same device and software). `save_factors=True` stores U and Vᵀ too (13.7 GiB for SD-XL) for a reload that
is bit-exact anywhere.
A forward pass builds W_δ once (one fused addmm) and calls the base op with it: W_δ is the one extra
weight-sized tensor per layer, kept by autograd for the backward pass in training and freed at once in
inference. `memory_footprint` sizes all of this from layer shapes alone (meta device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tlora_bench.adapters.layer import AdapterLayer, layer_shape, layer_table
from tlora_bench.adapters.svdiff.config import SVDiffConfig, spectral_kind, spectral_targets
from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError


class SVDiffLayer(AdapterLayer):
    """One spectral shift per singular value of a Linear/Conv weight, or one scalar for a norm layer."""

    def __init__(self, base_layer: nn.Module, config: SVDiffConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        self.kind = spectral_kind(layer_shape(name, base_layer))
        if self.kind is None:
            raise TloraBenchError(f"layer '{name}' is a {type(base_layer).__name__}; svdiff adapts Linear, Conv "
                                  "and affine GroupNorm/LayerNorm layers")
        weight = base_layer.weight
        device = weight.device
        rows, cols = (1, weight.numel()) if self.kind == "norm" else (weight.shape[0], weight[0].numel())
        rank = min(rows, cols)
        self.delta = nn.Parameter(torch.zeros(rank, device=device, dtype=dtype))  # δ
        self.register_buffer("S", torch.empty(rank, device=device, dtype=dtype))  # σ (‖w‖ for a norm)
        if self.kind == "matrix":  # a norm's U is [1] and its Vᵀ is w/‖w‖: nothing to store
            persistent = config.save_factors
            self.register_buffer("U", torch.empty(rows, rank, device=device, dtype=dtype), persistent=persistent)
            self.register_buffer("Vh", torch.empty(rank, cols, device=device, dtype=dtype), persistent=persistent)
        # A load fills only saved tensors: unsaved factors are recomputed now, even when init=False.
        if (init or not config.save_factors) and device.type != "meta":
            self._init_svd()

    @torch.no_grad()
    def _init_svd(self) -> None:
        weight = self.base_layer.weight.detach().float()  # fp32 SVD, on the layer's device
        if self.kind == "norm":
            self.S.copy_(torch.linalg.vector_norm(weight).reshape(1))
            return
        u, s, vh = torch.linalg.svd(weight.reshape(weight.shape[0], -1), full_matrices=False)
        self.U.copy_(u)
        self.S.copy_(s)
        self.Vh.copy_(vh)

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Check the file's σ against this base weight's before trusting recomputed U and Vᵀ."""
        if not self.config.save_factors and "S" in tensors and tensors["S"].shape == self.S.shape:
            saved, here = tensors["S"].double(), self.S.double()
            gap = float(((saved - here).abs() / here.abs().max().clamp_min(1e-30)).max())
            if gap > 1e-4:
                raise TloraBenchError(f"layer '{self.name}': the adapter's singular values differ from this base "
                                      f"weight's (relative gap {gap:.1e}); it was trained on another base model")
        super().load_adapter_tensors(tensors)

    def spectral_weight(self) -> torch.Tensor:
        """W_δ in the base weight's shape and dtype; one new weight-sized tensor (the fused addmm's output)."""
        weight = self.base_layer.weight
        shifted = F.relu(self.S + self.delta)
        if self.kind == "norm":
            factor = shifted / self.S.clamp_min(torch.finfo(self.S.dtype).tiny)  # ReLU(‖w‖ + δ) / ‖w‖
            return (weight.to(factor.dtype) * factor).to(weight.dtype)
        # W + U·diag(ReLU(σ + δ) − σ)·Vᵀ: zero update at δ = 0, so W_δ is exactly W at init. Autograd keeps
        # only U and Vᵀ (buffers) for δ's gradient, not the (rows x rank) product U·diag(..).
        flat = weight.reshape(weight.shape[0], -1).to(self.U.dtype)
        return torch.addmm(flat, self.U * (shifted - self.S), self.Vh).reshape(weight.shape).to(weight.dtype)

    def forward_with_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if isinstance(base, nn.Linear):
            return F.linear(x, weight, base.bias)
        if isinstance(base, nn.GroupNorm):
            return F.group_norm(x, base.num_groups, weight, base.bias, base.eps)
        if isinstance(base, nn.LayerNorm):
            return F.layer_norm(x, base.normalized_shape, weight, base.bias, base.eps)
        return base._conv_forward(x, weight, base.bias)  # Conv1d/2d/3d, with their padding mode

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_weight(x, self.spectral_weight())

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        return self.spectral_weight()

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Norm shifts train with `norm_lr` (1e-6), every other shift with `lr` (1e-3): docs/decisions.md section 2."""
        if self.kind == "norm":
            return [{"params": [self.delta], "lr": self.config.norm_lr, "weight_decay": weight_decay,
                     "name": "svdiff norm shifts"}]
        return [{"params": [self.delta], "lr": lr, "weight_decay": weight_decay, "name": "svdiff spectral shifts"}]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind}, shifts={self.delta.numel()}"


@dataclass(frozen=True)
class MemoryFootprint:
    """Element counts of SVDiff on one model, from layer shapes (works on the meta device)."""

    layers: int  # Linear and Conv layers (each holds U, σ, Vᵀ)
    norm_layers: int  # norm layers (each holds σ = ‖w‖)
    weights: int  # elements of the adapted layers' base weights
    factors: int  # elements of the frozen U, σ, Vᵀ of all layers
    shifts: int  # trainable δ
    largest_weight: int  # the one transient W_δ of an inference pass, at most

    def gib(self, elements: int, bytes_per_element: int = 4) -> float:
        return elements * bytes_per_element / 2**30


def memory_footprint(model: nn.Module) -> MemoryFootprint:
    """Size SVDiff's tensors for `model` before attaching it: one SVD triplet per layer, from shapes only.

    In training, every layer's W_δ stays alive until the backward pass (autograd keeps it to compute the
    input's gradient), so the forward pass holds `weights` extra elements at its end; in inference one
    W_δ at a time (`largest_weight`).
    """
    layers = norms = weights = factors = shifts = largest = 0
    for layer in spectral_targets(layer_table(model), SVDiffConfig(method="svdiff")):
        numel = math.prod(layer.shape)
        weights, largest = weights + numel, max(largest, numel)
        if spectral_kind(layer) == "norm":
            norms, factors, shifts = norms + 1, factors + 1, shifts + 1
            continue
        rows, cols = layer.shape[0], numel // layer.shape[0]
        rank = min(rows, cols)
        layers, factors, shifts = layers + 1, factors + rank * (rows + cols + 1), shifts + rank
    return MemoryFootprint(layers, norms, weights, factors, shifts, largest)
