"""cache-dit (``cache_dit.enable_cache``): how its cached transformer is found and run with the reduction.

Why this exists: cache-dit wraps the transformer's ``forward`` and, for each call, swaps the
transformer's block lists (``blocks``, ``transformer_blocks``, ...) for its own cached blocks,
which decide in Python (under ``torch.compiler.disable``) which of the model's blocks run. A
graph of the whole model would be cut there and name the sites by cache-dit's wrapper paths
(``blocks.0.transformer_blocks.0.attn1``), so the reduction compiles the model's own blocks as
regions instead (:mod:`asymrnr_fx.regions`) and runs cache-dit's logic eagerly above them.

Either order works: ``enable_cache`` before ``asymrnr_fx.apply`` patches the model itself;
after it, cache-dit patches the transformed module (it finds the blocks through
``AsymRnRModule.__dir__``), and :func:`swapped` hands the swapped block lists to the model
for the call. cache-dit is never imported here: it is recognised by what it sets.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

__all__ = ["cached", "swapped"]


def cached(*modules: nn.Module) -> bool:
    """Whether cache-dit's cache is enabled on any of ``modules`` (it sets ``_is_cached`` on the transformer it patches)."""
    return any(bool(m.__dict__.get("_is_cached", False)) for m in modules)


@contextlib.contextmanager
def swapped(wrapper: nn.Module, model: nn.Module) -> Iterator[None]:
    """For one call: submodules set on ``wrapper`` under a name ``model`` has (cache-dit's cached block
    lists, patched onto the object it was given) replace the model's own, restored afterwards."""
    names = [n for n, m in wrapper._modules.items() if n in model._modules and m is not model._modules[n]]
    saved = {n: model._modules[n] for n in names}
    try:
        for n in names:
            model._modules[n] = wrapper._modules[n]
        yield
    finally:
        model._modules.update(saved)
