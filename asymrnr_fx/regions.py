"""Compiled regions: regional compilation, and capture below diffusers' cache hooks.

Why: a cache hook (MagCache, TaylorSeer, FasterCache, PyramidAttentionBroadcast, SeaCache)
runs Python around a block or attention module: its decision runs under
``torch.compiler.disable`` or reads per-call state, so a graph of the whole model is cut
there or recompiles at every call until Dynamo gives up and the module runs unreduced.
Capturing *below* the hook avoids both: the module's class ``forward`` is compiled as a
region (one graph per module class and input shape), the hook chain calls that region
instead of the module's own forward, and the hook itself (and everything above it) runs
eagerly in Python, its state changes costing no recompile.

A region is installed where the innermost forward of the module is called:

* a module without diffusers hooks: its instance ``forward`` (regional compilation);
* a module with a diffusers ``HookRegistry``: the innermost reference of its hook chain
  (``fn_ref.original_forward`` of the first hook, or its ``fn_ref.forward``), which is what
  every hook finally calls.

One dispatcher per module serves every transform of the model (keyed by runtime): inside a
transformed model's call it opens the module's region (its module path, so plan rows stay
the model's own) and runs that transform's graph; anywhere else it is the original forward.
"""
from __future__ import annotations

import dataclasses
import types
import weakref
from typing import Any, Callable, Iterable

import torch
from torch import nn

from . import integrations
from .calls import ShapeCache, dense, shape_key
from .context import calling, current_call
from .runtime import Runtime

__all__ = ["Regions", "has_regions", "plain_copy"]

Make = Callable[[], Callable[..., Any]]


def _enter(regions: Any, module: nn.Module, forward_fn: Callable[..., Any], original: Callable[..., Any],
           args: tuple, kwargs: dict) -> Any:
    """Run ``module`` through the active transform's region, or ``original`` outside one."""
    if torch.compiler.is_compiling():  # someone else compiles the whole original model: be the original
        return original(*args, **kwargs)
    call = current_call()
    region = regions.get(call.runtime) if call is not None else None
    if region is None:  # the original model called directly, or another transform's call: unreduced here
        return original(*args, **kwargs)
    prefix, cache = region
    # the first block often gets a strided slice, the rest a fresh tensor: one layout, one graph
    args = tuple(dense(a) for a in args)
    kwargs = {k: dense(v) for k, v in kwargs.items()}
    with calling(dataclasses.replace(call, prefix=prefix)):
        return cache.get(shape_key((args, kwargs)))(module, args, kwargs, forward_fn)


def _instance_dispatcher(module: nn.Module) -> Any:
    """The patched instance ``forward`` of a module without hooks (installed once)."""
    existing = module.__dict__.get("forward")
    if getattr(existing, "regions", None) is not None:
        return existing
    forward_fn = type(module).forward
    regions: "weakref.WeakKeyDictionary[Runtime, tuple[str, ShapeCache]]" = weakref.WeakKeyDictionary()

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        # bound to the module, so a Dynamo trace of the whole model reaches it as ``blocks.3``
        return _enter(regions, self, forward_fn, lambda *a, **k: forward_fn(self, *a, **k), args, kwargs)

    forward.regions = regions  # type: ignore[attr-defined]
    forward.previous = existing  # type: ignore[attr-defined]
    module.forward = types.MethodType(forward, module)
    return module.forward


def _slot(module: nn.Module) -> tuple[Any, str] | None:
    """Where ``module``'s hook chain calls its innermost forward: (fn_ref, attribute), or None without hooks."""
    refs = getattr(getattr(module, "_diffusers_hook", None), "_fn_refs", None)
    if not refs:
        return None
    first = refs[0]
    return (first, "original_forward") if first.original_forward is not None else (first, "forward")


def _hook_dispatcher(module: nn.Module, slot: tuple[Any, str]) -> Any:
    """The dispatcher placed in the innermost slot of ``module``'s hook chain (installed once)."""
    ref, attr = slot
    existing = getattr(ref, attr)
    if getattr(existing, "regions", None) is not None:
        return existing
    forward_fn = type(module).forward
    regions: "weakref.WeakKeyDictionary[Runtime, tuple[str, ShapeCache]]" = weakref.WeakKeyDictionary()
    owner = weakref.ref(module)

    def forward(*args: Any, **kwargs: Any) -> Any:
        return _enter(regions, owner(), forward_fn, existing, args, kwargs)

    forward.regions = regions  # type: ignore[attr-defined]
    forward.previous = existing  # type: ignore[attr-defined]
    setattr(ref, attr, forward)
    return forward


def _dispatchers(module: nn.Module) -> Iterable[tuple[Any, str, Any]]:
    """Every dispatcher on ``module``, wherever hooks added or removed since moved it: (holder, attribute, dispatcher)."""
    forward = module.__dict__.get("forward")
    if getattr(forward, "regions", None) is not None:
        yield module, "forward", forward
    for ref in getattr(getattr(module, "_diffusers_hook", None), "_fn_refs", None) or ():
        for attr in ("forward", "original_forward"):
            fn = getattr(ref, attr, None)
            if getattr(fn, "regions", None) is not None:
                yield ref, attr, fn


def _install(module: nn.Module, runtime: Runtime, prefix: str, cache: ShapeCache) -> None:
    if any(runtime in d.regions for _, _, d in _dispatchers(module)):
        return
    slot = _slot(module)
    dispatcher = _hook_dispatcher(module, slot) if slot is not None else _instance_dispatcher(module)
    dispatcher.regions[runtime] = (prefix, cache)


def _uninstall(module: nn.Module, runtime: Runtime) -> None:
    """Drop one transform's region from ``module``; its own forward returns with the last one."""
    for holder, attr, dispatcher in list(_dispatchers(module)):
        dispatcher.regions.pop(runtime, None)
        if dispatcher.regions:
            continue
        if holder is module:
            _restore_instance_forward(module, dispatcher)
        else:
            setattr(holder, attr, dispatcher.previous)


def _restore_instance_forward(module: nn.Module, dispatcher: Any) -> None:
    """Take an instance dispatcher off ``module``: the forward it replaced (if any) comes back."""
    del module.__dict__["forward"]
    if dispatcher.previous is not None:
        module.forward = dispatcher.previous


def has_regions(model: nn.Module) -> bool:
    return any(True for m in model.modules() for _ in _dispatchers(m))


def plain_copy(model: nn.Module, memo: dict | None = None) -> nn.Module:
    """A deep copy of ``model`` without the dispatchers transforms installed in it."""
    import copy

    clone = copy.deepcopy(model, memo)
    for module in clone.modules():
        for holder, attr, dispatcher in list(_dispatchers(module)):
            if holder is module:
                _restore_instance_forward(module, dispatcher)
            else:  # a copied closure still calls the original module: call the copy's own forward
                setattr(holder, attr, types.MethodType(type(module).forward, module))
    return clone


def _under(path: str, ancestor: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(ancestor + ".")


def targets(model: nn.Module, regional: bool, cached: bool = False) -> list[tuple[str, nn.Module]]:
    """The modules to compile as regions, in model order; empty: compile the whole model as one.

    Below hooks: the innermost modules carrying a hook that is captured below
    (:func:`integrations.hooks.below_hooked`), so every hook runs eagerly above its region.
    ``regional``: the repeated blocks, except those holding such a hook inside (their hooked
    modules are the regions). A hooked module holding repeated blocks gives way to the blocks
    when ``regional``. ``cached`` (cache-dit): the repeated blocks, as for ``regional``, since
    cache-dit calls them from its own Python. When the model runs eagerly, every attention module left outside the
    regions becomes one too, so no attention call runs unreduced unseen.
    """
    hooked = integrations.hooks.below_hooked(model)
    regional = regional or cached
    blocks = integrations.repeated_blocks(model) if regional else []
    if not hooked:
        return blocks
    inner = [(p, m) for p, m in hooked if not any(q != p and _under(q, p) for q, _ in hooked)]
    if regional:
        inner = [t for t in inner if not any(_under(b, t[0]) and b != t[0] for b, _ in blocks)]
    chosen = inner + [(b, m) for b, m in blocks
                      if not any(_under(p, b) or _under(b, p) for p, _ in inner)]
    for path, module in model.named_modules():
        if hasattr(module, "processor") and not any(_under(path, p) or _under(p, path) for p, _ in chosen):
            chosen.append((path, module))
    order = {id(m): i for i, m in enumerate(model.modules())}
    return sorted(chosen, key=lambda t: order[id(t[1])])


class Regions:
    """The regions of one transform: installed at ``transform``, re-synced per call as hooks come and go."""

    def __init__(self, model: nn.Module, make: Make, runtime: Runtime, regional: bool) -> None:
        self.model, self.make, self.regional = model, make, regional
        self.runtime = weakref.ref(runtime)
        self.caches: dict[type, ShapeCache] = {}
        self.installed: list[nn.Module] = []
        self._key: Any = None
        self.sync()
        if regional and not self.installed:
            raise ValueError(
                f"compile='regional' found no repeated blocks in {type(model).__name__} (no _repeated_blocks and no "
                "ModuleList of two or more modules of one class); use compile=True to compile the whole model"
            )

    def sync(self, cached: bool = False) -> bool:
        """Install regions for the model's current hooks (cheap when nothing changed); True if any.

        ``cached``: cache-dit is enabled on the model or its transform (:mod:`.integrations.cache_dit`).
        """
        key = (integrations.hooks.below_key(self.model), cached)
        if key == self._key:
            return bool(self.installed)
        runtime = self.runtime()
        if runtime is None:  # pragma: no cover - the transform is gone
            return False
        wanted = targets(self.model, self.regional, cached)
        keep = {id(m) for _, m in wanted}
        for module in self.installed:
            if id(module) not in keep:  # a hooked module whose hook went away inside a region: drop it
                _uninstall(module, runtime)
        for path, module in wanted:
            cls = type(module)
            cache = self.caches.get(cls)
            if cache is None:
                cache = self.caches[cls] = ShapeCache(self.make, f"region {cls.__name__}")
            _install(module, runtime, path + "." if path else "", cache)
        self.installed = [m for _, m in wanted]
        self._key = key
        return bool(self.installed)

    def remove(self) -> None:
        runtime = self.runtime()
        for module in self.installed:
            if runtime is not None:
                _uninstall(module, runtime)
        self.installed = []
        self._key = None
