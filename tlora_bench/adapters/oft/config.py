"""OFT's hyperparameters (the number of blocks), the block rule of a layer and its registration (the formula:
`layer.py`; docs/decisions.md section 2). No torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib.metadata import version

from tlora_bench.adapters.config import AdapterConfig, LayerShape
from tlora_bench.adapters.registry import MethodSpec, register_method
from tlora_bench.errors import TloraBenchError

PEFT_VERSION = version("peft")


@dataclass(frozen=True)
class OFTConfig(AdapterConfig):
    nblocks: int = dataclasses.field(
        default=32, metadata={"help": "orthogonal blocks per layer (PEFT's r); block size = in_features / N"})
    peft_version: str = ""  # PEFT whose OFT computed the rotation; set by make_config, kept in adapter files

    def __post_init__(self) -> None:
        if not isinstance(self.nblocks, int) or self.nblocks < 1:
            raise TloraBenchError(f"OFT needs a positive number of blocks, got nblocks={self.nblocks!r}")

    def layer_problem(self, layer: LayerShape) -> str | None:
        """The input side splits into equal blocks of at least 2 (PEFT's rotation of in_features)."""
        return block_problem(f"oft-{self.nblocks}", self.nblocks, layer, {"in": layer.in_features})


def block_counts(features: int) -> list[int]:
    """Block counts that split `features` into equal blocks of at least 2 (a 1x1 rotation is the identity)."""
    return [n for n in range(1, features // 2 + 1) if features % n == 0]


def block_problem(label: str, nblocks: int, layer: LayerShape, sides: dict[str, int]) -> str | None:
    """Why `nblocks` does not split every side ("in", "out": its width) of `layer` into blocks of 2 or more."""
    for side, features in sides.items():
        if features % nblocks or features // nblocks < 2:
            return (f"{label} is impossible for layer '{layer.name}' ({side}_features {features}): valid block "
                    f"counts are {block_counts(features)}")
    return None


register_method(MethodSpec(
    name="oft", summary="OFT (PEFT): W' = W·Rᵀ, R block-diagonal Cayley, exact", config_cls=OFTConfig,
    layer="tlora_bench.adapters.oft.layer:OFTLinear", family="orthogonal", size_field="nblocks",
    fixed={"peft_version": PEFT_VERSION},
    steps=800, lr=1e-4, weight_decay=1e-4))  # docs/decisions.md section 3
