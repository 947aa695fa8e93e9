"""The sampler: every prompt of a concept, with the seed rule, for one trained adapter (docs/decisions.md section 4).

    adapter file -> concept, token, base model -> for each prompt template, batches of its images:
        one CPU generator per image seed -> backend.generate -> one PNG each, written atomically
    -> DIR/<method label>/<concept>/images.jsonl (the layout `tlora-bench evaluate` reads)

Resume works per image: a PNG whose text metadata matches its slot (template, seed, adapter) is kept, any
other file in its place (truncated, from another adapter) is generated again. The index is written once
every image exists, so `evaluate` never scores a half-sampled folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from tlora_bench.errors import TloraBenchError
from tlora_bench.fileio import atomic_write_bytes, check_writable, ensure_writable, exclusive_file_lock
from tlora_bench.interrupts import safe_points, stop_if_asked
from tlora_bench.layout import INDEX_FILE, ImageRecord, base_model_folder, write_images_index
from tlora_bench.prompts import PromptItem, drift_items, prompt_items
from tlora_bench.specs import SampleOptions, TrainSpec


class LazyBackend:
    """A model backend loaded on first use, once. `generate` and `generate_base_drift` share one, and neither loads
    a model when all its images are already there."""

    def __init__(self, load: Callable[[], Any]):
        self._load, self._backend = load, None

    def get(self):
        if self._backend is None:
            self._backend = self._load()
        return self._backend


def _loaded(backend):
    return backend.get() if isinstance(backend, LazyBackend) else backend


@dataclass
class SampleResult:
    folder: Path
    n_images: int
    n_generated: int
    n_kept: int  # finished images found from an earlier run
    seconds: float


@dataclass(frozen=True)
class AdapterInfo:
    """What the sampler reads from an adapter file: its training spec and the label and rank it names."""

    path: Path
    spec: Any  # TrainSpec
    label: str
    method: str
    rank: int | None
    mergeable: bool
    sha256: str


def read_adapter_info(path: str | Path) -> AdapterInfo:
    from tlora_bench.adapters import METHODS
    from tlora_bench.adapters.io import adapter_digest, check_adapter_file, read_adapter_config, read_adapter_metadata


    path = Path(path)
    metadata = read_adapter_metadata(path)
    check_adapter_file(path)  # readable, but altered since it was trained
    if "train_spec" not in metadata:
        raise TloraBenchError(f"'{path}' was not written by `tlora-bench train` (no training spec in its "
                              "metadata), so the sampler cannot tell its concept and base model")
    try:
        spec = TrainSpec.from_dict(json.loads(metadata["train_spec"]))
    except (ValueError, TypeError) as e:  # a hand-edited or foreign file: say which, never a traceback
        raise TloraBenchError(f"'{path}': its training spec metadata is not readable ({e}); train the adapter "
                              "again with `tlora-bench train`") from None
    config = read_adapter_config(path)
    return AdapterInfo(path, spec, metadata.get("label", config.method), config.method,
                       getattr(config, "r", None), METHODS.get(config.method).mergeable, adapter_digest(path))


def plan_items(info: AdapterInfo, options: SampleOptions) -> tuple[Any, list[PromptItem]]:
    """The concept and every image to generate, in order; `options.prompts` keeps the first N templates."""
    from tlora_bench.concepts.manifest import manifest_for
    from tlora_bench.models import backend_spec

    spec = info.spec
    manifest = manifest_for(spec.manifest)
    concept = manifest.get(spec.concept)
    base_seed = spec.seed if options.base_seed is None else options.base_seed
    items = prompt_items(concept, token=spec.token, base_seed=base_seed,
                         images_per_prompt=options.images_per_prompt, base_images=options.base_images)
    templates = list(dict.fromkeys(item.template for item in items))
    if options.prompts is not None:
        templates = templates[:options.prompts]
        items = [item for item in items if item.template in templates]
    return concept, items + drift_items(base_seed, options.drift_images, options.drift_prompts,
                                        backend_spec(spec.model).drift_prompts)


def image_names(items: list[PromptItem]) -> dict[PromptItem, str]:
    """Each image's file name: its template's position in the plan (the base prompt is p00, the drift prompts
    d00, d01, ...) and its index."""
    names = {}
    for kind, letter in (("concept", "p"), ("drift", "d")):
        of_kind = [i for i in items if i.kind == kind]
        numbers = {template: n for n, template in enumerate(dict.fromkeys(i.template for i in of_kind))}
        names.update({item: f"{letter}{numbers[item.template]:02d}_i{item.image_index:02d}.png" for item in of_kind})
    return names


def _png_text(info: AdapterInfo | None, item: PromptItem, model: str) -> dict[str, str]:
    """The text chunks of an image's PNG; `info` None: the base model's image (no adapter)."""
    rank = "" if info is None or info.rank is None else str(info.rank)
    return {"prompt": item.prompt, "template": item.template, "image_index": str(item.image_index),
            "seed": str(item.seed), "method": "base model" if info is None else info.label, "rank": rank,
            "model": model, "adapter_sha256": "" if info is None else info.sha256, "kind": item.kind}


def _is_finished(path: Path, expected: dict[str, str]) -> bool:
    """A readable PNG whose metadata names the same slot and adapter (a half-written file never is)."""
    try:
        with Image.open(path) as image:
            image.load()
            text = dict(getattr(image, "text", {}))
    except (OSError, SyntaxError, ValueError):
        return False
    return all(text.get(k) == expected[k] for k in ("template", "seed", "image_index", "adapter_sha256"))


def _write_png(path: Path, image: Image.Image, text: dict[str, str]) -> None:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())


def _write_index(folder: Path, info: AdapterInfo | None, items: list[PromptItem], done: set[str]) -> None:
    names = image_names(items)

    rows = [ImageRecord(file=names[item], template=item.template, image_index=item.image_index,
                        seed=item.seed, method=info.label if info else None, rank=info.rank if info else None,
                        prompt=item.prompt, kind=item.kind)
            for item in items if names[item] in done]
    write_images_index(folder, rows)


def generate(adapter_path: str | Path, images_root: str | Path, *, options: SampleOptions | None = None,
             backend=None, device: str = "auto", label: str | None = None, progress: bool = True,
             on_image: Callable[[str], None] | None = None) -> SampleResult:
    """Generate the adapter's images into images_root/<label>/<concept>/ and write its images.jsonl.

    `label` names the method folder (default: the adapter's label, e.g. "tlora-64"); `backend`: an
    already loaded backend of the adapter's model (or a LazyBackend of it), left as it was found.
    """
    from tlora_bench.models import backend_spec
    from tlora_bench.threads import adapt_cpu_threads

    options = options or SampleOptions()
    started = time.perf_counter()
    info = read_adapter_info(adapter_path)
    adapt_cpu_threads(small=backend_spec(info.spec.model).one_cpu_thread)  # tlora_bench/threads.py
    label = label or info.label
    concept, items = plan_items(info, options)
    folder = Path(images_root) / label / concept.id
    check_writable(folder)  # created only once the model and adapter load: a failed start leaves no folder
    model_name = info.spec.model
    info = AdapterInfo(**{**info.__dict__, "label": label})
    names = image_names(items)
    done = {names[item] for item in items
            if _is_finished(folder / names[item], _png_text(info, item, model_name))}
    todo = [item for item in items if names[item] not in done]
    kept = len(done)
    if todo:
        backend = _loaded(backend) or _load_backend(info, device)
        with adapter_loaded(backend, info):
            ensure_writable(folder)
            (folder / INDEX_FILE).unlink(missing_ok=True)  # an index names finished folders only
            _sample_items(backend, info, items, todo, folder, done, options, progress, on_image)
    _write_index(folder, info, items, done)
    return SampleResult(folder, len(items), len(todo), kept, time.perf_counter() - started)


def generate_base_drift(backend, images_root: str | Path, *, base_seed: int, options: SampleOptions,
                        model: str) -> SampleResult:
    """The base model's images of the drift prompts (no adapter) into images_root/_base_model/seed-<s>/, made once
    per run and shared by every method: finished images are kept, so the jobs after the first find them all.

    `backend` (or a LazyBackend, loaded only when an image is missing) must have no adapter attached (a job's is
    detached when its sampling ends). The batches are the
    adapted models' (same batch size and order), so an image pair differs by the adapter only. Workers that
    get here at once take turns on a lock file: each image is generated once.
    """
    from tlora_bench.models import backend_spec

    started = time.perf_counter()
    folder = base_model_folder(images_root, base_seed)
    items = drift_items(base_seed, options.drift_images, options.drift_prompts, backend_spec(model).drift_prompts)
    names = image_names(items)
    ensure_writable(folder)
    with exclusive_file_lock(folder / ".lock"):
        done = {names[i] for i in items if _is_finished(folder / names[i], _png_text(None, i, model))}
        missing = {names[i] for i in items} - done
        if missing:
            (folder / INDEX_FILE).unlink(missing_ok=True)
            with safe_points():
                _sample_batches(_loaded(backend), items, folder, done, options, missing, None, None,
                                lambda item: _png_text(None, item, model))
        if missing or not (folder / INDEX_FILE).is_file():
            _write_index(folder, None, items, done)
    return SampleResult(folder, len(items), len(missing), len(items) - len(missing), time.perf_counter() - started)


def adapter_backend(adapter_path: str | Path, device: str = "auto") -> LazyBackend:
    """The adapter's base model (never the adapter), loaded when first needed."""
    info = read_adapter_info(adapter_path)
    return LazyBackend(lambda: _load_backend(info, device))


def _load_backend(info: AdapterInfo, device: str):
    from tlora_bench.models import load_backend

    spec = info.spec
    return load_backend(spec.model, source=spec.model_path, revision=spec.revision, vae_source=spec.vae_path,
                        precision=spec.precision, device=device)


@contextlib.contextmanager
def adapter_loaded(backend, info: AdapterInfo) -> Iterator[None]:
    """The adapter attached to the backend's denoiser, merged when the method allows it; detached after."""
    from tlora_bench.adapters import detach_adapters, prepare_for_sampling
    from tlora_bench.adapters.io import load_adapter

    load_adapter(backend.denoiser, info.path)
    try:
        backend.install_timestep_hook()
        prepare_for_sampling(backend.denoiser)  # merged once, or per r(t) for T-LoRA: base-model speed
        yield
    finally:
        backend.remove_timestep_hook()
        detach_adapters(backend.denoiser)


def _sample_items(backend, info: AdapterInfo, items: list[PromptItem], todo: list[PromptItem], folder: Path,
                  done: set[str], options: SampleOptions, progress: bool,
                  on_image: Callable[[str], None] | None) -> None:
    """Generate in fixed batches of each prompt's images, so that an image comes out of the same batch whether
    a run was interrupted or not (bit-identical resumes); only the missing images of a batch are written."""
    from tqdm.auto import tqdm

    names = image_names(items)
    missing = {names[item] for item in todo}
    bar = tqdm(total=len(todo), disable=None if progress else True, desc=f"sample {info.label} {folder.name}",
               unit="img", leave=False)  # None: shown on a terminal only
    with safe_points():  # a stop signal waits for the end of the batch
        _sample_batches(backend, items, folder, done, options, missing, bar, on_image,
                        lambda item: _png_text(info, item, info.spec.model))
    bar.close()


def _sample_batches(backend, items: list[PromptItem], folder: Path, done: set[str], options: SampleOptions,
                    missing: set[str], bar, on_image: Callable[[str], None] | None,
                    text_of: Callable[[PromptItem], dict[str, str]]) -> None:
    names = image_names(items)
    for _, group in groupby(items, key=lambda item: item.template):
        group = list(group)
        for start in range(0, len(group), options.batch_size):
            chunk = group[start:start + options.batch_size]
            if not any(names[item] in missing for item in chunk):
                continue
            images = backend.generate(chunk[0].prompt, [item.seed for item in chunk],
                                      num_inference_steps=options.num_inference_steps,
                                      guidance_scale=options.guidance_scale)
            for item, image in zip(chunk, images, strict=True):
                name = names[item]
                if name not in missing:
                    continue
                _write_png(folder / name, image, text_of(item))
                done.add(name)
                if bar is not None:
                    bar.update(1)
                if on_image:
                    on_image(name)
            stop_if_asked()
