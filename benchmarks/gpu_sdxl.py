"""The real SD-XL UNet (random weights, no download) on a GPU: training step time and peak memory per method,
and sampling time per image with and without an adapter, in each precision.

    python benchmarks/gpu_sdxl.py --json sdxl.json              # cuda, bf16 and fp32, the paper's Table 2 sizes
    python benchmarks/gpu_sdxl.py --precisions bf16 --methods tlora-64 --steps 5
    python benchmarks/gpu_sdxl.py --tiny --device cpu --steps 2  # smoke check: tiny UNet, 64 px, < 1 minute

Training: batch 1 at 1024 px (latent 128x128), forward + MSE against a random target + backward + AdamW step,
adapter in fp32 over a base UNet in the chosen precision (as `tlora-bench train`). Sampling: 25 Euler steps
with classifier-free guidance (the UNet sees batch 2, uncond + cond) from random conditioning; no VAE or text
encoders, whose cost is the same with or without an adapter. A row that fails (out of memory, a size the
model cannot hold) records why and the run goes on; the JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tlora_bench import adapters
from tlora_bench.errors import TloraBenchError
from tlora_bench.models.sdxl import SDXL_UNET_CONFIG
from tlora_bench.models.tiny import TINY_UNET_CONFIG
from tlora_bench.train import make_optimizer

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
TRAIN_TARGET = (0.35, 30e9)  # tlora-64 in bf16 on an H100: s/step, peak bytes (30 GB)
SAMPLE_TARGET = 1.05  # tlora-64 (as the sampler runs it: merged per r(t)) s/image over the base model's
GUIDANCE, SAMPLE_STEPS = 5.0, 25  # the sdxl backend's defaults (docs/decisions.md section 4)


def tiny_label(label: str) -> str:
    """Halve a label's size for the tiny UNet, whose attention width is 64: gsoft-64 would need blocks of 1."""
    return re.sub(r"-(\d+)$", lambda m: f"-{max(1, int(m[1]) // 2)}", label)


def build_unet(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Seeded random weights built on the device (no 10 GiB pass through host memory), then cast."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**config)
    return unet.to(dtype).requires_grad_(False)


def make_inputs(config: dict[str, Any], pixels: int, latent: int, batch: int, device: torch.device,
                dtype: torch.dtype) -> dict[str, Any]:
    """Random latents and SD-XL conditioning: 77 text tokens, pooled text, micro-conditioning time ids."""
    g = torch.Generator().manual_seed(0)
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    states = torch.randn(batch, 77, config["cross_attention_dim"], generator=g)
    return {"sample": torch.randn(batch, 4, latent, latent, generator=g).to(device, dtype),
            "encoder_hidden_states": states.to(device, dtype),
            "added_cond_kwargs": {"text_embeds": torch.randn(batch, pooled, generator=g).to(device, dtype),
                                  "time_ids": torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]] * batch)
                                  .to(device, dtype)}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    """Free what the previous row left behind, then restart the peak counter from what is resident now
    (the base UNet's weights stay in every peak)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_method(unet: torch.nn.Module, inputs: dict[str, Any], steps: int, warmup: int,
                 device: torch.device) -> dict[str, Any]:
    """Seconds per training step after `warmup` untimed steps (they create AdamW's state and fill the
    allocator's cache), and the peak memory of attaching, training and stepping."""
    groups = adapters.parameter_groups(unet)
    optimizer = make_optimizer("adamw", groups, groups[0]["lr"])
    target = torch.randn(inputs["sample"].shape, generator=torch.Generator().manual_seed(1)).to(device)
    g = torch.Generator().manual_seed(2)  # the same timesteps for every method: T-LoRA's r(t) follows t
    unet.train()
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        t = torch.randint(0, 1000, (1,), generator=g).to(device)
        out = unet(timestep=t, **inputs).sample
        F.mse_loss(out.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    unet.eval()
    return {"s_per_step": (time.perf_counter() - start) / steps}


@torch.no_grad()
def sample(unet: torch.nn.Module, cond: dict[str, Any], images: int, device: torch.device) -> dict[str, Any]:
    """Seconds per image of the CFG denoising loop, as StableDiffusionXLPipeline runs it, after one untimed
    warm-up image."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)  # SD-XL base's config
    for image in range(1 + images):
        if image == 1:
            sync(device)
            start = time.perf_counter()
        scheduler.set_timesteps(SAMPLE_STEPS, device=device)  # also restarts the scheduler's step index
        latents = cond["sample"][:1].float() * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t).to(unet.dtype)
            noise = unet(model_input, t, encoder_hidden_states=cond["encoder_hidden_states"],
                         added_cond_kwargs=cond["added_cond_kwargs"]).sample.float()
            uncond, text = noise.chunk(2)
            latents = scheduler.step(uncond + GUIDANCE * (text - uncond), t, latents).prev_sample
    sync(device)
    return {"s_per_image": (time.perf_counter() - start) / images}


def measure(unet: torch.nn.Module, label: str | None, merged: bool, device: torch.device,
            run: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`run` with `label` attached as the trainer and sampler attach it (fp32 adapter, timestep hook, merged
    if asked), detached after; a failure becomes the row's error: one method must not lose the others' rows."""
    reset_memory(device)
    hooks, attached, start = [], False, time.perf_counter()
    try:
        if label is not None:
            adapters.attach_adapters(unet, adapters.make_config(label), dtype=torch.float32)
            attached, hooks = True, adapters.install_timestep_hook(unet)
            if merged:  # as the sampler: merged once, T-LoRA merged per r(t)
                adapters.prepare_for_sampling(unet)
        sync(device)
        attach_s = time.perf_counter() - start  # the SVD inits (tlora, svdiff) cost device time too
        result = run(unet, *args)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return {**result, "peak_gib": peak, "attach_s": attach_s}
    except (torch.OutOfMemoryError, TloraBenchError) as e:
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    finally:
        unet.eval()
        for hook in hooks:
            hook.remove()
        if attached:
            adapters.detach_adapters(unet)


def verdicts(precision: str, rows: dict[str, dict], tlora: str, judged: bool) -> dict[str, str]:
    """The targets of this precision's rows; met/NOT met only for the real model on a GPU."""
    out, mark = {}, (lambda ok: f": {'met' if ok else 'NOT met'}" if judged else " (not judged here)")
    seconds, peak = TRAIN_TARGET
    row = rows.get(f"train {tlora}", {})
    if precision == "bf16" and "s_per_step" in row:
        ok = row["s_per_step"] <= seconds and row["peak_gib"] is not None and row["peak_gib"] * 2**30 <= peak
        out[f"train {tlora}"] = f"<= {seconds} s/step, <= {peak / 1e9:.0f} GB on an H100" + mark(ok)
    base, ours = rows.get("sample no adapter", {}), rows.get(f"sample {tlora} merged", {})
    if "s_per_image" in base and "s_per_image" in ours:
        ratio = ours["s_per_image"] / base["s_per_image"]
        out[f"sample {tlora} merged"] = f"{ratio:.3f}x no adapter, <= {SAMPLE_TARGET}x" + mark(ratio <= SAMPLE_TARGET)
    return out


def print_table(precision: str, rows: dict[str, dict], targets: dict[str, str]) -> None:
    print(f"\n{precision} (base UNet {precision}, adapters fp32; peak: all allocated, base weights included)\n")
    print("| method | s/step (train), s/image (sample) | peak GiB | targets |\n|---|---:|---:|---|")
    for name, row in rows.items():
        seconds = row.get("s_per_step", row.get("s_per_image"))
        peak = "-" if row.get("peak_gib") is None else f"{row['peak_gib']:.2f}"
        print(f"| {name} | {row.get('error') or f'{seconds:.3f}'} | {peak} | {targets.get(name, '')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="bf16,fp32")
    parser.add_argument("--methods", default="lora-64,tlora-64,oft-32,gsoft-64,svdiff")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps before them")
    parser.add_argument("--images", type=int, default=2, help="timed images per sampling row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny UNet, 64 px, sizes halved: a CPU smoke check")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default on a CPU device: 1)")
    args = parser.parse_args()
    import diffusers

    device = torch.device(args.device)
    if args.threads or device.type == "cpu":  # 2 OpenMP threads on a 2-core machine shared with other work
        torch.set_num_threads(args.threads or 1)  # wait for each other at every op: 10-100x slower, erratic
    config, pixels, latent = (TINY_UNET_CONFIG, 64, 32) if args.tiny else (SDXL_UNET_CONFIG, 1024, 128)
    size = tiny_label if args.tiny else str  # the label actually attached
    methods, lora, tlora = [size(m) for m in args.methods.split(",")], size("lora-64"), size("tlora-64")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    report: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "model": "tiny UNet" if args.tiny else "SD-XL UNet, random weights", "pixels": pixels, "batch": 1,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "args": {k: str(v) for k, v in vars(args).items()},
        "results": {}, "targets": {}}
    print(f"{report['model']} at {pixels} px, batch 1, on {name} (TF32 matmul {report['tf32_matmul']}); torch "
          f"{torch.__version__}, diffusers {diffusers.__version__}; {report['date']}")
    for precision in args.precisions.split(","):
        dtype, rows = DTYPES[precision], report["results"].setdefault(precision, {})
        unet = build_unet(config, device, dtype)
        inputs = make_inputs(config, pixels, latent, 1, device, dtype)
        cond = make_inputs(config, pixels, latent, 2, device, dtype)  # CFG: the uncond and cond rows
        jobs = [(f"train {m}", m, False, train_method, (inputs, args.steps, args.warmup, device)) for m in methods]
        jobs += [(f"sample {label or 'no adapter'}{' merged' if merged else ''}", label, merged, sample,
                  (cond, args.images, device)) for label, merged in ((None, False), (lora, True), (tlora, True))]
        for row, label, merged, run, run_args in jobs:
            started = time.perf_counter()
            rows[row] = measure(unet, label, merged, device, run, *run_args)
            print(f"  {precision} {row}: {rows[row]} ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
                  flush=True)  # progress: SVD inits and fp32 sampling take minutes on SD-XL
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
        report["targets"][precision] = verdicts(precision, rows, tlora, device.type == "cuda" and not args.tiny)
        print_table(precision, rows, report["targets"][precision])
        del unet, inputs, cond
        reset_memory(device)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
