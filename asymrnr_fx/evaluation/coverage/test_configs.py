# ruff: noqa: C408  (the tiny configs are dict(...) calls: they read like the constructors' keyword arguments)
"""The tiny configs of diffusers' own model tests, as a second config set for the coverage sweep.

Why: the configs in :mod:`.configs` were written here, next to the library, and a config written
by the people who fix the library tends to avoid what the library cannot do yet (one frame, batch
2, a 1 x 1 image, positions that are no grid). diffusers' tests
(``tests/models/transformers/test_models_transformer_*.py`` in huggingface/diffusers; Kandinsky 5
has none, its pipeline test is used) pick their sizes for other reasons, so a class that works on
both sets works for more than the sizes it was fixed on.

Each :class:`~.case.Case` records the test's ``get_init_dict()`` values and the shapes of its
``get_dummy_inputs()`` (batch size included), read from the diffusers repository (its main branch
of 2026-08, the closest to the installed 0.42.1); only the values are random here (a fixed seed)
and the timestep is the sweep's. :data:`SOURCES` names the file of every case. Classes that have
no test in diffusers (:data:`NO_TEST_CONFIG`) are not in this set.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .case import Case, _has_torchvision, _rng, _ts, _wake

_T = "tests/models/transformers/test_models_transformer_"

#: Class name -> the diffusers file its config and input shapes come from.
SOURCES: dict[str, str] = {
    "AllegroTransformer3DModel": f"{_T}allegro.py",
    "AnyFlowTransformer3DModel": f"{_T}anyflow.py",
    "AnyFlowFARTransformer3DModel": f"{_T}anyflow_far.py",
    "ChronoEditTransformer3DModel": f"{_T}chronoedit.py",
    "CogVideoXTransformer3DModel": f"{_T}cogvideox.py",
    "ConsisIDTransformer3DModel": f"{_T}consisid.py",
    "CosmosTransformer3DModel": f"{_T}cosmos.py",
    "Cosmos3OmniTransformer": f"{_T}cosmos3.py",
    "EasyAnimateTransformer3DModel": f"{_T}easyanimate.py",
    "HeliosTransformer3DModel": f"{_T}helios.py",
    "HunyuanVideo15Transformer3DModel": f"{_T}hunyuan_1_5.py",
    "HunyuanVideoTransformer3DModel": f"{_T}hunyuan_video.py",
    "HunyuanVideoFramepackTransformer3DModel": f"{_T}hunyuan_video_framepack.py",
    "JoyImageEditTransformer3DModel": f"{_T}joyimage.py",
    "JoyImageEditPlusTransformer3DModel": f"{_T}joyimage_edit_plus.py",
    "Kandinsky5Transformer3DModel": "tests/pipelines/kandinsky5/test_kandinsky5.py",
    "LatteTransformer3DModel": f"{_T}latte.py",
    "LTXVideoTransformer3DModel": f"{_T}ltx.py",
    "LTX2VideoTransformer3DModel": f"{_T}ltx2.py",
    "MiniMaxH3Transformer3DModel": f"{_T}minimax_h3.py",
    "MochiTransformer3DModel": f"{_T}mochi.py",
    "MotifVideoTransformer3DModel": f"{_T}motif_video.py",
    "SanaVideoTransformer3DModel": f"{_T}sana_video.py",
    "SkyReelsV2Transformer3DModel": f"{_T}skyreels_v2.py",
    "WanTransformer3DModel": f"{_T}wan.py",
    "WanAnimateTransformer3DModel": f"{_T}wan_animate.py",
    "WanAnimate2Transformer3DModel": f"{_T}wan_animate_2.py",
    "WanVACETransformer3DModel": f"{_T}wan_vace.py",
}

#: Video DiT classes diffusers has no model or pipeline test for (nothing to read a config from).
NO_TEST_CONFIG: tuple[str, ...] = (
    "Kandinsky6Transformer3DModel", "Kandinsky6SRTransformer3DModel", "SanaWMTransformer3DModel",
    "SanaWMLTX2RefinerTransformer3DModel",
)


def _simple(x: tuple[int, ...], text: tuple[int, int, int], *, long: bool = False,
            **extra: Callable[[], Any]) -> Callable[[float], dict[str, Any]]:
    """Inputs ``hidden_states`` of shape ``x``, ``encoder_hidden_states`` of shape ``text``, a batch of
    timesteps, and ``extra`` (built fresh per call)."""

    def inputs(t: float) -> dict[str, Any]:
        rnd = _rng()
        ts = _ts(t, x[0])
        return {"hidden_states": rnd(*x), "encoder_hidden_states": rnd(*text),
                "timestep": ts.long() if long else ts, **{k: f() for k, f in extra.items()}, "return_dict": False}

    return inputs


def _test_cases() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, config: dict[str, Any], inputs: Callable[[float], dict[str, Any]], **kw: Any) -> None:
        assert name in SOURCES, name
        cases.append(Case(name, config, inputs, **kw))

    # ---------------------------------------------------------------- Wan-like
    wan = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
               text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32)
    add("WanTransformer3DModel", dict(wan, qk_norm="rms_norm_across_heads"), _simple((1, 4, 2, 16, 16), (1, 12, 16), long=True))
    add("SkyReelsV2Transformer3DModel", dict(wan, qk_norm="rms_norm_across_heads"),
        _simple((1, 4, 2, 16, 16), (1, 12, 16), long=True))
    add("ChronoEditTransformer3DModel",
        dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
             text_dim=32, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
             eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=64, pos_embed_seq_len=None,
             rope_temporal_skip_len=8),
        _simple((1, 16, 2, 8, 8), (1, 12, 32), long=True, encoder_hidden_states_image=lambda: None))
    add("WanVACETransformer3DModel",
        dict(wan, in_channels=16, out_channels=16, text_dim=32, num_layers=4, qk_norm="rms_norm_across_heads",
             vace_layers=[0, 2], vace_in_channels=48),
        _simple((1, 16, 2, 16, 16), (1, 12, 32), long=True, control_hidden_states=lambda: _rng(1)(1, 48, 2, 16, 16)))

    def anyflow(frames: int, **extra: Any) -> Callable[[float], dict[str, Any]]:
        def inputs(t: float) -> dict[str, Any]:
            rnd = _rng()
            return {"hidden_states": rnd(1, frames, 4, 16, 16), "timestep": _ts(t, 1, frames),
                    "r_timestep": _ts(t * 0.5, 1, frames), "encoder_hidden_states": rnd(1, 12, 16), **extra,
                    "return_dict": False}
        return inputs

    add("AnyFlowTransformer3DModel", dict(wan, gate_value=0.25, deltatime_type="r"), anyflow(2), layout="BFCHW")
    add("AnyFlowFARTransformer3DModel",
        dict(wan, compressed_patch_size=(1, 4, 4), full_chunk_limit=3, gate_value=0.25, deltatime_type="r"),
        anyflow(4, chunk_partition=[2, 2]), layout="BFCHW")

    def helios(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 2, 16, 16), "timestep": _ts(t).long(), "encoder_hidden_states": rnd(1, 12, 16),
                "indices_hidden_states": torch.ones(1, 2), "indices_latents_history_short": torch.ones(1, 1),
                "indices_latents_history_mid": torch.ones(1, 1), "indices_latents_history_long": torch.ones(1, 4),
                "latents_history_short": rnd(1, 4, 1, 16, 16), "latents_history_mid": rnd(1, 4, 1, 16, 16),
                "latents_history_long": rnd(1, 4, 4, 16, 16), "return_dict": False}

    add("HeliosTransformer3DModel",
        dict({k: v for k, v in wan.items() if k != "rope_max_seq_len"}, qk_norm="rms_norm_across_heads",
             rope_dim=(4, 4, 4), has_multi_term_memory_patch=True, guidance_cross_attn=True, zero_history_timestep=True,
             is_amplify_history=False),
        helios)

    def wan_animate(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 12, 21, 16, 16), "timestep": _ts(t).long(), "encoder_hidden_states": rnd(1, 12, 16),
                "encoder_hidden_states_image": rnd(1, 12, 16), "pose_hidden_states": rnd(1, 4, 20, 16, 16),
                "face_pixel_values": rnd(1, 3, 77, 16, 16), "return_dict": False}

    add("WanAnimateTransformer3DModel",
        dict(wan, in_channels=12, latent_channels=4, qk_norm="rms_norm_across_heads", image_dim=16,
             motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16, motion_style_dim=8,
             motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
             inject_face_latents_blocks=2),
        wan_animate)

    def wan_animate2(t: float) -> dict[str, Any]:
        from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

        rnd = _rng()
        return {"hidden_states": [rnd(16, 2, 4, 4)], "timestep": _ts(t), "encoder_hidden_states": [rnd(8, 32)],
                "condition_latents": [rnd(20, 2, 4, 4)], "encoder_hidden_states_image": rnd(1, 4, 1280),
                "kv_cache": WanAnimate2KVCache(2), "kv_cache_mode": "extract", "seq_len": 2 * 2 * 2,
                "offset_grid_sizes": torch.tensor([[2, 2, 2]]), "return_dict": False}

    add("WanAnimate2Transformer3DModel",
        dict(patch_size=(1, 2, 2), text_len=16, in_dim=36, dim=128, ffn_dim=256, freq_dim=64, text_dim=32, out_dim=16,
             num_heads=4, num_layers=2, cross_attn_norm=True, use_img_emb=True),
        wan_animate2, layout="CFHW")

    # ---------------------------------------------------------------- CogVideoX-like [B, F, C, H, W]: one frame, batch 2
    add("CogVideoXTransformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
             text_embed_dim=8, num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
             patch_size_t=None, temporal_compression_ratio=4, max_text_seq_length=8),
        _simple((2, 1, 4, 8, 8), (2, 8, 8), long=True), layout="BFCHW")
    add("ConsisIDTransformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
             text_embed_dim=8, num_layers=1, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
             temporal_compression_ratio=4, max_text_seq_length=8, cross_attn_interval=1, is_kps=False,
             is_train_face=True, cross_attn_dim_head=1, cross_attn_num_heads=1, LFE_id_dim=2, LFE_vit_dim=2,
             LFE_depth=5, LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1, LFE_num_querie=1, LFE_output_dim=10,
             LFE_ff_mult=1, LFE_num_scale=1),
        _simple((2, 1, 4, 8, 8), (2, 8, 8), long=True, id_vit_hidden=lambda: [torch.ones(2, 2, 2)],
                id_cond=lambda: torch.ones(2, 2)),
        layout="BFCHW")

    # ---------------------------------------------------------------- HunyuanVideo-like
    hunyuan = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
                   num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
                   text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None)
    guided = dict(pooled_projections=lambda: _rng(1)(1, 8), encoder_attention_mask=lambda: torch.ones(1, 12),
                  guidance=lambda: torch.full((1,), 500.0))
    add("HunyuanVideoTransformer3DModel", hunyuan, _simple((1, 4, 1, 16, 16), (1, 12, 16), long=True, **guided))

    def framepack(t: float) -> dict[str, Any]:
        rnd = _rng()
        return {"hidden_states": rnd(1, 4, 3, 4, 4), "timestep": _ts(t).long(), "encoder_hidden_states": rnd(1, 12, 16),
                "pooled_projections": rnd(1, 8), "encoder_attention_mask": torch.ones(1, 12),
                "guidance": torch.full((1,), 500.0), "image_embeds": rnd(1, 12, 16), "indices_latents": torch.ones(3),
                "latents_clean": rnd(1, 4, 2, 4, 4), "indices_latents_clean": torch.ones(2),
                "latents_history_2x": rnd(1, 4, 2, 4, 4), "indices_latents_history_2x": torch.ones(2),
                "latents_history_4x": rnd(1, 4, 8, 4, 4), "indices_latents_history_4x": torch.ones(8),
                "return_dict": False}

    add("HunyuanVideoFramepackTransformer3DModel",
        dict(hunyuan, patch_size=2, has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True), framepack)
    add("HunyuanVideo15Transformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
             num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
             image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v"),
        _simple((1, 4, 1, 8, 8), (1, 6, 16), encoder_hidden_states_2=lambda: _rng(1)(1, 4, 8),
                encoder_attention_mask=lambda: torch.ones(1, 6), encoder_attention_mask_2=lambda: torch.ones(1, 4),
                image_embeds=lambda: torch.zeros(1, 3, 12)))
    add("MotifVideoTransformer3DModel",
        dict(in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=1,
             num_single_layers=1, num_decoder_layers=0, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
             norm_type="layer_norm", text_embed_dim=32, image_embed_dim=4, rope_theta=256.0, rope_axes_dim=(4, 4, 4),
             enable_text_cross_attention_dual=False, enable_text_cross_attention_single=False),
        _simple((1, 33, 9, 16, 16), (1, 12, 32), long=True))

    # ---------------------------------------------------------------- other [B, C, F, H, W] models
    add("AllegroTransformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=1,
             cross_attention_dim=16, sample_width=8, sample_height=8, sample_frames=8, caption_channels=8),
        _simple((2, 4, 2, 8, 8), (2, 16, 8), long=True))
    add("CosmosTransformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2, mlp_ratio=2,
             text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
             # the test sets concat_padding_mask=True; the mask is resized with torchvision, so only where it is installed
             concat_padding_mask=_has_torchvision(), extra_pos_embed_type="learnable"),
        _simple((1, 4, 1, 16, 16), (1, 12, 16), long=True, attention_mask=lambda: torch.ones(1, 12), fps=lambda: 30,
                padding_mask=lambda: torch.zeros(1, 1, 16, 16)))
    add("EasyAnimateTransformer3DModel",
        dict(attention_head_dim=16, num_attention_heads=2, in_channels=4, mmdit_layers=2, num_layers=2, out_channels=4,
             patch_size=2, sample_height=60, sample_width=90, text_embed_dim=16, time_embed_dim=8,
             time_position_encoding_type="3d_rope", timestep_activation_fn="silu"),
        _simple((2, 4, 2, 16, 16), (2, 16, 16), long=True, timestep_cond=lambda: None,
                encoder_hidden_states_t5=lambda: None, inpaint_latents=lambda: None, control_latents=lambda: None))
    joy = dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=16, num_layers=2,
               rope_dim_list=[4, 6, 6], theta=256)
    add("JoyImageEditTransformer3DModel", joy, _simple((1, 16, 1, 4, 4), (1, 12, 16)))
    # two components of one token each (target, reference image): no target grid to reduce on
    add("JoyImageEditPlusTransformer3DModel", joy,
        _simple((1, 2, 16, 1, 2, 2), (1, 12, 16), shape_list=lambda: [[(1, 1, 1), (1, 1, 1)]]),
        layout="tokens", latent=(1, 1, 1))
    add("LatteTransformer3DModel",
        dict(sample_size=8, num_layers=1, patch_size=2, attention_head_dim=4, num_attention_heads=2, caption_channels=8,
             in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True,
             activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False, norm_eps=1e-6),
        _simple((2, 4, 1, 8, 8), (2, 8, 8), long=True, enable_temporal_attentions=lambda: True))
    add("MochiTransformer3DModel",
        dict(patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
             in_channels=4, out_channels=None, qk_norm="rms_norm", text_embed_dim=16, time_embed_dim=4,
             activation_fn="swiglu", max_sequence_length=16),
        _simple((2, 4, 2, 16, 16), (2, 16, 16), long=True,
                encoder_attention_mask=lambda: torch.ones(2, 16, dtype=torch.bool)))
    add("SanaVideoTransformer3DModel",
        dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
             num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=16,
             mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
             norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=32),
        _simple((1, 16, 2, 16, 16), (1, 12, 16), long=True))

    # ---------------------------------------------------------------- Kandinsky 5 (pipeline test: 32 x 32 px, 5 frames)
    def kandinsky5(t: float) -> dict[str, Any]:
        # the pipeline's latents for that clip: [B, 2 latent frames, 4, 4, 16 channels]; rope positions per token axis
        rnd = _rng()
        return {"hidden_states": rnd(1, 2, 4, 4, 16), "encoder_hidden_states": rnd(1, 8, 32), "timestep": _ts(t),
                "pooled_projections": rnd(1, 16), "visual_rope_pos": [torch.arange(2), torch.arange(2), torch.arange(2)],
                "text_rope_pos": torch.arange(8), "return_dict": False}

    add("Kandinsky5Transformer3DModel",
        dict(in_visual_dim=16, in_text_dim=32, in_text_dim2=16, time_dim=16, out_visual_dim=16, patch_size=(1, 2, 2),
             model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2), visual_cond=False,
             attention_type="regular"),
        kandinsky5, layout="BFHWC", prepare=_wake("modulation.out_layer"))  # zero-initialised gates, as in ours

    # ---------------------------------------------------------------- packed tokens: LTX, LTX-2, MiniMax-H3, Cosmos 3
    ltx_tokens = dict(encoder_attention_mask=lambda: torch.ones(2, 16, dtype=torch.bool), num_frames=lambda: 2,
                      height=lambda: 16, width=lambda: 16)
    add("LTXVideoTransformer3DModel",
        dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
             num_layers=1, qk_norm="rms_norm_across_heads", caption_channels=16),
        _simple((2, 512, 4), (2, 16, 16), long=True, **ltx_tokens), layout="tokens", latent=(2, 16, 16))
    add("LTX2VideoTransformer3DModel",
        dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
             cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
             audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
             caption_channels=16, rope_double_precision=False),
        _simple((2, 512, 4), (2, 16, 16), audio_hidden_states=lambda: _rng(1)(2, 9, 4),
                audio_encoder_hidden_states=lambda: _rng(2)(2, 16, 16), audio_num_frames=lambda: 9, fps=lambda: 25.0,
                **ltx_tokens),
        layout="tokens", latent=(2, 16, 16))

    def minimax(t: float) -> dict[str, Any]:
        # [4 text, 6 audio, 8 video] rows; the video positions are (0, i % 4, i % 2): not a row-major grid
        rnd = _rng()
        n_text, n_audio, n_video = 4, 6, 8
        length = n_text + n_audio + n_video
        text, audio = torch.arange(n_text), torch.arange(n_text, n_text + n_audio)
        video = torch.arange(n_text + n_audio, length)
        tags = torch.empty(length, dtype=torch.long)
        tags[text], tags[audio], tags[video] = 1, 2, 0
        steps = torch.zeros(length, dtype=torch.long)
        steps[audio] = 1
        pos = torch.zeros(length, 3)
        pos[:, 0] = torch.arange(length, dtype=torch.float32)
        pos[video, 1] = torch.arange(n_video, dtype=torch.float32) % 4
        pos[video, 2] = torch.arange(n_video, dtype=torch.float32) % 2
        return {"hidden_states": rnd(2, n_video, 16), "audio_hidden_states": rnd(2, n_audio, 6),
                "encoder_hidden_states": rnd(2, n_text, 8), "timestep": torch.tensor([t / 1000, 0.3]),
                "timestep_indices": steps, "token_tags": tags, "position_ids": pos, "video_indices": video,
                "audio_indices": audio, "text_indices": text, "return_dict": False}

    add("MiniMaxH3Transformer3DModel",
        dict(num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=2, ffn_dim=32,
             in_channels=4, audio_in_channels=6, patch_size=(1, 2, 2), text_dim=8, freq_dim=8, time_embed_hidden_dim=24,
             time_embed_dim=16, rope_freq_dim=2),
        minimax, layout="tokens", latent=(1, 4, 2))

    def cosmos3(t: float) -> dict[str, Any]:
        vision = torch.arange(2, 3)  # one 1 x 1 vision token after 2 text tokens
        return {"input_ids": torch.tensor([1, 2]), "text_indexes": torch.tensor([0, 1]),
                "position_ids": torch.zeros(3, 3, dtype=torch.long), "und_len": 2, "sequence_length": 3,
                "vision_tokens": [_rng()(1, 2, 1, 1, 1)], "vision_token_shapes": [(1, 1, 1)],
                "vision_sequence_indexes": vision, "vision_mse_loss_indexes": vision,
                "vision_timesteps": torch.full((1,), t / 1000), "vision_noisy_frame_indexes": [torch.tensor([0])],
                "return_dict": False}

    add("Cosmos3OmniTransformer",
        dict(head_dim=6, hidden_act="relu2", hidden_size=12, intermediate_size=24, latent_channel=2, latent_patch_size=1,
             num_attention_heads=2, num_hidden_layers=2, num_key_value_heads=1, patch_latent_dim=2,
             qk_norm_for_text=False, rms_norm_eps=1e-5, rope_axes_dim=[1, 1, 1], rope_theta=1e8, vocab_size=32),
        cosmos3, key="vision_tokens", module="transformer_cosmos3")
    return cases
