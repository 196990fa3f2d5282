"""Call plumbing shared by everything that runs a model through Dynamo: trampolines, argument
naming, the timestep argument, and one compiled trampoline per input shape."""
from __future__ import annotations

import inspect as _inspect
import itertools
import types
import warnings
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn

from .passes import TIMESTEP_NAMES, timestep_match
from .errors import AsymRnRWarning

_ENTRY_IDS = itertools.count()

#: Input shapes a transformed model keeps compiled graphs for (least recently used dropped first).
MAX_SHAPES = 16


def fresh_entry(bypass_hooks: bool = False) -> Callable[..., Any]:
    """A call trampoline with its own code object.

    Dynamo keeps compiled graphs on the code object it traces and caps them at 8 per code
    object across *all* backends; compiling each (model, input shape) through a fresh
    trampoline means neither other transforms of the same class nor other resolutions
    ever push a call past that limit into the unreduced model. ``bypass_hooks`` calls the
    class's ``forward`` directly (regional blocks: their hooks already ran, eagerly).
    """
    if bypass_hooks:  # the class's forward is passed in: Dynamo cannot trace ``type(module).forward``
        def entry(module: nn.Module, args: tuple, kwargs: dict, forward: Callable[..., Any]) -> Any:  # type: ignore[misc]
            return forward(module, *args, **kwargs)
    else:
        def entry(module: nn.Module, args: tuple, kwargs: dict) -> Any:
            return module(*args, **kwargs)

    code = entry.__code__.replace(co_name=f"asymrnr_entry_{next(_ENTRY_IDS)}")
    return types.FunctionType(code, entry.__globals__, code.co_name)


def named_call(model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pass arguments by name so graph inputs keep their names (``timestep`` drives step tracking)."""
    if not args:
        return args, kwargs
    try:
        sig = _inspect.signature(model.forward)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    kinds = {p.name: p.kind for p in sig.parameters.values()}
    if any(kinds[n] in (_inspect.Parameter.VAR_POSITIONAL, _inspect.Parameter.POSITIONAL_ONLY) for n in bound.arguments):
        return args, kwargs
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if kinds[name] == _inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return (), named


def timestep_argument(kwargs: dict) -> str | None:
    """The name of the call's timestep argument, by the rule that finds it in the graph
    (:func:`~asymrnr_fx.passes.timestep_match`): an exact name first (a tensor or a number), else
    the first tensor with a timestep word in its name; None without one."""
    usable = {name: v for name, v in kwargs.items() if isinstance(v, (torch.Tensor, int, float)) and not isinstance(v, bool)}
    exact = [name for name in TIMESTEP_NAMES if name in usable]
    # a loose name only as a tensor, as in the graph: ``num_timesteps=50`` is a count, not the time
    return exact[0] if exact else next((k for k, v in usable.items() if timestep_match(k) and isinstance(v, torch.Tensor)), None)


def call_timestep(kwargs: dict) -> Any:
    """The value of the call's timestep argument (:func:`timestep_argument`), or None."""
    name = timestep_argument(kwargs)
    return kwargs[name] if name is not None else None


def shape_key(value: Any) -> Any:
    """What Dynamo specializes a graph on, roughly: tensor shapes and dtypes, and plain scalars."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (tuple, list)):
        return tuple(shape_key(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, shape_key(v)) for k, v in value.items())
    if isinstance(value, (int, bool, str)) or value is None:
        return value
    return type(value).__name__


class ShapeCache:
    """One compiled function per input shape, at most :data:`MAX_SHAPES`, least recently used dropped.

    The one LRU behind every per-shape compile: a transformed model's trampolines, regional
    blocks, and the static specializations of a symbolic graph (:mod:`.specialize`).
    ``make(key)`` builds the function for a new key (``make()`` if it takes no argument).
    """

    def __init__(self, make: Callable[..., Callable[..., Any]], what: str, *, with_key: bool = False) -> None:
        self.make, self.what, self.with_key = make, what, with_key
        self.fns: OrderedDict[Any, Callable[..., Any]] = OrderedDict()
        self.evicted = 0

    def get(self, key: Any) -> Callable[..., Any]:
        fn = self.fns.get(key)
        if fn is not None:
            self.fns.move_to_end(key)
            return fn
        if len(self.fns) >= MAX_SHAPES:
            self.fns.popitem(last=False)
            self.evicted += 1
            if self.evicted == 1:
                warnings.warn(
                    f"asymrnr_fx: {self.what} has been called with more than {MAX_SHAPES} input shapes; the least "
                    "recently used shape's graph was dropped and is recompiled (still reduced) if it comes back. "
                    "Raise asymrnr_fx.calls.MAX_SHAPES if your server alternates between more shapes.",
                    AsymRnRWarning, stacklevel=4,
                )
        fn = self.fns[key] = self.make(key) if self.with_key else self.make()
        return fn


def dense(x: Any) -> Any:
    """``x`` with row-major strides (``contiguous()`` keeps odd strides of size-1 dims, which Dynamo guards on)."""
    if not isinstance(x, torch.Tensor):
        return x
    expected, acc = [], 1
    for size in reversed(x.shape):
        expected.append(acc)
        acc *= size
    return x if tuple(reversed(expected)) == x.stride() else x.clone(memory_format=torch.contiguous_format)


def video_inputs(args: tuple, kwargs: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The call's 5-D floating-point tensors (name, shape): where a video grid can be read from."""
    named = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
    return [
        (name, tuple(v.shape)) for name, v in named
        if isinstance(v, torch.Tensor) and v.dim() == 5 and v.is_floating_point()
    ]
