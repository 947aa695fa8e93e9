"""Training steps/s and sampling images/s on the tiny SD-XL backend: our LoRA and T-LoRA against PEFT and the base.

    python benchmarks/train_sample.py                  # r = 4, CPU, 1 thread, under 2 minutes
    python benchmarks/train_sample.py --rank 8 --rounds 12 --steps-per-round 10 --images 4 --threads 2

Training: one step function (the body of `tlora_bench.train._train_loop`: draw latents, noise and t from one
CPU generator, noise, predict, MSE, backward, clip, AdamW) runs for every variant; only what is attached to
the UNet differs. PEFT LoRA is injected with `peft.inject_adapter_in_model` on the same projections, rank and
init, so the baseline is the loop a PEFT user would run. Sampling: `backend.generate` (text encoders, the CFG
denoising loop, VAE decode) with T-LoRA unmerged and its timestep hook installed, against no adapter.

All variants share one UNet and one process: each round attaches a variant, times it, detaches it, and the
order of variants rotates from round to round, so drift in machine speed hits every variant alike. Each round
reseeds the generator, so every variant sees the same latents, noise and timesteps (T-LoRA's rank r(t)
depends on t). The table gives medians and their ratio to the baseline (seconds over seconds: lower is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from tlora_bench.adapters import (
    DEFAULT_TARGETS,
    attach_adapters,
    detach_adapters,
    make_config,
    parameter_groups,
    prepare_for_sampling,
)
from tlora_bench.models import DiffusionBackend, load_backend
from tlora_bench.train import TRAIN_PROMPT, make_optimizer

TRAIN_TARGET = 1.15  # s/step over PEFT LoRA's, for lora-R and tlora-R
SAMPLE_TARGET = 1.10  # s/image over the base model's, for tlora-R
LR = WEIGHT_DECAY = 1e-4  # the family's defaults (tlora.py); the values do not change the step's cost


def machine() -> str:
    """CPU model, cores, threads and library versions: what a reader needs to compare two runs."""
    import diffusers
    import peft

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]  # other processes on the machine: the reason to repeat a run that looks odd
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, load {load:.1f} at start; torch "
            f"{torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}; {platform.platform()}")


def peft_detach(model: torch.nn.Module) -> None:
    """Undo `inject_adapter_in_model`: put every wrapped base layer back (PEFT has no public call for a model
    it does not own as a PeftModel)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    model.__dict__.pop("peft_config", None)  # else the next injection warns of "multiple adapters"


@contextlib.contextmanager
def attached(backend: DiffusionBackend, variant: str, rank: int, merged: bool = False) -> Iterator[list[dict]]:
    """`variant` on the backend's UNet for the duration; yields its optimizer parameter groups.

    "peft lora": PEFT's LoRA; "no adapter": nothing (the sampling baseline); else one of our method labels,
    attached as the trainer and the sampler do (fp32 adapter, timestep hook installed, merged if asked).
    """
    unet = backend.denoiser
    if variant == "no adapter":
        yield []
    elif variant == "peft lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(DEFAULT_TARGETS),
                                           init_lora_weights="gaussian"), unet)
        try:
            yield [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": LR,
                    "weight_decay": WEIGHT_DECAY}]
        finally:
            peft_detach(unet)
    else:
        attach_adapters(unet, make_config(variant), dtype=torch.float32)
        try:
            backend.install_timestep_hook()
            if merged:  # as the sampler: merged once, T-LoRA merged per r(t)
                prepare_for_sampling(unet)
            yield parameter_groups(unet, LR, WEIGHT_DECAY)
        finally:
            backend.remove_timestep_hook()
            detach_adapters(unet)


def training_data(backend: DiffusionBackend) -> tuple[dict, list]:
    """The prompt's conditioning and one encoded training image, computed once as the trainer does (the
    image is synthetic: its content does not change the cost of a step)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "00.png"
        Image.radial_gradient("L").convert("RGB").resize((96, 80)).save(path)  # not square: exercises the crop
        example = backend.encode_training_image(path)
    return backend.encode_prompt(TRAIN_PROMPT.format(token="sks", class_word="dog")), [example]


def train_step(backend: DiffusionBackend, conditioning: dict, examples: list, optimizer: torch.optim.Optimizer,
               params: list[torch.Tensor], generator: torch.Generator) -> None:
    """One step of `_train_loop` (batch 1), for every variant alike; logging and checkpoints left out."""
    latents = backend.sample_latents(examples, generator)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    t = backend.sample_timesteps(1, generator)
    noisy, target = backend.noisy_and_target(latents, noise, t)
    prediction = backend.predict(noisy, t, conditioning, examples)
    loss = F.mse_loss(prediction.float(), target.float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)  # the trainer's default max_grad_norm
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss.item()  # the trainer logs the loss every step: a sync point on a GPU


def round_robin(variants: list[str], rounds: int, run: Callable[[str, int], list[float]]) -> dict[str, list[float]]:
    """`run(variant, round)` returns that round's timings; the start of the order rotates every round."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(rounds):
        for variant in variants[index % len(variants):] + variants[:index % len(variants)]:
            times[variant] += run(variant, index)
    return times


def bench_training(backend: DiffusionBackend, rank: int, rounds: int, steps: int) -> dict[str, list[float]]:
    conditioning, examples = training_data(backend)

    def run(variant: str, index: int) -> list[float]:
        label = variant if variant == "peft lora" else f"{variant}-{rank}"
        with attached(backend, label, rank) as groups:
            params = [p for g in groups for p in g["params"]]
            optimizer = make_optimizer("adamw", groups, LR)
            generator = torch.Generator("cpu").manual_seed(index)  # same draws for every variant of a round
            backend.denoiser.train()
            # untimed: AdamW creates its state on the first step, and the new modules meet the allocator
            train_step(backend, conditioning, examples, optimizer, params, generator)
            samples = []
            for _ in range(steps):
                start = time.perf_counter()
                train_step(backend, conditioning, examples, optimizer, params, generator)
                samples.append(time.perf_counter() - start)
            backend.denoiser.eval()
        return samples

    variants = ["peft lora", "lora", "tlora"]
    round_robin(variants, 1, run)  # warm-up round, discarded
    return round_robin(variants, rounds, run)


def bench_sampling(backend: DiffusionBackend, rank: int, rounds: int, images: int) -> dict[str, list[float]]:
    prompt, seeds = "a photo of sks dog on the beach", list(range(images))
    setups = {"no adapter": ("no adapter", False), f"tlora-{rank}": (f"tlora-{rank}", True),
              f"tlora-{rank} unmerged": (f"tlora-{rank}", False), f"lora-{rank} merged": (f"lora-{rank}", True)}

    def run(variant: str, index: int) -> list[float]:
        label, merged = setups[variant]
        with attached(backend, label, rank, merged=merged):
            start = time.perf_counter()
            backend.generate(prompt, seeds)
            return [(time.perf_counter() - start) / images]  # seconds per image

    round_robin(list(setups), 1, run)  # warm-up round, discarded
    return round_robin(list(setups), rounds, run)


def table_rows(times: dict[str, list[float]], baseline: str, unit: str, targets: dict[str, float],
               names: dict[str, str]) -> list[str]:
    reference = statistics.median(times[baseline])
    rows = []
    for variant, samples in times.items():
        median = statistics.median(samples)
        ratio = median / reference
        target = targets.get(variant)
        verdict = "" if target is None else f"<= {target:.2f}: {'met' if ratio <= target else 'NOT met'}"
        value = f"{median * 1e3:.1f} ms/{unit} ({1 / median:.2f} {unit}s/s)"
        rows.append(f"| {names.get(variant, f'`{variant}`')} | {value} | {ratio:.3f} | {verdict} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps-per-round", type=int, default=10, help="timed training steps per variant per round")
    parser.add_argument("--images", type=int, default=2, help="images per generate call (one call per round)")
    # One thread by default: on a small shared machine, OpenMP threads that wait at a barrier for a core taken
    # by another process turn a 0.3 s sampling call into 3-90 s; one thread slows down only in proportion.
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backend = load_backend("tiny", device="cpu")
    backend.denoiser.requires_grad_(False)  # only adapter parameters train, in every variant
    host, started = machine(), time.perf_counter()
    train = bench_training(backend, args.rank, args.rounds, args.steps_per_round)
    sample = bench_sampling(backend, args.rank, args.rounds, args.images)

    r, size = args.rank, backend.spec.resolution
    print(f"machine: {host}")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}; "
          f"{time.perf_counter() - started:.0f} s")
    print(f"tiny SD-XL backend ({size} px, latent {size // backend.pipeline.vae_scale_factor}), r={r}, "
          f"{args.rounds} rounds; training: batch 1, {args.steps_per_round} timed steps per round; sampling: "
          f"{args.images} images per call, {backend.spec.num_inference_steps} steps, CFG "
          f"{backend.spec.guidance_scale}")
    print()
    print("| variant | value | x baseline | target met? |")
    print("|---|---:|---:|---|")
    print("\n".join(table_rows(train, "peft lora", "step", {"lora": TRAIN_TARGET, "tlora": TRAIN_TARGET},
                               {"peft lora": f"train: PEFT LoRA-{r}", "lora": f"train: `lora-{r}`",
                                "tlora": f"train: `tlora-{r}`"})))
    print("\n".join(table_rows(sample, "no adapter", "image", {f"tlora-{r}": SAMPLE_TARGET},
                               {"no adapter": "sample: no adapter",
                                f"tlora-{r}": f"sample: `tlora-{r}` (as the sampler: merged per r(t))",
                                f"tlora-{r} unmerged": f"sample: `tlora-{r}` unmerged (low-rank branch)",
                                f"lora-{r} merged": f"sample: `lora-{r}` merged"})))
    spread = {v: statistics.quantiles(s * 2 if len(s) == 1 else s, n=4, method="inclusive")  # needs 2 values
              for v, s in {**train, **sample}.items()}
    print()
    print("p25-p75 (ms): " + ", ".join(f"{v} {a * 1e3:.1f}-{b * 1e3:.1f}" for v, (a, _, b) in spread.items()))


if __name__ == "__main__":
    main()
