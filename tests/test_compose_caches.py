"""AsymRnR below diffusers' cache hooks (MagCache, TaylorSeer, FasterCache, PyramidAttentionBroadcast,
SeaCache) and with cache-dit: over 14 steps (past Dynamo's recompile limit of 8), in both orders,
the reduction runs at exactly the (block, step) pairs the hook computes without AsymRnR, the
steps advance, and nothing recompiles after the first call."""
from __future__ import annotations

import contextlib
import functools
import warnings

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from tiny_diffusers import step_inputs, tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
STEPS = 14
TIMESTEPS = [1000.0 - 70.0 * i for i in range(STEPS)]
SITES = ["blocks.0.attn1", "blocks.1.attn1"]


def _mag_cache(now):
    from diffusers.hooks import MagCacheConfig, apply_mag_cache

    ratios = [1.0] + [0.97] * (STEPS - 1)  # accumulated error crosses the threshold now and then: skips and computes
    return functools.partial(apply_mag_cache, config=MagCacheConfig(
        threshold=0.08, num_inference_steps=STEPS, retention_ratio=0.2, max_skip_steps=3, mag_ratios=ratios))


def _taylorseer(now):
    from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

    # diffusers' default patterns never fullmatch Wan's attn1: name the modules explicitly
    return functools.partial(apply_taylorseer_cache, config=TaylorSeerCacheConfig(
        cache_interval=3, disable_cache_before_step=2, cache_identifiers=[r"blocks\.\d+\.attn1"],
        taylor_factors_dtype=torch.float32))


def _faster_cache(now):
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache

    return functools.partial(apply_faster_cache, config=FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 850),
        unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 850),
        current_timestep_callback=lambda: now["t"], attention_weight_callback=lambda _: 0.5, tensor_format="BCFHW"))


def _pab(now):
    from diffusers.hooks import PyramidAttentionBroadcastConfig, apply_pyramid_attention_broadcast

    return functools.partial(apply_pyramid_attention_broadcast, config=PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=3, spatial_attention_timestep_skip_range=(200, 850),
        current_timestep_callback=lambda: now["t"]))


def _sea_cache(now):
    from diffusers.hooks import SeaCacheConfig, apply_sea_cache

    # a huge threshold: skips whenever its retention and consecutive limits allow (no data-dependent decision)
    return functools.partial(apply_sea_cache, config=SeaCacheConfig(
        threshold=1e9, retention_steps=2, cache_end_steps=2, max_consecutive_cached=2))


HOOKS = {"MagCache": _mag_cache, "TaylorSeer": _taylorseer, "FasterCache": _faster_cache,
         "PyramidAttentionBroadcast": _pab, "SeaCache": _sea_cache}


def _inputs(name):
    x = transformer_inputs("wan")
    if name == "FasterCache":  # its unconditional-batch skip needs a (uncond, cond) batch
        x = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() > 0 else v for k, v in x.items()}
    return x


def generate(name, order=None, compile=False, hook=True):
    """14 steps of tiny Wan with the hook (``order`` None: without AsymRnR); returns the model, the
    transform (or None) and the unique-graph count after each call."""
    from torch._dynamo.utils import counters

    now = {"t": TIMESTEPS[0]}
    model = tiny_transformer("wan", layers=2)
    apply = HOOKS[name](now) if hook else (lambda m: None)
    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
    fast = None
    if order == "hook first":
        apply(model)
        fast = asymrnr_fx.transform(model, plan, compile=compile)
    elif order is not None:
        fast = asymrnr_fx.transform(model, plan, compile=compile)
        apply(model)
    x = _inputs(name)
    counters.clear()
    graphs = []
    with torch.no_grad(), warnings.catch_warnings(), \
            (asymrnr_fx.generation(fast) if fast is not None else contextlib.nullcontext()):
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)  # no fallback, no unknown hook
        for i, t in enumerate(TIMESTEPS):
            now["t"] = t
            with step_context(fast or model, i, t):
                (fast or model)(**step_inputs(x, t, i))
            graphs.append(counters["stats"]["unique_graphs"])
    assert not [m for m in counters["unimplemented"] if "recompile limit" in m]
    return model, fast, graphs


def step_context(model, i, t):
    """The cache context a denoising loop opens per step (SeaCache reads the step, sigma and step count from it)."""
    return model.cache_context("cond", step_index=i, sigma=t / 1000.0, num_inference_steps=STEPS)


def reduced(fast):
    """(site, step) pairs at which the reduction ran (a matching or its cache)."""
    return {(e.site, e.step) for e in fast.runtime.events if e.kind in ("match", "reuse")}


@pytest.fixture(scope="module")
def computed():
    """Per hook: the (attn1 path, step) pairs whose attention the hook computes in a run without AsymRnR."""
    from diffusers.models.transformers.transformer_wan import WanAttention

    found = {}
    original = WanAttention.forward
    for name in HOOKS:
        seen, step = set(), {"i": 0}
        paths = {}

        def counting(self, *args, **kwargs):
            if paths.get(id(self), "").endswith("attn1"):
                seen.add((paths[id(self)], step["i"]))
            return original(self, *args, **kwargs)

        WanAttention.forward = counting  # before the model (and its hooks) exist: the hooks wrap the counter
        try:
            now = {"t": TIMESTEPS[0]}
            model = tiny_transformer("wan", layers=2)
            paths.update({id(m): p for p, m in model.named_modules()})
            HOOKS[name](now)(model)
            x = _inputs(name)
            with torch.no_grad():
                for i, t in enumerate(TIMESTEPS):
                    now["t"], step["i"] = t, i
                    with step_context(model, i, t):
                        model(**step_inputs(x, t, i))
        finally:
            WanAttention.forward = original
        found[name] = seen
    return found


@pytest.mark.parametrize("order", ["hook first", "asymrnr first"])
@pytest.mark.parametrize("name", list(HOOKS))
def test_cache_hooks_compose_below_the_hook(name, order, computed):
    every = {(s, i) for s in SITES for i in range(STEPS)}
    assert len(computed[name]) < len(every) and {i for _, i in computed[name]} >= {0, 1}  # the hook skips, and computes
    model, fast, graphs = generate(name, order)
    assert reduced(fast) == computed[name]  # reduced exactly where the hook computes: its skips are unchanged
    assert list(fast.runtime.site_order) == SITES  # plan rows are the model's own module paths
    shapes = sum(len(cache.fns) for cache in fast._regions.caches.values())
    assert graphs[-1] == shapes > 0  # one graph per region class and input shape: no recompile of a seen one
    if name != "FasterCache":  # (its unconditional-batch skip halves the batch from step 3 on: one new shape)
        assert graphs[-1] == graphs[0]  # nothing compiles after the first call
    fast.untransform()
    from asymrnr_fx.regions import has_regions

    assert not has_regions(model)  # every dispatcher removed, the hooks' chains restored


@pytest.mark.parametrize("name,order,compile", [("MagCache", "hook first", True), ("TaylorSeer", "asymrnr first", True),
                                                ("MagCache", "asymrnr first", "regional")])
def test_cache_hooks_compose_under_inductor(name, order, compile, computed):
    from torch._dynamo.utils import counters

    model, fast, graphs = generate(name, order, compile=compile)
    assert counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] > 0, "not compiled by inductor"
    assert reduced(fast) == computed[name]
    assert graphs[-1] == graphs[0] > 0


# --------------------------------------------------------------------------- cache-dit
CACHE_DIT_STEPS = 10


def _cache_dit(pipe, calibrator: bool):
    cache_dit = pytest.importorskip("cache_dit")
    config = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.5,
                                     max_warmup_steps=2, max_continuous_cached_steps=2)
    calib = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1) if calibrator else None
    cache_dit.enable_cache(pipe, cache_config=config, calibrator_config=calib)


def cache_dit_run(order=None, calibrator=False, compile=False, count=False):
    """A tiny Wan pipeline (no CFG: one transformer call per step) with cache-dit's DBCache; ``order``
    None: without AsymRnR. Returns the pipeline, the (attn1, step) pairs computed (``count``) and graphs per call."""
    from diffusers.models.transformers.transformer_wan import WanAttention
    from torch._dynamo.utils import counters

    from asymrnr_fx.testing import tiny_pipeline

    tiny = tiny_pipeline("wan", layers=2)
    pipe, model = tiny.pipe, tiny.pipe.transformer
    paths = {id(m): p for p, m in model.named_modules()}
    seen, step = set(), {"i": -1}
    model.register_forward_pre_hook(lambda *_: step.update(i=step["i"] + 1))
    original = WanAttention.forward

    def counting(self, *args, **kwargs):
        if paths.get(id(self), "").endswith("attn1"):
            seen.add((paths[id(self)], step["i"]))
        return original(self, *args, **kwargs)

    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
    if order == "cache first":
        _cache_dit(pipe, calibrator)
        asymrnr_fx.apply(pipe, plan, compile=compile)
    elif order is not None:
        asymrnr_fx.apply(pipe, plan, compile=compile)
        _cache_dit(pipe, calibrator)
    else:
        _cache_dit(pipe, calibrator)
    counters.clear()
    graphs = []
    pipe.transformer.register_forward_hook(lambda *_: graphs.append(counters["stats"]["unique_graphs"]))
    if count:
        WanAttention.forward = counting
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
            tiny(num_inference_steps=CACHE_DIT_STEPS, guidance_scale=1.0)
    finally:
        WanAttention.forward = original
    assert not [m for m in counters["unimplemented"] if "recompile limit" in m]
    return pipe, seen, graphs


@pytest.fixture(scope="module")
def cache_dit_computed():
    return {calibrator: cache_dit_run(calibrator=calibrator, count=True)[1] for calibrator in (False, True)}


@pytest.mark.parametrize("calibrator", [False, True], ids=["DBCache", "DBCache+TaylorSeer"])
@pytest.mark.parametrize("order", ["cache first", "asymrnr first"])
def test_cache_dit_composes_in_either_order(order, calibrator, cache_dit_computed):
    computed = cache_dit_computed[calibrator]
    assert {("blocks.1.attn1", i) for i in range(CACHE_DIT_STEPS)} - computed  # DBCache skips blocks.1 at some steps
    pipe, _, graphs = cache_dit_run(order, calibrator)
    assert reduced(pipe.transformer) == computed  # reduced at every block it computes; its skips are unchanged
    assert list(pipe.transformer.runtime.site_order) == SITES  # the model's paths, not cache-dit's wrapper's
    assert graphs[-1] == graphs[0] > 0  # nothing compiles after the first call
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        asymrnr_fx.remove(pipe)
    # cache-dit enabled on the transformed module goes with it: said, never silently
    assert any("removes cache-dit's cache too" in str(w.message) for w in said) == (order == "asymrnr first")
    from asymrnr_fx.regions import has_regions

    assert not has_regions(pipe.transformer)


def test_cache_dit_composes_under_inductor(cache_dit_computed):
    from torch._dynamo.utils import counters

    pipe, _, graphs = cache_dit_run("asymrnr first", compile=True)
    assert counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] > 0, "not compiled by inductor"
    assert reduced(pipe.transformer) == cache_dit_computed[False]
    assert graphs[-1] == graphs[0] > 0


def test_a_hook_removed_after_transform_leaves_every_block_reduced():
    """MagCache disabled mid-generation: the next call drops the regions (the whole model is
    compiled again) and reduces every block; enabled again, the regions come back below it."""
    from diffusers.hooks import MagCacheConfig

    from asymrnr_fx.regions import has_regions

    model = tiny_transformer("wan", layers=2)
    config = MagCacheConfig(threshold=0.08, num_inference_steps=STEPS, retention_ratio=0.2, max_skip_steps=3,
                            mag_ratios=[1.0] + [0.97] * (STEPS - 1))
    model.enable_cache(config)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2))
    x = transformer_inputs("wan")
    with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        for i in range(2):
            fast(**step_inputs(x, TIMESTEPS[i], i))
        assert has_regions(model)
        model.disable_cache()
        for i in range(2, 6):
            fast(**step_inputs(x, TIMESTEPS[i], i))
        assert not has_regions(model)  # the dispatchers the removed hooks left behind are gone
        assert reduced(fast) == {(s, i) for s in SITES for i in range(6)}  # no hook: every block, every step
        model.enable_cache(config)
        fast(**step_inputs(x, TIMESTEPS[6], 6))
        assert has_regions(model)  # a hook added after transform: captured below it at the next call
    assert {s for s, i in reduced(fast) if i == 6} == set(SITES)
    fast.untransform()
    assert not has_regions(model) and "mag_cache_block_hook" in asymrnr_fx.integrations.hooks_of(model)


def test_inspect_of_a_model_with_a_cache_hook_reports_its_sites_and_leaves_the_hook_as_it_was():
    """MagCache splits the model into regions that a whole-model capture does not see (inspect reported no site);
    and inspect's call advanced the hook's own state, which moved the next generation (0.30 off)."""
    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
    x = _inputs("MagCache")

    def hooked(now):
        model = tiny_transformer("wan", layers=2)
        HOOKS["MagCache"](now)(model)
        return model

    def generation(target, now):
        with torch.no_grad(), asymrnr_fx.generation(target):
            out = []
            for i, t in enumerate(TIMESTEPS[:6]):
                now["t"] = t
                with step_context(target, i, t):
                    out.append(target(**step_inputs(x, t, i))[0])
            return out

    now = {"t": TIMESTEPS[0]}
    expected = generation(asymrnr_fx.transform(hooked(now), plan), now)
    model = hooked(now)
    report = asymrnr_fx.inspect(model, **step_inputs(x, TIMESTEPS[0], 0))
    assert [s.kind for s in report.rewritten] == ["self"] and "q+kv" in str(report)
    fast = asymrnr_fx.transform(model, plan)
    asymrnr_fx.inspect(fast, **step_inputs(x, TIMESTEPS[0], 0))
    assert all(torch.equal(a, b) for a, b in zip(generation(fast, now), expected, strict=True))
