"""One adapted layer through PEFT: PEFT injects its tuner layer around the base layer, inits, saves and loads it.

PEFT injects into a model; here the model is a one-layer holder around the base layer, so every tlora-bench
contract holds unchanged (per-layer seeds, the base weight untouched, detach puts the base layer back) while the
tuner's forward, init and state dict are PEFT's own (`inject_adapter_in_model`, `get_peft_model_state_dict`,
`set_peft_model_state_dict`). The tensors a tlora-bench file holds for the layer are exactly the ones PEFT saves.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from tlora_bench.adapters.config import LayerShape, layer_seed
from tlora_bench.adapters.layer import AdapterLayer
from tlora_bench.adapters.peft_methods.config import PeftTunerConfig
from tlora_bench.adapters.timestep import TimestepState
from tlora_bench.errors import TloraBenchError

SLOT = "layer"  # the holder's one module: PEFT's keys for it read "layer.<tensor>"


class Holder(nn.Module):
    """A one-layer model: what PEFT and LyCORIS, which adapt models, are given to adapt one layer."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """PEFT and LyCORIS init from torch's global generator: seed it per layer, restore it afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def inject(config: PeftTunerConfig, base_layer: nn.Module, name: str) -> Holder:
    """A holder whose `layer` is PEFT's tuner layer around `base_layer`; PEFT's refusal is one line."""
    from peft import inject_adapter_in_model

    holder = Holder(base_layer)
    try:
        with seeded(layer_seed(config.seed, name), base_layer.weight.device):
            inject_adapter_in_model(config.peft_config([SLOT]), holder)
    except (ValueError, TypeError, RuntimeError) as e:
        shape = "x".join(str(n) for n in base_layer.weight.shape)
        raise TloraBenchError(f"method '{config.method}' cannot adapt layer '{name}' ({shape}): PEFT says "
                              f"{' '.join(str(e).split())}") from None
    return holder


@functools.lru_cache(maxsize=256)
def injection_problem(config: PeftTunerConfig, layer: LayerShape) -> str | None:
    """Why PEFT cannot put this tuner on a Linear of this shape (e.g. a size above its width), or None; tried on an
    CPU layer of the same shape, once per shape."""
    if layer.kind != "Linear" or layer.shape is None:
        return None
    base = nn.Linear(layer.in_features, layer.out_features, bias=False).requires_grad_(False)
    try:
        inject(config, base, layer.name)
    except TloraBenchError as e:
        return str(e)
    return None


class PeftLayer(AdapterLayer):
    """A base layer adapted by one PEFT tuner layer (`self.tuner`, whose `base_layer` is ours)."""

    def __init__(self, base_layer: nn.Module, config: PeftTunerConfig, name: str, *,
                 state: TimestepState | None = None, init: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(base_layer, config, name, state=state, init=init, dtype=dtype)
        holder = inject(config, base_layer, name)  # PEFT always inits: seeded per layer, so reloads match
        self._holder = [holder]  # a list: not a second registration of the same modules
        self.tuner = holder.layer
        with torch.no_grad():
            for parameter in self._adapter_parameters():
                parameter.data = parameter.data.to(dtype)
        self.base_layer.requires_grad_(False)

    def _adapter_parameters(self) -> list[nn.Parameter]:
        base = {id(p) for p in self.base_layer.parameters()}
        return [p for p in self.tuner.parameters() if id(p) not in base]

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tuner(x)

    def merged_weight(self, t: float | None = None) -> torch.Tensor:
        raise TloraBenchError(f"method '{self.config.method}' is applied by PEFT's forward and is not merged")

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """What PEFT saves for this layer, under PEFT's names without the adapter name ("lora_A.weight")."""
        from peft import get_peft_model_state_dict

        prefix = SLOT + "."
        return {k[len(prefix):]: v for k, v in get_peft_model_state_dict(self._holder[0]).items()}

    def fill_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self._holder[0], {f"{SLOT}.{k}": v for k, v in tensors.items()})
        if result.unexpected_keys:
            raise TloraBenchError(f"layer '{self.name}': PEFT did not take {sorted(result.unexpected_keys)[:3]}")
