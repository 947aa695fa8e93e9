"""Image and text feature extractors for IS, DINO-IS and TS (docs/decisions.md section 5), plus tiny test versions.

`clip-vit-b-32` is open_clip ViT-B/32 with OpenAI weights and open_clip's own preprocessing; `dino-vits16`
(DINO v1, the default) and `dinov2-vits14` are timm ViT-S models whose CLS token is the embedding. Every
embedding is L2-normalised. Weights come from the Hugging Face hub cache (timm and open_clip's own loaders), or
from a local copy: a folder laid out like the hub repo, a single checkpoint file, or (CLIP only) a transformers
CLIPModel folder, whose weights are moved into the open_clip model (docs/evaluation.md, "Feature extractors").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
LIBRARY_LOGGERS = ("open_clip", "timm", "huggingface_hub", "transformers")
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
                 device: torch.device, dtype: torch.dtype, tokenizer=None, architecture: str = "") -> None:
        self.spec, self.model, self.preprocess, self.preprocess_id = spec, model, preprocess, preprocess_id
        self.weights, self.device, self.dtype, self.tokenizer = weights, device, dtype, tokenizer
        self.architecture = architecture or f"{spec.library} {spec.model}"  # for provenance: what ran

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
    elif is_hf_clip_folder(weights):  # transformers' layout (config.json, model_type "clip")
        model, preprocess, context_length = _load_hf_clip(spec, Path(weights))
        return model, preprocess, _preprocess_id(model), open_clip.get_tokenizer(spec.model,
                                                                                 context_length=context_length)
    elif Path(weights).is_dir():  # a copy of the hub repo: open_clip_config.json + weights
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{weights}", **kwargs)
    else:  # a bare checkpoint file of this architecture (the OpenAI weights use QuickGELU)
        model, _, preprocess = open_clip.create_model_and_transforms(spec.model, pretrained=str(weights),
                                                                     force_quick_gelu=True, **kwargs)
    return model, preprocess, _preprocess_id(model), open_clip.get_tokenizer(spec.model)


def _preprocess_id(model: torch.nn.Module) -> str:
    cfg = model.visual.preprocess_cfg
    return "open_clip:" + ",".join(f"{k}={cfg[k]}" for k in sorted(cfg))


# A transformers CLIPModel folder (what the hub's openai/clip-vit-base-patch32 holds, and what torchmetrics'
# CLIPScore loads) runs in open_clip's architecture: the same weights then go through the same open_clip code,
# preprocessing and tokenizer as open_clip's own copy, so a score does not depend on the format the weights
# came in (docs/evaluation.md, "Feature extractors").
HF_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL's codes, as transformers' image processors record them
_HF_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip's: transformers'
_HF_TENSORS = {  # open_clip name: transformers name
    "logit_scale": "logit_scale",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
}
_HF_PROJECTIONS = {"text_projection": "text_projection.weight", "visual.proj": "visual_projection.weight"}  # x @ W.T
_HF_MODULES = {"ln_final": "text_model.final_layer_norm", "visual.ln_pre": "vision_model.pre_layrnorm",
               "visual.ln_post": "vision_model.post_layernorm"}  # weight and bias
_HF_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def is_hf_clip_folder(weights: str | Path) -> bool:
    """Whether `weights` is a folder written by transformers' `CLIPModel.save_pretrained` (config.json of
    model_type "clip")."""
    try:
        return json.loads((Path(weights) / "config.json").read_text()).get("model_type") == "clip"
    except (OSError, ValueError, AttributeError):
        return False


def _load_hf_clip(spec: ExtractorSpec, folder: Path) -> tuple[torch.nn.Module, Any, int]:
    """The open_clip model holding a transformers CLIP folder's weights, its open_clip preprocessing built from
    the folder's image processor, and the text context length."""
    import open_clip
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_pretrained(folder)
    _check_hf_tokenizer(folder)
    with _seeded(TINY_SEED):  # the random init is overwritten; the caller's random stream stays untouched
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=None, load_weights=False, **_hf_model_args(config),
            **_hf_preprocess_args(folder, config.vision_config.image_size))
    model.load_state_dict(_open_clip_state(CLIPModel.from_pretrained(folder).state_dict(), config), strict=True)
    return model, preprocess, config.text_config.max_position_embeddings


def _tower_args(tower: Any) -> dict[str, Any]:
    return {"width": tower.hidden_size, "layers": tower.num_hidden_layers,
            "mlp_ratio": tower.intermediate_size / tower.hidden_size}


def _hf_model_args(config: Any) -> dict[str, Any]:
    """open_clip's CLIP configuration of the same sizes; refused where open_clip's CLIP computes otherwise."""
    vision, text = config.vision_config, config.text_config
    acts, eps = {vision.hidden_act, text.hidden_act}, {vision.layer_norm_eps, text.layer_norm_eps}
    if len(acts) > 1 or acts - {"quick_gelu", "gelu"} or eps != {1e-5}:
        raise TloraBenchError(f"its activations {sorted(acts)} and layer-norm eps {sorted(eps)} are not open_clip "
                              "CLIP's (quick_gelu or gelu in both towers, eps 1e-5)")
    return {"embed_dim": config.projection_dim, "quick_gelu": acts == {"quick_gelu"},
            "vision_cfg": {"image_size": vision.image_size, "patch_size": vision.patch_size,
                           "head_width": vision.hidden_size // vision.num_attention_heads, **_tower_args(vision)},
            "text_cfg": {"context_length": text.max_position_embeddings, "vocab_size": text.vocab_size,
                         "heads": text.num_attention_heads, **_tower_args(text)}}


def _size(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def _hf_preprocess_args(folder: Path, image_size: int) -> dict[str, Any]:
    """open_clip's preprocessing with the folder's statistics and interpolation. open_clip resizes the shorter
    side to the crop size and crops it: a processor that does anything else is refused, not approximated."""
    from transformers import CLIPImageProcessor

    p = CLIPImageProcessor.from_pretrained(folder)
    sizes = {_size(p.size, "shortest_edge"), _size(p.crop_size, "height"), _size(p.crop_size, "width"), image_size}
    steps = (p.do_resize, p.do_center_crop, p.do_rescale, p.do_normalize, abs(p.rescale_factor - 1 / 255) < 1e-12)
    if len(sizes) > 1 or not all(steps) or int(p.resample) not in HF_RESAMPLE:
        raise TloraBenchError(f"its image processor (shortest edge {_size(p.size, 'shortest_edge')}, crop "
                              f"{_size(p.crop_size, 'height')}x{_size(p.crop_size, 'width')}, resample {p.resample}) "
                              f"is not open_clip's resize of the shorter side to {image_size} px and centre crop")
    return {"image_mean": tuple(p.image_mean), "image_std": tuple(p.image_std),
            "image_interpolation": HF_RESAMPLE[int(p.resample)], "image_resize_mode": "shortest"}


def _check_hf_tokenizer(folder: Path) -> None:
    """open_clip's tokenizer encodes the texts: the folder's own must have its vocabulary, or the text tower
    would be given token ids it was not trained on."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    ours = {_HF_SPECIAL.get(token, token): i for token, i in SimpleTokenizer().encoder.items()}
    if CLIPTokenizer.from_pretrained(folder).get_vocab() != ours:
        raise TloraBenchError("its tokenizer's vocabulary is not CLIP's BPE vocabulary, which open_clip's "
                              "tokenizer (the one TS uses) encodes")


def _open_clip_state(hf: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict under open_clip's names (q, k, v joined into one in_proj)."""
    out = {ours: hf[theirs] for ours, theirs in _HF_TENSORS.items()}
    out.update({ours: hf[theirs].T.contiguous() for ours, theirs in _HF_PROJECTIONS.items()})
    modules = dict(_HF_MODULES)
    for tower, prefix, layers in (("", "text_model", config.text_config.num_hidden_layers),
                                  ("visual.", "vision_model", config.vision_config.num_hidden_layers)):
        for i in range(layers):
            ours, theirs = f"{tower}transformer.resblocks.{i}.", f"{prefix}.encoder.layers.{i}."
            modules.update({ours + a: theirs + b for a, b in _HF_BLOCK.items()})
            for kind in ("weight", "bias"):
                out[f"{ours}attn.in_proj_{kind}"] = torch.cat([hf[f"{theirs}self_attn.{x}_proj.{kind}"]
                                                               for x in "qkv"])
    out.update({f"{ours}.{kind}": hf[f"{theirs}.{kind}"] for ours, theirs in modules.items()
                for kind in ("weight", "bias")})
    return out


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
    return Extractor(spec, model, preprocess, preprocess_id, identity, torch_device, torch_dtype, tokenizer,
                     _architecture(spec, weights, tiny))


def _architecture(spec: ExtractorSpec, weights: str | None, tiny: bool) -> str:
    """What ran, in words, for provenance: the library's model, its size, where its weights came from."""
    name = f"{spec.library} {spec.model}"
    if spec.library == "pixels":
        return name
    if weights is not None and spec.library == "open_clip" and is_hf_clip_folder(weights):
        return f"{name}, weights moved from a transformers CLIPModel folder (its config gives the sizes)"
    if weights is not None and Path(weights).is_dir():
        return f"{name}, from a folder laid out like its hub repo (its config gives the sizes)"
    if tiny:
        vision = TINY_CLIP_ARGS["vision_cfg"]
        width, depth = (vision["width"], vision["layers"]) if spec.library == "open_clip" else \
            (TINY_VIT_ARGS["embed_dim"], TINY_VIT_ARGS["depth"])
        name += f", tiny (width {width}, depth {depth})"
    elif spec.pretrained:
        name += f", pretrained {spec.pretrained}"
    source = "random (seeded)" if tiny else "from the hub"
    return f"{name}, {source if weights is None else 'from a checkpoint file'}"
