"""What each CPU rank runs in tests/test_tensor_parallel.py (module-level: spawned ranks import it).

Every rank builds the same tiny Flux (diffusers ships a ``_tp_plan`` for Flux, Flux2 and
QwenImage only), computes the one-process AsymRnR result itself (same seeds, same inputs on
every rank), then shards the model with diffusers' tensor parallelism
(``enable_parallelism(config=TensorParallelConfig(tp_degree=world))``: Q/K/V colwise, the
output projections rowwise, so each rank holds ``heads / world`` heads and the whole
sequence) and reports relative errors, per-step matching counts and the rewritten sites.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing.cpu_parallel import tensor_parallel_cpu_shim

HEADS = 4  # 2 per rank at tp_degree 2
IMAGE = (8, 8)  # image tokens (height, width) after patching: 64, a 1-frame video grid
GRID = (1, *IMAGE)
TEXT = 8
STEPS = (0.9, 0.6, 0.3)  # Flux takes the timestep in [0, 1] (it multiplies by 1000)


def plan() -> Plan:
    """Ratio 0 at step 0 (identity), then kept counts that change at every step (2 sites, 3 steps)."""
    return Plan.from_table(q=[[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]], kv=[[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]], cache_window=1)


def tiny_flux(seed: int = 0) -> torch.nn.Module:
    """A FluxTransformer2DModel at toy size: one dual-stream and one single-stream block, 4 heads x 8."""
    import diffusers

    torch.manual_seed(seed)
    return diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=HEADS, joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
    ).eval()


def flux_inputs(seed: int = 1) -> dict[str, Any]:
    """One forward call's arguments, packed as FluxPipeline passes them (image ids on a (0, row, col) grid)."""
    g = torch.Generator().manual_seed(seed)
    h, w = IMAGE
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None]
    return {"hidden_states": torch.randn(1, h * w, 4, generator=g),
            "encoder_hidden_states": torch.randn(1, TEXT, 16, generator=g),
            "pooled_projections": torch.randn(1, 16, generator=g), "timestep": torch.tensor([STEPS[0]]),
            "img_ids": ids.reshape(-1, 3), "txt_ids": torch.zeros(TEXT, 3), "return_dict": False}


def _steps(model: Any, inputs: dict) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for t in STEPS:
            out.append(model(**dict(inputs, timestep=torch.full_like(inputs["timestep"], t)))[0])
    return out


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    return [float((x - y).norm() / y.norm()) for x, y in zip(a, b)]


def _matches(runtime: Any) -> list[int]:
    """Fresh matchings per step of the first generation (this rank)."""
    return [sum(e.kind == "match" and e.step == s and e.generation == 0 for e in runtime.events) for s in range(len(STEPS))]


def _sites(fast: Any) -> list[tuple[str, str, bool, int | None, int | None, int]]:
    """Each attention site as (path, kind, rewritten, heads in the call, query length, text length)."""
    return [(s.path, s.kind, s.rewrite, s.heads, s.q_len, s.text_len) for s in fast.report.sites]


def flux_tp(rank: int, world: int) -> dict[str, Any]:
    """Tensor parallelism over ``world`` ranks, eager and inductor, against one process; and
    ``transform`` before ``enable_parallelism`` (the model is captured on its first call)."""
    from diffusers import TensorParallelConfig
    from torch.distributed.tensor import DTensor

    tensor_parallel_cpu_shim()
    model, inputs, p = tiny_flux(), flux_inputs(), plan()
    base = _steps(model, inputs)
    one = asymrnr_fx.transform(model, p, grid=GRID)
    single = _steps(one, inputs)

    parallel = copy.deepcopy(model)
    parallel.enable_parallelism(config=TensorParallelConfig(tp_degree=world))
    to_q = parallel.transformer_blocks[0].attn.to_q.weight
    out: dict[str, Any] = {
        "sharded": isinstance(to_q, DTensor) and tuple(to_q.to_local().shape) == (to_q.shape[0] // world, to_q.shape[1]),
        # the TP collectives run on the default group, whose every collective times out (launch / init_gloo)
        "world_group": parallel._parallel_config._mesh.get_group() is torch.distributed.group.WORLD,
        "base_vs_one_process": _rel(_steps(parallel, inputs), base),  # diffusers' own TP run on CPU
        "single_vs_base": _rel(single, base),
        "single_sites": _sites(one),
    }
    for variant, options in (("eager", {}), ("inductor", {"compile": True})):
        fast = asymrnr_fx.transform(parallel, p, grid=GRID, **options)
        out[variant] = {"vs_single": _rel(_steps(fast, inputs), single), "matches": _matches(fast.runtime),
                        "graphs": len(fast.runtime.reports), "sites": _sites(fast), "rows": dict(fast.runtime.site_order)}
    later = copy.deepcopy(model)
    fast = asymrnr_fx.transform(later, p, grid=GRID)
    later.enable_parallelism(config=TensorParallelConfig(tp_degree=world))
    out["transform, enable"] = {"vs_single": _rel(_steps(fast, inputs), single), "matches": _matches(fast.runtime),
                                "sites": _sites(fast)}
    return out
