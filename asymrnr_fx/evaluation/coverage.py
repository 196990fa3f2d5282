# ruff: noqa: C408  (the tiny configs are dict(...) calls: they read like the constructors' keyword arguments)
"""Coverage: does AsymRnR work, unchanged, on every video DiT class in the installed diffusers?

For every ``*Transformer3DModel`` class diffusers exports (plus the video DiTs named
otherwise, see :data:`EXTRA_CLASSES`), :func:`check` builds the real class from a tiny
config written here (:data:`CASES`: 1-2 layers, 1-2 heads of 8-16 dims, a few frames of a
few tokens; nothing is downloaded), builds the inputs its pipeline would pass, and:

1. runs it plain (eager), so a bad config or input is never blamed on the pass;
2. ``asymrnr_fx.inspect`` lists every attention site, its kind, and why it is left alone;
3. ``asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))`` runs two timesteps: any site
   rewritten, outputs finite and different from the plain model, exceptions, ``AsymRnRWarning``;
4. checks the grid of every rewritten site against the token grid the model's own patch
   geometry gives (latent sizes divided by ``patch_size`` / ``patch_size_t`` from the config),
   and probes the token layout: single video tokens are perturbed in the latents and must
   move the sequence row the site assumes (:func:`geometry_problem`). A site reduced on other
   tokens partitions the wrong neighbours: the outputs stay finite and plausible, only wrong,
   so it is flagged "silently wrong";
5. optionally (``inductor=True``) ``transform(..., compile=True)`` against eager within 1e-4.

Each class gets one status (:data:`STATUSES`): ``works out of the box``, ``works with grid=``
(the default fails or rewrites nothing; an explicit ``grid=``, if need be with
``Plan(text_position=...)``, works and passes the geometry check), ``not applicable`` (no SDPA
call, or no site the method applies to as the library stands), ``fails`` (an error),
``silently wrong`` (a rewritten site's grid or token layout is not the model's).
:data:`ROOT_CAUSES` records, per class that is not out of the box, what was found and which
library change would fix it; :func:`markdown_report` writes both to ``docs/coverage.md``.

    python benchmarks/coverage.py [--inductor] [--only Wan,Mochi] [--out docs/coverage.md]
"""
from __future__ import annotations

import contextlib
import datetime
import math
import signal
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import api
from ..plan import Plan
from ..report import AsymRnRWarning

#: Timesteps of the reduced runs (two steps: one matching step, one in the same cache window).
TIMESTEPS: tuple[float, float] = (900.0, 700.0)

#: The five families the README lists; the tests require them to work out of the box.
README_FAMILIES: tuple[str, ...] = (
    "CogVideoXTransformer3DModel", "HunyuanVideoTransformer3DModel", "WanTransformer3DModel",
    "MochiTransformer3DModel", "LTXVideoTransformer3DModel",
)

#: Video DiTs whose class name does not end in ``Transformer3DModel``: (module under
#: ``diffusers.models.transformers``, class name).
EXTRA_CLASSES: tuple[tuple[str, str], ...] = (("transformer_cosmos3", "Cosmos3OmniTransformer"),)

STATUSES: tuple[str, ...] = ("works out of the box", "works with grid=", "not applicable", "fails", "silently wrong")

#: Default per-class time cap, seconds (a tiny model takes 5-40 s on one CPU core).
TIME_CAP = 300.0

Grid = tuple[int, int, int]


# =========================================================================== the tiny configs
@dataclass
class Case:
    """One class at toy size: its config, its inputs and where its video latents are.

    ``inputs(t)`` returns fresh keyword arguments for one call at timestep ``t`` (same latents
    and text for every ``t``: a fixed seed). ``layout`` tells how the latent sizes (F, H, W)
    are read off ``inputs[key]`` (its first item if it is a list of per-sample latents):
    ``"BCFHW"``, ``"BFCHW"``, ``"BFHWC"``, ``"CFHW"``; the expected token grid is those sizes
    divided by the config's patch. ``"tokens"``: the model takes packed, already patchified
    tokens, and ``latent`` is their token grid.
    """

    name: str
    config: dict[str, Any]
    inputs: Callable[[float], dict[str, Any]]
    layout: str = "BCFHW"
    key: str = "hidden_states"
    latent: Grid | None = None
    module: str | None = None  # for EXTRA_CLASSES
    prepare: Callable[[nn.Module], None] | None = None
    build: Callable[[], nn.Module] | None = None  # instead of cls(**config) (the README families reuse tiny_transformer)


def _rng(seed: int = 0) -> Callable[..., torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return rnd


def _ts(t: float, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(shape or (1,), float(t), dtype=dtype)


def _wake(pattern: str, std: float = 0.1) -> Callable[[nn.Module], None]:
    """Give zero-initialised parameters whose name contains ``pattern`` random values (real checkpoints
    load them): a model whose attention branch is gated by a zero modulation ignores the attention."""

    def prepare(model: nn.Module) -> None:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if pattern in name and not p.any():
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    return prepare


def _has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def _family(family: str) -> tuple[Callable[[], nn.Module], Callable[[float], dict]]:
    """The README families: the same tiny models and inputs as the test suite (grid (4, 4, 4))."""
    from ..testing.pipelines import tiny_transformer, transformer_inputs

    return (lambda: tiny_transformer(family)), (lambda t: transformer_inputs(family, timestep=t))


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, config: dict[str, Any], inputs: Callable[[float], dict[str, Any]], **kw: Any) -> None:
        cases.append(Case(name, config, inputs, **kw))

    # ---------------------------------------------------------------- the README families
    for name, family, layout, latent in (
        ("CogVideoXTransformer3DModel", "cogvideox", "BFCHW", None),
        ("HunyuanVideoTransformer3DModel", "hunyuanvideo", "BCFHW", None),
        ("WanTransformer3DModel", "wan", "BCFHW", None),
        ("MochiTransformer3DModel", "mochi", "BCFHW", None),
        ("LTXVideoTransformer3DModel", "ltx", "tokens", (4, 4, 4)),
    ):
        build, inputs = _family(family)
        cases.append(Case(name, {}, inputs, layout=layout, latent=latent, build=build))

    # ---------------------------------------------------------------- Wan-like (B, C, F, H, W), patch (1, 2, 2)
    wan_like = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                    text_dim=16, freq_dim=256, ffn_dim=32, num_layers=1, cross_attn_norm=True, rope_max_seq_len=32)

    def wan_inputs(t: float, **extra: Any) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t), "encoder_hidden_states": rnd(1, 12, 16),
                "return_dict": False, **extra}

    add("ChronoEditTransformer3DModel", dict(wan_like, qk_norm="rms_norm_across_heads"), wan_inputs)
    add("SkyReelsV2Transformer3DModel", dict(wan_like, qk_norm="rms_norm_across_heads"), wan_inputs)
    def anyflow_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 2, 4, 8, 8), "timestep": _ts(t, 1, 2), "r_timestep": _ts(t * 0.5, 1, 2),
                "encoder_hidden_states": rnd(1, 12, 16), "return_dict": False}

    add("AnyFlowTransformer3DModel", dict(wan_like), anyflow_inputs, layout="BFCHW")
    add("WanVACETransformer3DModel", dict(wan_like, qk_norm="rms_norm_across_heads", vace_layers=[0], vace_in_channels=8),
        lambda t: {**wan_inputs(t), "control_hidden_states": _rng(1)(1, 8, 2, 8, 8),
                   "control_hidden_states_scale": torch.ones(1)})

    def anyflow_far_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 4, 8, 8), "timestep": _ts(t, 1, 4), "r_timestep": _ts(t * 0.5, 1, 4),
                "encoder_hidden_states": rnd(1, 12, 16), "chunk_partition": [2, 2], "return_dict": False}

    add("AnyFlowFARTransformer3DModel", dict(wan_like, compressed_patch_size=(1, 4, 4), full_chunk_limit=3),
        anyflow_far_inputs, layout="BFCHW")

    def helios_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t), "encoder_hidden_states": rnd(1, 12, 16),
                "indices_hidden_states": torch.arange(2.0)[None] + 2, "indices_latents_history_short": torch.ones(1, 1),
                "indices_latents_history_mid": torch.ones(1, 1), "indices_latents_history_long": torch.ones(1, 4),
                "latents_history_short": rnd(1, 4, 1, 8, 8), "latents_history_mid": rnd(1, 4, 1, 8, 8),
                "latents_history_long": rnd(1, 4, 4, 8, 8), "return_dict": False}

    add("HeliosTransformer3DModel",
        dict({k: v for k, v in wan_like.items() if k != "rope_max_seq_len"}, qk_norm="rms_norm_across_heads", rope_dim=(4, 4, 4), has_multi_term_memory_patch=True,
             guidance_cross_attn=True, zero_history_timestep=True, is_amplify_history=False),
        helios_inputs)

    def wan_animate_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 12, 3, 8, 8), "timestep": _ts(t), "encoder_hidden_states": rnd(1, 12, 16),
                "encoder_hidden_states_image": rnd(1, 4, 16), "pose_hidden_states": rnd(1, 4, 2, 8, 8),
                "face_pixel_values": rnd(1, 3, 5, 16, 16), "return_dict": False}

    add("WanAnimateTransformer3DModel",
        dict(wan_like, in_channels=12, latent_channels=4, qk_norm="rms_norm_across_heads", image_dim=16,
             motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
             motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
             inject_face_latents_blocks=1, motion_encoder_batch_size=8),
        wan_animate_inputs)

    def wan_animate2_inputs(t: float) -> dict[str, Any]:
        from diffusers.models.transformers.transformer_wan_animate_2 import (
            WanAnimate2KVCache,
        )

        rnd = _rng()
        return {"hidden_states": [rnd(4, 2, 8, 8)], "timestep": _ts(t), "encoder_hidden_states": [rnd(8, 16)],
                "condition_latents": [rnd(4, 2, 8, 8)], "kv_cache": WanAnimate2KVCache(1), "kv_cache_mode": "extract",
                "seq_len": 2 * 4 * 4, "offset_grid_sizes": torch.tensor([[2, 4, 4]]), "return_dict": False}

    add("WanAnimate2Transformer3DModel",
        dict(patch_size=(1, 2, 2), text_len=8, in_dim=8, dim=24, ffn_dim=32, freq_dim=16, text_dim=16, out_dim=4,
             num_heads=2, num_layers=1, cross_attn_norm=True, use_img_emb=False),
        wan_animate2_inputs, layout="CFHW")

    # ---------------------------------------------------------------- CogVideoX-like (B, F, C, H, W), patch 2
    def consisid_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 2, 4, 8, 8), "encoder_hidden_states": rnd(1, 8, 8), "timestep": _ts(t).long(),
                "id_vit_hidden": [torch.ones(1, 2, 2)], "id_cond": torch.ones(1, 2), "return_dict": False}

    add("ConsisIDTransformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
             text_embed_dim=8, num_layers=1, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
             temporal_compression_ratio=4, max_text_seq_length=8, cross_attn_interval=1, is_kps=False,
             is_train_face=True, cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2,
             LFE_depth=5, LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10,
             LFE_ff_mult=1, LFE_num_scale=1),
        consisid_inputs, layout="BFCHW")

    # ---------------------------------------------------------------- HunyuanVideo-like (B, C, F, H, W)
    def framepack_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t).long(), "encoder_hidden_states": rnd(1, 12, 16),
                "encoder_attention_mask": torch.ones(1, 12), "pooled_projections": rnd(1, 8),
                "image_embeds": rnd(1, 12, 16), "indices_latents": torch.arange(2.0) + 1, "guidance": _ts(6000.0),
                "latents_clean": rnd(1, 4, 1, 8, 8), "indices_latents_clean": torch.zeros(1),
                "latents_history_2x": rnd(1, 4, 1, 8, 8), "indices_latents_history_2x": torch.ones(1) + 3,
                "latents_history_4x": rnd(1, 4, 4, 8, 8), "indices_latents_history_4x": torch.arange(4.0) + 4,
                "return_dict": False}

    add("HunyuanVideoFramepackTransformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
             num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
             text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None,
             has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True),
        framepack_inputs)

    def hunyuan15_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 4, 4), "timestep": _ts(t), "encoder_hidden_states": rnd(1, 6, 16),
                "encoder_hidden_states_2": rnd(1, 4, 8), "encoder_attention_mask": torch.ones(1, 6),
                "encoder_attention_mask_2": torch.ones(1, 4), "image_embeds": torch.zeros(1, 3, 12),
                "return_dict": False}

    add("HunyuanVideo15Transformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
             image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v"),
        hunyuan15_inputs)

    def motif_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 9, 2, 4, 4), "encoder_hidden_states": rnd(1, 12, 32), "timestep": _ts(t).long(),
                "return_dict": False}

    add("MotifVideoTransformer3DModel",
        dict(in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1,
             num_single_layers=1, num_decoder_layers=0, mlp_ratio=2.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
             norm_type="layer_norm", text_embed_dim=32, image_embed_dim=None, rope_axes_dim=(4, 4, 4)),
        motif_inputs)

    # ---------------------------------------------------------------- other (B, C, F, H, W) models
    def allegro_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "encoder_hidden_states": rnd(1, 12, 8), "timestep": _ts(t).long(),
                "return_dict": False}

    add("AllegroTransformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=1,
             cross_attention_dim=16, sample_width=8, sample_height=8, sample_frames=2, caption_channels=8),
        allegro_inputs)

    def cosmos_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t), "encoder_hidden_states": rnd(1, 12, 16),
                "attention_mask": torch.ones(1, 12), "fps": 30, "padding_mask": torch.zeros(1, 1, 8, 8),
                "return_dict": False}

    add("CosmosTransformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=1, mlp_ratio=2,
             text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
             concat_padding_mask=_has_torchvision(), extra_pos_embed_type="learnable"),  # the mask is resized by torchvision
        cosmos_inputs)

    def easyanimate_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t).long(), "encoder_hidden_states": rnd(1, 12, 16),
                "return_dict": False}

    add("EasyAnimateTransformer3DModel",
        dict(attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=1, num_layers=1, out_channels=4,
             patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16, time_embed_dim=8,
             time_position_encoding_type="3d_rope", timestep_activation_fn="silu"),
        easyanimate_inputs)

    def joy_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 16, 2, 8, 8), "encoder_hidden_states": rnd(1, 12, 16), "timestep": _ts(t),
                "return_dict": False}

    joy = dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=16, num_layers=1,
               rope_dim_list=[4, 6, 6], theta=256)
    add("JoyImageEditTransformer3DModel", joy, joy_inputs)

    def joy_plus_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        # pre-patchified: one row per token, [B, tokens, C, p_t, p_h, p_w], and each component's token grid
        return {"hidden_states": rnd(1, 2 * 4 * 4, 16, 1, 2, 2), "encoder_hidden_states": rnd(1, 12, 16),
                "timestep": _ts(t), "shape_list": [[(2, 4, 4)]], "return_dict": False}

    add("JoyImageEditPlusTransformer3DModel", joy, joy_plus_inputs, layout="tokens", latent=(2, 4, 4))

    def latte_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "encoder_hidden_states": rnd(1, 8, 8), "timestep": _ts(t).long(),
                "enable_temporal_attentions": True, "return_dict": False}

    add("LatteTransformer3DModel",
        dict(sample_size=8, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2, caption_channels=8,
             in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
             activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False, norm_eps=1e-6, video_length=2),
        latte_inputs)

    def sana_video_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "encoder_hidden_states": rnd(1, 12, 8), "timestep": _ts(t),
                "return_dict": False}

    add("SanaVideoTransformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
             num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=8,
             sample_size=8, patch_size=(1, 2, 2), rope_max_seq_len=32),
        sana_video_inputs)

    def sana_wm_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        c2w = torch.eye(4).repeat(1, 2, 1, 1)
        c2w[..., 2, 3] = torch.arange(2.0) * 0.1
        intr = torch.tensor([8.0, 8.0, 4.0, 4.0]).expand(1, 2, 4)
        return {"hidden_states": rnd(1, 4, 2, 8, 8), "timestep": _ts(t, 1, 1, 2), "encoder_hidden_states": rnd(1, 1, 8, 8),
                "encoder_attention_mask": torch.ones(1, 8, dtype=torch.long),
                "camera_conditions": torch.cat([c2w.flatten(-2), intr], -1), "chunk_plucker": rnd(1, 8, 2, 8, 8),
                "return_dict": False}

    add("SanaWMTransformer3DModel",
        dict(in_channels=4, num_layers=2, hidden_size=32, num_attention_heads=2, patch_size=(1, 1, 1), softmax_every_n=2,
             linear_head_dim=16, t_kernel_size=3, conv_kernel_size=4, caption_channels=8, mlp_ratio=2.0,
             chunk_plucker_channels=8, chunk_plucker_post_attn_blocks=2, image_size=8),
        sana_wm_inputs)

    # ---------------------------------------------------------------- channels-last (B, F, H, W, C): Kandinsky
    def kandinsky5_inputs(t: float) -> dict[str, Any]:
        # the released checkpoints' 16 latent channels, 4 latent frames of 16 x 16 (a 128 x 128 px clip)
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 16, 16, 16), "encoder_hidden_states": rnd(1, 8, 16), "timestep": _ts(t),
                "pooled_projections": rnd(1, 8), "visual_rope_pos": [torch.arange(4), torch.arange(8), torch.arange(8)],
                "text_rope_pos": torch.arange(8), "return_dict": False}

    add("Kandinsky5Transformer3DModel",
        dict(in_visual_dim=16, in_text_dim=16, in_text_dim2=8, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
             model_dim=32, ff_dim=64, num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 6, 6)),
        kandinsky5_inputs, layout="BFHWC", prepare=_wake("modulation.out_layer"))

    def kandinsky6_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 2, 8, 8, 9), "encoder_hidden_states": rnd(1, 6, 8), "pooled_projections": rnd(1, 8),
                "timestep": _ts(t), "return_dict": False}

    add("Kandinsky6Transformer3DModel",
        dict(in_visual_dim=4, out_visual_dim=4, in_text_dim=8, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
             model_dim=24, ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 4, 4), visual_cond=True,
             in_audio_dim=4, out_audio_dim=4),
        kandinsky6_inputs, layout="BFHWC")

    def kandinsky6sr_inputs(t: float) -> dict[str, Any]:
        return {"hidden_states": _rng()(1, 2, 16, 16, 9), "timestep": _ts(t), "return_dict": False}

    add("Kandinsky6SRTransformer3DModel",
        dict(in_visual_dim=4, out_visual_dim=8, time_dim=16, patch_size=(1, 2, 2), model_dim=24, ff_dim=32,
             num_visual_blocks=1, axes_dims=(4, 4, 4)),
        kandinsky6sr_inputs, layout="BFHWC")

    # ---------------------------------------------------------------- packed tokens: LTX-2, refiners, MiniMax, Cosmos 3
    ltx2 = dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
                cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
                audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=1, qk_norm="rms_norm_across_heads",
                caption_channels=16, rope_double_precision=False)

    def ltx2_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 2 * 4 * 4, 4), "audio_hidden_states": rnd(1, 9, 4),
                "encoder_hidden_states": rnd(1, 8, 16), "audio_encoder_hidden_states": rnd(1, 8, 16),
                "timestep": _ts(t), "encoder_attention_mask": torch.ones(1, 8).bool(), "num_frames": 2, "height": 4,
                "width": 4, "audio_num_frames": 9, "fps": 25.0, "return_dict": False}

    add("LTX2VideoTransformer3DModel", ltx2, ltx2_inputs, layout="tokens", latent=(2, 4, 4))

    def refiner_inputs(t: float) -> dict[str, Any]:
        from diffusers.models.transformers.transformer_sana_wm_refiner import (
            SanaWMLTX2AudioVideoRotaryPosEmbed,
        )

        rnd = _rng()
        rope = SanaWMLTX2AudioVideoRotaryPosEmbed(
            dim=16, patch_size=1, patch_size_t=1, base_num_frames=20, base_height=2048, base_width=2048,
            scale_factors=(8, 32, 32), modality="video", double_precision=False, num_attention_heads=2)
        coords = rope.prepare_video_coords(1, 2, 4, 4, device=torch.device("cpu"), fps=24.0)
        return {"hidden_states": rnd(1, 32, 4), "encoder_hidden_states": rnd(1, 8, 16), "timestep": _ts(t, 1, 32),
                "video_rotary_emb": rope(coords, device=torch.device("cpu")), "encoder_attention_mask": torch.ones(1, 8),
                "return_dict": False}

    add("SanaWMLTX2RefinerTransformer3DModel", dict(ltx2), refiner_inputs, layout="tokens", latent=(2, 4, 4))

    def minimax_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        n_text, n_audio, grid = 4, 6, (2, 4, 4)
        n_video = math.prod(grid)
        length = n_text + n_audio + n_video
        text = torch.arange(n_text)
        audio = torch.arange(n_text, n_text + n_audio)
        video = torch.arange(n_text + n_audio, length)
        tags = torch.empty(length, dtype=torch.long)
        tags[text], tags[audio], tags[video] = 1, 2, 0
        steps = torch.zeros(length, dtype=torch.long)
        steps[audio] = 1
        pos = torch.zeros(length, 3)
        pos[:, 0] = torch.arange(length, dtype=torch.float32)
        f, h, w = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in grid), indexing="ij")
        pos[video, 0] = f.flatten() + n_text
        pos[video, 1], pos[video, 2] = h.flatten(), w.flatten()
        return {"hidden_states": rnd(1, n_video, 16), "audio_hidden_states": rnd(1, n_audio, 6),
                "encoder_hidden_states": rnd(1, n_text, 8), "timestep": torch.tensor([t / 1000, 0.3]),
                "timestep_indices": steps, "token_tags": tags, "position_ids": pos, "video_indices": video,
                "audio_indices": audio, "text_indices": text, "return_dict": False}

    add("MiniMaxH3Transformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=1, num_refiner_layers=1, ffn_dim=32,
             in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8, freq_dim=8, time_embed_hidden_dim=24,
             time_embed_dim=16, rope_freq_dim=2),
        minimax_inputs, layout="tokens", latent=(2, 4, 4))

    def cosmos3_inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        f, h, w = 2, 4, 4
        n = f * h * w
        vision = torch.arange(2, 2 + n)
        return {"input_ids": torch.tensor([1, 2]), "text_indexes": torch.tensor([0, 1]),
                "position_ids": torch.zeros(3, 2 + n, dtype=torch.long), "und_len": 2, "sequence_length": 2 + n,
                "vision_tokens": [rnd(1, 2, f, h, w)], "vision_token_shapes": [(f, h, w)],
                "vision_sequence_indexes": vision, "vision_mse_loss_indexes": vision,
                "vision_timesteps": torch.full((n,), t / 1000), "vision_noisy_frame_indexes": [torch.arange(f)],
                "return_dict": False}

    add("Cosmos3OmniTransformer",
        dict(head_dim=8, hidden_act="relu2", hidden_size=16, intermediate_size=24, latent_channel=2, latent_patch_size=1,
             num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=1, patch_latent_dim=2,
             qk_norm_for_text=False, rms_norm_eps=1e-5, rope_axes_dim=[2, 2, 4], rope_theta=1e4, vocab_size=32),
        cosmos3_inputs, layout="BCFHW", key="vision_tokens", module="transformer_cosmos3")
    return cases


CASES: dict[str, Case] = {}


def cases() -> dict[str, Case]:
    """Every known tiny case by class name (built once; needs diffusers only when inputs are made)."""
    if not CASES:
        CASES.update({c.name: c for c in _cases()})
    return CASES


# =========================================================================== discovery and building
def video_dit_classes() -> list[str]:
    """Every ``*Transformer3DModel`` class diffusers exports (top level or ``diffusers.models.transformers``),
    plus :data:`EXTRA_CLASSES` that exist in this version, sorted by name."""
    import importlib

    import diffusers
    from diffusers.models import transformers

    names = {n for mod in (diffusers, transformers) for n in dir(mod) if n.endswith("Transformer3DModel")}
    for module, name in EXTRA_CLASSES:
        with contextlib.suppress(Exception):
            if hasattr(importlib.import_module(f"diffusers.models.transformers.{module}"), name):
                names.add(name)
    return sorted(names)


def model_class(name: str) -> type:
    import importlib

    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        case = cases().get(name)
        module = case.module if case is not None and case.module else None
        if module is None:
            raise LookupError(f"{name} is not exported by diffusers")
        cls = getattr(importlib.import_module(f"diffusers.models.transformers.{module}"), name)
    return cls


def build_model(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = case.build() if case.build is not None else model_class(case.name)(**case.config)
    if case.prepare is not None:
        case.prepare(model)
    return model.eval()


def config_patch(config: Any) -> Grid:
    """(temporal, height, width) patch from a diffusers config: ``patch_size`` (int, 2- or 3-tuple) or
    ``latent_patch_size``, and ``patch_size_t`` (None or missing: 1). Written independently of the
    library's own grid functions, so the comparison below is a real check."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    p = get("patch_size", None)
    if p is None:
        p = get("latent_patch_size", None) or 1
    if isinstance(p, (list, tuple)):
        if len(p) == 3:
            return int(p[0]), int(p[1]), int(p[2])
        if len(p) == 2:
            return int(get("patch_size_t", None) or 1), int(p[0]), int(p[1])
        p = p[0]
    return int(get("patch_size_t", None) or 1), int(p), int(p)


def expected_grid(case: Case, model: nn.Module, inputs: dict[str, Any]) -> Grid:
    """The token grid (F, H, W) the model's own patch geometry gives for these inputs."""
    if case.layout == "tokens":
        if case.latent is None:
            raise ValueError(f"{case.name}: layout 'tokens' needs the token grid in Case.latent")
        return tuple(case.latent)  # type: ignore[return-value]
    x = inputs[case.key]
    if isinstance(x, (list, tuple)):
        x = x[0]
    shape = tuple(x.shape)
    f, h, w = {
        "BCFHW": lambda s: (s[2], s[3], s[4]),
        "BFCHW": lambda s: (s[1], s[3], s[4]),
        "BFHWC": lambda s: (s[1], s[2], s[3]),
        "CFHW": lambda s: (s[1], s[2], s[3]),
    }[case.layout](shape)
    pt, ph, pw = config_patch(getattr(model, "config", case.config) or case.config)
    return (math.ceil(f / pt), h // ph, w // pw)


# =========================================================================== one class
@dataclass
class Result:
    """What :func:`check` found for one class."""

    name: str
    status: str = "fails"
    why: str = ""  # the parenthesised part of the status: "not applicable (why)", "fails (error)"
    sites: int = 0
    rewritten: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    expected_grid: Grid | None = None
    grids: list[Grid] = field(default_factory=list)  # grids of the rewritten sites (default run)
    note: str = ""
    finite: bool | None = None
    differs: bool | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    inductor: str | None = None  # "ok (max diff ...)", "mismatch ...", "error: ...", or None (not run)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.status} ({self.why})" if self.why else self.status

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()} | {"label": self.label}


class CaseTimeout(Exception):
    """A class ran past its time cap."""


@contextlib.contextmanager
def time_cap(seconds: float | None):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (SIGALRM; no cap elsewhere)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"ran past the time cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tensors(out: Any) -> list[torch.Tensor]:
    """Every floating tensor of a model output (tuples, lists, dicts, diffusers BaseOutput), in order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "to_tuple"):
        return _tensors(out.to_tuple())
    return []


def _short(e: BaseException, limit: int = 160) -> str:
    msg = " ".join(str(e).split())
    # Dynamo wraps errors from user code; keep the first line that names the real one
    msg = msg.split(" from user code:")[0].split("Set TORCHDYNAMO_VERBOSE")[0].strip()
    if type(e).__name__ == "BackendCompilerFailed" and " raised: " in msg:  # the backend's own error
        return _short_text(msg.split(" raised: ", 1)[1], limit)
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(msg: str, limit: int) -> str:
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _max_diff(a: Sequence[Sequence[torch.Tensor]], b: Sequence[Sequence[torch.Tensor]]) -> float:
    diffs = [(x.double() - y.double()).abs().max().item() for xs, ys in zip(a, b) for x, y in zip(xs, ys) if x.shape == y.shape]
    return max(diffs) if diffs else float("nan")


def _run(fn: Callable[..., Any], case: Case) -> list[list[torch.Tensor]]:
    with torch.no_grad():
        return [[t.detach().clone() for t in _tensors(fn(**case.inputs(t)))] for t in TIMESTEPS]


@dataclass
class Reduced:
    report: Any
    outputs: list[list[torch.Tensor]]
    warnings: list[str]


def reduced_run(model: nn.Module, case: Case, plan: Any, **options: Any) -> Reduced:
    """``transform(model, plan, **options)`` run at :data:`TIMESTEPS`; AsymRnRWarning messages recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        fast = api.transform(model, plan, **options)
        with api.generation(fast):
            outs = _run(fast, case)
    msgs = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    return Reduced(fast.report, outs, list(dict.fromkeys(msgs)))


def _clip(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reasons(report: Any, limit: int = 2, n_video: int | None = None) -> str:
    """Why the sites were left alone: the distinct (kind: reason), most frequent first, clipped.

    With ``n_video``: when no SDPA call attends over all the video tokens at once (the video
    self-attention runs another kernel, is linear, or is factorized), says that instead.
    """
    if report is None:
        return ""
    if n_video is not None and report.sites:
        lens = sorted({(s.q_len, s.kv_len) for s in report.sites if s.q_len is not None and s.kv_len is not None})
        if lens and not any(min(q, kv) >= n_video for q, kv in lens):
            seen = ", ".join(f"{q}x{kv}" for q, kv in lens)
            return f"no SDPA call attends over all {n_video} video tokens (query x key lengths seen: {seen})"
    left = [s for s in report.sites if not s.rewrite]
    if n_video is not None:  # the sites over the video tokens say more than text refiners or pooling
        video = [s for s in left if s.q_len is None or s.kv_len is None or min(s.q_len, s.kv_len) >= n_video]
        left = video or left
    c = Counter(_clip(f"{s.kind}: {s.reason}" if s.reason else s.kind) for s in left)
    return "; ".join(r for r, _ in c.most_common(limit))


def _tried(tried: list[tuple[str, str]]) -> str:
    """``label: outcome`` pairs, the labels of equal outcomes merged."""
    groups: dict[str, list[str]] = {}
    for label, outcome in tried:
        groups.setdefault(outcome, []).append(label)
    return "; ".join(f"{' / '.join(labels)}: {outcome}" for outcome, labels in groups.items())


def check(name: str, *, inductor: bool = False, cap: float | None = TIME_CAP, plan: Any = None,
          retry: bool = True) -> Result:
    """Classify one class (see the module docstring). Never raises: errors become the result.

    ``retry=False`` skips the ``grid=`` / ``text_position=`` retries of a class the default leaves
    alone (faster; such a class then reads "not applicable" or "fails" with the default's reason).
    """
    start = time.perf_counter()
    res = Result(name)
    try:
        with time_cap(cap):
            _check(name, res, inductor=inductor, plan=plan, retry=retry)
    except CaseTimeout as e:
        res.status, res.why, res.error = "fails", str(e), traceback.format_exc(limit=8)
    except Exception as e:  # noqa: BLE001 - one bad class must not stop the sweep
        res.status, res.why, res.error = "fails", _short(e), traceback.format_exc(limit=8)
    finally:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    res.seconds = time.perf_counter() - start
    return res


def _check(name: str, res: Result, *, inductor: bool, plan: Any, retry: bool = True) -> None:
    plan = plan if plan is not None else Plan.uniform(q=0.5, kv=0.3)
    case = cases().get(name)
    if case is None:
        res.status, res.why = "fails", "no tiny config in asymrnr_fx/evaluation/coverage.py (new class?)"
        return
    model = build_model(case)

    # 1. plain eager: config and inputs are valid
    try:
        plain = _run(model, case)
    except Exception as e:  # noqa: BLE001
        res.status, res.why, res.error = "fails", f"plain model: {_short(e)}", traceback.format_exc(limit=8)
        return
    if not plain or not all(torch.isfinite(t).all() for t in plain[0]):
        res.status, res.why = "fails", "plain model output is empty or not finite (tiny config problem)"
        return
    expected = expected_grid(case, model, case.inputs(TIMESTEPS[0]))
    res.expected_grid = expected

    # 2. inspect, as a user would call it
    default_error = None
    report = None
    try:
        report = api.inspect(model, **case.inputs(TIMESTEPS[0]))
    except Exception as e:  # noqa: BLE001
        default_error = f"inspect: {_short(e, 130)}"
        res.error = traceback.format_exc(limit=8)
    if report is not None:
        _counts(res, report)
        if not report.sites:
            res.status, res.why = "not applicable", "no scaled_dot_product_attention call in the captured graph"
            res.note = "the attention runs another kernel (flex attention, a custom op, explicit softmax)"
            return

    # 3-4. default (no grid): geometry check, then the eager reduction
    if report is not None and report.rewritten:
        problem = geometry_problem(model, case, report, expected)
        if problem:
            res.status, res.why = "silently wrong", problem
            res.note = _rescue(model, case, plan, expected, report) if retry else ""
            return
        try:
            red = reduced_run(model, case, plan)
        except Exception as e:  # noqa: BLE001
            res.status, res.why, res.error = "fails", f"eager reduction: {_short(e)}", traceback.format_exc(limit=8)
            return
        _judge(res, red, plain, expected)
        if res.status == "works":
            res.status, res.why = "works out of the box", ""
            res.note = f"grid {expected}; {res.note}"
            _maybe_inductor(res, model, case, plan, red, inductor, {})
        return

    # nothing rewritten (or an error): what an explicit grid= (and text_position=) gives
    n_video = math.prod(expected)
    base = default_error or f"nothing rewritten: {_reasons(report, 1, n_video)}"
    tried: list[tuple[str, str]] = []
    for variant in _variants(plan, expected, report) if retry else []:
        label = _variant_label(variant, plan)
        v_plan = variant.pop("plan")
        try:
            rep = api.inspect(model, plan=v_plan, **variant, **case.inputs(TIMESTEPS[0]))
        except Exception as e:  # noqa: BLE001
            tried.append((label, _short(e, 130).replace("BackendCompilerFailed: backend='backend' raised: ", "")))
            continue
        if not rep.rewritten:
            tried.append((label, f"rewrites nothing ({_reasons(rep, 1, n_video)})"))
            continue
        problem = geometry_problem(model, case, rep, expected)
        if problem:
            tried.append((label, f"rewrites {len(rep.rewritten)} site(s) but {problem}"))
            continue
        _counts(res, rep)
        try:
            red = reduced_run(model, case, v_plan, **variant)
        except Exception as e:  # noqa: BLE001
            res.status, res.why = "fails", f"eager reduction with {label}: {_short(e)}"
            res.error, res.note = traceback.format_exc(limit=8), f"default: {base}"
            return
        _judge(res, red, plain, expected)
        if res.status == "works":
            res.status, res.why = "works with grid=", ""
            res.note = f"{label}; {res.note}; default: {base}"
            _maybe_inductor(res, model, case, v_plan, red, inductor, variant)
        else:
            res.note = f"with {label}; default: {base}"
        return
    res.status = "fails" if default_error else "not applicable"
    res.why = default_error or (_reasons(report, 1, n_video) or "no site qualifies")
    res.note = _tried(tried) if retry else "grid= not tried (retry=False)"


def _counts(res: Result, report: Any) -> None:
    res.sites, res.rewritten, res.kinds = len(report.sites), len(report.rewritten), report.counts()
    res.grids = list(dict.fromkeys(s.grid for s in report.rewritten))


def _variants(plan: Any, expected: Grid, report: Any) -> list[dict[str, Any]]:
    """What a user would try next: ``grid=``, then also ``Plan(text_position=...)`` (the sequence may join
    text and video by an index scatter, not a ``cat`` the pass can read)."""
    import dataclasses

    out = [{"plan": plan, "grid": expected}]
    out += [{"plan": dataclasses.replace(plan, text_position=p), "grid": expected} for p in ("first", "last")
            if getattr(plan, "text_position", "auto") != p]
    return out


def _variant_label(variant: dict[str, Any], base_plan: Any) -> str:
    label = f"grid={tuple(variant['grid'])}" if variant.get("grid") else "default"
    pos = getattr(variant["plan"], "text_position", "auto")
    return label + (f" + Plan(text_position={pos!r})" if pos != getattr(base_plan, "text_position", "auto") else "")


def _rescue(model: nn.Module, case: Case, plan: Any, expected: Grid, report: Any) -> str:
    """For a silently wrong class: would an explicit ``grid=`` (or ``text_position=``) fix it?"""
    notes: list[tuple[str, str]] = []
    for variant in _variants(plan, expected, report):
        label = _variant_label(variant, plan)
        v_plan = variant.pop("plan")
        try:
            rep = api.inspect(model, plan=v_plan, **variant, **case.inputs(TIMESTEPS[0]))
        except Exception as e:  # noqa: BLE001
            notes.append((label, _short(e, 100)))
            continue
        problem = geometry_problem(model, case, rep, expected) if rep.rewritten else "rewrites nothing"
        if not problem:
            return f"{label} fixes it ({len(rep.rewritten)} site(s) on the right tokens)"
        notes.append((label, problem))
    return _tried(notes)


def _judge(res: Result, red: Reduced, plain: list[list[torch.Tensor]], expected: Grid) -> None:
    """Outputs finite, different from the plain model, grids right: ``res.status = "works"``, else why not."""
    res.warnings = red.warnings
    rewritten = red.report.rewritten
    res.finite = all(torch.isfinite(t).all().item() for ts in red.outputs for t in ts)
    diff = _max_diff(red.outputs, plain)
    res.differs = bool(diff > 1e-6)
    wrong = [s for s in rewritten if s.grid != expected]
    if not rewritten:
        res.status, res.why = "fails", "transform() rewrote nothing" + (f": {red.warnings[0][:100]}" if red.warnings else "")
    elif wrong:
        res.status, res.why = "silently wrong", f"grid {wrong[0].grid} instead of {expected} at {wrong[0].path}"
    elif not res.finite:
        res.status, res.why = "fails", "reduced output not finite"
    elif not res.differs:
        res.status, res.why = "fails", "reduced output equals the plain output (the rewritten sites never ran)"
    elif red.warnings:
        res.status, res.why = "fails", f"AsymRnRWarning: {red.warnings[0][:100]}"
    else:
        res.status = "works"
        res.note = (res.note + "; " if res.note else "") + f"max abs diff vs plain {diff:.2g}"


def _maybe_inductor(res: Result, model: nn.Module, case: Case, plan: Any, eager: Reduced, inductor: bool,
                    options: dict[str, Any]) -> None:
    if not inductor:
        return
    try:
        comp = reduced_run(model, case, plan, compile=True, **options)
        d = _max_diff(comp.outputs, eager.outputs)
        res.inductor = f"ok (max diff {d:.1e})" if d <= 1e-4 else f"mismatch (max diff {d:.1e} > 1e-4)"
    except Exception as e:  # noqa: BLE001
        res.inductor = f"error: {_short(e, 120)}"


# =========================================================================== geometry check
def geometry_problem(model: nn.Module, case: Case, report: Any, expected: Grid) -> str | None:
    """Why the rewritten sites of ``report`` do not sit on the model's own video tokens, or None.

    Two checks: every rewritten site's grid equals ``expected`` (the config's patch geometry),
    and a probe: the latents of a few video tokens (corners, centre) are perturbed one at a
    time, and the first attention call of each rewritten site's length tells which sequence
    row moved. That row must be where the site assumes token (f, h, w): ``offset + (f * H +
    h) * W + w``, the offset being the text length when the text comes first. A wrong grid,
    another token order, or a video block at another offset (history or reference tokens
    packed next to it) fail the probe while the outputs stay finite and plausible.
    """
    wrong = [s for s in report.rewritten if s.grid != expected]
    if wrong:
        return f"grid {wrong[0].grid} instead of {expected} at {wrong[0].path}"
    return probe_layout(model, case, report.rewritten, expected)


def _record_queries(model: nn.Module, inputs: dict[str, Any]) -> list[tuple[int, int, torch.Tensor]]:
    """(query length, key length, query) of every ``F.scaled_dot_product_attention`` call, in order."""
    import torch.nn.functional as F

    calls: list[tuple[int, int, torch.Tensor]] = []
    original = F.scaled_dot_product_attention

    def record(*args: Any, **kwargs: Any) -> torch.Tensor:
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        calls.append((q.shape[-2], k.shape[-2], q.detach().clone()))
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = record
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        F.scaled_dot_product_attention = original
    return calls


def _perturb(case: Case, model: nn.Module, inputs: dict[str, Any], token: Grid, grid: Grid) -> None:
    """Add noise, in place, to the latents of one video token (f, h, w)."""
    x = inputs[case.key]
    if isinstance(x, (list, tuple)):
        x = x[0]
    f, h, w = token
    if case.layout == "tokens":
        region = x[:, (f * grid[1] + h) * grid[2] + w]
    else:
        pt, ph, pw = config_patch(getattr(model, "config", case.config) or case.config)
        ft, hs, ws = slice(f * pt, (f + 1) * pt), slice(h * ph, (h + 1) * ph), slice(w * pw, (w + 1) * pw)
        region = {
            "BCFHW": lambda: x[:, :, ft, hs, ws], "BFCHW": lambda: x[:, ft, :, hs, ws],
            "BFHWC": lambda: x[:, ft, hs, ws, :], "CFHW": lambda: x[:, ft, hs, ws],
        }[case.layout]()
    g = torch.Generator().manual_seed(7)
    region.add_(torch.randn(region.shape, generator=g).to(region.dtype) * 3 + 3)


def probe_tokens(grid: Grid) -> list[Grid]:
    """Corners and centre of the grid: enough to tell a transposed, shifted or mis-sized grid."""
    f, h, w = grid
    pts = [(0, 0, 0), (f - 1, h - 1, w - 1), (f // 2, h // 2, w // 2), (f - 1, 0, w - 1), (0, h - 1, 0)]
    return list(dict.fromkeys(pts))


def probe_layout(model: nn.Module, case: Case, sites: Iterable[Any], grid: Grid) -> str | None:
    """The probe of :func:`geometry_problem`; None when every rewritten site passes (or cannot be probed)."""
    n_video = math.prod(grid)
    t0 = TIMESTEPS[0]
    base = _record_queries(model, case.inputs(t0))
    todo: dict[tuple, Any] = {}  # one probe per (lengths, kind, text side): such sites share a layout
    for s in sites:
        if s.kind in ("self", "joint", "cross"):
            todo.setdefault((s.q_len, s.kv_len if s.kind != "cross" else None, s.kind, s.text_position), s)
    found: dict[tuple, int] = {}
    for key, s in todo.items():
        for i, (lq, lk, _) in enumerate(base):
            if s.q_len is not None and (lq != s.q_len or (s.kind != "cross" and lk != s.kv_len)):
                continue
            if s.q_len is None and (lq < n_video or lq != lk):  # symbolic length (Mochi): first long self call
                continue
            found[key] = i
            break
    if not found:
        return None
    for token in probe_tokens(grid):
        inputs = case.inputs(t0)
        _perturb(case, model, inputs, token, grid)
        moved = _record_queries(model, inputs)
        if len(moved) != len(base):
            return None  # the call sequence depends on the values: no verdict
        want = (token[0] * grid[1] + token[1]) * grid[2] + token[2]
        for key, i in found.items():
            s = todo[key]
            lq, _, q0 = base[i]
            if moved[i][2].shape != q0.shape:
                continue
            d = (moved[i][2] - q0).abs().movedim(-2, 0).reshape(lq, -1).amax(1)
            if not d.max() > 0:
                continue  # this call does not see the latents: no verdict
            row = int(d.argmax())
            offset = lq - n_video if (s.kind == "joint" and s.text_position == "first") else 0
            if row != offset + want:
                return (f"token layout: video token {token} is row {row} of the {lq}-token sequence at {s.path}, "
                        f"the site assumes row {offset + want}")
    return None


# =========================================================================== the sweep and its table
def rotating_subset(n: int = 4, day: int | None = None, always: Sequence[str] = ("CogVideoXTransformer3DModel",),
                    names: Sequence[str] | None = None) -> list[str]:
    """``n`` classes that change every day (day of the year modulo the number of chunks), plus ``always``:
    CI covers every class over a few weeks while each run stays short."""
    names = sorted(names if names is not None else video_dit_classes())
    if day is None:
        day = datetime.date.today().timetuple().tm_yday
    chunks = max(1, math.ceil(len(names) / n))
    i = day % chunks
    picked = names[i * n:(i + 1) * n]
    return list(dict.fromkeys([*always, *picked]))


def sweep(names: Sequence[str] | None = None, *, inductor: bool = False, cap: float | None = TIME_CAP,
          progress: bool = True) -> list[Result]:
    """:func:`check` every class (default: all of :func:`video_dit_classes`), with a tqdm progress bar."""
    names = list(names) if names is not None else video_dit_classes()
    results = []
    bar = None
    if progress:
        with contextlib.suppress(ImportError):
            from tqdm.auto import tqdm

            bar = tqdm(names, desc="coverage", unit="class")
    for name in bar if bar is not None else names:
        if bar is not None:
            bar.set_postfix_str(name)
        results.append(check(name, inductor=inductor, cap=cap))
    return results


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Sequence[Result], *, inductor: bool = False) -> str:
    head = ["class", "status", "sites rewritten/total", "kinds", "note"] + (["inductor vs eager"] if inductor else [])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.kinds.items())) or "-"
        cells = [f"`{r.name}`", r.label, f"{r.rewritten}/{r.sites}", kinds, r.note or ""]
        if inductor:
            cells.append(r.inductor or "-")
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def summary(results: Sequence[Result]) -> str:
    c = Counter(r.status for r in results)
    return ", ".join(f"{c[s]} {s}" for s in STATUSES if c[s])


def versions() -> dict[str, str]:
    import importlib.metadata

    import diffusers

    try:
        ours = importlib.metadata.version("asymrnr-fx")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        ours = "unknown"
    return {"diffusers": diffusers.__version__, "torch": torch.__version__, "asymrnr_fx": ours}


def markdown_report(results: Sequence[Result], *, seconds: float | None = None, inductor: bool = False,
                    root_causes: bool = True) -> str:
    """The whole of ``docs/coverage.md``: header, table, and the root causes of every class that is not
    out of the box."""
    v = versions()
    lines = [
        "# Coverage: every video DiT in diffusers",
        "",
        "Generated by `python benchmarks/coverage.py` (`asymrnr_fx/evaluation/coverage.py`) on "
        f"{datetime.date.today().isoformat()}: diffusers {v['diffusers']}, torch {v['torch']}, "
        f"asymrnr_fx {v['asymrnr_fx']}" + (f"; {len(results)} classes in {seconds:.0f} s." if seconds else "."),
        "",
        "Each class is built from a tiny config (1-2 layers, 2 heads of 8-16 dims, random weights; nothing",
        "downloaded) with the inputs its pipeline passes, run plain, inspected, then reduced eagerly with",
        "`Plan.uniform(q=0.5, kv=0.3)` at two timesteps. The grid of every rewritten site is checked against the",
        "model's own patch geometry (latent sizes / `patch_size`, `patch_size_t`), and a probe perturbs single",
        "video tokens and checks that each lands on the sequence row the site assumes (grid, token order, offset",
        "of the video block). Statuses: *works out of the box*; *works with grid=* (an explicit `grid=`, in",
        "some cases plus `Plan(text_position=...)`, works where the default rewrites nothing); *not applicable*",
        "(no SDPA call, or no site the method applies to as the library stands); *fails* (an error);",
        "*silently wrong* (a site would be reduced on the wrong tokens).",
        "",
        f"Summary: {summary(results)}.",
        "",
        markdown_table(results, inductor=inductor),
        "",
    ]
    if root_causes:
        lines += ["## Root causes and fixes", "",
                  "For every class that is not out of the box: what the model does, and which library change would",
                  "make it work (files under `asymrnr_fx/`).", ""]
        for r in results:
            if r.status == "works out of the box":
                continue
            cause = ROOT_CAUSES.get(r.name)
            lines.append(f"* **`{r.name}`**, *{r.label}*. " + (cause or "Not analysed yet."))
        lines.append("")
    return "\n".join(lines)


#: Per class that is not out of the box: the cause found and the library change that would fix it.
#: Written from the sweep on diffusers 0.42.1 (docs/coverage.md); re-check after a diffusers upgrade.
ROOT_CAUSES: dict[str, str] = {
    "AnyFlowFARTransformer3DModel": (
        "The video self-attention runs through `flex_attention` (`AnyFlowCausalAttnProcessor` accepts no "
        "other backend) with a chunk-causal `BlockMask`; only the text cross-attention reaches SDPA. Fix: "
        "`passes/find_attention.py` would have to find `flex_attention` calls, and since the chunk-causal mask "
        "differs between chunks, partitions must not cross chunk boundaries (a per-chunk grid in "
        "`passes/classify_attention.py` and `ops.py`)."),
    "Cosmos3OmniTransformer": (
        "Packed mixture-of-transformers attention: the understanding (text) tokens attend causally "
        "(`is_causal=True`), the generation (video) tokens attend to `[text keys, video keys]` with grouped-query "
        "attention (2 query heads, 1 key/value head, `enable_gqa=True`). Both are left alone (causal; GQA). "
        "Fix: `passes/classify_attention.py` would need a kind for video queries over `[text, video]` keys, "
        "and `passes/rewrite_attention.py` / `ops.py` KV reduction on the key/value heads when "
        "`enable_gqa=True`; its timestep argument is `vision_timesteps` (add to `find_timestep.TIMESTEP_NAMES`)."),
    "HunyuanVideo15Transformer3DModel": (
        "Three things. (1) The joint mask is `m & m.transpose(-1, -2)` of a key-padding mask `m`, which "
        "`classify_attention` reports as 'mask varies per query'; every video row of it is the same (all video "
        "tokens are valid), which is all the rewrite needs. Fix: the mask analysis in "
        "`passes/classify_attention.py` should accept a mask whose *video* query rows are equal (recognise "
        "`a & a.mT` of a broadcast key-padding mask, or compare the example value's video rows only). "
        "(2) The forward breaks the graph twice: `if torch.all(image_embeds == 0)` (a data-dependent branch, "
        "unavoidable) and boolean-mask indexing of the text tokens (`image[image_mask]`; add "
        "`capture_dynamic_output_shape_ops` for the class to `integrations/diffusers.py` `DYNAMO_CONFIG`, as "
        "for Mochi). The blocks still land in one fragment graph, which the pass handles. (3) Because of the "
        "breaks, an explicit `grid=` raises on the text-refiner fragment graph "
        "('grid gives 32 video tokens, but the sites have lengths [6]'): `passes/manager.py` "
        "`_check_explicit_grid` should only raise when no graph of the call has a site of the grid's length "
        "(or only for the graph that carries the timestep)."),
    "HunyuanVideoFramepackTransformer3DModel": (
        "Packed sequence: `[4x history, 2x history, clean latents, video, text]` (77 tokens here: 21 history, "
        "32 video, 24 text). The video block sits in the middle, so neither `text_position='first'` nor "
        "`'last'` is right: the probe finds video token (0, 0, 0) at row 21 where either setting assumes row 0 "
        "or 45 (forcing one would be silently wrong). A `Tensor.item()` on the prompt length also breaks the "
        "graph, and `grid=` then raises on the fragment as for HunyuanVideo 1.5. Fix: a video *span* (start "
        "offset + grid, context tokens on both sides) in `passes/classify_attention.py` (read from the nested "
        "`cat`s) and `passes/rewrite_attention.py`; a Framepack grid function in `integrations/diffusers.py` "
        "(grid of `hidden_states` only); `capture_scalar_outputs` in `DYNAMO_CONFIG`; the fragment fix in "
        "`passes/manager.py`."),
    "JoyImageEditPlusTransformer3DModel": (
        "Takes pre-patchified tokens `[B, tokens, C, p_t, p_h, p_w]` and the token grids in `shape_list`, so "
        "there is no 5-D latent to read a grid from; `grid=` works. Fix: a grid function in "
        "`integrations/diffusers.py` `GRID_FNS` returning `shape_list[0][0]` (the target). With reference "
        "images in `shape_list` the target is followed by the references' tokens inside the same tensor, which "
        "also needs the video-span change described for Framepack."),
    "Kandinsky5Transformer3DModel": (
        "Latents are channels-last `[B, F, H, W, C]`. `integrations/diffusers.py` `grid_generic` reads the "
        "layout from `config.in_channels`, which Kandinsky names `in_visual_dim`, so it takes `(H, W, C)` for "
        "`(F, H, W)`; that hint matches no attention length and `passes/infer_grid.py` then falls back to "
        "shape guesses, where `[1, 4, 16, 16, 16]` read as `[B, C, F, H, W]` with patch (1, 4, 4) gives "
        "(16, 4, 4) = 256 tokens, the true count of (4, 8, 8): the site is rewritten on the wrong grid. Any "
        "square latent with 16 channels does this (512 x 512 px, 61 frames: (64, 32, 8) instead of (16, 32, 32)). "
        "`grid=` fixes it. Fix: `GRID_FNS` entries for Kandinsky 5 / 6 / 6-SR reading `hidden_states.shape[1:4]` "
        "/ `patch_size`; in `infer_grid.py` add the `[B, F, H, W, C]` layout, never fall back to guesses when "
        "the trusted (config) hint exists, and leave sites alone when two candidate grids explain the same length."),
    "Kandinsky6SRTransformer3DModel": (
        "No SDPA call: the attention is NABLA block-sparse `flex_attention` (diffusers warns to compile it). "
        "Fix: as for AnyFlow-FAR, `flex_attention` support in `passes/find_attention.py`; the block-sparse mask "
        "varies per query block, so it would also need block-local partitions."),
    "Kandinsky6Transformer3DModel": (
        "Channels-last latents `[B, F, H, W, 2C+1]` misread as `[B, C, F, H, W]` (see Kandinsky 5); here no guess "
        "matches the 32 tokens, so nothing is rewritten (safe: an `AsymRnRWarning` says so); `grid=` works. Fix: the same "
        "channels-last `GRID_FNS` entry in `integrations/diffusers.py`."),
    "LTX2VideoTransformer3DModel": (
        "Packed tokens `[B, N, C]` with `num_frames` / `height` / `width` arguments, like LTX-Video, but "
        "`GRID_FNS` is keyed by class name and has no `LTX2VideoTransformer3DModel` entry (it does not subclass "
        "LTX-Video), so the grid is unknown; `grid=` works (video self-attention only; audio, audio-video "
        "cross-attention and text cross-attention are left alone). Fix: `GRID_FNS[\"LTX2VideoTransformer3DModel\"] = "
        "grid_ltx` in `integrations/diffusers.py`."),
    "LatteTransformer3DModel": (
        "Factorized attention: spatial blocks attend over the H x W tokens of one frame (frames folded into the "
        "batch: 16 tokens here), temporal blocks over the F frames of one position (2 tokens); no call sees all "
        "F x H x W video tokens, so no site matches the grid (and an explicit grid raises). Fix: two new site "
        "kinds in `passes/classify_attention.py`, spatial (length H*W, grid (1, H, W)) and temporal (length F, "
        "grid (F, 1, 1)), with 2-D / 1-D strides in `ops.py`; AsymRnR's partition then works per frame / per "
        "position."),
    "MiniMaxH3Transformer3DModel": (
        "One packed sequence `[text, audio, video]` assembled by index scatter (`text_indices`, "
        "`audio_indices`, `video_indices`), pre-patchified video rows and no 5-D input: no grid, and no `cat` "
        "to tell where the text is. `grid=(F, H, W)` plus `Plan(text_position='first')` works (the probe "
        "confirms the video rows are the last ones). Fix: a grid function in `integrations/diffusers.py` "
        "reading the video rows' `position_ids` (their distinct t / h / w), and the text side from "
        "`video_indices` (a tail block); the report's step tracking names `timestep_indices` (the first "
        "input matching the timestep pattern): `passes/find_timestep.py` should prefer an exact `timestep`."),
    "SanaVideoTransformer3DModel": (
        "The video self-attention is linear (ReLU-kernel) attention, not SDPA; the only SDPA call is the text "
        "cross-attention (left alone by default). Not applicable: AsymRnR needs softmax attention."),
    "SanaWMLTX2RefinerTransformer3DModel": (
        "Packed tokens `[B, N, C]` with a precomputed `video_rotary_emb` and no size arguments: the grid "
        "cannot be read from the call; `grid=` works. Fix: `apply()` in `pipelines.py` could pass the grid "
        "from the refiner pipeline's latent sizes (the transformer call itself does not carry them)."),
    "WanAnimate2Transformer3DModel": (
        "Takes lists of per-sample latents `[C, F, H, W]` (and a KV cache), so there is no 5-D tensor "
        "input for the grid; `grid=` works. Fix: a grid function in `integrations/diffusers.py` reading "
        "`hidden_states[0].shape[1:]` / `patch_size` (or `offset_grid_sizes`)."),
}
