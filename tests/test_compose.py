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


def test_pyramid_attention_broadcast_skips_and_the_rest_stays_reduced():
    import warnings

    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    model = tiny_transformer("wan", layers=2)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2))
    now = {"t": 900.0}
    apply_pyramid_attention_broadcast(model, PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 950),
        current_timestep_callback=lambda: now["t"]))
    x = transformer_inputs("wan")
    with torch.no_grad(), asymrnr_fx.generation(fast), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)  # a skipped attention is no fallback
        for i, t in enumerate(TIMESTEPS):
            now["t"] = t
            fast(**step_inputs(x, t, i))
    runs = {(e.site, e.step) for e in fast.runtime.events}
    assert runs == {(f"blocks.{b}.attn1", s) for b in (0, 1) for s in (0, 2, 4)}  # PAB reuses attention at 1, 3


def test_a_hook_that_hides_the_attention_is_named_in_the_warning():
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    model = tiny_transformer("wan", layers=2)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    apply_mag_cache(model, MagCacheConfig(threshold=0.5, num_inference_steps=5, retention_ratio=0.0, mag_ratios=[1.0] * 5))
    with torch.no_grad(), pytest.warns(asymrnr_fx.AsymRnRWarning, match="mag_cache"):
        fast(**transformer_inputs("wan"))
