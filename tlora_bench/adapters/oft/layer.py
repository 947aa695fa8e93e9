"""OFT through PEFT's own rotation module (docs/decisions.md section 2).

    W' = W · Rᵀ,   R = blockdiag(R_1 .. R_r),   R_i = (I − Q_i)(I + Q_i)⁻¹,   Q_i skew, zero at init

Decision (docs/decisions.md §2): PEFT `OFTConfig(r=N, oft_block_size=0, coft=False, use_cayley_neumann=False)` on the
same four attention linears as T-LoRA. "OFT-32" means r = 32 blocks, each of size in_features / 32. The
rotation is PEFT's `OFTRotationModule` (exact Cayley through a batched solve), wrapped in our
`AdapterLayer` so it saves, loads and merges like every other method. Current PEFT rotates the input side
(the authors pinned PEFT 0.7.0, which rotated the output side); the PEFT version is part of the config, so
every adapter file and result records which OFT it is.
"""

from __future__ import annotations

import torch
from torch import nn

from tlora_bench.adapters.layer import AdapterLayer
from tlora_bench.adapters.oft.config import OFTConfig
from tlora_bench.adapters.timestep import TimestepState


def _peft_rotation(nblocks: int, in_features: int) -> nn.Module:
    """PEFT's rotation module with the options of docs/decisions.md §2: exact Cayley, no COFT, no block sharing."""
    from peft.tuners.oft.layer import OFTRotationModule

    block = in_features // nblocks
    return OFTRotationModule(nblocks, block * (block - 1) // 2, block, in_features, coft=False, block_share=False,
                             use_cayley_neumann=False)


class OFTLinear(AdapterLayer):
    """A Linear layer whose input is rotated block-wise by PEFT's OFT rotation before the frozen weight."""

    def __init__(self, base_layer: nn.Linear, config: OFTConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32):
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        in_features = base_layer.weight.shape[1]
        device = base_layer.weight.device
        # PEFT creates its parameter on the CPU; moving it is cheap (at most r·b²/2 values) and makes meta work.
        self.oft_R = _peft_rotation(config.nblocks, in_features).to(device=device, dtype=dtype)
        if init and device.type != "meta":
            nn.init.zeros_(self.oft_R.weight)  # Q = 0: R = I, the base model exactly (PEFT's init_weights=True)

    def rotation(self) -> torch.Tensor:
        """The dense block-diagonal rotation R (in_features x in_features), as PEFT's merge builds it."""
        return self.oft_R.get_weight()

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        # PEFT's OFT Linear.forward: rotate the input in the rotation's dtype, then the frozen layer. The
        # input is flattened to rows because PEFT's module treats any 4-D input as a conv feature map.
        previous_dtype = x.dtype
        rows = x.reshape(-1, x.shape[-1]).to(self.oft_R.weight.dtype)
        rotated = self.oft_R(rows).reshape(x.shape).to(previous_dtype)
        return self.base_layer(rotated).to(previous_dtype)

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        # PEFT's merge: W' = (R Wᵀ)ᵀ = W Rᵀ.
        weight = self.base_layer.weight
        rotation = self.rotation()
        return (weight.to(rotation.dtype) @ rotation.T).to(weight.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nblocks={self.config.nblocks}, block_size={self.oft_R.block_size}"
