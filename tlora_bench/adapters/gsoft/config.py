"""GSOFT's hyperparameters, the block rule of a layer and its registration (the formulas: `layer.py`;
docs/decisions.md section 2). No torch."""

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
