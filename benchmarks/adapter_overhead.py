"""Forward+backward time of an SD-XL-shaped UNet: no adapter, PEFT LoRA, and every registered method.

    python benchmarks/adapter_overhead.py            # r = 64 on the CPU, ratios against PEFT LoRA
    python benchmarks/adapter_overhead.py --device cuda --dtype bf16 --width 320

All variants run in one process, round-robin (one step of each per round), so drift in machine speed hits
every variant alike; the table reports the median step time and its ratio to PEFT LoRA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from tlora_bench.adapters import DEFAULT_TARGETS, METHODS, attach_adapters, make_config, timesteps
from tlora_bench.models.tiny import TINY_UNET_CONFIG
from tlora_bench.planner.catalog import method_label

TARGETS = {"tlora": 1.25, "lora": 1.10}  # ratio targets to PEFT LoRA


def bench_unet(width: int):
    """The tiny UNet's architecture at a width where r = 64 is possible (SVD init needs r <= min(out, in))."""
    from diffusers import UNet2DConditionModel

    config = {**TINY_UNET_CONFIG, "block_out_channels": (width, 2 * width), "cross_attention_dim": 2 * width,
              "attention_head_dim": (width // 64 or 1, 2 * width // 64 or 1),
              "projection_class_embeddings_input_dim": 6 * 8 + width, "norm_num_groups": 32}
    torch.manual_seed(0)
    return UNet2DConditionModel(**config)


def bench_inputs(width: int, latent: int, device, dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(1, 4, latent, latent, generator=g).to(device, dtype),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": torch.randn(1, 77, 2 * width, generator=g).to(device, dtype),
        "added_cond_kwargs": {"text_embeds": torch.randn(1, width, generator=g).to(device, dtype),
                              "time_ids": torch.tensor([[latent * 8.0] * 2 + [0.0] * 2 + [latent * 8.0] * 2],
                                                       device=device, dtype=dtype)},
    }


def build_variants(base, rank: int, methods: list[str]) -> dict:
    from peft import LoraConfig

    variants = {"no adapter": copy.deepcopy(base).requires_grad_(False)}
    peft_model = copy.deepcopy(base).requires_grad_(False)
    peft_model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                      target_modules=list(DEFAULT_TARGETS)))
    variants["peft lora"] = peft_model
    for name in methods:
        model = copy.deepcopy(base)
        attach_adapters(model, make_config(method_label(name, rank)))
        variants[method_label(name, rank)] = model
    return variants


def step(model, inputs) -> None:
    adapted = getattr(model, "_tlora_adapter_config", None) is not None
    if not any(p.requires_grad for p in model.parameters()):
        # no trainable parameters: backpropagate to the input, the full backward any adapter pays at most
        inputs = {**inputs, "sample": inputs["sample"].detach().requires_grad_(True)}
    if adapted:
        with timesteps(model, inputs["timestep"]):
            out = model(**inputs).sample
    else:
        out = model(**inputs).sample
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    if out.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--width", type=int, default=128, help="first block width (SD-XL: 320)")
    parser.add_argument("--latent", type=int, default=32, help="latent side (SD-XL at 1024 px: 128)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]

    base = bench_unet(args.width).to(device)
    base = base if dtype == torch.float32 else base.to(dtype)
    inputs = bench_inputs(args.width, args.latent, device, dtype)
    variants = build_variants(base, args.rank, args.methods.split(","))
    # the adapters stay fp32 (the training precision); only the base runs in `dtype`
    times: dict[str, list[float]] = {name: [] for name in variants}
    for model in variants.values():  # warm-up
        for _ in range(2):
            step(model, inputs)
    for round_index in range(args.rounds):
        order = list(variants)[round_index % len(variants):] + list(variants)[:round_index % len(variants)]
        for name in order:
            start = time.perf_counter()
            step(variants[name], inputs)
            times[name].append(time.perf_counter() - start)

    reference = statistics.median(times["peft lora"])
    print(f"forward+backward, batch 1, width {args.width}, latent {args.latent}, r={args.rank}, "
          f"{args.device} {args.dtype}, {torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"{'variant':<16} {'ms':>9} {'x peft lora':>12}  target")
    for name, samples in times.items():
        median = statistics.median(samples)
        target = TARGETS.get(name.rsplit("-", 1)[0])
        verdict = "" if target is None else f"<= {target:.2f}  {'ok' if median / reference <= target else 'MISS'}"
        print(f"{name:<16} {median * 1e3:9.1f} {median / reference:12.3f}  {verdict}")


if __name__ == "__main__":
    main()
