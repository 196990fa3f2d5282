"""diffusers' context parallelism (``enable_parallelism``): what a rank's attention calls hold.

Why the reduction must know: under **Ulysses** each rank's attention sees the whole sequence
for its share of the heads (an all-to-all before and after), so nothing changes: matching is
per head and every rank reduces exactly as one process would. Under **ring** attention each
rank holds one contiguous shard of the video tokens; its queries stay local and the keys /
values of every shard come round, one attention call (with its log-sum-exp) per shard. The
reduction is then shard-local: partition and matching within each shard (``Plan.shards``),
which one process reproduces with ``Plan(shards=ring_degree)``. Unified attention (ring x
Ulysses) is ring over the ring mesh, with whole-head-group shards.

FirstBlockCache under context parallelism: diffusers decides per rank, from the rank's own
shard of the first block's residual, whether to skip the other blocks; ranks can then disagree
(their ring / all-to-all collectives no longer pair up) and the result is not the one-process
one. :func:`agree_on_cache_decisions` makes every rank decide from the whole residual (two sums
all-reduced over the context-parallel group), which is exactly the one-process decision.

Nothing here imports diffusers at import time: the parallel config is read off the model.
"""
from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

__all__ = ["agree_on_cache_decisions", "cp_config", "hunyuanvideo_cp_plan", "ring_sharding"]


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


def agree_on_cache_decisions(model: nn.Module) -> int:
    """Make FirstBlockCache take one decision for all context-parallel ranks (see the module doc).

    Idempotent and cheap after the first call; returns how many hooks now agree. A no-op
    without context parallelism.
    """
    cp = cp_config(model)
    mesh = getattr(cp, "_flattened_mesh", None)
    if mesh is None or (getattr(cp, "_world_size", 1) or 1) <= 1:
        return 0
    agreed = 0
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in getattr(registry, "hooks", {}).values():
            if type(hook).__name__ != "FBCHeadBlockHook":
                continue
            if not getattr(hook, "_asymrnr_agreed", False):
                hook._should_compute_remaining_blocks = types.MethodType(_agreed_decision(mesh.get_group()), hook)
                hook._asymrnr_agreed = True
            agreed += 1
    return agreed


def _agreed_decision(group: Any) -> Any:
    @torch.compiler.disable
    def should_compute(self: Any, residual: torch.Tensor) -> bool:
        state = self.state_manager.get_state()
        previous = state.head_block_residual
        if previous is None:
            return True
        # absmean(r - p) / absmean(p) over the whole residual: the shards are equal, so the counts cancel
        sums = torch.stack([(residual - previous).abs().sum(), previous.abs().sum()]).double()
        torch.distributed.all_reduce(sums, group=group)
        return float(sums[0] / sums[1]) > self.threshold

    return should_compute


def hunyuanvideo_cp_plan(model: nn.Module) -> dict[str, Any]:
    """A ``cp_plan`` for diffusers' ``HunyuanVideoTransformer3DModel``, which ships none.

    Pass it as ``model.enable_parallelism(config=..., cp_plan=hunyuanvideo_cp_plan(model))``.
    The video and the prompt tokens are split along the sequence at the first block (ring
    attention then sees each rank's ``[video shard, prompt shard]``, which AsymRnR reduces
    shard-locally), the rotary embedding is split with the video, the joint attention mask
    is split with the keys at every block (it is built inside ``forward`` and handed to each
    block), and the output is gathered after ``proj_out``. Needs a video and prompt length
    divisible by the number of ranks. Under Ulysses the all-to-all interleaves the ranks'
    video and prompt pieces, a layout the reduction leaves intact (it says so per site).
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    def split(dim: int, dims: int, output: bool = False) -> Any:
        return ContextParallelInput(split_dim=dim, expected_dims=dims, split_output=output)

    plan: dict[str, Any] = {
        "rope": {0: split(0, 2, True), 1: split(0, 2, True)},
        "transformer_blocks.0": {"hidden_states": split(1, 3), "encoder_hidden_states": split(1, 3)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }
    blocks = [f"transformer_blocks.{i}" for i in range(len(model.transformer_blocks))]
    blocks += [f"single_transformer_blocks.{i}" for i in range(len(model.single_transformer_blocks))]
    for name in blocks:
        plan.setdefault(name, {})["attention_mask"] = split(3, 4)
    return plan
