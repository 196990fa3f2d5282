"""The built-in models: one registry (:data:`TARGETS`) for ``asymrnr-fx calibrate``,
``asymrnr-fx bench``, ``asymrnr-fx inspect`` and ``benchmarks/``.

A :class:`Target` is a model plus how to run one full generation of it. Add an entry to
:data:`TARGETS` to make another model available everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..calibration.sampling import euler
from ..testing.dit import TinyVideoDiT
from .bench import cogvideox_shaped, cogvideox_shaped_inputs


@dataclass
class Target:
    """A model plus how to run one full generation of it.

    ``run(fn, seed)`` runs a whole sampling loop with ``fn`` as the denoiser (the model, a
    transformed copy or a compiled callable) from the noise of ``seed`` and returns the
    final latents or videos. ``score`` (e.g. prompt accuracy) and ``data_range`` (for
    PSNR/SSIM) describe that output when known.
    """

    name: str
    model: torch.nn.Module
    run: Callable[[Callable[..., Any], int], torch.Tensor]
    description: str = ""
    score: Callable[[torch.Tensor], float] | None = None
    data_range: float | None = None
    device: str = "cpu"
    steps: int = 0


# =========================================================================== random-weight models
def tiny_dit(steps: int = 10, *, small: bool = False) -> Target:
    """:class:`~asymrnr_fx.testing.dit.TinyVideoDiT`, random weights: 4 blocks, 4 heads x 16, grid (4, 8, 8)."""
    torch.manual_seed(0)
    model = TinyVideoDiT(channels=4, dim=64, depth=4, heads=4, patch=2, frames=4, height=16, width=16).eval()

    def run(fn: Callable[..., Any], seed: int) -> torch.Tensor:
        x = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
        return euler(fn, {"hidden_states": x}, steps)

    return Target("tiny-dit", model, run, "hand-written DiT (random weights), 4 blocks, grid (4, 8, 8)", steps=steps)


def _cogvideox(name: str, description: str, steps: int, **shape: Any) -> Target:
    """A random-weight diffusers CogVideoX transformer (:func:`~asymrnr_fx.evaluation.bench.cogvideox_shaped`);
    the seed of a run draws its latents and text embeddings."""
    model, _ = cogvideox_shaped(**shape)
    inputs: dict[int, dict[str, Any]] = {}  # per seed, built once: runs are timed
    keys = ("head_dim", "frames", "size", "text", "text_dim", "channels")

    def run(fn: Callable[..., Any], seed: int) -> torch.Tensor:
        if seed not in inputs:
            inputs[seed] = cogvideox_shaped_inputs(seed=seed, **{k: shape[k] for k in keys if k in shape})
        return euler(fn, {**inputs[seed], "return_dict": False}, steps)

    return Target(name, model, run, description, steps=steps)


def cogvideox_tiny(steps: int = 10, *, small: bool = False) -> Target:
    """diffusers CogVideoXTransformer3DModel, random weights: 4 blocks, 4 heads x 16, grid (4, 8, 8) + 8 text tokens."""
    return _cogvideox(
        "cogvideox-tiny", "diffusers CogVideoX transformer (random weights), 4 blocks, grid (4, 8, 8) + 8 text", steps,
        layers=4, heads=4, head_dim=16, frames=4, size=16, text=8, text_dim=32, channels=4, time_dim=16,
    )


def cogvideox_shaped_target(steps: int = 10, *, small: bool = False) -> Target:
    """The CogVideoX-shaped model of the speed benchmark (4 heads x 64, 4096 video + 226 text tokens);
    ``small``: 2 blocks, grid (4, 8, 8) + 16 text tokens, for CI."""
    shape = {"layers": 2, "size": 16, "text": 16} if small else {}
    size = "2 blocks, grid (4, 8, 8) + 16 text" if small else "4 blocks, grid (4, 32, 32) + 226 text"
    name = "cogvideox-shaped" + ("-small" if small else "")
    return _cogvideox(name, f"diffusers CogVideoX transformer (random weights), {size}", steps, **shape)


# =========================================================================== the trained toy model
def toy_available() -> bool:
    """Whether trained toy weights are shipped (``asymrnr_fx/toy/weights/toy_t2v*.safetensors``)."""
    from ..toy import shipped_weights

    return bool(shipped_weights())


def toy_prompts(n: int = 4, heldout: bool = True, spec: Any = None) -> list[str]:
    """``n`` captions spread over the held-out (never trained on) attribute combinations of
    ``spec``'s shape words (a ``toy.dataset.VideoSpec``; default: the newest shipped model's)."""
    from ..toy import dataset, weights_spec

    combos = dataset.combos(spec or weights_spec(), "heldout" if heldout else "train")
    step = max(len(combos) // n, 1)
    return [dataset.caption(*combos[(i * step) % len(combos)]) for i in range(n)]


def toy_inputs(
    prompts: list[str] | None = None, weights: str | Path | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The toy transformer and one call's worth of inputs (noise latents, prompt embeddings, RoPE),
    at the geometry the loaded model was trained on (its ``spec``: 8 x 24 x 24 for v1, 16 x 32 x 32 for v2).
    ``weights``: a weights file (default: the one :func:`~asymrnr_fx.toy.model.load_toy_model` loads)."""
    from ..toy import model as toy_model

    model = toy_model.load_toy_model(path=weights)
    prompts = prompts or toy_prompts(1, spec=model.spec)
    cfg, spec = model.transformer.config, model.spec
    shape = (len(prompts), spec.frames, cfg.in_channels, spec.height, spec.width)
    inputs = {
        "hidden_states": torch.randn(shape, generator=torch.Generator().manual_seed(0)),
        "encoder_hidden_states": toy_model.encode_prompts(model, prompts),
        "image_rotary_emb": toy_model.rotary_embeddings(cfg, spec.frames, spec.height, spec.width),
    }
    return model.transformer, inputs


def toy(
    steps: int = 20, *, small: bool = False, prompts: Sequence[str] | None = None, weights: str | Path | None = None
) -> Target:
    """The shipped trained toy text-to-video model (:mod:`asymrnr_fx.toy`), CFG 3.

    With ``prompts`` every run generates them and ``score`` is their prompt accuracy;
    without, the seed of a run also picks its prompt, cycling over the training captions.
    ``weights``: a weights file (default: the one :func:`~asymrnr_fx.toy.model.load_toy_model` loads;
    :func:`asymrnr_fx.toy.newest_weights` for the newest shipped).
    """
    from ..toy import dataset, scorer
    from ..toy import model as toy_model

    bundle = toy_model.load_toy_model(path=weights)
    fixed = list(prompts) if prompts is not None else None

    def run(fn: Callable[..., Any], seed: int) -> torch.Tensor:
        combos = dataset.combos(bundle.spec, "train")
        chosen = fixed if fixed is not None else dataset.caption(*combos[seed % len(combos)])
        return toy_model.generate(chosen, num_steps=steps, seed=seed, transformer=fn, model=bundle)

    def score(videos: torch.Tensor) -> float:
        return scorer.prompt_accuracy(videos, fixed, spec=bundle.spec)["all"]

    return Target("toy", bundle.transformer, run, "trained toy text-to-video CogVideoX (asymrnr_fx.toy), CFG 3",
                  score=score if fixed is not None else None, data_range=2.0, steps=steps)


#: Built-in models: name -> builder(steps, *, small=False) -> :class:`Target` (each builder has its default steps).
TARGETS: dict[str, Callable[..., Target]] = {
    "tiny-dit": tiny_dit,
    "cogvideox-tiny": cogvideox_tiny,
    "cogvideox-shaped": cogvideox_shaped_target,
    "toy": toy,
}
