"""The SD-XL base 1.0 UNet: its config as a literal, and the model built on the meta device (no weights).

The config is `stabilityai/stable-diffusion-xl-base-1.0/unet/config.json` with every key that changes a
shape written out, so parameter counts and memory estimates for SD-XL need neither a download nor 10 GiB
of RAM: `sdxl_unet_on_meta()` has the real module tree, with tensors that have shapes but no storage.
"""

from __future__ import annotations

from typing import Any

import torch

# stable-diffusion-xl-base-1.0, unet/config.json (diffusers UNet2DConditionModel): 2,567,463,684 parameters.
SDXL_UNET_CONFIG: dict[str, Any] = dict(
    act_fn="silu",
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=256,
    attention_head_dim=(5, 10, 20),
    block_out_channels=(320, 640, 1280),
    center_input_sample=False,
    class_embed_type=None,
    class_embeddings_concat=False,
    conv_in_kernel=3,
    conv_out_kernel=3,
    cross_attention_dim=2048,
    cross_attention_norm=None,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    downsample_padding=1,
    dual_cross_attention=False,
    encoder_hid_dim=None,
    encoder_hid_dim_type=None,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_only_cross_attention=None,
    mid_block_scale_factor=1,
    mid_block_type="UNetMidBlock2DCrossAttn",
    norm_eps=1e-05,
    norm_num_groups=32,
    num_attention_heads=None,
    num_class_embeds=None,
    only_cross_attention=False,
    out_channels=4,
    projection_class_embeddings_input_dim=2816,  # pooled text (1280) + 6 micro-conditioning values x 256
    resnet_out_scale_factor=1.0,
    resnet_skip_time_act=False,
    resnet_time_scale_shift="default",
    sample_size=128,
    time_cond_proj_dim=None,
    time_embedding_act_fn=None,
    time_embedding_dim=None,
    time_embedding_type="positional",
    timestep_post_act=None,
    transformer_layers_per_block=(1, 2, 10),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    upcast_attention=None,
    use_linear_projection=True,
)

SDXL_UNET_PARAMETERS = 2_567_463_684  # the real checkpoint's count; a test checks the meta model against it


def sdxl_unet_on_meta():
    """The SD-XL UNet module tree on the meta device: real shapes, no storage, built in a fraction of a second.

    Use it to count parameters or to size memory; it cannot run a forward pass.
    """
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**SDXL_UNET_CONFIG).eval()
