"""Tiny, random-weight diffusers video models and pipelines, built entirely in code.

Why this exists: the integration has to be exercised on the real diffusers classes (their
attention processors, masks, per-sample loops and pipelines), but nothing may be downloaded
and the CPU is small. Every builder here constructs the real class from a small config —
transformer, VAE, text encoder(s) and an offline word-level tokenizer — so tests and the
``examples/pipeline_<family>.py`` scripts run the genuine code paths in seconds.

Shapes are chosen so that the video token grid is at least (2, 2, 2) (the default AsymRnR
stride) and differs in length from the text sequence, which keeps the attention sites
distinguishable from shapes, as in full-size models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..api import inspect, runtime_of
from ..pipelines import apply, remove
from ..plan import Plan

FAMILIES: tuple[str, ...] = ("cogvideox", "hunyuanvideo", "wan", "mochi", "ltx")

_WORDS = (
    "a cat dog bird fish horse person man woman child car boat plane train tree flower river sea sky sun moon "
    "star cloud rain snow city street house room table chair window door light dark red green blue yellow white "
    "black small big fast slow running walking flying swimming jumping sitting standing in on under over with "
    "and the of to at by from video photo of high quality detailed cinematic shot camera moves slowly around "
    "scene bright night day morning evening forest mountain beach desert field garden park road bridge"
).split()


def tiny_tokenizer(kind: str = "t5", model_max_length: int = 512) -> Any:
    """An offline word-level tokenizer with the special tokens a pipeline expects.

    ``kind`` picks the conventions: ``"t5"`` (pad 0, eos 1, unk 2, eos appended),
    ``"llama"`` (bos prepended, right padding), ``"clip"`` (bos + eos around the text).
    Built with the ``tokenizers`` library and wrapped in ``PreTrainedTokenizerFast``, so it
    answers the same calls (padding, truncation, ``batch_decode``) as the real tokenizers.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {
        "t5": ["<pad>", "</s>", "<unk>"],
        "llama": ["<s>", "<pad>", "</s>", "<unk>"],
        "clip": ["<|startoftext|>", "<|endoftext|>", "<unk>"],
    }[kind]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in dict.fromkeys(_WORDS):
        vocab.setdefault(word, len(vocab))
    unk = "<unk>"
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
        names = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": unk}
    elif kind == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
        )
        names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": unk}
    else:
        bos, eos = "<|startoftext|>", "<|endoftext|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
            special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])],
        )
        names = {"bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": unk}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **names)


def _vocab_size() -> int:
    return 4 + len(dict.fromkeys(_WORDS))


def tiny_t5(d_model: int = 32, umt5: bool = False) -> torch.nn.Module:
    """A 2-layer T5 (or UMT5, as Wan uses) encoder with random weights."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    kw = dict(
        vocab_size=_vocab_size(), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    if umt5:
        return UMT5EncoderModel(UMT5Config(**kw)).eval()
    return T5EncoderModel(T5Config(**kw)).eval()


# --------------------------------------------------------------------------- transformers
def tiny_transformer(family: str, *, seed: int = 0, layers: int = 1) -> torch.nn.Module:
    """The family's diffusers transformer class at toy size (2 heads x 8-16 dims, ``layers`` blocks)."""
    import diffusers

    torch.manual_seed(seed)
    if family == "cogvideox":
        model = diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
            text_embed_dim=32, num_layers=layers, sample_width=8, sample_height=8, sample_frames=13, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=8, use_rotary_positional_embeddings=True,
        )
    elif family == "hunyuanvideo":
        model = diffusers.HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=layers,
            num_single_layers=layers, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        )
    elif family == "wan":
        model = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )
    elif family == "mochi":
        model = diffusers.MochiTransformer3DModel(
            patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=max(layers, 2),
            pooled_projection_dim=16, in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32,
            time_embed_dim=4, activation_fn="swiglu", max_sequence_length=8,
        )
        # Mochi initialises its RoPE frequencies to zero (real weights load them); make RoPE do something.
        model.pos_frequencies.data = torch.randn_like(model.pos_frequencies) * 0.5
    elif family == "ltx":
        model = diffusers.LTXVideoTransformer3DModel(
            in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
            cross_attention_dim=16, num_layers=layers, caption_channels=32,
        )
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    return model.eval()


def transformer_inputs(
    family: str, *, batch: int = 1, dtype: torch.dtype = torch.float32, timestep: float = 900.0, seed: int = 1
) -> dict[str, Any]:
    """Keyword arguments for one forward call of :func:`tiny_transformer`, shaped as the pipeline passes them.

    The video grid in tokens is (4, 4, 4) for every family; text is 8 tokens (with padding
    masks where the family has them: the second sample's prompt is shorter).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    t = torch.full((batch,), float(timestep))
    text = 8
    mask = torch.ones(batch, text, dtype=torch.long)
    if batch > 1:
        mask[1:, 5:] = 0  # a shorter prompt in the second sample: padded text tokens
    if family == "cogvideox":
        # [B, F, C, H, W] latents, patch 2 -> (4, 4, 4) tokens
        return {"hidden_states": rnd(batch, 4, 4, 8, 8), "encoder_hidden_states": rnd(batch, text, 32),
                "timestep": t.long(), "return_dict": False}
    if family == "hunyuanvideo":
        return {"hidden_states": rnd(batch, 4, 4, 4, 4), "timestep": t.to(dtype), "encoder_hidden_states": rnd(batch, text, 16),
                "encoder_attention_mask": mask, "pooled_projections": rnd(batch, 8),
                "guidance": torch.full((batch,), 6000.0, dtype=dtype), "return_dict": False}
    if family == "wan":
        return {"hidden_states": rnd(batch, 16, 4, 8, 8), "timestep": t.long(), "encoder_hidden_states": rnd(batch, text, 32),
                "return_dict": False}
    if family == "mochi":
        return {"hidden_states": rnd(batch, 12, 4, 8, 8), "encoder_hidden_states": rnd(batch, text, 32),
                "timestep": t.to(dtype), "encoder_attention_mask": mask.bool(), "return_dict": False}
    if family == "ltx":
        return {"hidden_states": rnd(batch, 4 * 4 * 4, 8), "encoder_hidden_states": rnd(batch, text, 32),
                "timestep": t.long(), "encoder_attention_mask": mask, "num_frames": 4, "height": 4, "width": 4,
                "rope_interpolation_scale": (1 / 25 * 8, 32, 32), "return_dict": False}
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


# --------------------------------------------------------------------------- pipelines
@dataclass
class TinyPipeline:
    """A pipeline built from tiny components plus the call arguments that give a (4, 4, 4)-token video."""

    family: str
    pipe: Any
    call: dict[str, Any] = field(default_factory=dict)

    def __call__(self, **overrides: Any) -> Any:
        """Run the pipeline with the default tiny arguments, ``overrides`` replacing any of them."""
        kwargs = {**self.call, **overrides}
        return self.pipe(**kwargs)


def _vae(family: str) -> torch.nn.Module:
    import diffusers

    if family == "cogvideox":
        # 3 down blocks: 4x spatial, 4x temporal compression -> 13x32x32 px = 4x8x8 latents.
        return diffusers.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 3,
            up_block_types=("CogVideoXUpBlock3D",) * 3, block_out_channels=(8, 8, 8), latent_channels=4,
            layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        )
    if family == "hunyuanvideo":
        return diffusers.AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 3,
            up_block_types=("HunyuanVideoUpBlock3D",) * 3, block_out_channels=(8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=4,
            temporal_compression_ratio=4, mid_block_add_attention=False,
        )
    if family == "wan":
        return diffusers.AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    if family == "mochi":
        return diffusers.AutoencoderKLMochi(
            latent_channels=12, out_channels=3, encoder_block_out_channels=(32, 32, 32, 32),
            decoder_block_out_channels=(32, 32, 32, 32), layers_per_block=(1, 1, 1, 1, 1),
        )
    if family == "ltx":
        vae = diffusers.AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
            upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
            patch_size_t=1, encoder_causal=True, decoder_causal=False,
        )
        vae.use_framewise_encoding = False
        vae.use_framewise_decoding = False
        return vae
    raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")


def tiny_pipeline(family: str, *, dtype: torch.dtype = torch.float32, seed: int = 0, layers: int = 1) -> TinyPipeline:
    """The family's real diffusers pipeline class, from random-weight tiny components; nothing is downloaded."""
    import diffusers

    torch.manual_seed(seed)
    transformer = tiny_transformer(family, seed=seed, layers=layers)
    torch.manual_seed(seed + 1)
    vae = _vae(family).eval()
    steps = {"num_inference_steps": 4, "output_type": "pt", "max_sequence_length": 8}
    if family == "cogvideox":
        pipe = diffusers.CogVideoXPipeline(
            tokenizer=tiny_tokenizer("t5"), text_encoder=tiny_t5(32), vae=vae, transformer=transformer,
            scheduler=diffusers.CogVideoXDDIMScheduler(timestep_spacing="trailing"),
        )
        call = {"height": 32, "width": 32, "num_frames": 13, "guidance_scale": 6.0}
    elif family == "hunyuanvideo":
        from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

        llama = LlamaModel(LlamaConfig(
            bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=37,
            num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3, vocab_size=_vocab_size(),
            hidden_act="gelu",
        )).eval()
        clip = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=_vocab_size(), hidden_act="gelu",
            projection_dim=8, max_position_embeddings=77,
        )).eval()
        pipe = diffusers.HunyuanVideoPipeline(
            text_encoder=llama, tokenizer=tiny_tokenizer("llama"), transformer=transformer, vae=vae,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=clip,
            tokenizer_2=tiny_tokenizer("clip", model_max_length=77),
        )
        call = {"height": 16, "width": 16, "num_frames": 13, "guidance_scale": 6.0,
                "prompt_template": {"template": "{}", "crop_start": 0}}
    elif family == "wan":
        pipe = diffusers.WanPipeline(
            tokenizer=tiny_tokenizer("t5"), text_encoder=tiny_t5(32, umt5=True), vae=vae, transformer=transformer,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        )
        call = {"height": 64, "width": 64, "num_frames": 13, "guidance_scale": 5.0}
    elif family == "mochi":
        pipe = diffusers.MochiPipeline(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=True), vae=vae,
            text_encoder=tiny_t5(32), tokenizer=tiny_tokenizer("t5"), transformer=transformer,
        )
        call = {"height": 64, "width": 64, "num_frames": 19, "guidance_scale": 4.5}
    elif family == "ltx":
        pipe = diffusers.LTXPipeline(
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=tiny_t5(32),
            tokenizer=tiny_tokenizer("t5"), transformer=transformer,
        )
        # LTX needs multiples of 32 px: 9x32x32 px -> 3x8x8 latent tokens (a grid that is not a multiple of the stride)
        call = {"height": 32, "width": 32, "num_frames": 9, "guidance_scale": 3.0, "frame_rate": 25}
    else:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dtype=dtype)
    call = {"prompt": "a cat walking in the garden", "negative_prompt": "dark", **steps, **call}
    return TinyPipeline(family, pipe, call)


def timed_generate(tp: TinyPipeline, **overrides: Any) -> tuple[Any, list[float]]:
    """Run the pipeline once; return its output and the wall time of every denoising step (seconds).

    The step-end callback here only reads the clock — AsymRnR itself needs no callback.
    """
    import time

    marks = [time.perf_counter()]

    def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        marks.append(time.perf_counter())
        return kwargs

    out = tp(callback_on_step_end=on_step_end, **overrides)
    return out, [b - a for a, b in zip(marks, marks[1:])]


def example_args(description: str) -> Any:
    """The command line every ``examples/pipeline_<family>.py`` takes (``--steps``, ``--compile``)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=6, help="denoising steps")
    parser.add_argument("--compile", action="store_true", help="compile the rewritten graph with inductor")
    return parser.parse_args()


def print_comparison(runtime: Any, base: Any, base_times: list[float], fast: Any, fast_times: list[float]) -> None:
    """Per-step wall times of a baseline and an AsymRnR run, where matching ran, and how far outputs moved."""
    print(f"matching ran at steps {runtime.matching_steps()} (cache window {runtime.plan.cache_window})")
    print("step  baseline s  asymrnr s   (step 0 includes prompt encoding, and graph capture for AsymRnR)")
    for i, (a, b) in enumerate(zip(base_times, fast_times)):
        print(f"{i:4d}  {a:10.4f}  {b:9.4f}")
    frames, ref = fast.frames, base.frames
    print(f"video {tuple(frames.shape)}; max |difference| vs baseline {float((frames - ref).float().abs().max()):.4f}")


def run_example(family: str, doc: str, **call_kwargs: Any) -> None:
    """The body of ``examples/pipeline_<family>.py``: one generation without, one with AsymRnR.

    Builds the tiny pipeline (the real pipeline class with random-weight tiny components),
    times a generation, applies AsymRnR with no callback (steps come from the timestep),
    times the same generation again, prints the attention report and the comparison, and
    takes AsymRnR out again. ``call_kwargs`` go to the pipeline call (e.g. ``true_cfg_scale``).
    """
    args = example_args(doc.splitlines()[0])
    torch.set_num_threads(1)
    tp = tiny_pipeline(family)
    base, base_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **call_kwargs)

    plan = Plan.uniform(q=0.5, kv=0.3, cache_window=3)
    apply(tp.pipe, plan, compile=args.compile, fullgraph=True)
    fast, fast_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **call_kwargs)

    print(inspect(tp.pipe.transformer))  # every attention site the pipeline's transformer ran
    print_comparison(runtime_of(tp.pipe.transformer), base, base_times, fast, fast_times)
    remove(tp.pipe)  # the original transformer is back
