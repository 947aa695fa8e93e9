"""One adapted layer through LyCORIS: its network wrapper builds the algorithm's module for the base layer.

`create_lycoris` runs on a one-layer holder, so LyCORIS picks the module, its init and its arguments exactly as
for a whole model, while tlora-bench keeps its contracts: per-layer seeds, the base layer's forward and weight
untouched (the module is called, never `apply_to`-patched in), detach puts the base layer back. The tensors a
tlora-bench file holds are the module's whole state, its frozen T-LoRA copies included (LyCORIS's own save drops
them and re-derives them from the base weight on load, which a random-matrix init cannot survive).

T-LoRA's mask reaches LyCORIS the way LyCORIS asks for it (`set_timestep_mask`), from the same per-step
timestep state as tlora-bench's own layers; a batch whose samples have different r(t) runs one LyCORIS call
per rank, since LyCORIS applies one mask per call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import nn

from tlora_bench.adapters.config import layer_seed
from tlora_bench.adapters.layer import AdapterLayer
from tlora_bench.adapters.lycoris_methods.config import LycorisConfig
from tlora_bench.adapters.peft_methods.layer import Holder, seeded
from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError

MASK_GROUP = 0


@contextlib.contextmanager
def _one_layer_at_a_time() -> Iterator[None]:
    """LyCORIS is built for one network per model, here one per layer: its info lines (several per network) are
    held back, and T-LoRA's full garbage collection after each SVD init is skipped (0.3 s a layer with a model
    loaded, 27 s for the tiny model's 96 layers; it frees nothing the end of the init would not)."""
    from lycoris.modules import tlora

    logger, collector = logging.getLogger("LyCORIS"), tlora.gc
    level = logger.level
    logger.setLevel(logging.WARNING)
    tlora.gc = SimpleNamespace(collect=lambda *args: 0)
    try:
        yield
    finally:
        logger.setLevel(level)
        tlora.gc = collector


def lycoris_module(config: LycorisConfig, base_layer: nn.Module, name: str) -> nn.Module:
    """LyCORIS's module of `config.algo` for `base_layer`, as `create_lycoris` builds it."""
    from lycoris import create_lycoris

    options = dict(algo=config.algo, dropout=config.dropout, rank_dropout=config.rank_dropout,
                   module_dropout=config.module_dropout, factor=config.factor, decompose_both=config.decompose_both,
                   full_matrix=config.full_matrix, dora_wd=config.weight_decompose, use_tucker=config.use_tucker)
    if config.algo == "tlora":
        options.update(sig_type=config.sig_type, use_data_init=config.use_data_init)
    try:
        with _one_layer_at_a_time(), seeded(layer_seed(config.seed, name), base_layer.weight.device):
            network = create_lycoris(Holder(base_layer), 1.0, linear_dim=config.r, linear_alpha=config.alpha,
                                     warn_on_unmatched=False, **options)
    except (ValueError, TypeError, RuntimeError, AssertionError) as e:
        raise TloraBenchError(f"method '{config.method}' cannot adapt layer '{name}': LyCORIS says "
                              f"{' '.join(str(e).split())}") from None
    if len(network.loras) != 1:
        raise TloraBenchError(f"method '{config.method}': LyCORIS builds no '{config.algo}' module for layer '{name}' "
                              f"({type(base_layer).__name__})")
    return network.loras[0]


class LycorisLayer(AdapterLayer):
    """A base layer adapted by one LyCORIS module (`self.lyco`)."""

    def __init__(self, base_layer: nn.Module, config: LycorisConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        self.timestep_dependent = config.timestep_dependent
        self.lyco = lycoris_module(config, base_layer, name).to(base_layer.weight.device, dtype)
        self.base_layer.requires_grad_(False)

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.timestep_dependent:
            return self.lyco(x)
        config: LycorisConfig = self.config
        shared, per_sample = self.state.ranks(self.name, config.r, config.r_min, config.num_train_timesteps,
                                              config.gamma, x.shape[0])
        if shared is not None:
            return self._at_rank(x, shared)
        order = torch.argsort(per_sample, stable=True)
        ranks = per_sample[order]
        outputs = [self._at_rank(x[order[ranks == rank]], int(rank)) for rank in torch.unique(ranks)]
        return torch.cat(outputs)[torch.argsort(order)]

    def _at_rank(self, x: torch.Tensor, rank: int) -> torch.Tensor:
        from lycoris.modules.tlora import clear_timestep_mask, set_timestep_mask

        mask = torch.zeros(1, self.config.r)
        mask[:, :rank] = 1.0
        set_timestep_mask(mask, MASK_GROUP)
        try:
            return self.lyco(x)
        finally:
            clear_timestep_mask(MASK_GROUP)

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        raise TloraBenchError(f"method '{self.config.method}' is applied by LyCORIS's forward and is not merged")

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The module's whole state: what LyCORIS saves, and T-LoRA's frozen copies (base_q, base_p, base_lambda)."""
        return dict(nn.Module.state_dict(self.lyco))

    def fill_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        nn.Module.load_state_dict(self.lyco, tensors, strict=True)
