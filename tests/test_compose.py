"""AsymRnR with diffusers' step caches: the hook keeps skipping, the reduction stays on where blocks run."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from tiny_diffusers import step_inputs, tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
TIMESTEPS = (900.0, 800.0, 700.0, 600.0, 500.0)


def run(order: str, threshold: float):
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny_transformer("wan", layers=3)
    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
    if order == "hook first":
        apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
        fast = asymrnr_fx.transform(model, plan)
    else:
        fast = asymrnr_fx.transform(model, plan)
        apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
    x = transformer_inputs("wan")
    with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"):
        outs = [fast(**step_inputs(x, t, i))[0] for i, t in enumerate(TIMESTEPS)]
    return fast.runtime, outs


@pytest.mark.parametrize("order", ["hook first", "asymrnr first"])
def test_first_block_cache_composes_in_either_order(order):
    rt, _ = run(order, threshold=0.0)  # never skips: every block runs every step
    blocks = [f"blocks.{i}.attn1" for i in range(3)]
    assert list(rt.site_order) == blocks  # one site per block, not hook-relative names
    matches = {(e.site, e.step) for e in rt.events if e.kind == "match"}
    assert matches == {(b, s) for b in blocks for s in (0, 2, 4)}  # steps advance, windows refresh
    rt, _ = run(order, threshold=1e9)  # skips every block after the first from step 1 on
    runs = {(e.site, e.step) for e in rt.events}
    assert {("blocks.0.attn1", s) for s in range(5)} <= runs  # the computed block stays reduced
    assert not any(site != "blocks.0.attn1" and step > 0 for site, step in runs)  # the hook still skips
