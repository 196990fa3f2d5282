"""Model-library integrations: every other library's knowledge lives here (the video grid,
tracing settings, which blocks repeat, timestep direction, and :mod:`.hooks`: which hooks and
attention backends compose with the reduction).

:mod:`asymrnr_fx.api` calls the functions below for every model; they return the
library-specific answers (today: diffusers) and nothing for other models, so a hand-written
model keeps the behaviour it had. Importing this package never imports diffusers, and it
imports nothing above it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

from torch import nn

from . import cache_dit, context_parallel, diffusers, hooks
from .diffusers import TRANSFORMER_COMPONENTS, GridFn

__all__ = ["TRANSFORMER_COMPONENTS", "GridFn", "cache_dit", "context_parallel", "diffusers", "hooks", "parallel_layout", "dynamo_config_for", "grid_fn_for", "hooks_of", "repeated_blocks", "timestep_direction", "tracing"]


def grid_fn_for(model: nn.Module) -> Callable[[nn.Module, tuple, dict], Any] | None:
    """A ``grid_fn`` for ``model`` (video grid from its call arguments and config), or None."""
    return diffusers.grid_fn_for(model)


def dynamo_config_for(model: nn.Module) -> dict[str, Any]:
    """Dynamo config patches ``model`` needs to be captured as one graph (empty for most)."""
    return diffusers.dynamo_config_for(model)


def tracing(model: nn.Module) -> contextlib.AbstractContextManager:
    """The Dynamo settings ``model`` needs to be captured as one graph, as a context manager."""
    return diffusers.tracing(model)


def hooks_of(model: nn.Module) -> list[str]:
    """Names of the diffusers hooks registered anywhere in ``model`` (cache, offload, ... hooks)."""
    return diffusers.hooks_of(model)


def repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks regional compilation compiles, with their module paths."""
    return diffusers.repeated_blocks(model)


def timestep_direction(model: nn.Module) -> int | None:
    """Which way ``model``'s timesteps move within a generation (-1 falls, +1 rises), if known."""
    return diffusers.timestep_direction(model)


def parallel_layout(model: nn.Module) -> tuple[tuple[int, int] | None, int, int]:
    """Per call: ``((rank, ranks) under ring attention else None, Ulysses degree, Ulysses rank)`` of
    ``model``'s context parallelism; under any, step caches first agree across ranks."""
    cp = context_parallel.cp_config(model)
    if cp is None:
        return None, 1, 0
    context_parallel.agree_on_cache_decisions(model)
    return (context_parallel.ring_sharding(model), int(getattr(cp, "ulysses_degree", 1) or 1),
            int(getattr(cp, "_ulysses_local_rank", 0) or 0))
