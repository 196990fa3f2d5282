# ruff: noqa: C408  (the tiny configs are dict(...) calls: they read like the constructors' keyword arguments)
"""The tiny configs and inputs of every video DiT class: one :class:`~.case.Case` each (1-2 layers,
1-2 heads of 8-16 dims, a few frames of a few tokens; nothing is downloaded)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .case import Case, _family, _has_torchvision, _rng, _ts, _wake


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
