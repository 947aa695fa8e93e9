"""Helpers for the evaluation tests: generated-image folders in the documented layout, tiny model folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tlora_bench.layout import ImageRecord, write_images_index
from tlora_bench.metrics.extractors import EXTRACTORS, TINY_CLIP_ARGS, TINY_VIT_ARGS, Extractor
from tlora_bench.metrics.registry import MetricInput
from tlora_bench.prompts import base_template, seed_for

BASE = base_template()
JUNGLE = "a {0} in the jungle"
BEACH = "a {0} on the beach"


def blob_image(path: Path, size: int = 32, seed: int = 0, fmt: str | None = None) -> Path:
    """A noisy dark background with a bright noisy square in the middle: something for a segmenter to find."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    lo, hi = size // 4, size - size // 4
    pixels[lo:hi, lo:hi] = rng.integers(180, 255, (hi - lo, hi - lo, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def brightness(item: MetricInput) -> float:
    """A score hook for the metric registry tests: the mean pixel value of the generated image, 0..1."""
    return float(np.asarray(item.image, dtype=np.float64).mean() / 255.0)


def write_generated(root: Path, method_label: str, concept_id: str, counts: dict[str, int], *, seed: int = 0,
                    rank: int | None = None, method: str | None = None) -> Path:
    """DIR/<method_label>/<concept_id>/ with `counts[template]` PNG images each, indexed by images.jsonl."""
    folder = root / method_label / concept_id
    rows = []
    for t, (template, count) in enumerate(counts.items()):
        for i in range(count):
            file = f"prompt{t:02d}/{i:02d}.png"
            blob_image(folder / file, seed=seed * 1000 + t * 50 + i)
            rows.append(ImageRecord(file=file, template=template, image_index=i, seed=seed_for(template, i),
                                    method=method, rank=rank))
    write_images_index(folder, rows)
    return folder


def make_concepts(root: Path) -> Path:
    """Two tiny concepts and their manifest: 'rex' (dog, 2 images, a mask for 01) and 'mug' (3 images)."""
    data = root / "data"
    for cid, names in {"rex": ["00.png", "01.png"], "mug": ["00.png", "01.png", "02.png"]}.items():
        for j, name in enumerate(names):
            blob_image(data / cid / name, seed=100 + j + (10 if cid == "mug" else 0))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(data / "rex" / "01_mask.png")
    manifest = root / "concepts.toml"
    manifest.write_text('[dataset]\nname = "tiny"\nroot = "data"\n\n'
                        '[[concepts]]\nid = "rex"\nclass_word = "dog"\nlive = true\ntrain_image = "01.png"\n'
                        'images = ["00.png", "01.png"]\n\n'
                        '[[concepts]]\nid = "mug"\nclass_word = "mug"\nimages = ["00.png", "01.png", "02.png"]\n')
    return manifest


def save_hub_folder(extractor: Extractor, folder: Path) -> Path:
    """Save a (tiny) extractor the way its hub repo is laid out, so the real local-folder loader can read it."""
    import open_clip
    import safetensors.torch
    import timm.models

    folder.mkdir(parents=True, exist_ok=True)
    if extractor.spec.library == "open_clip":
        model_cfg = {**open_clip.get_model_config(extractor.spec.model), **TINY_CLIP_ARGS}
        config = {"model_cfg": model_cfg, "preprocess_cfg": dict(extractor.model.visual.preprocess_cfg)}
        (folder / "open_clip_config.json").write_text(json.dumps(config))
        safetensors.torch.save_file(extractor.model.state_dict(), folder / "open_clip_model.safetensors")
    else:
        args = {**EXTRACTORS.get(extractor.name).model_args, **TINY_VIT_ARGS}
        timm.models.save_for_hf(extractor.model, folder, model_args=args, safe_serialization=True)
    return folder


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "dog", "mug", "stuffed", "animal"]


def save_tiny_grounded_sam(folder: Path) -> tuple[Path, Path]:
    """Grounding-DINO and SAM with tiny random configs, saved like their hub repos (save_pretrained)."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    detector_dir, sam_dir = folder / "grounding-dino", folder / "sam"
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, max_position_embeddings=64)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=16, decoder_ffn_dim=16, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=10, num_feature_levels=3, max_text_len=32,
                                 encoder_n_points=2, decoder_n_points=2)
    sam_config = SamConfig(
        vision_config=SamVisionConfig(hidden_size=16, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=64, patch_size=16, window_size=2, global_attn_indexes=[1],
                                      num_pos_feats=8, mlp_dim=16),
        prompt_encoder_config=SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                                     mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=16, mlp_dim=16, num_hidden_layers=1,
                                                 num_attention_heads=2, iou_head_hidden_dim=16))
    with torch.random.fork_rng(devices=[]):  # seeded weights, without touching the tests' global RNG
        torch.manual_seed(0)
        detector, sam = GroundingDinoForObjectDetection(config), SamModel(sam_config)
    detector.save_pretrained(detector_dir)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64,
                                                                              "longest_edge": 64}),
                           tokenizer=tokenizer).save_pretrained(detector_dir)
    sam.save_pretrained(sam_dir)
    SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                   mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
                 ).save_pretrained(sam_dir)
    return detector_dir, sam_dir


def make_project(root: Path) -> tuple[Path, Path]:
    """A user manifest with two tiny concepts, and generated images of two methods (tlora-64 on both, lora on one)."""
    manifest = make_concepts(root)
    gen = root / "gen"
    write_generated(gen, "tlora-64", "rex", {BASE: 3, JUNGLE: 2, BEACH: 2}, rank=64, method="tlora")
    write_generated(gen, "tlora-64", "mug", {BASE: 2, JUNGLE: 2}, rank=64, method="tlora", seed=1)
    write_generated(gen, "lora", "rex", {BASE: 2, JUNGLE: 1}, seed=2)
    return manifest, gen
