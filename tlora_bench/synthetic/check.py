"""How well the scene model follows its prompts, read by the judges, and how well the judges read its samples
(`tlora-bench synthetic check`; docs/synthetic.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tlora_bench.synthetic.judges import ATTRIBUTES, judge
from tlora_bench.synthetic.scenes import Scene, all_scenes, caption, render


def sample_scenes(pipeline, scenes: Sequence[Scene], seed: int = 0, *, num_inference_steps: int = 20,
                  guidance_scale: float = 3.0, batch_size: int = 32) -> list[np.ndarray]:
    """One sample per scene from its caption; sample i has seed `seed + i`."""
    import torch

    from tlora_bench.models.backend import cpu_generators

    images = []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start:start + batch_size]
        with torch.no_grad():
            seeds = range(seed + start, seed + start + len(chunk))
            out = pipeline([caption(scene) for scene in chunk], generator=cpu_generators(seeds),
                           num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        images += [np.asarray(image) for image in out.images]
    return images


def following(scenes: Sequence[Scene], images: Sequence[np.ndarray]) -> dict[str, float]:
    """The share of samples whose judged attribute is the prompted one, per attribute."""
    agreements = [judge(image).agrees(scene) for scene, image in zip(scenes, images, strict=True)]
    return {name: float(np.mean([a[name] for a in agreements])) for name in ATTRIBUTES}


def nearest_render_agreement(images: Sequence[np.ndarray]) -> dict[str, float]:
    """An independent reading of the samples: the scene whose exact render is nearest in pixels. The share of
    samples where the judges and that reading agree, per attribute (a check of the judges on model images)."""
    scenes = all_scenes()
    renders = np.stack([render(scene) for scene in scenes]).reshape(len(scenes), -1).astype(np.float32)
    agree = {name: [] for name in ATTRIBUTES}
    for image in images:
        flat = np.asarray(image, dtype=np.float32).reshape(1, -1)
        nearest = scenes[int(np.argmin(((renders - flat) ** 2).sum(axis=1)))]
        judged = judge(image)
        for name in ATTRIBUTES:
            agree[name].append(getattr(judged, name) == getattr(nearest, name))
    return {name: float(np.mean(values)) for name, values in agree.items()}


def check_model(model_path: str | None = None, *, samples: int = 192, seed: int = 0) -> dict:
    """Sample `samples` pretraining scenes (drawn with `seed`) from the model and judge them."""
    from tlora_bench.models import load_backend
    from tlora_bench.models.download import check_model_available
    from tlora_bench.synthetic.pretrain import pretraining_scenes

    check_model_available("synthetic", model_path)  # no shipped weights: one line saying how to make them
    backend = load_backend("synthetic", source=model_path, device="cpu")
    pool = pretraining_scenes()
    scenes = [pool[i] for i in np.random.default_rng(seed).choice(len(pool), size=samples, replace=samples > len(pool))]
    spec = backend.spec
    images = sample_scenes(backend.pipeline, scenes, seed, num_inference_steps=spec.num_inference_steps,
                           guidance_scale=spec.guidance_scale)
    return {"model": backend.source, "samples": samples, "following": following(scenes, images),
            "judge_agreement": nearest_render_agreement(images)}
