"""The T-LoRA authors' SD-XL layers and attention processor, written out from their repository
(github.com/ControlGenAI/T-LoRA, `tlora/model/lora.py` and `trainer_sdxl.py`'s `setup_model`), so the tests can
make checkpoints the way their code does and load ours into their processors. Only the forward passes, the
shapes and the state-dict layout matter here; their SVD init is reproduced too (sig_type "last")."""

from __future__ import annotations

import copy

import torch
from torch import nn


class LoRALinearLayer(nn.Module):  # their Vanilla layer: up(mask * down(x)), no scale
    def __init__(self, in_features, out_features, rank=4, training=True, sig_type=None):
        super().__init__()
        self.rank = rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        nn.init.normal_(self.down.weight, std=1 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, hidden_states, mask=None):
        orig_dtype, dtype = hidden_states.dtype, self.down.weight.dtype
        mask = torch.ones((1, self.rank)) if mask is None else mask
        down_hidden_states = self.down(hidden_states.to(dtype)) * mask.to(hidden_states.device)
        return self.up(down_hidden_states).to(orig_dtype)


class OrthogonalLoRALinearLayer(nn.Module):  # their T-LoRA layer: P diag(λ m) Q x − P0 diag(λ0 m) Q0 x
    def __init__(self, in_features, out_features, rank=4, training=True, sig_type="last"):
        super().__init__()
        self.rank = rank
        self.q_layer = nn.Linear(in_features, rank, bias=False)
        self.p_layer = nn.Linear(rank, out_features, bias=False)
        self.lambda_layer = nn.Parameter(torch.ones(1, rank))
        if training:
            base_m = torch.normal(size=(in_features, out_features), mean=0, std=1 / self.rank)
            u, s, v = torch.linalg.svd(base_m)
            self.q_layer.weight.data = u[-self.rank:].clone()
            self.p_layer.weight.data = v[:, -self.rank:].clone()
            self.lambda_layer.data = s[None, -self.rank:].clone()
        self.base_p = copy.deepcopy(self.p_layer)
        self.base_q = copy.deepcopy(self.q_layer)
        self.base_lambda = copy.deepcopy(self.lambda_layer)
        for param in self.parameters():
            param.data = param.data.contiguous()
        self.base_p.requires_grad_(False)
        self.base_q.requires_grad_(False)
        self.base_lambda.requires_grad_(False)

    def forward(self, hidden_states, mask=None):
        orig_dtype, dtype = hidden_states.dtype, self.q_layer.weight.dtype
        mask = torch.ones((1, self.rank)) if mask is None else mask
        mask = mask.to(hidden_states.device)
        q_hidden_states = self.q_layer(hidden_states.to(dtype)) * self.lambda_layer * mask
        p_hidden_states = self.p_layer(q_hidden_states)
        result = p_hidden_states - self.base_p(self.base_q(hidden_states.to(dtype)) * self.base_lambda * mask)
        return result.to(orig_dtype)


class LoRACrossAttnProcessor(nn.Module):  # theirs, for both layers: all four projections of every attention
    def __init__(self, hidden_size, lora_linear_layer=LoRALinearLayer, cross_attention_dim=None, rank=4,
                 do_training=True, sig_type="principal"):
        super().__init__()
        make = lambda i: lora_linear_layer(i, hidden_size, rank, do_training, sig_type=sig_type)  # noqa: E731
        self.to_q_lora = make(hidden_size)
        self.to_k_lora = make(cross_attention_dim or hidden_size)
        self.to_v_lora = make(cross_attention_dim or hidden_size)
        self.to_out_lora = make(hidden_size)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, scale=1.0,
                 sigma_mask=None):
        batch_size, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        query = attn.to_q(hidden_states) + scale * self.to_q_lora(hidden_states, sigma_mask)
        query = attn.head_to_batch_dim(query)
        encoder_hidden_states = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key = attn.to_k(encoder_hidden_states) + scale * self.to_k_lora(encoder_hidden_states, sigma_mask)
        value = attn.to_v(encoder_hidden_states) + scale * self.to_v_lora(encoder_hidden_states, sigma_mask)
        key, value = attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
        attention_probs = attn.get_attention_scores(query, key, attention_mask)
        hidden_states = attn.batch_to_head_dim(torch.bmm(attention_probs, value))
        hidden_states = attn.to_out[0](hidden_states) + scale * self.to_out_lora(hidden_states, sigma_mask)
        return attn.to_out[1](hidden_states)


def install_processors(unet, rank: int, ortho: bool, training: bool = True) -> dict[str, LoRACrossAttnProcessor]:
    """Their `setup_model`: one processor per attention, hidden size from the block, rank min()'d."""
    procs = {}
    channels = unet.config.block_out_channels
    for name in unet.attn_processors:
        cross = None if name.endswith("attn1.processor") else unet.config.cross_attention_dim
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        procs[name] = LoRACrossAttnProcessor(
            hidden, OrthogonalLoRALinearLayer if ortho else LoRALinearLayer, cross,
            min(cross, hidden, rank) if cross else min(hidden, rank), training, sig_type="last")
    unet.set_attn_processor(dict(procs))  # diffusers pops the entries it sets
    return procs


def processors_state_dict(procs: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """What `unet.save_attn_procs` writes: "<processor name>.<tensor>" (AttnProcsLayers' key mapping)."""
    return {f"{name}.{key}": value for name, proc in procs.items() for key, value in proc.state_dict().items()}


def load_processors_strict(procs: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    """Their inference load: AttnProcsLayers(...).load_state_dict(load_file(...)), strict."""
    for name, proc in procs.items():
        prefix = name + "."
        proc.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    unexpected = [k for k in state if not any(k.startswith(n + ".") for n in procs)]
    assert not unexpected, unexpected[:3]


def sigma_mask(t: float, max_timestep: int, max_rank: int, min_rank: int, alpha: float = 1.0) -> torch.Tensor:
    """Their `get_mask_by_timestep`."""
    r = int(((max_timestep - t) / max_timestep) ** alpha * (max_rank - min_rank)) + min_rank
    mask = torch.zeros((1, max_rank))
    mask[:, :r] = 1.0
    return mask


class FluxLoraLayers(nn.Module):
    """The layers of their `FluxLoraAttnProcessor` (flux/model/lora.py): seven Vanilla layers of inner_dim, also in
    single blocks, where `to_out_lora` and the `*_proj_lora` layers are never called."""

    NAMES = ("to_q_lora", "to_k_lora", "to_v_lora", "to_out_lora", "to_q_proj_lora", "to_k_proj_lora",
             "to_v_proj_lora")

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, LoRALinearLayer(hidden_size, hidden_size, rank))


FLUX_CALLS = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora",
              "add_q_proj": "to_q_proj_lora", "add_k_proj": "to_k_proj_lora", "add_v_proj": "to_v_proj_lora"}


def install_flux_layers(transformer, rank: int, mask_of) -> tuple[dict[str, FluxLoraLayers], list]:
    """Their processors' arithmetic on the stock attention: each projection's output gets `+ lora(x, mask)`, as
    their `__call__` adds it (`attn.to_q(h) + scale * self.to_q_lora(h, sigma_mask)`, ...). `mask_of()` gives the
    current sigma_mask. Returns the layers by processor name and the hook handles."""
    layers, handles = {}, []
    for name in transformer.attn_processors:
        procs = FluxLoraLayers(transformer.inner_dim, rank)
        layers[name] = procs
        attn = transformer.get_submodule(name.rsplit(".processor", 1)[0])
        for projection, lora in FLUX_CALLS.items():
            if not _has(attn, projection):
                continue
            hook = (lambda layer: lambda module, args, out: out + layer(args[0], mask_of()))(getattr(procs, lora))
            handles.append(attn.get_submodule(projection).register_forward_hook(hook))
    return layers, handles


def _has(module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def flux_sigma_mask(t: float, max_timestep: int, max_rank: int, min_rank: int) -> torch.Tensor:
    """Their FLUX `get_rank_by_timestep` and mask."""
    r = int((max_timestep - t) * (max_rank - min_rank) / max_timestep) + min_rank
    mask = torch.zeros((1, max_rank))
    mask[:, :r] = 1.0
    return mask
