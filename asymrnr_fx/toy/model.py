"""The shipped toy text-to-video model: a tiny diffusers ``CogVideoXTransformer3DModel``
(CogVideoX-1.5 layout: 2x2 spatial and 2-frame temporal patches) working directly on
pixels, a word-embedding text encoder and a flow-matching scheduler.

Why this shape: it is a real CogVideoX transformer (joint text/video attention, 3D RoPE,
adaptive LayerNorm, patch size 2), so code that rewrites or reduces CogVideoX attention
can be demonstrated and tested end to end on a CPU in seconds, without any download.

Sampling (:func:`generate`) follows ``diffusers.CogVideoXPipeline``:
``FlowMatchEulerDiscreteScheduler`` timesteps (sigma * 1000, decreasing), optional
classifier-free guidance by batching ``[unconditional, conditional]``, and the transformer
called as ``transformer(hidden_states=latents, encoder_hidden_states=..., timestep=t.expand(B),
image_rotary_emb=..., return_dict=False)[0]``. ``image_rotary_emb`` is passed exactly as the
CogVideoX pipeline passes it: with ``use_rotary_positional_embeddings=True`` the transformer
has no other positional information. There is no VAE: latents are the pixel video in [-1, 1]
(``LATENT_SCALE`` = 1).

Which weights are shipped, what each learned, and how they were trained: ``toy/README.md``.
:func:`load_toy_model` loads the newest shipped file (:func:`asymrnr_fx.toy.newest_weights`).
Each file carries its configs and its ``dataset.VideoSpec`` (``video_spec``: geometry and shape
words) as metadata; :func:`generate` samples at the geometry of the model it is given
(``model.spec``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from diffusers import CogVideoXTransformer3DModel, FlowMatchEulerDiscreteScheduler
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from safetensors.torch import load_file, save_file
from torch import nn

from . import WEIGHTS_DIR, dataset

WEIGHTS_FILE = WEIGHTS_DIR / "toy_t2v.safetensors"  # the first model's file name (later ones: toy_t2v_vN)
LATENT_SCALE = 1.0

TEXT_EMBED_DIM = 64

TRANSFORMER_CONFIG: dict = dict(
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=3,
    out_channels=3,
    time_embed_dim=128,
    text_embed_dim=TEXT_EMBED_DIM,
    num_layers=3,
    sample_width=dataset.WIDTH,
    sample_height=dataset.HEIGHT,
    sample_frames=dataset.NUM_FRAMES,
    patch_size=2,
    patch_size_t=2,
    temporal_compression_ratio=1,
    max_text_seq_length=dataset.MAX_TOKENS,
    use_rotary_positional_embeddings=True,
)
TEXT_ENCODER_CONFIG: dict = dict(vocab_size=len(dataset.VOCAB), max_len=dataset.MAX_TOKENS, dim=TEXT_EMBED_DIM)
SCHEDULER_CONFIG: dict = dict(num_train_timesteps=1000, shift=3.0)
DEFAULT_GUIDANCE = 3.0

# Second toy model: same width (inner dim 128) and patching, 2048 video tokens (16 x 32 x 32
# pixels), one more block and 4 heads of 32 (more attention patterns at the same attention cost:
# a patch must find the object's centre relative to itself to know whether it is a corner).
TRANSFORMER_CONFIG_V2: dict = dict(
    TRANSFORMER_CONFIG,
    num_attention_heads=4,
    attention_head_dim=32,
    num_layers=4,
    sample_width=dataset.SPEC_V2.width,
    sample_height=dataset.SPEC_V2.height,
    sample_frames=dataset.SPEC_V2.frames,
)


# Fifth toy model: v1's transformer (2 heads of 64, 3 blocks), which learned motion direction,
# on v3's canvas; only the RoPE base grid changes (no parameter does), so v1's weights load.
TRANSFORMER_CONFIG_V5: dict = dict(
    TRANSFORMER_CONFIG,
    sample_width=dataset.SPEC_V3.width,
    sample_height=dataset.SPEC_V3.height,
    sample_frames=dataset.SPEC_V3.frames,
)


def default_configs(version: int = 1) -> dict:
    """All configs of toy model ``version`` (1, 2, 3 or 5), in the layout of the weights metadata.
    v3 is v2's transformer on v2's canvas with other shapes (``dataset.SPEC_V3``); v5 is v1's
    transformer on v3's canvas and shapes (v4 was a further training of v3)."""
    versions = {
        1: (TRANSFORMER_CONFIG, dataset.SPEC_V1),
        2: (TRANSFORMER_CONFIG_V2, dataset.SPEC_V2),
        3: (TRANSFORMER_CONFIG_V2, dataset.SPEC_V3),
        5: (TRANSFORMER_CONFIG_V5, dataset.SPEC_V3),
    }
    if version not in versions:
        raise ValueError(f"unknown toy model version {version}")
    transformer_config, spec = versions[version]
    return {
        "transformer_config": dict(transformer_config),
        "text_encoder_config": dict(TEXT_ENCODER_CONFIG),
        "scheduler_config": dict(SCHEDULER_CONFIG),
        "video_spec": spec.to_dict(),
    }


class ToyTextEncoder(nn.Module):
    """Word embedding + learned position embedding + LayerNorm -> ``[B, T, dim]``.

    Deliberately minimal: captions come from one template, so no contextualisation is needed;
    the CogVideoX blocks attend jointly over text and video tokens anyway."""

    def __init__(self, vocab_size: int, max_len: int, dim: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(max_len, dim))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token.weight, std=1.0)
        nn.init.normal_(self.position, std=0.1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token(input_ids) + self.position[: input_ids.shape[1]])


@dataclass
class ToyModel:
    """Bundle of the three components a pipeline needs."""

    transformer: CogVideoXTransformer3DModel
    text_encoder: ToyTextEncoder
    scheduler: FlowMatchEulerDiscreteScheduler
    spec: dataset.VideoSpec = dataset.SPEC_V1  # geometry the model was trained on / samples at
    configs: dict = field(default_factory=dict)  # the configs it was built from (saved as metadata)

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype


def build_toy_model(seed: int | None = None, configs: dict | None = None) -> ToyModel:
    """Freshly initialised (untrained) components, e.g. for training.

    ``configs`` may override ``transformer_config`` / ``text_encoder_config`` /
    ``scheduler_config`` / ``video_spec`` (as stored in a weights file's metadata; see
    :func:`default_configs`). Missing entries are those of the first toy model."""
    configs = configs or {}
    used = {
        "transformer_config": dict(configs.get("transformer_config", TRANSFORMER_CONFIG)),
        "text_encoder_config": dict(configs.get("text_encoder_config", TEXT_ENCODER_CONFIG)),
        "scheduler_config": dict(configs.get("scheduler_config", SCHEDULER_CONFIG)),
        "video_spec": dict(configs.get("video_spec", dataset.SPEC_V1.to_dict())),
    }
    if seed is not None:
        torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(**used["transformer_config"])
    text_encoder = ToyTextEncoder(**used["text_encoder_config"])
    scheduler = FlowMatchEulerDiscreteScheduler(**used["scheduler_config"])
    spec = dataset.VideoSpec.from_dict(used["video_spec"])
    return ToyModel(transformer, text_encoder, scheduler, spec=spec, configs=used)


def config_json_path(weights_path: str | Path) -> Path:
    """Human-readable config next to a weights file: ``config.json`` for the first model's file
    name (as shipped), ``<stem>.json`` for any other (so v2 never overwrites v1's)."""
    weights_path = Path(weights_path)
    if weights_path.name == WEIGHTS_FILE.name:
        return weights_path.parent / "config.json"
    return weights_path.with_suffix(".json")


def save_toy_model(model: ToyModel, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """One safetensors file (``transformer.*`` / ``text_encoder.*``) with all configs (and the
    video spec) as metadata, plus a human-readable JSON copy next to it (:func:`config_json_path`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"transformer.{k}": v for k, v in model.transformer.state_dict().items()}
    tensors.update({f"text_encoder.{k}": v for k, v in model.text_encoder.state_dict().items()})
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    configs = model.configs or default_configs(1)
    meta = {
        "transformer_config": configs.get("transformer_config", TRANSFORMER_CONFIG),
        "text_encoder_config": configs.get("text_encoder_config", TEXT_ENCODER_CONFIG),
        "scheduler_config": configs.get("scheduler_config", SCHEDULER_CONFIG),
        "video_spec": model.spec.to_dict(),
        "latent_scale": LATENT_SCALE,
        "vocab": list(dataset.VOCAB),
        **(extra_metadata or {}),
    }
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})
    config_json_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_toy_model(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, path: str | Path | None = None) -> ToyModel:
    """Build the modules from the configs stored in the weights file and load the given weights
    (default: the newest shipped, :func:`asymrnr_fx.toy.newest_weights`); modules are put in eval
    mode with gradients off. Files without a ``video_spec`` entry (the first toy model) get
    ``dataset.SPEC_V1``."""
    from . import newest_weights, weights_metadata

    path = path or newest_weights()
    if path is None:
        raise FileNotFoundError(f"no shipped toy weights in {WEIGHTS_DIR} (toy_t2v*.safetensors)")
    path = str(path)
    configs = weights_metadata(path)
    state = load_file(path)
    model = build_toy_model(configs=configs)
    model.transformer.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("transformer.")})
    model.text_encoder.load_state_dict({k[13:]: v for k, v in state.items() if k.startswith("text_encoder.")})
    for module in (model.transformer, model.text_encoder):
        module.to(device=device).eval().requires_grad_(False)
        if dtype != torch.float32:  # (diffusers warns on any dtype cast, so skip the no-op one)
            module.to(dtype=dtype)
    return model


def rotary_embeddings(
    transformer_config, num_frames: int, height: int, width: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE (cos, sin), computed exactly like ``CogVideoXPipeline._prepare_rotary_positional_embeddings``
    for the CogVideoX 1.5 layout (no VAE, so the spatial scale factor is 1 and ``num_frames`` are
    pixel frames)."""
    p, p_t = transformer_config.patch_size, transformer_config.patch_size_t
    if p_t is None:
        # The 1.0 layout needs diffusers' crop-region helper, which lives in the pipeline module
        # and drags in transformers; the toy model is 1.5-layout only.
        raise ValueError("rotary_embeddings: the toy model uses the CogVideoX 1.5 layout (patch_size_t set)")
    grid_h, grid_w = height // p, width // p
    base_w, base_h = transformer_config.sample_width // p, transformer_config.sample_height // p
    return get_3d_rotary_pos_embed(  # CogVideoX 1.5 branch (temporal patching)
        embed_dim=transformer_config.attention_head_dim,
        crops_coords=None,
        grid_size=(grid_h, grid_w),
        temporal_size=(num_frames + p_t - 1) // p_t,
        grid_type="slice",
        max_size=(base_h, base_w),
        device=device,
    )


def encode_prompts(model: ToyModel, prompts: Sequence[str]) -> torch.Tensor:
    """``encoder_hidden_states`` ``[B, MAX_TOKENS, TEXT_EMBED_DIM]`` for a list of captions."""
    ids = dataset.tokenize(list(prompts)).to(model.device)
    return model.text_encoder(ids).to(model.dtype)


_DEFAULT_MODEL: ToyModel | None = None


def _default_model() -> ToyModel:
    global _DEFAULT_MODEL
    if _DEFAULT_MODEL is None:
        _DEFAULT_MODEL = load_toy_model()
    return _DEFAULT_MODEL


StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class _Sampling:
    """One generation's sampling state (what :func:`generate` keeps between steps)."""

    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    scheduler: FlowMatchEulerDiscreteScheduler
    guidance_scale: float

    def step(self, transformer: Callable, t: torch.Tensor, dtype: torch.dtype) -> None:
        do_cfg = self.guidance_scale > 1.0
        latent_input = torch.cat([self.latents] * 2) if do_cfg else self.latents
        noise_pred = transformer(
            hidden_states=latent_input.to(dtype),
            encoder_hidden_states=self.prompt_embeds,
            timestep=t.expand(latent_input.shape[0]),
            image_rotary_emb=self.rotary,
            return_dict=False,
        )[0].float()
        if do_cfg:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + self.guidance_scale * (cond - uncond)
        self.latents = self.scheduler.step(noise_pred, t, self.latents, return_dict=False)[0]


def _start_sampling(model: ToyModel, prompts: Sequence[str], num_steps: int, seed: int, guidance_scale: float,
                    spec: dataset.VideoSpec | None) -> _Sampling:
    device = model.device
    cfg = model.transformer.config
    batch = len(prompts)
    prompt_embeds = encode_prompts(model, prompts)
    if guidance_scale > 1.0:
        prompt_embeds = torch.cat([encode_prompts(model, [""] * batch), prompt_embeds])
    spec = spec or model.spec
    shape = (batch, spec.frames, cfg.in_channels, spec.height, spec.width)
    generator = torch.Generator("cpu").manual_seed(seed)
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    rotary = rotary_embeddings(cfg, spec.frames, spec.height, spec.width, device)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(model.scheduler.config)
    scheduler.set_timesteps(num_steps, device=device)
    return _Sampling(latents, prompt_embeds, rotary, scheduler, guidance_scale)


@torch.no_grad()
def generate(
    prompts: str | Sequence[str],
    num_steps: int = 20,
    seed: int = 0,
    transformer: Callable | None = None,
    callback: StepCallback | None = None,
    guidance_scale: float = DEFAULT_GUIDANCE,
    model: ToyModel | None = None,
    spec: dataset.VideoSpec | None = None,
) -> torch.Tensor:
    """Sample videos ``[B, F, 3, H, W]`` in [-1, 1] (float32, on the model's device).

    ``transformer`` may be any callable with the ``CogVideoXTransformer3DModel.forward``
    signature (e.g. a rewritten or compiled copy); it defaults to ``model.transformer``.
    ``guidance_scale > 1`` enables classifier-free guidance (the transformer then sees a batch
    of ``2B``: unconditional first, like diffusers); ``guidance_scale <= 1`` is CFG-free.
    ``callback(step_index, timestep, latents)`` runs after every scheduler step.
    The initial noise depends only on ``seed``, the number of prompts and the geometry, which is
    ``model.spec`` (the one the model was trained on) unless ``spec`` overrides it (e.g. to
    evaluate a short-clip training stage).
    """
    model = model or _default_model()
    if isinstance(prompts, str):
        prompts = [prompts]
    transformer = transformer or model.transformer
    run = _start_sampling(model, prompts, num_steps, seed, guidance_scale, spec)
    for i, t in enumerate(run.scheduler.timesteps):
        run.step(transformer, t, model.dtype)
        if callback is not None:
            callback(i, t, run.latents)
    return (run.latents / LATENT_SCALE).clamp(-1.0, 1.0)


@torch.no_grad()
def generate_interleaved(
    prompts: Sequence[str],
    transformers: dict[str, Callable],
    num_steps: int = 20,
    seed: int = 0,
    guidance_scale: float = DEFAULT_GUIDANCE,
    model: ToyModel | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """The same generation (prompts, noise, steps) with each of ``transformers``, advanced one
    denoising step at a time in turn, so that every variant's step is timed next to the others'
    and slow drift of the machine (+-25% here between runs) cancels out of their ratios.
    Returns the videos (each equal to :func:`generate` with that transformer) and the seconds of
    every step, per variant. Compile first (one call at the same shapes): step 0 is timed too."""
    model = model or _default_model()
    runs = {name: _start_sampling(model, prompts, num_steps, seed, guidance_scale, None) for name in transformers}
    seconds: dict[str, list[float]] = {name: [] for name in transformers}
    for i in range(num_steps):
        for name, fn in transformers.items():
            run = runs[name]
            start = time.perf_counter()
            run.step(fn, run.scheduler.timesteps[i], model.dtype)
            seconds[name].append(time.perf_counter() - start)
    return {name: (r.latents / LATENT_SCALE).clamp(-1.0, 1.0) for name, r in runs.items()}, seconds
