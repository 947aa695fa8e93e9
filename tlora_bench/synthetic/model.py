"""The synthetic scene model: a small pixel-space diffusers UNet conditioned by a small T5 text encoder over a
word-level vocabulary, and the pipeline that samples it (docs/synthetic.md; its choices: docs/decisions.md §10).

Pixel space, not latent: at 32 x 32 a VAE would cost more than the UNet and blur the flat colours the judges
read. The UNet sees each 2 x 2 block of pixels as 12 channels (a pixel unshuffle: exact and invertible, a
"latent" with no weights), so its convolutions run at 16 x 16, a quarter of the cost on a CPU, and two more
channels hold each pixel's coordinates. Everything else is SD-XL's recipe in miniature, but for velocity in place
of epsilon prediction: the same 1,000-step scaled-linear DDPM schedule (so the rank schedule's T is the same),
Euler sampling with classifier-free guidance, cross-attention on the text encoder's last hidden states. Every
class is a diffusers or transformers one, so the model is saved and loaded by `from_pretrained` like every other
backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler, UNet2DConditionModel
from PIL import Image

from tlora_bench.prompts import DEFAULT_TOKEN
from tlora_bench.synthetic.scenes import BACKGROUNDS, COLORS, PATTERNS, POSITIONS, RESOLUTION, SHAPES, SIZES

CONCEPT_TOKEN = DEFAULT_TOKEN  # never in a pretraining caption: the base model ties it to nothing
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
MAX_TOKENS = 20  # the longest caption, "a photo of" before it, is 14 words and a comma, plus [BOS] and [EOS]

PATCH = 2  # pixels per side folded into channels
COORDINATES = 2  # x and y ramps beside the image: where "on the left" is (a small UNet learns no position alone)
UNET_CONFIG = dict(
    sample_size=RESOLUTION // PATCH, in_channels=3 * PATCH ** 2 + COORDINATES, out_channels=3 * PATCH ** 2,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4, cross_attention_dim=64, norm_num_groups=8, use_linear_projection=True,
)
# A T5 encoder, not CLIP's: CLIP's causal attention lets a word's state see only the words before it, so the
# background and position (a caption's last words) were entangled with everything said first and went unfollowed;
# T5 attends both ways, and its embeddings start far apart (std 1, CLIP's 0.02) so words differ from step one.
TEXT_ENCODER_CONFIG = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                           feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=3,
                           decoder_start_token_id=0)
# SD-XL's noise schedule (docs/decisions.md §4): the same betas and T = 1000. Velocity prediction, not SD-XL's
# epsilon: at sigma = 14.6 an epsilon error e moves the predicted image by 14.6 e, more than a small pixel-space
# model's errors allow (docs/decisions.md §10).
SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                        timestep_spacing="trailing", prediction_type="v_prediction")


def vocabulary() -> list[str]:
    """Every word a caption or a synthetic prompt uses, after the special tokens: ids are stable across versions
    as long as this order is."""
    words = ["a", "photo", "of", "on", "the", "in", "center", "left", "right", ",", "background", CONCEPT_TOKEN]
    for group in (SIZES, PATTERNS, COLORS, SHAPES, BACKGROUNDS):
        words += [w for w in group if w not in words]
    assert set(POSITIONS) <= set(words)
    return [*SPECIAL_TOKENS, *words]


def scene_tokenizer():
    """A word-level tokenizer over `vocabulary()` (lower-cased, punctuation split off), padded to MAX_TOKENS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]",
                                                        special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=MAX_TOKENS)


@dataclass
class SceneOutput:
    images: list[Image.Image]


class SyntheticScenePipeline(DiffusionPipeline):
    """Text-to-image sampling of the scene model: Euler steps with classifier-free guidance, in pixel space."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder, tokenizer, scheduler: EulerDiscreteScheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """The text encoder's last hidden states (batch, MAX_TOKENS, hidden), the UNet's cross-attention input."""
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=MAX_TOKENS, truncation=True,
                             return_tensors="pt").input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids).last_hidden_state

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, num_inference_steps: int = 20,
                 guidance_scale: float = 3.0, height: int = RESOLUTION, width: int = RESOLUTION,
                 output_type: str = "pil") -> SceneOutput:
        prompts = [p for p in ([prompt] if isinstance(prompt, str) else prompt) for _ in range(num_images_per_prompt)]
        n, device, dtype = len(prompts), self.unet.device, self.unet.dtype
        generators = generator if isinstance(generator, list) else [generator] * n
        shape = (3 * PATCH ** 2, height // PATCH, width // PATCH)
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
        text = self.encode_prompt(prompts + [""] * n).to(dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = (noise * self.scheduler.init_noise_sigma).to(device, dtype)
        for t in self.progress_bar(self.scheduler.timesteps):
            both = self.scheduler.scale_model_input(torch.cat([x, x]), t)
            eps_pair = self.unet(with_coordinates(both), t, encoder_hidden_states=text).sample
            conditional, unconditional = eps_pair.chunk(2)
            eps = unconditional + guidance_scale * (conditional - unconditional)
            x = self.scheduler.step(eps, t, x).prev_sample
        return SceneOutput(to_images(from_model_space(x)))


def to_model_space(pixels: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) pixels -> (batch, 12, H / 2, W / 2), what the UNet denoises."""
    return torch.nn.functional.pixel_unshuffle(pixels, PATCH)


def from_model_space(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pixel_shuffle(x, PATCH)


def with_coordinates(x: torch.Tensor) -> torch.Tensor:
    """The UNet's input: the noisy image and two channels of its pixels' x and y in [-1, 1] (CoordConv)."""
    batch, _, height, width = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return torch.cat([x, torch.stack([xs, ys]).to(x).expand(batch, 2, height, width)], dim=1)


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(batch, 3, H, W) in [-1, 1] -> RGB PIL images."""
    data = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(image) for image in data]


def build_pipeline(seed: int = 0) -> SyntheticScenePipeline:
    """The scene model with freshly initialised weights (what pretraining starts from)."""
    from transformers import T5Config, T5EncoderModel

    from tlora_bench.models.tiny import seeded

    tokenizer = scene_tokenizer()
    with seeded(seed):
        unet = UNet2DConditionModel(**UNET_CONFIG)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TEXT_ENCODER_CONFIG))
    pipeline = SyntheticScenePipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                      scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def unet_skeleton() -> UNet2DConditionModel:
    """The scene model's UNet on the meta device (shapes, no storage): the synthetic backend's size checks."""
    with torch.device("meta"):
        return UNet2DConditionModel(**UNET_CONFIG).eval()
