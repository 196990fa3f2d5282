"""Built-in models to demo and benchmark on: the shipped trained toy model and a CogVideoX-shaped one."""
from __future__ import annotations

from typing import Any, Callable

import torch

from .compare import Target


def toy_prompts(n: int = 4, heldout: bool = True) -> list[str]:
    """``n`` captions spread over the held-out (never trained on) attribute combinations."""
    from .toy import dataset

    combos = dataset.HELDOUT_COMBOS if heldout else dataset.TRAIN_COMBOS
    step = max(len(combos) // n, 1)
    return [dataset.caption(*combos[(i * step) % len(combos)]) for i in range(n)]


def toy_inputs(prompts: list[str] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The toy transformer and one call's worth of inputs (noise latents, prompt embeddings, RoPE)."""
    from .toy import dataset
    from .toy import model as toy_model

    model = toy_model.load_toy_model()
    prompts = prompts or toy_prompts(1)
    cfg = model.transformer.config
    shape = (len(prompts), dataset.NUM_FRAMES, cfg.in_channels, dataset.HEIGHT, dataset.WIDTH)
    inputs = {
        "hidden_states": torch.randn(shape, generator=torch.Generator().manual_seed(0)),
        "encoder_hidden_states": toy_model.encode_prompts(model, prompts),
        "image_rotary_emb": toy_model.rotary_embeddings(cfg, dataset.NUM_FRAMES, dataset.HEIGHT, dataset.WIDTH),
    }
    return model.transformer, inputs


def toy_target(prompts: list[str] | None = None, steps: int = 20, seed: int = 0) -> Target:
    """The shipped toy text-to-video model; output = generated videos, score = prompt accuracy."""
    from .toy import model as toy_model
    from .toy import scorer

    model = toy_model.load_toy_model()
    prompts = prompts or toy_prompts()

    def run(fn: Callable[..., Any]) -> torch.Tensor:
        return toy_model.generate(prompts, num_steps=steps, seed=seed, transformer=fn, model=model)

    def score(videos: torch.Tensor) -> float:
        return scorer.prompt_accuracy(videos, prompts)["all"]

    return Target("toy", model.transformer, run, score=score, data_range=2.0, steps=steps)


def cogvideox_target(steps: int = 10, small: bool = False, seed: int = 0, input_seed: int | None = None) -> Target:
    """The random-weight CogVideoX-shaped model of the speed benchmark (``small``: a CI-sized one).

    ``input_seed`` draws other latents and text embeddings for the same weights.
    """
    from .bench import cogvideox_shaped, cogvideox_shaped_inputs, run_generation

    kwargs = {"size": 16, "text": 16} if small else {}
    model, inputs = cogvideox_shaped(seed=seed, layers=2 if small else 4, **kwargs)
    if input_seed is not None:  # other noise and text for the same weights, without building a second model
        inputs = cogvideox_shaped_inputs(seed=input_seed, **kwargs)

    def run(fn: Callable[..., Any]) -> torch.Tensor:
        return run_generation(fn, inputs, steps)

    return Target("cogvideox-shaped" + ("-small" if small else ""), model, run, steps=steps)
