"""(IA)^3 on the attention projections: the input features of each adapted Linear are scaled by a learned
vector l (ones at init), W' x = W (l * x) + b, so the merged weight is W diag(l) (Liu et al. 2022)."""

from dataclasses import dataclass

import torch
from torch import nn

from tlora_bench import AdapterConfig, AdapterLayer, MethodSpec


@dataclass(frozen=True)
class IA3Config(AdapterConfig):
    pass  # the target modules and the seed are all (IA)^3 takes: one vector per layer, no size


class IA3Linear(AdapterLayer):
    def __init__(self, base_layer: nn.Linear, config: IA3Config, name: str, *, state=None, init: bool = True,
                 dtype: torch.dtype = torch.float32):
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        weight = base_layer.weight
        self.scale = nn.Parameter(torch.ones(weight.shape[1], device=weight.device, dtype=dtype))

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x * self.scale.to(x.dtype))

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        return self.base_layer.weight * self.scale.to(self.base_layer.weight.dtype)


METHOD = MethodSpec(name="ia3", summary="(IA)^3: W' = W diag(l), l learned (example plugin)", config_cls=IA3Config,
                    layer=IA3Linear, family="scaling", steps=500, lr=1e-3, weight_decay=0.0)
