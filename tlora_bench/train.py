"""The one training loop, for every method and every backend (docs/decisions.md section 3).

    spec -> load backend -> attach adapter -> encode prompt and image(s) once -> for each step:
        draw image, latent, noise, t -> noise -> predict -> MSE -> step -> log -> (checkpoint)
    -> adapter.safetensors (written last: its presence means the training finished)

All randomness of the loop comes from one CPU generator seeded by the spec, and checkpoints store its state,
so a resumed run gives the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F

from tlora_bench.devices import PRECISIONS
from tlora_bench.errors import TloraBenchError, unknown_name_error
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
from tlora_bench.limits import check_seed
from tlora_bench.prompts import DEFAULT_TOKEN, check_token

ADAPTER_FILE = "adapter.safetensors"
SPEC_FILE = "train_spec.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.jsonl"
OPTIMIZERS = ("adamw", "prodigy")
TRAIN_PROMPT = "a photo of {token} {class_word}"  # docs/decisions.md section 3


@dataclass(frozen=True)
class TrainSpec:
    """Everything that decides a trained adapter. Two equal specs give the same adapter on the same setup."""

    method: str  # a method label: "tlora", "tlora-64", "oft-32"
    concept: str
    model: str = "sdxl"
    rank: int | None = None  # r for rank-sized methods whose label has no "-N" (None: the method default)
    adapter: Mapping[str, Any] = field(default_factory=dict)  # adapter options: r_min, gamma, svd_source, ...
    manifest: str | None = None  # a user manifest .toml; None: the bundled DreamBooth manifest
    data_dir: str | None = None
    model_path: str | None = None  # a hub id or local diffusers folder instead of the backend's default
    vae_path: str | None = None
    revision: str | None = None
    precision: str = "fp32"  # fp32 (the authors); bf16, fp16: base model in half precision, adapter and optimizer fp32
    steps: int | None = None  # None: the method's default (docs/decisions.md section 3)
    optimizer: str | None = None  # None: the backend's default (adamw; prodigy for FLUX)
    lr: float | None = None  # None: the method's default (prodigy: 1.0)
    weight_decay: float | None = None
    batch_size: int = 1
    max_grad_norm: float | None = 1.0  # as diffusers' DreamBooth LoRA scripts; None: no clipping
    seed: int = 0
    timestep_range: tuple[int, int] | None = None  # train on t in [low, high) only (paper Figure 2)
    train_images: int = 1  # the first N images of the concept, the training image first (paper Table 4)
    token: str = DEFAULT_TOKEN  # the paper's V*
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        from tlora_bench.concepts.manifest import refuse_data_dir_with_manifest

        object.__setattr__(self, "adapter", MappingProxyType(dict(self.adapter)))
        refuse_data_dir_with_manifest(self.manifest, self.data_dir)
        if self.timestep_range is not None:
            object.__setattr__(self, "timestep_range", tuple(self.timestep_range))
            if len(self.timestep_range) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in self.timestep_range):
                raise TloraBenchError(f"timestep range must be two integers low,high, got {self.timestep_range}")
            low, high = self.timestep_range
            if not 0 <= low < high <= 1000:
                raise TloraBenchError(f"timestep range must be low,high with 0 <= low < high <= 1000, got {low},{high}")
        for key in ("batch_size", "train_images", "seed", "checkpoint_every", "steps"):
            value = getattr(self, key)
            if not (value is None and key == "steps") and (isinstance(value, bool) or not isinstance(value, int)):
                raise TloraBenchError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
        for key in ("batch_size", "train_images"):
            if getattr(self, key) < 1:
                raise TloraBenchError(f"{key} must be at least 1, got {getattr(self, key)}")
        check_seed(self.seed, "seed")  # torch generators take 64 bits; the seed rule adds to it
        if self.steps is not None and self.steps < 1:
            raise TloraBenchError(f"steps must be at least 1, got {self.steps}")
        if self.checkpoint_every < 0:
            raise TloraBenchError(f"checkpoint_every must be 0 or more, got {self.checkpoint_every}")
        _check_number("lr", self.lr, above_zero=True)
        _check_number("weight_decay", self.weight_decay, above_zero=False)
        _check_number("max_grad_norm", self.max_grad_norm, above_zero=False, note=" (0: no clipping)")
        check_token(self.token)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise unknown_name_error("optimizer", self.optimizer, OPTIMIZERS)
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["adapter"] = dict(self.adapter)
        data["timestep_range"] = list(self.timestep_range) if self.timestep_range else None
        return data

    def __reduce__(self):  # read-only mappings do not pickle: rebuild from plain values (process pools, Ray)
        return (TrainSpec.from_dict, (self.to_dict(),))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TloraBenchError(f"unknown training option '{unknown[0]}'")
        return cls(**data)


def _check_number(key: str, value: Any, *, above_zero: bool, note: str = "") -> None:
    """An optional optimizer value: a finite number, above 0 or at least 0 (torch checks these only once the
    model has loaded, and lets infinity through)."""
    if value is None:
        return
    bound = "above 0" if above_zero else "0 or more"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value < 0 or (above_zero and value == 0):
        raise TloraBenchError(f"{key} must be a finite number {bound}{note}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """A spec resolved against the method and backend registries: the values the loop actually uses."""

    label: str  # the method label with its size, e.g. "tlora-64"
    adapter_config: Any  # AdapterConfig
    steps: int
    optimizer: str
    lr: float
    weight_decay: float
    mergeable: bool


def resolve_recipe(spec: TrainSpec, num_train_timesteps: int = 1000) -> Recipe:
    """Method and backend defaults, overridden by the spec; every bad value is a one-line error here."""
    from tlora_bench.adapters import make_config, parse_method
    from tlora_bench.adapters.layer import DEFAULT_TARGETS
    from tlora_bench.models import backend_spec

    method, size = parse_method(spec.method)
    backend = backend_spec(spec.model)
    options = dict(spec.adapter)
    _refuse_flag_options(spec, method, size, options)
    label = spec.method
    if size is None and spec.rank is not None:
        if method.size_field != "r":
            raise TloraBenchError(f"method '{method.name}' has no rank; give its size in the label "
                                  f"(e.g. '{method.name}-32') instead of --rank")
        label = f"{method.name}-{spec.rank}"
    fields = method.config_fields()
    if "num_train_timesteps" in fields:
        options.setdefault("num_train_timesteps", num_train_timesteps)
    if method.fixed.get("mask") and backend.default_r_min is not None:
        options.setdefault("r_min", backend.default_r_min)
    if backend.adapter_targets and "target_modules" not in options:
        default = next(f.default for f in dataclasses.fields(method.config_cls) if f.name == "target_modules")
        if tuple(default) == DEFAULT_TARGETS:  # SVDiff adapts every layer: it keeps its own default
            options["target_modules"] = backend.adapter_targets
    config = make_config(label, seed=spec.seed, **options)
    optimizer = spec.optimizer or backend.optimizer
    default_lr = 1.0 if optimizer == "prodigy" else method.lr  # Prodigy estimates the step size itself
    return Recipe(label=label, adapter_config=config,
                  steps=spec.steps or backend.default_steps.get(method.name, method.steps), optimizer=optimizer,
                  lr=default_lr if spec.lr is None else spec.lr,
                  weight_decay=method.weight_decay if spec.weight_decay is None else spec.weight_decay,
                  mergeable=method.mergeable)


def _refuse_flag_options(spec: TrainSpec, method, size: int | None, options: Mapping[str, Any]) -> None:
    """Adapter options that a flag or the label sets are refused: two places for one value would disagree."""
    if "seed" in options:
        raise TloraBenchError("option 'seed' is the training seed (train --seed, a run's seeds), which also seeds "
                              "the adapter init; drop the adapter option and set the training seed")
    field = method.size_field
    if field is None or field not in options:
        return
    given = f"option '{field}={options[field]}'"
    if spec.rank is not None:
        raise TloraBenchError(f"{given} and --rank {spec.rank} both set the rank; give it once, with --rank")
    if size is not None:
        raise TloraBenchError(f"{given} and the method label '{spec.method}' both set the size; give it once, in "
                              "the label")
    example = f"--rank {options[field]} or " if field == "r" else ""
    raise TloraBenchError(f"{given} sets the size of '{method.name}'; give it with {example}the label "
                          f"'{method.name}-{options[field]}' instead, so results are named by it")


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
    from tlora_bench.concepts import bundled_manifest, load_manifest, resolve_data_root
    from tlora_bench.concepts.manifest import contained

    manifest = load_manifest(spec.manifest) if spec.manifest else bundled_manifest()
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


def check_size(spec: TrainSpec, recipe: Recipe) -> None:
    """The adapter fits the model's layers (ranks, block counts), checked on its weightless skeleton."""
    from tlora_bench.adapters.catalog import size_problem

    problem = size_problem(spec.model, recipe.adapter_config)
    if problem:
        raise TloraBenchError(f"{recipe.label} on model '{spec.model}': {problem}")


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


def train(spec: TrainSpec, out_dir: str | Path, *, backend=None, device: str = "auto", progress: bool = True,
          on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `spec` into `out_dir`, resuming from its checkpoint; returns at once if the adapter exists.

    `backend`: an already loaded backend of `spec.model` (its denoiser is left as it was found).
    """
    from tlora_bench.adapters import attach_adapters, detach_adapters
    from tlora_bench.models import is_tiny, load_backend
    from tlora_bench.threads import adapt_cpu_threads

    adapt_cpu_threads(small=is_tiny(spec.model))  # one thread for a tiny model (tlora_bench/threads.py)
    out_dir = Path(out_dir)
    adapter_path = out_dir / ADAPTER_FILE
    concept, image_paths = training_images(spec)  # user errors before anything is written or loaded
    check_spec_file(out_dir, spec)
    recipe = resolve_recipe(spec)
    if adapter_path.exists():
        check_finished_adapter(out_dir, spec)
        return TrainResult(out_dir, adapter_path, 0, 0, 0.0, already_done=True)
    check_size(spec, recipe)
    check_training_images(image_paths)
    if backend is None:
        backend = load_backend(spec.model, source=spec.model_path, revision=spec.revision,
                               vae_source=spec.vae_path, precision=spec.precision, device=device)
    recipe = resolve_recipe(spec, backend.num_train_timesteps)
    model = backend.denoiser
    attach_adapters(model, recipe.adapter_config, dtype=torch.float32)  # adapter in fp32 in every precision
    try:
        backend.install_timestep_hook()
        return _train_loop(spec, recipe, backend, concept, image_paths, out_dir, progress, on_step)
    finally:
        backend.remove_timestep_hook()
        detach_adapters(model)
        model.eval()


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
    save_adapter(model, out_dir / ADAPTER_FILE, adapter_metadata(spec, recipe, backend, concept, image_paths, prompt),
                 digest_file=True)
    checkpoint.unlink(missing_ok=True)  # the adapter is the result; optimizer state would cost GBs per job
    return TrainResult(out_dir, out_dir / ADAPTER_FILE, recipe.steps, start, time.perf_counter() - started)


def adapter_metadata(spec: TrainSpec, recipe: Recipe, backend, concept, image_paths: list[Path],
                     prompt: str) -> dict[str, Any]:
    """What an adapter file records: how it was trained, on what, with what software (DESIGN.md)."""
    from tlora_bench.provenance import provenance

    return {"label": recipe.label, "concept": concept.id, "class_word": concept.class_word, "token": spec.token,
            "train_prompt": prompt, "training_images": [p.name for p in image_paths], "steps": recipe.steps,
            "seed": spec.seed, "precision": spec.precision, "optimizer": recipe.optimizer, "lr": recipe.lr,
            "weight_decay": recipe.weight_decay, "train_spec": spec.to_dict(),
            "base_model": backend.provenance(), **provenance(str(backend.device))}
