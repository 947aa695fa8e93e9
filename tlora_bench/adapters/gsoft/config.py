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

import dataclasses
from dataclasses import dataclass

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.oft.config import block_problem
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.errors import TloraBenchError

# Output projections: the authors' processors add their bias after the rotation and the scale (FLUX's
# to_add_out is the context stream's to_out.0).
OUTPUT_PROJECTIONS = ("to_out.0", "to_add_out")


@dataclass(frozen=True)
class GSOFTConfig(AdapterConfig):
    nblocks: int = dataclasses.field(
        default=64, metadata={"help": "blocks k per block-diagonal factor; block size b = features / k"})
    double_sided: bool = True  # also rotate the output side (G_out); the official example's choice

    def __post_init__(self) -> None:
        if not isinstance(self.nblocks, int) or self.nblocks < 1:
            raise TloraBenchError(f"GSOFT needs a positive number of blocks, got nblocks={self.nblocks!r}")
        if not isinstance(self.double_sided, bool):
            raise TloraBenchError(f"double_sided must be true or false, got {self.double_sided!r}")

    def layer_problem(self, layer: LayerShape) -> str | None:
        """Each rotated side splits into equal blocks of at least 2 (a 1x1 Cayley block is always I)."""
        sides = {"in": layer.in_features, "out": layer.out_features} if self.double_sided else \
            {"in": layer.in_features}
        return block_problem(f"gsoft-{self.nblocks}", self.nblocks, layer, sides)


register_method(MethodSpec(
    name="gsoft", summary="GSOFT: W' = diag(s)·G_out·W·G_in, G group-and-shuffle Cayley", config_cls=GSOFTConfig,
    layer="tlora_bench.adapters.gsoft.layer:GSOFTLinear", family="orthogonal", size_field="nblocks", steps=800,
    lr=1e-4, weight_decay=1e-4))  # docs/decisions.md §3
