"""The one training loop, for every method and every backend (docs/decisions.md section 3).

    spec -> load backend -> attach adapter -> encode prompt and image(s) once -> for each step:
        draw image, latent, noise, t -> noise -> predict -> MSE -> step -> log -> (checkpoint)
    -> adapter.safetensors (written last: its presence means the training finished)

All randomness of the loop comes from one CPU generator seeded by the spec, and checkpoints store its state,
so a resumed run gives the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    differing_keys,
    ensure_writable,
    read_json,
    remove_stale_temporaries,
    write_error,
)
from tlora_bench.interrupts import safe_points, stop_asked, stop_if_asked
from tlora_bench.layout import ADAPTER_FILE, CHECKPOINT_FILE, LOG_FILE, SPEC_FILE
from tlora_bench.specs import Recipe, TrainSpec, resolve_recipe

TRAIN_PROMPT = "a photo of {token} {class_word}"  # docs/decisions.md section 3


def make_optimizer(name: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW with betas (0.9, 0.999), eps 1e-8 (docs/decisions.md §3); Prodigy for FLUX (lr 1)."""
    groups = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise TloraBenchError("optimizer 'prodigy' needs the prodigyopt package: pip install prodigyopt") from None
        return Prodigy(groups, lr=lr, betas=(0.9, 0.999), safeguard_warmup=True, use_bias_correction=True)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


@dataclass
class TrainResult:
    out_dir: Path
    adapter_path: Path
    steps: int
    resumed_from: int  # 0: started from scratch; the checkpoint step otherwise
    seconds: float
    already_done: bool = False


def _plain_spec(spec: TrainSpec) -> dict[str, Any]:
    """The spec as it reads back from JSON (tuples as lists), to compare with a saved one."""
    return json.loads(json.dumps(spec.to_dict()))


def _refuse_other_spec(out_dir: Path, saved: Any, spec: TrainSpec, what: str) -> None:
    """Refuse a folder whose saved spec differs from `spec`, naming the first difference."""
    saved, ours = saved if isinstance(saved, dict) else {}, _plain_spec(spec)
    differing = differing_keys(saved, ours)
    if differing:
        key = differing[0]
        raise TloraBenchError(f"'{out_dir}' holds {what} with {key}={saved.get(key)!r}, not {ours.get(key)!r}; use "
                              "another --out folder or delete this one")


def check_spec_file(out_dir: Path, spec: TrainSpec) -> None:
    """A folder trains one spec: resuming with another is refused, naming the first difference."""
    path = out_dir / SPEC_FILE
    if not path.exists():  # a folder in its place is refused by the reader
        check_writable(out_dir)
        return
    _refuse_other_spec(out_dir, read_json(path, "delete the folder to start again"), spec, "a training run")


def check_finished_adapter(out_dir: Path, spec: TrainSpec) -> None:
    """A folder's adapter counts as this spec's result only if the spec it records (metadata `train_spec`)
    is this one: train_spec.json may be missing, or the adapter copied in from another run."""
    from tlora_bench.adapters.io import check_adapter_file, read_adapter_config, read_adapter_metadata

    path = out_dir / ADAPTER_FILE
    fix = f"delete '{out_dir}' to train again, or use another --out folder"
    try:
        metadata = read_adapter_metadata(path)
        read_adapter_config(path)
        check_adapter_file(path)
        saved = json.loads(metadata["train_spec"]) if "train_spec" in metadata else None
    except TloraBenchError as e:
        raise TloraBenchError(f"{e}; the adapter in the --out folder is unusable: {fix}") from None
    except (ValueError, RecursionError) as e:
        raise TloraBenchError(f"adapter file '{path}' has an unreadable training spec ({type(e).__name__}); "
                              f"{fix}") from None
    if saved is None:
        raise TloraBenchError(f"adapter file '{path}' records no training spec (not written by `tlora-bench "
                              f"train`); {fix}")
    _refuse_other_spec(out_dir, saved, spec, "an adapter trained")


def write_spec_file(out_dir: Path, spec: TrainSpec) -> None:
    """Claim the folder for `spec` (once the model has loaded and the adapter is attached: a failed start
    leaves nothing behind)."""
    if not (out_dir / SPEC_FILE).is_file():
        ensure_writable(out_dir)
        atomic_write_text(out_dir / SPEC_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    remove_stale_temporaries(out_dir)  # left by checkpoint writes that a crash interrupted


def training_images(spec: TrainSpec) -> tuple[Any, list[Path]]:
    """The concept and the paths of its first `train_images` images, the training image first (a path that
    resolves outside the concept's folder, through a symlink, is refused)."""
    from tlora_bench.concepts import resolve_data_root
    from tlora_bench.concepts.manifest import contained, manifest_for

    manifest = manifest_for(spec.manifest)
    concept = manifest.get(spec.concept)
    root = None if spec.manifest else resolve_data_root(spec.data_dir, manifest.name)
    names = [concept.train_image, *[n for n in concept.images if n != concept.train_image]]
    if spec.train_images > len(names):
        raise TloraBenchError(f"concept '{concept.id}' has {len(names)} images; --images {spec.train_images} "
                              "asks for more")
    return concept, [contained(concept.dir(root), name) for name in names[:spec.train_images]]


def check_training_images(image_paths: list[Path]) -> None:
    """Decode every training image now: a missing or corrupt file is one line before the model loads."""
    from tlora_bench.concepts.images import load_image

    for path in image_paths:
        load_image(path)


def _save_checkpoint(path: Path, step: int, model, optimizer, generator: torch.Generator) -> None:
    from tlora_bench.adapters.io import adapter_state_dict

    buffer = io.BytesIO()
    torch.save({"step": step, "adapter": {k: v.cpu() for k, v in adapter_state_dict(model).items()},
                "optimizer": optimizer.state_dict(), "generator": generator.get_state()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, model, optimizer, generator: torch.Generator) -> int:
    from tlora_bench.adapters import adapter_layers

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any corrupt file: say which and how to recover
        raise TloraBenchError(f"checkpoint '{path}' is unreadable ({type(e).__name__}); delete it to restart "
                              "the training from step 0") from None
    layers = adapter_layers(model)
    for name, layer in layers.items():
        prefix = f"{name}."
        layer.load_adapter_tensors({k[len(prefix):]: v for k, v in state["adapter"].items() if k.startswith(prefix)})
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"])


def _open_log(path: Path):
    try:
        return path.open("a", encoding="utf-8")
    except OSError as e:
        raise write_error(path, e) from None


def _log_line(log, path: Path, row: dict) -> None:
    """One line of the training log, flushed; a line cut by a full disk is dropped when the training resumes."""
    try:
        log.write(json.dumps(row) + "\n")
        log.flush()
    except OSError as e:
        raise write_error(path, e) from None


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to the checkpoint: a resumed log equals an uninterrupted one."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _log_step(line) is not None and _log_step(line) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _log_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut by a crash


class TrainingDiverged(TloraBenchError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train(spec: TrainSpec, out_dir: str | Path, *, recipe: Recipe | None = None, backend=None, device: str = "auto",
          progress: bool = True, on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `spec` into `out_dir`, resuming from its checkpoint; returns at once if the adapter exists.

    `recipe`: the spec's recipe as a run's plan resolved it (None: resolved here). `backend`: an already loaded
    backend of `spec.model` (its denoiser is left as it was found).
    """
    from tlora_bench.adapters import attach_adapters, detach_adapters
    from tlora_bench.models import backend_spec, load_backend
    from tlora_bench.planner.sizes import check_size
    from tlora_bench.threads import adapt_cpu_threads

    adapt_cpu_threads(small=backend_spec(spec.model).one_cpu_thread)  # tlora_bench/threads.py
    out_dir = Path(out_dir)
    adapter_path = out_dir / ADAPTER_FILE
    concept, image_paths = training_images(spec)  # user errors before anything is written or loaded
    check_spec_file(out_dir, spec)
    recipe = recipe or resolve_recipe(spec)
    if adapter_path.exists():
        check_finished_adapter(out_dir, spec)
        return TrainResult(out_dir, adapter_path, 0, 0, 0.0, already_done=True)
    check_size(spec, recipe)
    check_training_images(image_paths)
    if backend is None:
        backend = load_backend(spec.model, source=spec.model_path, revision=spec.revision,
                               vae_source=spec.vae_path, precision=spec.precision, device=device)
    _check_scheduler(spec, recipe, backend)
    model = backend.denoiser
    attach_adapters(model, recipe.adapter_config, dtype=torch.float32)  # adapter in fp32 in every precision
    try:
        backend.install_timestep_hook()
        return _train_loop(spec, recipe, backend, concept, image_paths, out_dir, progress, on_step)
    finally:
        backend.remove_timestep_hook()
        detach_adapters(model)
        model.eval()


def _check_scheduler(spec: TrainSpec, recipe: Recipe, backend) -> None:
    """The rank schedule's T is the backend spec's; a model folder whose scheduler has another T is refused."""
    planned = getattr(recipe.adapter_config, "num_train_timesteps", backend.num_train_timesteps)
    if planned != backend.num_train_timesteps:
        raise TloraBenchError(f"model '{spec.model_path or spec.model}' has a scheduler with num_train_timesteps="
                              f"{backend.num_train_timesteps}, the '{spec.model}' backend {planned}; register a "
                              "backend for it")


def _train_loop(spec: TrainSpec, recipe: Recipe, backend, concept, image_paths: list[Path], out_dir: Path,
                progress: bool, on_step: Callable[[dict], None] | None) -> TrainResult:
    from tqdm.auto import tqdm

    from tlora_bench.adapters import parameter_groups, trainable_parameters
    from tlora_bench.adapters.io import save_adapter

    started = time.perf_counter()
    model = backend.denoiser
    prompt = TRAIN_PROMPT.format(token=spec.token, class_word=concept.class_word)
    conditioning = backend.encode_prompt(prompt)
    examples = [backend.encode_training_image(path) for path in image_paths]
    params = trainable_parameters(model)
    optimizer = make_optimizer(recipe.optimizer, parameter_groups(model, recipe.lr, recipe.weight_decay), recipe.lr)
    write_spec_file(out_dir, spec)  # the folder is claimed only once nothing before the loop can fail
    generator = torch.Generator("cpu").manual_seed(spec.seed)
    checkpoint, log_path = out_dir / CHECKPOINT_FILE, out_dir / LOG_FILE
    start = _load_checkpoint(checkpoint, model, optimizer, generator) if checkpoint.is_file() else 0
    _truncate_log(log_path, start)
    if spec.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    last_good = start
    bar = tqdm(total=recipe.steps, initial=start, disable=None if progress else True, unit="step", leave=False,
               desc=f"train {recipe.label} {concept.id}")  # None: shown on a terminal only
    with _open_log(log_path) as log, safe_points():  # a stop signal waits for the end of its step
        for step in range(start + 1, recipe.steps + 1):
            tick = time.perf_counter()
            # One generator, one fixed order of draws: the run is a function of the seed and the step.
            picks = torch.randint(len(examples), (spec.batch_size,), generator=generator).tolist()
            batch = [examples[i] for i in picks]
            latents = backend.sample_latents(batch, generator)
            noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
            t = backend.sample_timesteps(spec.batch_size, generator, spec.timestep_range)
            noisy, target = backend.noisy_and_target(latents, noise, t)
            prediction = backend.predict(noisy, t, conditioning, batch)
            loss = F.mse_loss(prediction.float(), target.float())
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at step {step} of {recipe.label} on '{concept.id}'; the last good "
                    f"checkpoint (step {last_good}) is kept in '{out_dir}'; lower the learning rate or use fp32")
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            row = {"step": step, "t": [round(float(v), 4) for v in t], "loss": loss.item(),
                   "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                   "seconds": round(time.perf_counter() - tick, 6)}
            _log_line(log, log_path, row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if on_step:
                on_step(row)
            if (step == recipe.steps or (spec.checkpoint_every and step % spec.checkpoint_every == 0)
                    or stop_asked()):  # stopping: this step's checkpoint first, so a resume loses nothing
                _save_checkpoint(checkpoint, step, model, optimizer, generator)
                last_good = step
            stop_if_asked()
    bar.close()
    metadata = adapter_metadata(spec, recipe, backend, concept, image_paths, prompt)
    metadata["trainable_parameters"] = sum(p.numel() for p in params)  # a cost column (docs/evaluation.md)
    save_adapter(model, out_dir / ADAPTER_FILE, metadata, digest_file=True)
    checkpoint.unlink(missing_ok=True)  # the adapter is the result; optimizer state would cost GBs per job
    return TrainResult(out_dir, out_dir / ADAPTER_FILE, recipe.steps, start, time.perf_counter() - started)


def adapter_metadata(spec: TrainSpec, recipe: Recipe, backend, concept, image_paths: list[Path],
                     prompt: str) -> dict[str, Any]:
    """What an adapter file records: how it was trained, on what, with what software (docs/design.md)."""
    from tlora_bench.provenance import provenance

    return {"label": recipe.label, "concept": concept.id, "class_word": concept.class_word, "token": spec.token,
            "train_prompt": prompt, "training_images": [p.name for p in image_paths], "steps": recipe.steps,
            "seed": spec.seed, "precision": spec.precision, "optimizer": recipe.optimizer, "lr": recipe.lr,
            "weight_decay": recipe.weight_decay, "train_spec": spec.to_dict(),
            "base_model": backend.provenance(), **provenance(str(backend.device))}
