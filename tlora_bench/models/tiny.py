"""Tiny random-weight models with the real architectures (SD-XL UNet, FLUX transformer, whole SD-XL and
FLUX pipelines), built in-process in seconds on a CPU. Their outputs mean nothing; tests assert properties.

The shapes follow diffusers' own pipeline tests: an SD-XL-shaped UNet (text_time conditioning, two
text encoders whose hidden states are concatenated) with block widths (32, 64).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

TINY_UNET_CONFIG = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    transformer_layers_per_block=(1, 2),
    projection_class_embeddings_input_dim=80,  # 6 micro-conditioning values x 8 + pooled text (32)
    cross_attention_dim=64,  # the two text encoders' hidden sizes (32 + 32) side by side
    norm_num_groups=1,
)

TINY_FLUX_CONFIG = dict(  # FLUX.1-dev's structure: packed 2x2 latents (4 channels -> 16), guidance-distilled
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 4, 8),
    guidance_embeds=True,
)

TINY_TEXT_ENCODER_CONFIG = dict(
    bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
    num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=514, hidden_act="gelu",
    projection_dim=32,
)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Module inits draw from torch's global generator: seed it inside a fork, so the caller's stream is
    left exactly as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(**{**TINY_UNET_CONFIG, **overrides}).eval()


def tiny_unet_inputs(batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for `tiny_unet()`: latents, encoder states and the SD-XL added conditions."""
    g = torch.Generator().manual_seed(seed)
    return {
        "sample": torch.randn(batch, 4, 16, 16, generator=g),
        "encoder_hidden_states": torch.randn(batch, 7, 64, generator=g),
        "added_cond_kwargs": {"text_embeds": torch.randn(batch, 32, generator=g),
                              "time_ids": torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]]).repeat(batch, 1)},
    }


def tiny_flux_transformer(seed: int = 0, **overrides):
    from diffusers import FluxTransformer2DModel

    with seeded(seed):
        return FluxTransformer2DModel(**{**TINY_FLUX_CONFIG, **overrides}).eval()


def tiny_flux_inputs(batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for `tiny_flux_transformer()` (packed latents, T5 states, pooled CLIP, guidance)."""
    g = torch.Generator().manual_seed(seed)
    height = width = 4
    return {
        "hidden_states": torch.randn(batch, height * width, TINY_FLUX_CONFIG["in_channels"], generator=g),
        "encoder_hidden_states": torch.randn(batch, 5, 32, generator=g),
        "pooled_projections": torch.randn(batch, 32, generator=g),
        "img_ids": torch.randn(height * width, 3, generator=g),
        "txt_ids": torch.randn(5, 3, generator=g),
        "guidance": torch.full((batch,), 3.5),
    }


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet: one printable character per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    codes = printable + [256 + i for i in range(len(extra))]
    return [chr(c) for c in codes]


def tiny_clip_tokenizer():
    """A CLIP tokenizer over single bytes (514 tokens, no merges): real code path, no download."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[], model_max_length=77)


def tiny_sdxl_pipeline(seed: int = 0):
    """A complete StableDiffusionXLPipeline of tiny random models (Euler scheduler, as docs/decisions.md §4)."""

    with seeded(seed):
        return _tiny_sdxl_pipeline(seed)


def _tiny_sdxl_pipeline(seed: int):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4,
                        sample_size=32, norm_num_groups=32)
    text_config = CLIPTextConfig(**TINY_TEXT_ENCODER_CONFIG)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=vae.eval(), text_encoder=CLIPTextModel(text_config).eval(),
        text_encoder_2=CLIPTextModelWithProjection(text_config).eval(), tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(), unet=tiny_unet(seed), scheduler=scheduler)


TINY_T5_CONFIG = dict(  # T5 v1.1 layout (gated-gelu, as FLUX's T5-XXL); d_model = the transformer's joint dim
    d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0,
)


def tiny_t5_tokenizer():
    """A T5 tokenizer (Unigram over single characters, no merges, no sentinels): built in-process, so no
    download, and it writes a tokenizer.json that `from_pretrained` reads back."""
    import string

    from transformers import T5TokenizerFast

    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]  # T5's order; U+2581 marks a space
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_flux_pipeline(seed: int = 0):
    """A complete FluxPipeline of tiny random models, laid out like FLUX.1-dev (guidance-distilled
    transformer, 16-channel-in packed latents, VAE shift/scale, dynamic-shift flow-matching scheduler)."""

    with seeded(seed):
        return _tiny_flux_pipeline(seed)


def _tiny_flux_pipeline(seed: int):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    # Two blocks: vae_scale_factor 2, so 32 px -> 16x16 latents -> 8x8 packed tokens (32 % (2 x 2) == 0).
    # latent_channels x 4 (the 2x2 packing) = the transformer's in_channels.
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        latent_channels=TINY_FLUX_CONFIG["in_channels"] // 4, sample_size=32, norm_num_groups=8,
                        scaling_factor=0.3611, shift_factor=0.1159,  # FLUX.1-dev's values
                        use_quant_conv=False, use_post_quant_conv=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER_CONFIG))  # FLUX uses only its pooled output
    tokenizer_2 = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **TINY_T5_CONFIG))
    # FLUX.1-dev's scheduler config: the shift follows the image's token count (mu), not a fixed shift.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(
        scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2.eval(), tokenizer_2=tokenizer_2,
        transformer=tiny_flux_transformer(seed))


TINY_FOLDER_VERSION = 1  # bump when a tiny model's architecture changes: old cache folders are left unused
TINY_BUILDERS = {"tiny-sdxl": "tiny_sdxl_pipeline", "tiny-flux": "tiny_flux_pipeline"}


def check_tiny_cache(name: str) -> Path:
    """The cache folder of a tiny model; unless it is complete, the cache must be writable (an unusable cache is
    one line naming it and $TLORA_BENCH_CACHE): cheap, so callers check it before any work."""
    from tlora_bench.cache import cache_dir, writable_cache_dir

    folder = cache_dir() / "models" / f"{name}-v{TINY_FOLDER_VERSION}"
    if not (folder / "model_index.json").is_file():
        writable_cache_dir()
    return folder


def tiny_model_folder(name: str) -> Path:
    """The diffusers folder of a tiny pipeline, written once to the cache, so that tiny models are loaded by
    the same `from_pretrained` code as real ones. Written to a temporary folder, then renamed: a folder with
    the final name is always complete."""
    folder = check_tiny_cache(name)
    if (folder / "model_index.json").is_file():
        return folder
    from tlora_bench.models.backend import quiet_loading

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with quiet_loading():  # no "Writing model shards" bar on stderr the first time
            globals()[TINY_BUILDERS[name]](seed=0).save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "model_index.json").is_file():  # not a lost race with another process
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
