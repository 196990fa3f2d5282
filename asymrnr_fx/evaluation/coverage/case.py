"""Coverage constants, the :class:`Case` record of one class at toy size, and the helpers the
tiny configs (:mod:`.configs`) are written with."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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

STATUSES: tuple[str, ...] = ("works out of the box", "works with grid=", "not applicable", "fails", "silently wrong",
                             "no test config")

#: The config sets a sweep can build each class from: the tiny configs written here (:mod:`.configs`) and
#: those of diffusers' own model tests (:mod:`.test_configs`; "no test config" where diffusers has none).
CONFIG_SETS: tuple[str, ...] = ("ours", "diffusers")

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
    from ...testing.pipelines import tiny_transformer, transformer_inputs

    return (lambda: tiny_transformer(family)), (lambda t: transformer_inputs(family, timestep=t))

