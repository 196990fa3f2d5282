"""Per-call data, carried by the call in a context variable (never on a shared object).

Two things travel with a model call:

* :class:`Capture`: what the call says that a graph captured *during* it needs to know
  (the integration's grid from the model config and arguments, the call's 5-D inputs, the
  plan rows known so far). Dynamo compiles inside the call, in the same thread and context,
  so the pass reads it from the active :class:`Call` instead of from a mailbox on the
  runtime that two threads at a first shape would race on.
* :class:`Call`: which runtime, generation state and region prefix ``asymrnr::select``
  uses while the call runs.

Modelled on vLLM's ``forward_context``: the caller opens it, everything below reads it.
This module imports nothing of the package, so the passes can read a :class:`Capture`
without importing the run-time modules.
"""
from __future__ import annotations

import contextvars
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Call", "Capture", "calling", "current_call", "current_capture"]

_NO_ROWS: Mapping[str, int] = types.MappingProxyType({})


@dataclass(frozen=True)
class Capture:
    """What a graph captured during this call may learn from the call.

    ``grid_hint``: the video grid (F, H, W) in tokens from the model's integration (config +
    arguments), or None. ``call_inputs``: the call's 5-D float tensors as ``(name, shape)``.
    ``rows``: module path -> plan row for the sites the model already numbered (a read-only
    view: graphs captured later in the same call see rows registered by earlier ones).
    ``patch``: the (t, h, w) patch of the model's patch embedding, read from its modules, for
    graphs that do not show it (a regional block graph starts after the embedding).
    ``sharding``: ``(rank, ranks)`` when the call runs under ring context parallelism: every
    attention call of this process holds shard ``rank`` of ``ranks`` equal, contiguous pieces
    of the video tokens (the integration reads it from the model's parallel config), else None.
    ``ulysses``: the Ulysses degree (1 without), and ``ulysses_rank`` this rank's place in it:
    with ``Plan(shards=ulysses)`` each rank reduces its own shard before the all-to-all.
    """

    grid_hint: tuple[int, int, int] | None = None
    call_inputs: tuple[tuple[str, tuple[int, ...]], ...] = ()
    rows: Mapping[str, int] = field(default_factory=lambda: _NO_ROWS)
    patch: tuple[int, int, int] | None = None
    sharding: tuple[int, int] | None = None
    ulysses: int = 1  # Ulysses degree: the attention's sequence is gathered across this many ranks
    ulysses_rank: int = 0


@dataclass(frozen=True)
class Call:
    """The model call in progress.

    ``runtime`` is the model's :class:`~asymrnr_fx.runtime.Runtime` and ``state`` the
    :class:`~asymrnr_fx.state.GenerationState` of the request (typed loosely here so this
    module stays a leaf). ``prefix`` is the module path of the region being run when only a
    block is compiled (regional compilation: the graph names its sites relative to the block).
    """

    runtime: Any
    state: Any
    prefix: str = ""
    capture: Capture | None = None


_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("asymrnr_call", default=None)


def current_call() -> Call | None:
    return _CALL.get()


def current_capture() -> Capture | None:
    """The capture context of the active call, if it has one."""
    call = _CALL.get()
    return call.capture if call is not None else None


class calling:
    """Context manager that makes ``call`` the active call (restores the previous one after)."""

    __slots__ = ("call", "_token")

    def __init__(self, call: Call) -> None:
        self.call = call

    def __enter__(self) -> Call:
        self._token = _CALL.set(self.call)
        return self.call

    def __exit__(self, *exc: Any) -> None:
        _CALL.reset(self._token)
