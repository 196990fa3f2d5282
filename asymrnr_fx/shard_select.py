"""Shard-local selection: which shards a call holds, and how their selections join.

Why apart from the runtime: shard-local AsymRnR (``Plan.shards`` on one process, and ring
context parallelism, where each rank holds one shard) follows rules of its own, about the
ring's call order and about every shard keeping the same count, that the one-piece path
never needs. :meth:`asymrnr_fx.runtime.Runtime.select_site` calls these.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import ops
from .sites import SiteSpec


def ring_round(spec: SiteSpec) -> tuple[int, int]:
    """(round, call within it) of a ring site's call: ring attention calls a module's attention
    once per rank, so a module run twice per forward (a per-sample loop) makes two rounds."""
    return divmod(spec.occurrence, spec.shards)


def held_shards(spec: SiteSpec, feature: str, sharding: tuple[int, int] | None) -> list[int]:
    """The shards a call holds: every one (one process, ``Plan.shards``) or one (a ring rank).

    A ring rank's queries are its own shard, and the keys/values of its ``i``-th call of a
    module within a round of ``ranks`` calls are those of shard ``(rank + i) % ranks``, the
    order ring attention passes them round (:func:`ring_round`).
    """
    if not spec.local:
        return list(range(spec.shards))
    if sharding is None or sharding[1] != spec.shards:
        raise RuntimeError(
            f"attention site {spec.path} was captured as one of {spec.shards} ring shards but this call "
            f"runs {'without ring context parallelism' if sharding is None else f'over {sharding[1]} ranks'}; "
            "transform the model again for this layout"
        )
    rank, ranks = sharding
    return [rank if feature == "q" else (rank + ring_round(spec)[1]) % ranks]


def shared_count(n_keep: int, shard_dst: Sequence[int]) -> int:
    """What every shard keeps (ring ranks exchange equal-sized keys/values): the plan's count, or
    the most dst tokens any shard holds (dst tokens are always kept), whichever is larger."""
    return max([n_keep, *shard_dst])


def weak_shards(spec: SiteSpec, feature: str, shard_dst: Sequence[int], size: int, n_keep: int, ratio: float) -> str:
    """Why the shards keep more than ``ratio`` asks ("" when they do not): the shared count above it,
    or shards without a dst token, which keep all their tokens (shards small for the stride's tiles)."""
    kept = sum(size if d == 0 else shared_count(n_keep, shard_dst) for d in shard_dst)
    if kept <= n_keep * len(shard_dst):
        return ""
    return (
        f"{spec.path} {feature}: its {len(shard_dst)} shards of {size} tokens keep {kept} where the ratio {ratio:g} "
        f"asks for {n_keep * len(shard_dst)}: dst tokens are always kept (up to {max(shard_dst)} in a shard) and a "
        f"shard without one ({list(shard_dst).count(0)} here) keeps all its tokens. The shards are small for the "
        "stride's tiles: use fewer shards (ranks), or a stride whose tiles each lie within a shard"
    )


def join(entries: Sequence[Any], n_keep: int, size: int, ratio: float, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The held shards' selections at the shared count, as one selection of their tokens."""
    parts = []
    for entry in entries:
        if entry.matching is None:  # no dst in this shard: nothing to match it to
            parts.append(ops.keep_all(video[:, :, :size]))
            continue
        if (n_keep, 0) not in entry.selections:
            entry.selections[n_keep, 0] = ops.select(entry.matching, size, ratio, n_keep=n_keep)
        parts.append(entry.selections[n_keep, 0])
    return ops.join_shards(parts, size)
