"""AsymRnR with diffusers' hooks: FirstBlockCache keeps skipping and the reduction stays on where blocks run
(the other step caches, captured below their hooks: tests/test_compose_caches.py); the hooks not verified
are refused with the reason; offloading; attention backends."""
from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from tiny_diffusers import step_inputs, tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
TIMESTEPS = (900.0, 800.0, 700.0, 600.0, 500.0)


BLOCK = {"wan": "blocks.{}.attn1", "cogvideox": "transformer_blocks.{}.attn1"}


def run(order: str, threshold: float, compile: bool = False, family: str = "wan"):
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny_transformer(family, layers=3)
    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
    if order == "hook first":
        apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
        fast = asymrnr_fx.transform(model, plan, compile=compile)
    else:
        fast = asymrnr_fx.transform(model, plan, compile=compile)
        apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
    x = transformer_inputs(family)
    with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"):
        outs = [fast(**step_inputs(x, t, i))[0] for i, t in enumerate(TIMESTEPS)]
    return fast.runtime, outs


def _assert_every_block_matched(rt, blocks: list[str]) -> None:
    """One site per block under the model's names, each matched at every window start (steps advance)."""
    assert list(rt.site_order) == blocks  # one site per block, not hook-relative names
    assert {(e.site, e.step) for e in rt.events if e.kind == "match"} == {(b, s) for b in blocks for s in (0, 2, 4)}


def _assert_only_the_first_block_runs(rt, blocks: list[str]) -> None:
    """With a threshold that skips every block after the first from step 1 on: that block stays reduced, the hook skips."""
    runs = {(e.site, e.step) for e in rt.events}
    assert {(blocks[0], s) for s in range(5)} <= runs  # the computed block stays reduced
    assert not any(site != blocks[0] and step > 0 for site, step in runs)  # the hook still skips


def _assert_equal_to_eager(order: str, outs: list[torch.Tensor]) -> None:
    _, eager = run(order, threshold=0.0)
    for a, b in zip(outs, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
@pytest.mark.parametrize("order", ["hook first", "asymrnr first"])
def test_first_block_cache_composes_in_either_order(order, family):
    rt, _ = run(order, threshold=0.0, family=family)  # never skips: every block runs every step
    blocks = [BLOCK[family].format(i) for i in range(3)]
    _assert_every_block_matched(rt, blocks)
    rt, _ = run(order, threshold=1e9, family=family)  # skips every block after the first from step 1 on
    _assert_only_the_first_block_runs(rt, blocks)


@pytest.mark.parametrize("order", ["hook first", "asymrnr first"])
def test_first_block_cache_composes_under_inductor(order):
    """The same, compiled by inductor: the hook's graph breaks leave per-block graphs, each
    rewritten, with the same matchings per block and step, and outputs equal to eager."""
    from torch._dynamo.utils import counters

    counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)  # no fallback anywhere
        rt, outs = run(order, threshold=0.0, compile=True)
    assert counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] > 0, "not compiled by inductor"
    blocks = [f"blocks.{i}.attn1" for i in range(3)]
    _assert_every_block_matched(rt, blocks)
    _assert_equal_to_eager(order, outs)


# --------------------------------------------------------------- other diffusers hooks
def _faster_cache(family: str, now: dict | None = None):
    from diffusers.hooks import FasterCacheConfig, apply_faster_cache

    config = FasterCacheConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 950),
        unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 950),
        current_timestep_callback=lambda: (now or {"t": 900.0})["t"], attention_weight_callback=lambda _: 0.5,
        tensor_format="BFCHW" if family == "cogvideox" else "BCFHW",
    )
    return lambda model: apply_faster_cache(model, config)


def test_first_block_cache_stays_reduced_past_the_recompile_limit():
    """Composing must hold for a real generation, not only for a few steps: 12 calls (past
    Dynamo's recompile limit of 8) reduce at every step with a stable set of graphs."""
    from torch._dynamo.utils import counters

    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny_transformer("wan", layers=3)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2))
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.0))
    x = transformer_inputs("wan")
    counters.clear()
    graphs = []
    with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        for i, t in enumerate(float(t) for t in range(950, 350, -50)):
            fast(**step_inputs(x, t, i))
            graphs.append(counters["stats"]["unique_graphs"])
    assert {e.step for e in fast.runtime.events} == set(range(12))
    assert graphs[-1] == graphs[1]  # nothing recompiles after the first call


def _layer_skip(family: str):
    from diffusers.hooks import LayerSkipConfig, apply_layer_skip

    return lambda model: apply_layer_skip(model, LayerSkipConfig(indices=[0], fqn="auto"))


def _seg(family: str):
    from diffusers.hooks.smoothed_energy_guidance_utils import SmoothedEnergyGuidanceConfig, _apply_smoothed_energy_guidance_hook

    # registered under the guider's own name, as SmoothedEnergyGuidance does per call
    return lambda model: _apply_smoothed_energy_guidance_hook(model, SmoothedEnergyGuidanceConfig(indices=[0]), 1.0,
                                                              name="SmoothedEnergyGuidance_0")


def _text_kv_cache(family: str):
    from diffusers.hooks.text_kv_cache import TextKVCacheConfig, apply_text_kv_cache

    return lambda model: apply_text_kv_cache(model, TextKVCacheConfig())


@pytest.mark.parametrize("hook,name", [(_layer_skip, "layer skip"), (_seg, "smoothed energy guidance"),
                                       (_text_kv_cache, "text KV cache")])
def test_hooks_that_are_not_verified_are_refused_in_either_order(hook, name):
    family = "wan"
    model = tiny_transformer(family, layers=2)
    hook(family)(model)
    with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match=f"does not compose with {name}.*Composes: .*MagCache"):
        asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))  # hook first: transform refuses
    model = tiny_transformer(family, layers=2)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    hook(family)(model)  # asymrnr first: the next call refuses, before anything runs unreduced
    with torch.no_grad(), model.cache_context("cond"), pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match=name):
        fast(**transformer_inputs(family))
    assert not fast.runtime.reports  # nothing was captured or run


def test_an_unknown_diffusers_hook_is_named_once():
    from diffusers.hooks import HookRegistry, ModelHook

    model = tiny_transformer("wan", layers=2)
    HookRegistry.check_if_exists_or_initialize(model.blocks[0]).register_hook(ModelHook(), "someone_elses_hook")
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match="no verdict for \\(someone_elses_hook\\)"):
        fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    with torch.no_grad(), warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        fast(**transformer_inputs("wan"))
    assert not [w for w in again if "no verdict" in str(w.message)]  # once per model and set of names


def test_layerwise_casting_composes_in_either_order():
    """diffusers' layerwise casting (weights stored in float8, cast per layer around its forward) is
    traced into the graph like any module code: every block matched at every window start."""
    for order in ("hook first", "asymrnr first"):
        model = tiny_transformer("wan", layers=2)
        cast = lambda: model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)  # noqa: E731
        plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2)
        if order == "hook first":
            cast()
        fast = asymrnr_fx.transform(model, plan)
        if order != "hook first":
            cast()
        assert "layerwise_casting" in asymrnr_fx.integrations.hooks_of(model)
        x = transformer_inputs("wan")
        with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"), warnings.catch_warnings():
            warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
            for i, t in enumerate(TIMESTEPS):
                fast(**step_inputs(x, t, i))
        blocks = [f"blocks.{i}.attn1" for i in range(2)]
        assert {(e.site, e.step) for e in fast.runtime.events if e.kind == "match"} == {(b, s) for b in blocks for s in (0, 2, 4)}


def test_apply_refuses_a_pipeline_whose_transformer_carries_a_refused_hook():
    from asymrnr_fx.testing import tiny_pipeline

    pipe = tiny_pipeline("wan").pipe
    _layer_skip("wan")(pipe.transformer)
    with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match="layer skip"):
        asymrnr_fx.apply(pipe, asymrnr_fx.Plan.uniform(0.5, 0.3))


# --------------------------------------------------------------------------- offloading
def test_group_offloading_is_refused_at_both_levels():
    pytest.importorskip("accelerate", reason="diffusers' group offloading imports accelerate")
    for level in ("block_level", "leaf_level"):
        model = tiny_transformer("wan", layers=2)
        extra = {"num_blocks_per_group": 1} if level == "block_level" else {}
        model.enable_group_offload(torch.device("cpu"), offload_device=torch.device("cpu"), offload_type=level, **extra)
        with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match=f"group offloading \\({level}\\)"):
            asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))


def test_accelerate_cpu_offload_is_refused():
    accelerate = pytest.importorskip("accelerate")
    model = tiny_transformer("wan", layers=2)
    accelerate.cpu_offload(model, execution_device=torch.device("cpu"))
    with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match="cpu_offload"):
        asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))


def test_offloading_detection_reads_the_hook_registries():
    """Without accelerate installed, group offloading cannot run: check the detection on the registry it writes."""
    from types import SimpleNamespace

    from diffusers.hooks import HookRegistry, ModelHook

    model = tiny_transformer("wan", layers=2)
    hook = ModelHook()
    hook.config = SimpleNamespace(offload_type=SimpleNamespace(value="leaf_level"))
    HookRegistry.check_if_exists_or_initialize(model.blocks[0].attn1.to_q).register_hook(hook, "group_offloading")
    with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match=r"group offloading \(leaf_level\) \(on blocks.0.attn1.to_q\)"):
        asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    model = tiny_transformer("wan", layers=2)
    model.blocks[0]._hf_hook = type("AlignDevicesHook", (), {"offload": True})()  # what cpu_offload attaches
    with pytest.raises(asymrnr_fx.integrations.hooks.IncompatibleHookError, match="accelerate cpu_offload"):
        asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))


# --------------------------------------------------------------------------- attention backends
@pytest.fixture
def restore_attention_backend():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry.set_active_backend(active)  # set_attention_backend also sets a process-wide default


@pytest.mark.parametrize("order", ["backend first", "asymrnr first"])
def test_flex_backend_is_rewritten(order, restore_attention_backend):
    """diffusers' ``flex`` backend calls ``flex_attention(q, k, v)`` without a mask: reduced like SDPA
    (before: every site left intact with a warning), equal to the native backend's reduced output."""
    plan = asymrnr_fx.Plan.uniform(0.5, 0.3)
    with torch.no_grad():
        native = asymrnr_fx.transform(tiny_transformer("wan", layers=2), plan)(**transformer_inputs("wan"))[0]
    model = tiny_transformer("wan", layers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        if order == "backend first":
            model.set_attention_backend("flex")
            fast = asymrnr_fx.transform(model, plan)
        else:
            fast = asymrnr_fx.transform(model, plan)
            model.set_attention_backend("flex")
        with torch.no_grad():
            out = fast(**transformer_inputs("wan"))[0]
    assert [s.form for s in fast.report.rewritten] == ["flex", "flex"]
    assert list(fast.runtime.site_order) == ["blocks.0.attn1", "blocks.1.attn1"]
    torch.testing.assert_close(out, native, atol=1e-5, rtol=1e-5)


def test_other_backends_are_reported_by_name(restore_attention_backend):
    """A backend the passes cannot see through (a Python kernel call such as sage) is named per site."""
    model = tiny_transformer("wan", layers=2)
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            processor._attention_backend = "sage"  # as set_attention_backend("sage") does where sageattention is installed
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match=r"blocks.0.attn1: left intact: attention backend 'sage' is not one AsymRnR rewrites.*set_attention_backend\('native'\)"):
        asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    assert asymrnr_fx.integrations.hooks.backend_sites(model)[:2] == [("blocks.0.attn1", "sage"), ("blocks.0.attn2", "sage")]
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        asymrnr_fx.integrations.hooks.warn_backends(model)
    assert not again  # once per model and set of sites


@pytest.mark.parametrize("backend", ["native", "_native_math"])
def test_sdpa_backends_stay_rewritten(backend, restore_attention_backend):
    model = tiny_transformer("wan", layers=2)
    model.set_attention_backend(backend)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        fast(**transformer_inputs("wan"))
    assert list(fast.runtime.site_order) == ["blocks.0.attn1", "blocks.1.attn1"]


@pytest.mark.parametrize("order", ["hook first", "asymrnr first"])
def test_regional_compilation_compiles_hooked_blocks_below_the_hook(order):
    """compile='regional' on blocks carrying FirstBlockCache: each block's region sits below its hook
    (the hook keeps skipping), one graph per block class and shape, every computed block reduced."""
    rt, outs = run(order, threshold=0.0, compile="regional")
    blocks = [f"blocks.{i}.attn1" for i in range(3)]
    _assert_every_block_matched(rt, blocks)
    _assert_equal_to_eager(order, outs)
    rt, _ = run(order, threshold=1e9, compile="regional")  # skips every block after the first from step 1 on
    _assert_only_the_first_block_runs(rt, blocks)


def test_partial_fallback_is_said_once(monkeypatch):
    """Should a hook that recompiles per call get into the whole-model graph anyway (here FasterCache,
    with its capture below the hook switched off), the moment Dynamo gives up on part of the model
    raises one AsymRnRWarning, although other graphs of the same call still run: never a silent stop."""
    monkeypatch.setattr(asymrnr_fx.integrations.hooks, "below_hooked", lambda *a, **k: [])
    now = {"t": 900.0}
    model = tiny_transformer("wan", layers=2)
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=2))
    _faster_cache("wan", now)(model)
    x = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in transformer_inputs("wan").items()}
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=3), asymrnr_fx.generation(fast), \
            fast.cache_context("cond"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for i, t in enumerate(float(t) for t in range(900, 400, -50)):
            now["t"] = t
            fast(**step_inputs(x, t, i))
    said = [w for w in seen if issubclass(w.category, asymrnr_fx.AsymRnRWarning)]
    assert len(said) == 1 and "recompile limit" in str(said[0].message)
    assert max(e.step for e in fast.runtime.events) < 9  # the late computed steps were indeed not reduced


def test_the_report_below_a_hook_says_the_steps_come_from_the_model_call():
    """The regions below a cache hook take no timestep of their own: the transformed model reads it from each
    call, so the report must not say that steps go untracked (and advise pinning them)."""
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = tiny_transformer("wan", layers=2)
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.0))
    fast = asymrnr_fx.transform(model, asymrnr_fx.Plan.uniform(0.5, 0.3, cache_window=1))
    x = transformer_inputs("wan")
    with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"):
        for i, t in enumerate(TIMESTEPS[:2]):
            fast(**step_inputs(x, t, i))
    text = str(fast.report)
    assert "step tracking from the 'timestep' argument of each model call" in text and "set_step" not in text
    assert fast.runtime.matching_steps() == [0, 1]


def test_cross_attention_is_reduced_below_an_attention_cache_hook():
    """PyramidAttentionBroadcast hooks each attention module, so attn2 is compiled alone: a graph with only
    a cross-attention call, whose grid must still be read (before: no grid, so Plan(cross_attention=True) was
    silently ignored). A broadcast that never skips gives exactly the unhooked model's reduced output."""
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    plan = asymrnr_fx.Plan.uniform(0.5, 0.3, cross_attention=True, cache_window=2)
    x = transformer_inputs("wan")

    def steps(hooked: bool) -> tuple[list[torch.Tensor], object]:
        model = tiny_transformer("wan", layers=2)
        if hooked:
            model.enable_cache(PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(0, 1),  # never skips
                current_timestep_callback=lambda: 900.0))
        fast = asymrnr_fx.transform(model, plan)
        with torch.no_grad(), asymrnr_fx.generation(fast), fast.cache_context("cond"):
            return [fast(**step_inputs(x, t, i))[0] for i, t in enumerate(TIMESTEPS[:3])], fast

    hooked, fast = steps(True)
    assert {s.kind for s in fast.report.rewritten} == {"self", "cross"}
    assert {e.feature for e in fast.runtime.events if e.site.endswith("attn2")} == {"q"}
    for a, b in zip(hooked, steps(False)[0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
