"""TS at the CLIPScore scale against torchmetrics' own `CLIPScore`, on the same tiny random CLIP.

One transformers CLIPModel folder (the layout of the hub's openai/clip-vit-base-patch32) is loaded by torchmetrics
through `model_name_or_path` and by tlora-bench through `--weights clip-vit-b-32=FOLDER`, which runs the same
weights in open_clip's architecture with open_clip's preprocessing and tokenizer (docs/evaluation.md, "Feature
extractors" and "Published protocols, side by side").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.metrics_helpers import BASE, BEACH, JUNGLE, make_concepts
from tlora_bench.concepts.manifest import load_manifest
from tlora_bench.errors import TloraBenchError
from tlora_bench.layout import ImageRecord, write_images_index
from tlora_bench.metrics import EvalOptions, evaluate_folder, load_extractor
from tlora_bench.metrics.extractors import TINY_CLIP_ARGS

CLIP = "clip-vit-b-32"
# torchmetrics' CLIPScore (clip_score.py) picks its loader from the name: a path is loaded with CLIPModel and
# CLIPProcessor.from_pretrained only when it contains "openai", so the folders are named that way.
FOLDER_NAMES = {False: "openai-tiny-clip", True: "openai-tiny-clip-negated"}


def _hf_config():
    from transformers import CLIPConfig

    vision, text = TINY_CLIP_ARGS["vision_cfg"], TINY_CLIP_ARGS["text_cfg"]
    return CLIPConfig(
        projection_dim=TINY_CLIP_ARGS["embed_dim"],
        vision_config={"hidden_size": vision["width"], "num_hidden_layers": vision["layers"],
                       "num_attention_heads": vision["width"] // vision["head_width"],
                       "intermediate_size": 4 * vision["width"], "patch_size": vision["patch_size"],
                       "image_size": vision["image_size"], "hidden_act": "quick_gelu"},
        text_config={"hidden_size": text["width"], "num_hidden_layers": text["layers"],
                     "num_attention_heads": text["heads"], "intermediate_size": 4 * text["width"],
                     "vocab_size": text["vocab_size"], "max_position_embeddings": text["context_length"],
                     "hidden_act": "quick_gelu"})


def clip_tokenizer(vocab_size: int | None = None):
    """transformers' CLIPTokenizer with CLIP's BPE (the file open_clip ships; the hub repo's vocab.json holds the
    same), or with a cut vocabulary of `vocab_size` tokens."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    ours = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): i for token, i in ours.encoder.items()}
    merges = sorted(ours.bpe_ranks, key=ours.bpe_ranks.get)
    if vocab_size is not None:
        vocab = {token: i for token, i in vocab.items() if i < vocab_size or token in names.values()}
        merges = []
    return CLIPTokenizer(vocab=vocab, merges=merges)


def save_tiny_hf_clip(folder: Path, *, negate_text: bool = False, processor_args: dict | None = None,
                      vocab_size: int | None = None) -> Path:
    """A seeded tiny random transformers CLIPModel with CLIP's tokenizer and image processor (OpenAI's statistics
    and sizes), saved with save_pretrained. `negate_text` flips the text projection: every cosine changes sign."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(_hf_config())
    if negate_text:
        with torch.no_grad():
            model.text_projection.weight.neg_()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(**(processor_args or {})),
                  tokenizer=clip_tokenizer(vocab_size)).save_pretrained(folder)
    return folder


class _Unwrapped(torch.nn.Module):
    """The loaded CLIPModel, its feature methods returning the embedding tensor.

    torchmetrics 1.9 expects a tensor from get_image_features / get_text_features; transformers 5 returns an
    output object whose `pooler_output` is that embedding (projected). Taking it is what torchmetrics' own fix for
    transformers 5 does; the processor, the normalisation, the scale and the clipping stay torchmetrics'.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    @staticmethod
    def _tensor(output) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def torchmetrics_clipscore(folder: Path):
    from torchmetrics.multimodal import CLIPScore

    metric = CLIPScore(model_name_or_path=str(folder))
    metric.model = _Unwrapped(metric.model)
    return metric


def one_at_a_time(metric, image: Image.Image, caption: str) -> float:
    """torchmetrics' CLIPScore of one image and its caption (it takes images as uint8 C x H x W tensors)."""
    metric.reset()
    metric.update(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1), caption)
    return float(metric.compute())


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[bool, Path]:
    root = tmp_path_factory.mktemp("hf-clip")
    return {negate: save_tiny_hf_clip(root / name, negate_text=negate) for negate, name in FOLDER_NAMES.items()}


def _smooth_image(path: Path, size: int, seed: int) -> Path:
    """Coarse random colour blocks, upscaled: an image whose resize does not turn into noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    small.resize((size, size), Image.Resampling.BICUBIC).save(path)
    return path


def _generated(root: Path, size: int) -> Path:
    """DIR/tlora/<concept>/ with two images of each of three prompts, `size` px square."""
    gen = root / "gen"
    for c, concept in enumerate(("rex", "mug")):
        folder, rows = gen / "tlora" / concept, []
        for t, template in enumerate((BASE, JUNGLE, BEACH)):
            for i in range(2):
                file = f"p{t}/{i}.png"
                _smooth_image(folder / file, size, seed=100 * c + 10 * t + i)
                rows.append(ImageRecord(file=file, template=template, image_index=i))
        write_images_index(folder, rows)
    return gen


def _evaluate(root: Path, folder: Path, size: int = 224) -> pd.DataFrame:
    manifest, gen = make_concepts(root), _generated(root, size)
    options = EvalOptions(tiny_models=True, device="cpu", bootstrap=10, segmenter="none",
                          weights={CLIP: str(folder)})
    return evaluate_folder(gen, manifest=load_manifest(manifest), data_root=None, options=options).scores


def test_the_transformers_folder_gives_transformers_own_embeddings(folders, tmp_path: Path):
    from transformers import CLIPModel, CLIPProcessor

    folder = folders[False]
    ours = load_extractor(CLIP, weights=folder)
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    images = [Image.open(_smooth_image(tmp_path / f"{i}.png", 224, i)).convert("RGB") for i in range(3)]
    texts = ["a in the jungle", "a on the beach", "a wearing a red hat"]
    with torch.inference_mode():
        image_features = _Unwrapped(model).get_image_features(**processor(images=images, return_tensors="pt"))
        tokens = processor(text=texts, return_tensors="pt", padding=True)
        text_features = _Unwrapped(model).get_text_features(tokens["input_ids"], tokens["attention_mask"])
    for got, want in ((ours.encode_images(images), image_features), (ours.encode_texts(texts), text_features)):
        assert got == pytest.approx(torch.nn.functional.normalize(want, dim=-1).numpy(), abs=1e-6)
    assert ours.weights.startswith(f"local:{folder.resolve()}")
    assert "transformers CLIPModel folder" in ours.architecture and "interpolation=bicubic" in ours.preprocess_id


def test_ts_clipscore_equals_torchmetrics_clipscore_image_by_image(folders, tmp_path: Path):
    seen = []
    for negate, folder in folders.items():
        scores = _evaluate(tmp_path / FOLDER_NAMES[negate], folder)
        metric = torchmetrics_clipscore(folder)
        assert len(scores) == 12 and f"local:{folder.resolve()}#" in scores["clip_weights"].iloc[0]
        for _, row in scores.iterrows():
            image = Image.open(tmp_path / FOLDER_NAMES[negate] / "gen" / row["file"])
            want = one_at_a_time(metric, image, row["ts_text"])  # the headline TS text, class removed
            # Both sides compute in float32: at values near 35 they differ in the 7th significant digit.
            assert row["ts_clipscore"] == pytest.approx(want, rel=1e-5, abs=1e-5), (negate, row["file"])
            assert row["ts_clipscore"] == 100 * max(row["ts"], 0.0)
            seen.append(want)
    # The negated twin flips every cosine, so both sides of the clipping at 0 were compared.
    assert min(seen) == 0.0 and max(seen) > 1.0


def test_a_downscaled_image_differs_from_torchmetrics_only_by_the_resize(folders, tmp_path: Path):
    # A 1024 px image is resized by open_clip with PIL (bicubic) and by transformers' processor with torchvision on
    # a tensor; given the PIL-resized copy, torchmetrics agrees with our score of the original image.
    folder = folders[True]
    scores = _evaluate(tmp_path, folder, size=1024)
    metric = torchmetrics_clipscore(folder)
    for _, row in scores.iterrows():
        image = Image.open(tmp_path / "gen" / row["file"]).convert("RGB")
        resized = image.resize((224, 224), Image.Resampling.BICUBIC)
        assert row["ts_clipscore"] == pytest.approx(one_at_a_time(metric, resized, row["ts_text"]), rel=1e-5,
                                                    abs=1e-5)


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda folder: save_tiny_hf_clip(folder, processor_args={"crop_size": {"height": 200, "width": 200}}),
     "is not open_clip's resize of the shorter side to 224 px and centre crop"),
    (lambda folder: save_tiny_hf_clip(folder, vocab_size=1000), "is not CLIP's BPE vocabulary"),
])
def test_a_transformers_folder_open_clip_would_run_differently_is_refused_in_one_line(make, fragment, tmp_path):
    folder = make(tmp_path / "clip")
    with pytest.raises(TloraBenchError) as error:
        load_extractor(CLIP, weights=folder)
    message = str(error.value)
    assert "\n" not in message and "cannot load the weights of feature extractor 'clip-vit-b-32'" in message
    assert fragment in message
