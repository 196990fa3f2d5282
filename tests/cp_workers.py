"""What each CPU rank runs in tests/test_context_parallel.py (module-level: spawned ranks import it).

Every rank builds the same tiny Wan, computes the single-process results itself (all ranks
agree on them: same seeds, same inputs), then runs the model under diffusers' context
parallelism and reports relative errors and per-step matching counts.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from typing import Any

import torch

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing.cpu_parallel import SentBytes

STEPS = (900.0, 600.0, 300.0)


def plan() -> Plan:
    """Ratio 0 at step 0 (identity), then kept counts that change at every step (2 blocks, 3 steps)."""
    return Plan.from_table(q=[[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]], kv=[[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]], cache_window=1)


def _steps(model: Any, inputs: dict) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for t in STEPS:
            x = dict(inputs, timestep=torch.full_like(inputs["timestep"], t))
            out.append(model(**x)[0])
    return out


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    return [float((x - y).norm() / y.norm()) for x, y in zip(a, b)]


def _matches(runtime: Any) -> list[int]:
    """Fresh matchings per step of the first generation (this rank)."""
    return [sum(e.kind == "match" and e.step == s and e.generation == 0 for e in runtime.events) for s in range(len(STEPS))]


def _sent(sent: SentBytes, op: str) -> list[int]:
    """Bytes this rank sent by each call of a collective (``"all_gather"``, ``"all_to_all"``), in call order."""
    return [n for name, n in sent.calls if op in name]


def _gathers(sent: SentBytes) -> list[int]:
    return _sent(sent, "all_gather")


def _parallel(model: torch.nn.Module, **config: int) -> torch.nn.Module:
    from diffusers import ContextParallelConfig

    model = copy.deepcopy(model)
    model.enable_parallelism(config=ContextParallelConfig(**config))
    return model


def wan_modes(rank: int, world: int) -> dict[str, Any]:
    """Ulysses and ring over ``world`` ranks: eager, inductor and regional, against one process."""
    from asymrnr_fx.testing import tiny_transformer, transformer_inputs

    model, inputs = tiny_transformer("wan", layers=2), transformer_inputs("wan")
    p = plan()
    single = _steps(asymrnr_fx.transform(model, p), inputs)
    shard_local = _steps(asymrnr_fx.transform(model, dataclasses.replace(p, shards=world)), inputs)
    out: dict[str, Any] = {}
    sharded = dataclasses.replace(p, shards=world)  # under Ulysses: reduce before the all-to-all
    for mode, config, mode_plan in (("ulysses", {"ulysses_degree": world}, p), ("ring", {"ring_degree": world}, p),
                                    ("ulysses shards", {"ulysses_degree": world}, sharded)):
        parallel = _parallel(model, **config)
        with SentBytes() as sent_base:
            base = _steps(parallel, inputs)
        for variant, options in (("eager", {}), ("inductor", {"compile": True})):
            fast = asymrnr_fx.transform(parallel, mode_plan, **options)
            got = _steps(fast, inputs)
            sent = None
            if variant == "eager":  # a second generation, compiled: the profiler also sees the ops Dynamo traces
                with SentBytes() as sent:
                    again = _steps(fast, inputs)
                assert all(torch.equal(a, b) for a, b in zip(again, got))
            out[mode, variant] = {
                "vs_single": _rel(got, single), "vs_shard_local": _rel(got, shard_local), "vs_base": _rel(got, base),
                "matches": _matches(fast.runtime), "graphs": len(fast.runtime.reports),
                "sites": sorted({s.path for s in fast.report.sites if s.rewrite}),
                "rows": dict(fast.runtime.site_order),
                "exchange": [s.extra.get("ring exchange", s.extra.get("ulysses exchange")) for s in fast.report.sites
                             if s.rewrite],
                "gathers": [(_gathers(sent_base), _gathers(sent)) if sent is not None else None],
                "all_to_all": [(_sent(sent_base, "all_to_all"), _sent(sent, "all_to_all")) if sent is not None else None],
                "inspect": str(fast.report),
            }
    # a window under ring: each rank's src see its own shard's dst within it (window 0: the own tile)
    torch._dynamo.reset()  # as in a fresh process: the variants above used up Dynamo's recompile limit on the block code
    windowed = dataclasses.replace(p, window=(0, 0, 0))
    one = _steps(asymrnr_fx.transform(model, dataclasses.replace(windowed, shards=world)), inputs)
    fast = asymrnr_fx.transform(_parallel(model, ring_degree=world), windowed)
    out["ring window"] = {"vs_shard_local": _rel(_steps(fast, inputs), one), "vs_unwindowed": _rel(one, shard_local),
                          "matches": _matches(fast.runtime)}
    out.update(_regional_and_first_block_cache(model, inputs, p, single, shard_local, world))
    out["pipeline"] = _pipeline_orders(world)
    out["hunyuanvideo"] = _hunyuanvideo_ring(world)
    out["ring per sample"] = _ring_per_sample(world)
    return out


def _per_sample(model: torch.nn.Module) -> torch.nn.Module:
    """The model with self-attention run once per batch element (as Mochi's processor loops), each call
    through the processor's own context-parallel attention."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    class PerSample(WanAttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
            one = super().__call__
            return torch.cat([one(attn, hidden_states[i:i + 1], encoder_hidden_states, attention_mask, rotary_emb)
                              for i in range(hidden_states.shape[0])])

    model = copy.deepcopy(model)
    for name, module in model.named_modules():
        if name.endswith("attn1"):
            module.set_processor(PerSample())
    return model


def _ring_per_sample(world: int) -> dict[str, Any]:
    """Ring attention called once per sample inside one module: each call's round of ring calls has its
    own matching (before: the second sample reused the first's), as one process with Plan(shards)."""
    from asymrnr_fx.testing import tiny_transformer, transformer_inputs

    model, inputs = _per_sample(tiny_transformer("wan", layers=2)), transformer_inputs("wan", batch=2)
    p = plan()
    shard_local = _steps(asymrnr_fx.transform(model, dataclasses.replace(p, shards=world)), inputs)
    fast = asymrnr_fx.transform(_parallel(model, ring_degree=world), p)
    return {"vs_shard_local": _rel(_steps(fast, inputs), shard_local), "matches": _matches(fast.runtime),
            "occurrences": [(s.occurrence, s.extra.get("ring exchange")) for s in fast.report.sites if s.rewrite]}


def _regional_and_first_block_cache(model: torch.nn.Module, inputs: dict, p: Plan, single: list, shard_local: list,
                                    world: int) -> dict[str, Any]:
    """``compile="regional"`` under Ulysses and ring, and FirstBlockCache (applied before
    ``enable_parallelism``, as diffusers requires) with a threshold that skips block 1 after step 0,
    against the same cache on one process."""
    from diffusers import ContextParallelConfig
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    out: dict[str, Any] = {}
    for mode, config, reference, one_plan in (("ulysses", {"ulysses_degree": world}, single, p),
                                              ("ring", {"ring_degree": world}, shard_local, dataclasses.replace(p, shards=world))):
        torch._dynamo.reset()  # each variant as in a fresh process: no graphs of the shared block code from the others
        fast = asymrnr_fx.transform(_parallel(model, **config), p, compile="regional")
        out[mode, "regional"] = {"vs_reference": _rel(_steps(fast, inputs), reference), "matches": _matches(fast.runtime)}
        cached = copy.deepcopy(model)
        apply_first_block_cache(cached, FirstBlockCacheConfig(threshold=1e3))
        one = asymrnr_fx.transform(cached, one_plan)
        with one.cache_context("cond"):
            expected = _steps(one, inputs)
        torch._dynamo.reset()
        cached = copy.deepcopy(model)
        apply_first_block_cache(cached, FirstBlockCacheConfig(threshold=1e3))
        cached.enable_parallelism(config=ContextParallelConfig(**config))
        fast = asymrnr_fx.transform(cached, p)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with fast.cache_context("cond"):
                got = _steps(fast, inputs)
        out[mode, "fbc"] = {"vs_one_process": _rel(got, expected), "matches": _matches(fast.runtime),
                            "one_process_matches": _matches(one.runtime), "by_block": _blocks_matched(fast.runtime),
                            "warnings": [str(w.message)[:200] for w in seen if issubclass(w.category, asymrnr_fx.AsymRnRWarning)]}
    return out


def _blocks_matched(runtime: Any) -> list[list[str]]:
    """Per step, the sites that matched or reused a matching (this rank)."""
    return [sorted({e.site for e in runtime.events if e.kind in ("match", "reuse") and e.step == s}) for s in range(len(STEPS))]


def _pipeline_orders(world: int) -> dict[str, Any]:
    """``asymrnr_fx.apply(pipe)`` on a pipeline whose transformer runs ring attention, either order."""
    from diffusers import ContextParallelConfig

    from asymrnr_fx.testing import tiny_pipeline

    p = Plan.uniform(q=0.5, kv=0.3, cache_window=2)

    def generate(order: str) -> tuple[torch.Tensor, Any]:
        tp = tiny_pipeline("wan", layers=2)
        enable = functools.partial(tp.pipe.transformer.enable_parallelism, config=ContextParallelConfig(ring_degree=world))
        if order == "enable, apply":
            enable()
        if order != "none":
            asymrnr_fx.apply(tp.pipe, dataclasses.replace(p, shards=world) if order == "one process" else p)
        if order == "apply, enable":
            enable()
        with torch.no_grad():
            frames = tp(generator=torch.Generator().manual_seed(0)).frames
        return frames, asymrnr_fx.runtime_of(tp.pipe.transformer) if order != "none" else None

    single, _ = generate("one process")
    out = {}
    for order in ("enable, apply", "apply, enable"):
        frames, runtime = generate(order)
        out[order] = {"vs_shard_local": float((frames - single).norm() / single.norm()),
                      "matches": runtime.counts["match"]}
    return out


def _hunyuanvideo_ring(world: int) -> dict[str, Any]:
    """HunyuanVideo (no cp_plan in diffusers) with the library's, under ring attention."""
    from asymrnr_fx.integrations.context_parallel import hunyuanvideo_cp_plan
    from asymrnr_fx.testing import tiny_transformer, transformer_inputs
    from diffusers import ContextParallelConfig

    model, inputs = tiny_transformer("hunyuanvideo"), transformer_inputs("hunyuanvideo")
    p = Plan.uniform(q=0.5, kv=0.3)
    with torch.no_grad():
        base = model(**inputs)[0]
        shard_local = asymrnr_fx.transform(model, dataclasses.replace(p, shards=world))(**inputs)[0]
        parallel = copy.deepcopy(model)
        parallel.enable_parallelism(config=ContextParallelConfig(ring_degree=world), cp_plan=hunyuanvideo_cp_plan(model))
        base_cp = parallel(**inputs)[0]
        fast = asymrnr_fx.transform(parallel, p)
        got = fast(**inputs)[0]
        ulysses = copy.deepcopy(model)
        ulysses.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world), cp_plan=hunyuanvideo_cp_plan(model))
        intact = asymrnr_fx.transform(ulysses, p)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            ulysses_out = intact(**inputs)[0]
    return {"base": float((base_cp - base).norm() / base.norm()),
            "vs_shard_local": float((got - shard_local).norm() / shard_local.norm()),
            "sites": [(s.path, s.kind, s.rewrite) for s in fast.report.sites],
            "exchange": [s.extra.get("ring exchange") for s in fast.report.sites if s.rewrite],
            "ulysses": [(s.rewrite, s.reason) for s in intact.report.sites],
            "ulysses_vs_base": float((ulysses_out - base).norm() / base.norm())}


def unified(rank: int, world: int) -> dict[str, Any]:
    """Ring over 2 ranks x Ulysses over 2 (4 ranks): shard-local over the ring, against one process
    with ``Plan(shards=2)``, eager and inductor."""
    from asymrnr_fx.testing import tiny_transformer, transformer_inputs

    model, inputs = tiny_transformer("wan", layers=2), transformer_inputs("wan")
    p = plan()
    shard_local = _steps(asymrnr_fx.transform(model, dataclasses.replace(p, shards=2)), inputs)
    parallel = _parallel(model, ring_degree=2, ulysses_degree=world // 2)
    out: dict[str, Any] = {}
    for variant, options in (("eager", {}), ("inductor", {"compile": True})):
        fast = asymrnr_fx.transform(parallel, p, **options)
        out[variant] = {"vs_shard_local": _rel(_steps(fast, inputs), shard_local), "matches": _matches(fast.runtime),
                        "exchange": [s.extra.get("ring exchange") for s in fast.report.sites if s.rewrite]}
    return out


def failing_rank(rank: int, world: int) -> None:
    """Rank 1 fails before a collective the others wait in."""
    if rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    torch.distributed.all_reduce(torch.ones(1))
