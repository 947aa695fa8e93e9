"""Image and text feature extractors for IS, DINO-IS and TS (docs/decisions.md section 5), plus tiny test versions.

`clip-vit-b-32` is open_clip ViT-B/32 with OpenAI weights and open_clip's own preprocessing; `dino-vits16`
(DINO v1, the default) and `dinov2-vits14` are timm ViT-S models whose CLS token is the embedding. Every
embedding is L2-normalised. Weights come from the Hugging Face hub cache (timm and open_clip's own loaders), or
from a local copy: a folder laid out like the hub repo, or a single checkpoint file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tlora_bench.devices import DTYPES, resolve_device, resolve_dtype
from tlora_bench.errors import TloraBenchError
from tlora_bench.hub import offline_when_unreachable
from tlora_bench.metrics.names import CLIP_EXTRACTOR, DINO_EXTRACTORS
from tlora_bench.registry import Registry

TINY_SEED = 0

# The DINO authors' evaluation transform (resize 256 bicubic, center crop 224, ImageNet statistics), used by
# DINO v1 and DINOv2 alike and by Hugging Face's facebook/dinov2-small processor, which the T-LoRA authors'
# evaluator loads. timm's DINOv2 default of 518 px is a fine-tuning resolution, not the evaluation protocol.
DINO_RESIZE, DINO_CROP = 256, 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Tiny random architectures of the same families (open_clip CLIP, timm VisionTransformer), for tests and smoke
# runs: same patch sizes, input size and preprocessing as the real models, tiny widths and depths.
TINY_CLIP_ARGS: dict[str, Any] = {
    "embed_dim": 16, "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_VIT_ARGS: dict[str, Any] = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@dataclass(frozen=True)
class ExtractorSpec:
    """What a registry name means: the library, the model, where its weights live."""

    name: str
    library: str  # "open_clip", "timm", or "pixels" (the deterministic test extractor, PIXEL_GRID)
    model: str  # open_clip model name, or timm model name with its pretrained tag
    hub_id: str  # the Hugging Face repo its weights come from
    pretrained: str | None = None  # open_clip pretrained tag
    model_args: Mapping[str, Any] = field(default_factory=dict)  # architecture overrides for the real model
    description: str = ""


EXTRACTORS: Registry[ExtractorSpec] = Registry("feature extractor")


def _register(spec: ExtractorSpec) -> None:
    EXTRACTORS.register(spec.name, spec)


# The names come from names.py, which config checks read without importing torch.
_DINO_V1, _DINO_V2 = DINO_EXTRACTORS
_register(ExtractorSpec(
    CLIP_EXTRACTOR, "open_clip", "ViT-B-32", "timm/vit_base_patch32_clip_224.openai", pretrained="openai",
    description="CLIP ViT-B/32, OpenAI weights (IS, TS)"))
_register(ExtractorSpec(
    _DINO_V1, "timm", "vit_small_patch16_224.dino", "timm/vit_small_patch16_224.dino",
    description="DINO v1 ViT-S/16 (DINO-IS; the paper's citation, docs/decisions.md section 5 Decision)"))
_register(ExtractorSpec(
    _DINO_V2, "timm", "vit_small_patch14_dinov2.lvd142m", "timm/vit_small_patch14_dinov2.lvd142m",
    model_args={"img_size": DINO_CROP}, description="DINOv2 ViT-S/14 (DINO-IS as the authors' evaluator)"))


# A deterministic extractor with no weights: the image's pixels on a 16 x 16 grid, centred (cosine = the Pearson
# correlation of the pixels). Not registered: tests register it (tests/metrics_helpers.py) to check metrics on
# constructed ground truth, where what a feature means must be known exactly.
PIXEL_GRID = ExtractorSpec("pixel-grid", "pixels", "grid16", hub_id="", description="pixels on a 16 x 16 grid (tests)")
PIXEL_GRID_SIZE = 16


class _CentredPixels(torch.nn.Module):
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        flat = batch.flatten(1)
        return flat - flat.mean(dim=1, keepdim=True)


def _load_pixels(spec: ExtractorSpec, weights: str | None, tiny: bool):
    from torchvision import transforms

    preprocess = transforms.Compose([
        transforms.Lambda(_square),
        transforms.Resize((PIXEL_GRID_SIZE, PIXEL_GRID_SIZE), interpolation=transforms.InterpolationMode.BOX),
        transforms.ToTensor()])
    return _CentredPixels(), preprocess, f"pixels:square,box{PIXEL_GRID_SIZE}", None


def _square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))


# Loggers of the libraries that load extractor weights; their records are dropped while a model loads.
LIBRARY_LOGGERS = ("open_clip", "timm", "huggingface_hub")
_OPEN_CLIP_PATH = f"{os.sep}open_clip{os.sep}"


def _not_from_open_clip(record: logging.LogRecord) -> bool:
    """open_clip logs through the root logger itself (`logging.info(...)`): recognise its records by file."""
    return _OPEN_CLIP_PATH not in record.pathname


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence the loading libraries' logging, and only theirs, while a model loads; restored exactly after.

    open_clip logs through the root logger and repeats every error it then raises, breaking one-line errors:
    a filter on the root logger drops the records logged from open_clip's files, and a NullHandler keeps
    `logging.info(...)` from installing a stderr handler on the root logger for good (logging.basicConfig).
    The loggers named in LIBRARY_LOGGERS (and their children) are raised above CRITICAL. Nothing else changes:
    a user's own loggers and handlers keep working during the load, and `logging.disable` is never called.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    root.addHandler(guard)
    root.addFilter(_not_from_open_clip)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        root.removeFilter(_not_from_open_clip)
        root.removeHandler(guard)


def local_weights_identity(path: str | Path) -> str:
    """A cheap identity of a local checkpoint file or folder: its path, and the size and mtime of each file."""
    path = Path(path).expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"local:{path}#{digest.hexdigest()[:16]}"


CACHE_HINT = "on a machine with internet run once with HF_HUB_OFFLINE unset to cache them"


def weights_error(what: str, source: str, error: BaseException, fix: str) -> TloraBenchError:
    """The one-line error for weights that cannot be loaded (offline, not cached, wrong file)."""
    reason = " ".join(str(error).split()) or type(error).__name__  # all of it, on one line
    return TloraBenchError(f"cannot load the weights of {what} from {source} ({reason}); {fix}")


class Extractor:
    """A loaded model with its preprocessing: PIL images (and, for CLIP, texts) to L2-normalised embeddings."""

    def __init__(self, spec: ExtractorSpec, model: torch.nn.Module, preprocess, preprocess_id: str, weights: str,
                 device: torch.device, dtype: torch.dtype, tokenizer=None) -> None:
        self.spec, self.model, self.preprocess, self.preprocess_id = spec, model, preprocess, preprocess_id
        self.weights, self.device, self.dtype, self.tokenizer = weights, device, dtype, tokenizer

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def identity(self) -> str:
        """Everything that changes the features of a given image: a part of every feature cache key."""
        dtype = next(k for k, v in DTYPES.items() if v == self.dtype)
        return f"{self.name}|{self.weights}|{self.preprocess_id}|{dtype}|{self.device.type}"

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, d) float32 embeddings, L2-normalised, of RGB images (one forward pass: the caller batches)."""
        batch = torch.stack([self.preprocess(image) for image in images]).to(self.device, self.dtype)
        if self.spec.library == "open_clip":
            return _normalise(self.model.encode_image(batch))
        return _normalise(self.model(batch))  # timm, num_classes=0, global_pool='token': the CLS token

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 CLIP text embeddings, L2-normalised."""
        if self.tokenizer is None:
            raise TloraBenchError(f"feature extractor '{self.name}' has no text encoder; TS needs CLIP")
        tokens = self.tokenizer(list(texts)).to(self.device)
        return _normalise(self.model.encode_text(tokens))


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Tiny random models are the same every time: features cached by one run stay valid for the next."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _load_open_clip(spec: ExtractorSpec, weights: str | None, tiny: bool):
    import open_clip

    kwargs = dict(TINY_CLIP_ARGS) if tiny else {}
    if weights is None and tiny:
        with _seeded(TINY_SEED):
            model, _, preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=None,
                                                                         load_weights=False, **kwargs)
    elif weights is None:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=spec.pretrained)
    elif Path(weights).is_dir():  # a copy of the hub repo: open_clip_config.json + weights
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{weights}", **kwargs)
    else:  # a bare checkpoint file of this architecture (the OpenAI weights use QuickGELU)
        model, _, preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=str(weights),
                                                                     force_quick_gelu=True, **kwargs)
    cfg = model.visual.preprocess_cfg
    preprocess_id = "open_clip:" + ",".join(f"{k}={cfg[k]}" for k in sorted(cfg))
    return model, preprocess, preprocess_id, open_clip.get_tokenizer(spec.model)


def dino_transform():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(DINO_RESIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(DINO_CROP), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _load_timm(spec: ExtractorSpec, weights: str | None, tiny: bool):
    import timm

    kwargs = {"num_classes": 0, **spec.model_args, **(TINY_VIT_ARGS if tiny else {})}
    if weights is None and tiny:
        with _seeded(TINY_SEED):
            model = timm.create_model(spec.model, pretrained=False, **kwargs)
    elif weights is None:
        model = timm.create_model(spec.model, pretrained=True, **kwargs)
    elif Path(weights).is_dir():  # a copy of the hub repo: config.json + model.safetensors
        model = timm.create_model(f"local-dir:{weights}", pretrained=True, **kwargs)
    else:
        model = timm.create_model(spec.model, pretrained=True, pretrained_cfg_overlay={"file": str(weights)},
                                  **kwargs)
    preprocess_id = f"dino:resize{DINO_RESIZE}-bicubic,crop{DINO_CROP},imagenet-mean-std"
    return model, dino_transform(), preprocess_id, None


def load_extractor(name: str, *, device: str | torch.device = "cpu", dtype: str = "fp32",
                   weights: str | Path | None = None, tiny: bool = False) -> Extractor:
    """Load a registered extractor in eval mode on `device` and `dtype`.

    `weights`: None (the hub, through the library's own cache), a folder laid out like the hub repo, or a
    checkpoint file. `tiny`: the tiny architecture, random (seeded) unless `weights` holds a tiny checkpoint.
    """
    spec = EXTRACTORS.get(name)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if weights is not None and not Path(weights).expanduser().exists():
        raise TloraBenchError(f"weights for '{name}' not found at '{weights}'; pass a checkpoint file or a "
                              "folder laid out like the hub repo")
    weights = None if weights is None else str(Path(weights).expanduser())
    loader = {"open_clip": _load_open_clip, "timm": _load_timm, "pixels": _load_pixels}[spec.library]
    source = f"'{weights}'" if weights else f"the Hugging Face hub ({spec.hub_id})"
    try:
        with quiet_logging(), offline_when_unreachable():
            model, preprocess, preprocess_id, tokenizer = loader(spec, weights, tiny)
    except Exception as e:  # hub, pickle, safetensors and shape errors all mean "bad weights"
        fix = f"{CACHE_HINT}, pass --weights {name}=PATH to a local copy, or use --tiny-models for a smoke run"
        raise weights_error(f"feature extractor '{name}'", source, e, fix) from None
    if spec.library == "pixels":
        identity = "deterministic"
    elif weights is not None:
        identity = local_weights_identity(weights)
    else:
        identity = f"tiny-random(seed {TINY_SEED})" if tiny else f"hub:{spec.hub_id}"
    if tiny and weights is not None:
        identity = f"tiny:{identity}"
    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    return Extractor(spec, model, preprocess, preprocess_id, identity, torch_device, torch_dtype, tokenizer)
