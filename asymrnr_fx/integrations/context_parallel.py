"""diffusers' context parallelism (``enable_parallelism``): what a rank's attention calls hold.

Why the reduction must know: under **Ulysses** each rank's attention sees the whole sequence
for its share of the heads (an all-to-all before and after), so nothing changes: matching is
per head and every rank reduces exactly as one process would. Under **ring** attention each
rank holds one contiguous shard of the video tokens; its queries stay local and the keys /
values of every shard come round, one attention call (with its log-sum-exp) per shard. The
reduction is then shard-local: partition and matching within each shard (``Plan.shards``),
which one process reproduces with ``Plan(shards=ring_degree)``. Unified attention (ring x
Ulysses) is ring over the ring mesh, with whole-head-group shards.

Nothing here imports diffusers: the parallel config is read off the model.
"""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["cp_config", "ring_sharding"]


def cp_config(model: nn.Module) -> Any:
    """The model's active ``ContextParallelConfig`` (diffusers >= 0.36), or None."""
    config = getattr(model, "_parallel_config", None)
    return getattr(config, "context_parallel_config", None)


def ring_sharding(model: nn.Module) -> tuple[int, int] | None:
    """``(ring rank, ring degree)`` when the model runs ring (or unified) attention, else None.

    Read per call: ``enable_parallelism`` may run after the model was transformed.
    """
    cp = cp_config(model)
    degree = getattr(cp, "ring_degree", 1) or 1
    if cp is None or degree <= 1:
        return None
    rank = getattr(cp, "_ring_local_rank", None)
    if rank is None:  # set by ParallelConfig.setup; a config built by hand may lack it
        raise RuntimeError(
            "the model's ContextParallelConfig has ring_degree > 1 but no ring rank: enable parallelism "
            "with model.enable_parallelism(config=...) after torch.distributed.init_process_group()"
        )
    return int(rank), int(degree)
