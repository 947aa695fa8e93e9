"""Pretraining the scene model (`tlora-bench synthetic pretrain`): random scenes, their captions, the DDPM
velocity loss, AdamW, an EMA of the weights; the EMA model is what is saved (docs/synthetic.md).

The shipped weights (tlora_bench/synthetic/weights) are this function's output at the default recipe; the
folder holds the recipe, the training log's summary and the files' SHA-256 sums beside the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tlora_bench.models.spec import CHECKSUM_FILE
from tlora_bench.synthetic.model import to_model_space, with_coordinates
from tlora_bench.synthetic.scenes import Scene, all_scenes, caption, render

RECIPE_FILE = "recipe.json"
OMITTABLE = ("color", "position", "background")  # size and pattern have unsaid defaults (large, plain): never dropped


def held_out(scene: Scene) -> bool:
    """Scenes pretraining never shows: dotted diamonds. The synthetic concepts are dotted diamonds, a pattern the
    model draws on other shapes and a shape it draws plain, so a concept is learnable but not already known."""
    return scene.shape == "diamond" and scene.pattern == "dotted"


def pretraining_scenes() -> list[Scene]:
    return [scene for scene in all_scenes() if not held_out(scene)]


@dataclass(frozen=True)
class PretrainRecipe:
    seed: int = 0
    steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    omit_probability: float = 0.1  # each of OMITTABLE left out of a caption: a prompt may leave it open
    unconditional_probability: float = 0.1  # the empty caption, for classifier-free guidance
    photo_probability: float = 0.5  # "a photo of " before a caption: the training prompt's words (docs/synthetic.md)
    threads: int = 2


def training_batch(scenes: list[Scene], recipe: PretrainRecipe,
                   rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
    """Jittered renders of random scenes in [-1, 1], in the UNet's space, and their captions, some shortened."""
    chosen = [scenes[i] for i in rng.integers(len(scenes), size=recipe.batch_size)]
    pixels = np.stack([render(scene, rng) for scene in chosen]).astype(np.float32) / 127.5 - 1.0
    captions = []
    for scene in chosen:
        if rng.random() < recipe.unconditional_probability:
            captions.append("")
            continue
        omit = frozenset(name for name in OMITTABLE if rng.random() < recipe.omit_probability)
        captions.append(("a photo of " if rng.random() < recipe.photo_probability else "") + caption(scene, omit))
    return to_model_space(torch.from_numpy(pixels).permute(0, 3, 1, 2)).contiguous(), captions


def learning_rate(step: int, recipe: PretrainRecipe) -> float:
    """Linear warm-up, then a cosine decay to a tenth."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(out: Path, recipe: PretrainRecipe = PretrainRecipe(),
             on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train the scene model from scratch and save its EMA weights to `out` (written beside, then renamed: a
    folder with that name is always complete). Returns the summary written to its recipe file."""
    from diffusers import DDPMScheduler

    from tlora_bench.models.sdxl import ddpm_noisy_and_target
    from tlora_bench.synthetic.model import build_pipeline

    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    pipeline = build_pipeline(recipe.seed)
    noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    modules = [pipeline.unet, pipeline.text_encoder]
    params = [p for m in modules for p in m.parameters()]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)  # no decay: the unused
    scenes = pretraining_scenes()  # concept token's embedding must stay as initialised
    start, losses = time.monotonic(), []
    for m in modules:
        m.train()
    for step in range(recipe.steps):
        pixels, captions = training_batch(scenes, recipe, rng)
        noise = torch.randn_like(pixels)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(pixels),))
        noisy, target = ddpm_noisy_and_target(noise_scheduler, pixels, noise, t)
        states = pipeline.encode_prompt(captions)
        prediction = pipeline.unet(with_coordinates(noisy), t, encoder_hidden_states=states).sample
        loss = torch.nn.functional.mse_loss(prediction, target)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(recipe.ema_decay, (1 + step) / (10 + step))  # early on the EMA follows the weights
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        losses.append(loss.item())
        if on_step:
            on_step(step + 1, float(np.mean(losses[-100:])))
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    for m in modules:
        m.eval()
    summary = {"recipe": asdict(recipe), "seconds": round(time.monotonic() - start, 1),
               "final_loss": round(float(np.mean(losses[-100:])), 5), "torch": torch.__version__}
    save_model(pipeline, out, summary)
    return summary


def save_model(pipeline, out: Path, summary: dict) -> None:
    """The diffusers folder, its recipe file and SHA256SUMS, written as a whole in place of `out`."""
    from tlora_bench.fileio import replaced_folder
    from tlora_bench.models.backend import quiet_loading

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with replaced_folder(out) as tmp:
        with quiet_loading():  # no "Writing model shards" bar
            pipeline.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / CHECKSUM_FILE).write_text("".join(f"{digest}  {name}\n" for name, digest in checksums(tmp).items()))


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but the checksum file itself, by relative path (sorted)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
