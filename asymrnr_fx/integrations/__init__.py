"""Model-library integrations: what the graph alone cannot tell the pass (the video grid, tracing settings).

:mod:`asymrnr_fx.api` calls the three functions below for every model; they return the
library-specific defaults (today: diffusers) and nothing for other models, so a hand-written
model keeps the behaviour it had. Importing this package never imports diffusers.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from . import diffusers

if TYPE_CHECKING:  # pragma: no cover
    from ..api import AsymRnRModule

__all__ = ["configure", "diffusers", "grid_fn_for", "tracing"]


def grid_fn_for(model: nn.Module) -> Callable[[nn.Module, tuple, dict], Any] | None:
    """A ``grid_fn`` for ``model`` (video grid from its call arguments and config), or None."""
    return diffusers.grid_fn_for(model)


def tracing(model: nn.Module) -> contextlib.AbstractContextManager:
    """The Dynamo settings ``model`` needs to be captured as one graph, as a context manager."""
    return diffusers.tracing(model)


def configure(module: "AsymRnRModule") -> "AsymRnRModule":
    """Library defaults for a transformed model (grid function, tracing settings, cache contexts)."""
    return diffusers.configure(module)  # adds nothing to a model that is not from diffusers
