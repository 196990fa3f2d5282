"""Graph functions that exchange reduced tokens between context-parallel ranks.

Why their own functions: the graphs diffusers' context parallelism produces size every
exchange with constants (the shard's token count), while a reduced shard's count is an
unbacked size that changes with the plan. These rebuild the same exchanges from the reduced
tensors' own sizes, so one graph serves every kept count. They are called from rewritten
graphs (see :mod:`asymrnr_fx.passes.ring_exchange` and :mod:`asymrnr_fx.passes.ulysses_exchange`).
"""
from __future__ import annotations

import torch

_functional = torch.ops._c10d_functional


def split_exchanged(
    gathered: torch.Tensor, ranks: int, rank: int, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank ``rank``'s key and value in ring attention's all-gathered ``[key, value]`` buffers,
    shaped as this rank's own reduced key and value (every rank keeps the same count). A view and
    ``narrow``: the counts are unbacked sizes, which ``chunk`` cannot split without a guard."""
    n, m = key.numel(), value.numel()
    piece = gathered.view(ranks, n + m)[rank]
    return piece.narrow(0, 0, n).view(key.shape), piece.narrow(0, n, m).view(value.shape)


def _all_to_all(x: torch.Tensor, ranks: int, group: str) -> torch.Tensor:
    flat = x.flatten()
    splits = [flat.numel() // ranks] * ranks
    out = _functional.wait_tensor(_functional.all_to_all_single(flat, splits, splits, group))
    return out.view(x.shape)


def ulysses_scatter(x: torch.Tensor, ranks: int, group: str) -> torch.Tensor:
    """Ulysses' first all-to-all: ``[B, S, H, D]`` (this rank's tokens, every head) to
    ``[B, ranks * S, H / ranks, D]`` (every rank's tokens, one after the other, this rank's heads)."""
    b, s, h, d = x.shape
    x = x.reshape(b, s, ranks, h // ranks, d).permute(2, 1, 0, 3, 4).contiguous()
    return _all_to_all(x, ranks, group).flatten(0, 1).permute(1, 0, 2, 3).contiguous()


def ulysses_gather(x: torch.Tensor, ranks: int, group: str) -> torch.Tensor:
    """Ulysses' second all-to-all, the inverse of :func:`ulysses_scatter`."""
    b, s, h, d = x.shape
    x = x.reshape(b, ranks, s // ranks, h, d).permute(1, 3, 0, 2, 4).contiguous()
    return _all_to_all(x, ranks, group).flatten(0, 1).permute(1, 2, 0, 3).contiguous()


GRAPH_FUNCTIONS = (split_exchanged, ulysses_scatter, ulysses_gather)
