"""Never silently wrong, round 3: each case a probe found giving a wrong result with no error.

Every test here failed on the code before the fix: published plans handed rows to the wrong
blocks, one warm-up call broke step tracking for good, a second transform silently switched a
regional model off, a new unreducible shape said nothing; and a few crashes had messages that
did not say what to do.
"""
from __future__ import annotations

import copy
import gc
import io
import warnings

import pytest
import torch

import asymrnr_fx
from asymrnr_fx import AsymRnRWarning, Plan
from asymrnr_fx.schedules import published_tiers
from asymrnr_fx.testing.dit import TinyVideoDiT
from tiny_diffusers import tiny_pipeline, tiny_transformer, transformer_inputs

# --------------------------------------------------------------------------- published plans


def _cogvideox(layers: int) -> tuple[torch.nn.Module, dict, list[str]]:
    return tiny_transformer("cogvideox", layers=layers), transformer_inputs("cogvideox"), [
        f"transformer_blocks.{i}.attn1" for i in range(layers)
    ]


def _mochi(layers: int) -> tuple[torch.nn.Module, dict, list[str]]:
    inputs = transformer_inputs("mochi")
    inputs["hidden_states"] = torch.randn(1, 12, 6, 8, 8)  # 6 latent frames: the published stride is (6, 2, 2)
    return tiny_transformer("mochi", layers=layers), inputs, [f"transformer_blocks.{i}.attn1" for i in range(layers)]


def _hunyuan(dual: int, single: int) -> tuple[torch.nn.Module, dict, list[str]]:
    import diffusers

    torch.manual_seed(0)
    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=dual,
        num_single_layers=single, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ).eval()
    inputs = transformer_inputs("hunyuanvideo")
    inputs["hidden_states"] = torch.randn(1, 4, 6, 4, 4)
    paths = [f"transformer_blocks.{i}.attn" for i in range(dual)] + [f"single_transformer_blocks.{i}.attn" for i in range(single)]
    return model, inputs, paths


#: The five published tier tables, each on a tiny model with the plan's own block count and layout.
PUBLISHED = {
    "cogvideox-2b": (lambda: Plan.published("cogvideox-2b"), lambda: _cogvideox(30)),
    "cogvideox-5b": (  # tiers only: the user brings the threshold map (2B's base map here)
        lambda: Plan.from_tiers(published_tiers("cogvideox-5b"), {6: 0.4, 7: 0.8}, {8: 0.3}, cache_window=5),
        lambda: _cogvideox(42),
    ),
    "mochi": (lambda: Plan.published("mochi"), lambda: _mochi(48)),
    "hunyuanvideo": (lambda: Plan.published("hunyuanvideo"), lambda: _hunyuan(20, 40)),
    "fastvideo-hunyuan": (lambda: Plan.published("fastvideo-hunyuan"), lambda: _hunyuan(20, 40)),
}


def _window_rows(plan: Plan, step: int) -> set[tuple[int, str]]:
    """(row, feature) pairs whose ratio is nonzero somewhere in the cache window of ``step``."""
    start = step // plan.cache_window * plan.cache_window
    steps = range(start, min(start + plan.cache_window, plan.num_steps))
    return {(r, f) for r in range(plan.num_sites) for f in ("q", "kv") if any(plan.ratio(r, s, f) > 0 for s in steps)}


def assert_own_rows(runtime, plan: Plan, paths: list[str]) -> None:
    """Every block reads its own plan row: the row table follows block order, and the blocks that
    computed a matching at step 0 are exactly those whose row reduces in the first window."""
    assert runtime.site_order == {p: i for i, p in enumerate(paths)}
    matched = {(e.site, e.feature) for e in runtime.events if e.kind == "match" and e.step == 0}
    assert matched == {(paths[r], f) for r, f in _window_rows(plan, 0)}
    assert matched  # the plan reduces somewhere at step 0, so the check above is not vacuous


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_plan_rows_transform(name):
    make_plan, make_model = PUBLISHED[name]
    plan = make_plan()
    model, inputs, paths = make_model()
    assert plan.num_sites == len(paths)
    zero_rows = [r for r in range(plan.num_sites) if not plan.features_used(r)]
    assert zero_rows, "each shipped table has all-zero rows: the case that shifted rows"
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        fast(**inputs)
        fast(**inputs)  # the second call ran with shifted rows and no error before the fix
    assert_own_rows(asymrnr_fx.runtime_of(fast), plan, paths)


def test_published_plan_rows_compiled_and_regional():
    plan = Plan.published("cogvideox-2b")
    model, inputs, paths = _cogvideox(30)
    with torch.no_grad():
        eager = asymrnr_fx.transform(model, plan)(**inputs)[0]
        for mode in (True, "regional"):
            fast = asymrnr_fx.transform(model, plan, compile=mode)
            out = fast(**inputs)[0]
            assert_own_rows(asymrnr_fx.runtime_of(fast), plan, paths)
            torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)
            fast.untransform()


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_plan_rows_apply(name):
    make_plan, make_model = PUBLISHED[name]
    plan = make_plan()
    model, _, paths = make_model()
    family = "hunyuanvideo" if "hunyuan" in name else name.split("-")[0]
    tp = tiny_pipeline(family)
    tp.pipe.transformer = model
    frames = {"cogvideox": 13, "mochi": 31, "hunyuanvideo": 21}[family]  # 6 latent frames where the stride is 6
    asymrnr_fx.apply(tp.pipe, plan)
    with torch.no_grad():
        # Mochi's sigma schedule divides by zero at 1 step; 2 steps fall in the first cache window everywhere
        tp(num_inference_steps=2 if family == "mochi" else 1, num_frames=frames, output_type="latent")
    assert_own_rows(asymrnr_fx.runtime_of(tp.pipe), plan, paths)


def test_loaded_rows_follow_block_order_for_transform_graph():
    """transform_graph (an exported, aten-level graph) registers rows the same way."""
    model, inputs, paths = _cogvideox(3)
    plan = Plan.from_table(q=torch.tensor([[0.0] * 2, [0.5] * 2, [0.5] * 2]), kv=torch.zeros(3, 2), cache_window=1)
    gm = torch.export.export(model, (), inputs).module()
    fast = asymrnr_fx.transform_graph(gm, plan)
    with torch.no_grad():
        fast(**inputs)
    assert asymrnr_fx.runtime_of(fast).site_order == {p: i for i, p in enumerate(paths)}


# --------------------------------------------------------------------------- step direction


def _step_inputs(inputs: dict, t: float, i: int) -> dict:
    x = dict(inputs)
    x["timestep"] = torch.full_like(inputs["timestep"], t)
    x["hidden_states"] = inputs["hidden_states"] * (1 - 0.02 * i)
    return x


def _loop(fast, inputs: dict, timesteps: list[float]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [fast(**_step_inputs(inputs, t, i))[0] for i, t in enumerate(timesteps)]


TIMESTEPS = [900.0, 850.0, 800.0, 750.0, 700.0, 650.0, 600.0, 550.0, 500.0, 450.0, 400.0]


@pytest.fixture(scope="module")
def wan():
    return tiny_transformer("wan", layers=2), transformer_inputs("wan")


def test_warm_up_call_does_not_break_step_tracking(wan):
    model, inputs = wan
    plan = changing_window_plan()
    solo_fast = asymrnr_fx.transform(model, plan)
    solo = _loop(solo_fast, inputs, TIMESTEPS)
    solo_matches = asymrnr_fx.runtime_of(solo_fast).counts["match"]

    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        fast(**_step_inputs(inputs, 0.0, 0))  # a warm-up call at t=0
    rt = asymrnr_fx.runtime_of(fast)
    before = rt.counts["match"]
    for a, b in zip(_loop(fast, inputs, TIMESTEPS), solo):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert rt.counts["match"] - before == solo_matches  # every call restarted at step 0 before the fix
    assert rt.step == len(TIMESTEPS) - 1
    with asymrnr_fx.generation(fast):  # a fresh handle afterwards is exact too
        for a, b in zip(_loop(fast, inputs, TIMESTEPS), solo):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def changing_window_plan() -> Plan:
    steps = len(TIMESTEPS)
    q = torch.tensor([[0.5 if s % 3 else 0.7 for s in range(steps)]] * 2)
    return Plan.from_table(q=q, kv=torch.full((2, steps), 0.3), cache_window=2)


def _dit_inputs(t: float, i: int = 0) -> dict:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 8, 8, generator=g) * (1 - 0.02 * i)
    return {"hidden_states": x, "timestep": torch.tensor([t])}


def test_rising_schedule_learned_per_generation_on_a_model_without_a_known_direction():
    """A custom model with rising timesteps: learned from its own calls; a later falling generation
    (after a rising one) is not read through the first one's direction."""
    model = TinyVideoDiT(dim=16, heads=2, depth=1, frames=4, height=8, width=8).eval()
    plan = Plan.uniform(q=0.5, kv=0.3, cache_window=2)
    rising = [0.0, 100.0, 200.0, 300.0]

    def run(fast, ts):
        with torch.no_grad():
            return [fast(**_dit_inputs(t, i)) for i, t in enumerate(ts)]

    solo = run(asymrnr_fx.transform(model, plan), rising)
    fast = asymrnr_fx.transform(model, plan)
    for a, b in zip(run(fast, rising), solo):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert asymrnr_fx.runtime_of(fast).step == 3
    with asymrnr_fx.generation(fast):  # a handle learns its own direction from its own calls
        for a, b in zip(run(fast, rising), solo):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_ambiguous_reversal_without_known_direction_warns():
    model = TinyVideoDiT(dim=16, heads=2, depth=1, frames=4, height=8, width=8).eval()
    fast = asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))
    with torch.no_grad(), pytest.warns(AsymRnRWarning, match="asymrnr_fx.generation"):
        for t in (0.0, 900.0, 850.0):  # warm-up at 0 on a model whose direction nobody declared
            fast(**_dit_inputs(t))


# --------------------------------------------------------------------------- regional, shapes


def test_regional_model_keeps_reducing_after_another_transform(wan):
    model, inputs = wan
    pa, pb = Plan.uniform(q=0.5, kv=0.3), Plan.uniform(q=0.3)
    with torch.no_grad():
        fa = asymrnr_fx.transform(model, pa, compile="regional")
        first = fa(**inputs)[0]
        rt = asymrnr_fx.runtime_of(fa)
        eager_b = asymrnr_fx.transform(model, pb)(**inputs)[0]  # any second transform of the same model
        selects = rt.counts["select"]
        torch.testing.assert_close(fa(**inputs)[0], first, atol=0, rtol=0)
        assert rt.counts["select"] - selects == 4  # 2 blocks x (q, kv): still reducing
        fb = asymrnr_fx.transform(model, pb, compile="regional")  # a second regional transform beside it
        torch.testing.assert_close(fb(**inputs)[0], eager_b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fa(**inputs)[0], first, atol=0, rtol=0)
        fa.untransform()
        torch.testing.assert_close(fb(**inputs)[0], eager_b, atol=1e-5, rtol=1e-5)
        fb.untransform()
    assert all("forward" not in b.__dict__ for b in model.blocks)  # the last untransform restores the blocks


def test_compiled_transform_of_a_regionally_patched_model_keeps_the_model_names(wan):
    model, inputs = wan
    plan = Plan.uniform(q=0.5, kv=0.3)
    with torch.no_grad():
        eager = asymrnr_fx.transform(model, plan)(**inputs)[0]
        regional = asymrnr_fx.transform(model, plan, compile="regional")
        whole = asymrnr_fx.transform(model, plan, compile=True)
        torch.testing.assert_close(whole(**inputs)[0], eager, atol=1e-5, rtol=1e-5)
    assert list(asymrnr_fx.runtime_of(whole).site_order) == ["blocks.0.attn1", "blocks.1.attn1"]
    assert [s.path for s in whole.report.rewritten] == ["blocks.0.attn1", "blocks.1.attn1"]
    regional.untransform()


def test_later_shape_with_nothing_to_reduce_warns(wan):
    model, inputs = wan
    fast = asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))
    # one frame of one token after the (1, 2, 2) patch: grid (1, 1, 1), every tile a single dst
    one_token = dict(inputs, hidden_states=inputs["hidden_states"][:, :, :1, :2, :2].contiguous())
    with torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("error", AsymRnRWarning)
            fast(**inputs)
        with pytest.warns(AsymRnRWarning, match="new input shape.*no src tokens to remove"):
            fast(**one_token)


def test_a_call_under_a_dispatch_mode_says_it_ran_unreduced(wan):
    """FlopCounterMode (a TorchDispatchMode): Dynamo runs no compiled graph inside one, so the call is
    the plain model's; said once, by name, and the next call outside it is reduced again."""
    from torch.utils.flop_counter import FlopCounterMode

    model, inputs = wan
    fast = asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))
    with torch.no_grad():
        plain, reduced = model(**inputs)[0], fast(**inputs)[0]
        with pytest.warns(AsymRnRWarning, match="TorchDispatchMode.*nothing is reduced.*torch.profiler") as seen:
            with FlopCounterMode(display=False):
                under = fast(**inputs)[0]
        assert len([w for w in seen if issubclass(w.category, AsymRnRWarning)]) == 1
        torch.testing.assert_close(under, plain, rtol=0, atol=0)
        again = fast(**inputs)[0]
    assert (reduced - plain).abs().max() > 1e-3 and (again - plain).abs().max() > 1e-3


# --------------------------------------------------------------------------- crashes and messages


def test_deepcopy_and_torch_save_give_fresh_transforms(wan):
    model, inputs = wan
    plan = Plan.uniform(q=0.5, kv=0.3)
    for mode in (False, "regional"):
        fast = asymrnr_fx.transform(model, plan, compile=mode)
        with torch.no_grad():
            out = fast(**inputs)[0]
            twin = copy.deepcopy(fast)
            buf = io.BytesIO()
            torch.save(fast, buf)
            buf.seek(0)
            loaded = torch.load(buf, weights_only=False)
            for other in (twin, loaded):
                assert other.model is not fast.model and asymrnr_fx.runtime_of(other) is not asymrnr_fx.runtime_of(fast)
                torch.testing.assert_close(other(**inputs)[0], out, atol=1e-5, rtol=1e-5)
                assert asymrnr_fx.runtime_of(other).counts["select"] > 0
        fast.untransform()


def test_plan_that_does_not_fit_is_the_plan_error_not_a_backend_failure(wan):
    model, inputs = wan
    one_row = Plan.from_table(q=torch.full((1, 3), 0.5), kv=torch.zeros(1, 3))
    with torch.no_grad(), pytest.raises(ValueError, match="has ratios for 1 attention sites") as info:
        asymrnr_fx.transform(model, one_row)(**inputs)
    assert not isinstance(info.value, torch._dynamo.exc.BackendCompilerFailed)


class _FloatTimestepDiT(TinyVideoDiT):
    def forward(self, hidden_states: torch.Tensor, timestep: float) -> torch.Tensor:  # type: ignore[override]
        return super().forward(hidden_states, torch.as_tensor([timestep]))


def test_python_number_timestep_under_raw_compile_names_the_fix():
    model = _FloatTimestepDiT(dim=16, heads=2, depth=1, frames=4, height=8, width=8).eval()
    plan = Plan.uniform(q=0.5, kv=0.3)
    x = _dit_inputs(0.0)["hidden_states"]
    compiled = torch.compile(model, backend="asymrnr", options={"plan": plan, "compile": False})
    with torch.no_grad(), pytest.raises(RuntimeError, match="Python number.*as a tensor"):
        compiled(x, 900.0)
    with torch.no_grad():  # transform() reads Python numbers itself
        fast = asymrnr_fx.transform(model, plan)
        fast(x, 900.0)
        fast(x, 850.0)
    assert asymrnr_fx.runtime_of(fast).step == 1


def test_pipeline_whose_transformer_was_replaced_by_hand_names_the_fix():
    tp = tiny_pipeline("wan")
    original = tp.pipe.transformer
    asymrnr_fx.apply(tp.pipe, Plan.uniform(q=0.5, kv=0.3))
    tp.pipe.transformer = original
    with pytest.raises(ValueError, match=r"remove\(pipe\).*apply\(pipe, plan\) again"):
        tp(num_inference_steps=1, output_type="latent")


def test_plan_registry_does_not_keep_throwaway_plans():
    from asymrnr_fx import backend as runtime_module  # the backend owns the runtimes of bare torch.compile

    gc.collect()
    before = len(runtime_module.all_runtimes())
    for _ in range(200):
        asymrnr_fx.reset(Plan.uniform(q=0.5))
    gc.collect()
    assert len(runtime_module.all_runtimes()) == before
    kept = Plan.uniform(q=0.5)
    asymrnr_fx.reset(kept)
    assert len(runtime_module.all_runtimes()) == before + 1  # a plan still in use keeps its runtime


def test_timesteps_against_the_declared_direction_are_relearned_with_a_warning(wan):
    """Wan's pipelines pass falling timesteps; a caller passing rising ones is not read as a new
    generation per call for ever: the second contradiction re-teaches the direction, and says so."""
    model, inputs = wan
    fast = asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))
    with pytest.warns(AsymRnRWarning, match="keep moving the other way"):
        _loop(fast, inputs, [100.0, 200.0, 300.0, 400.0, 500.0])
    assert asymrnr_fx.runtime_of(fast).step == 3  # 300 -> step 1, 400 -> 2, 500 -> 3


def test_loaded_program_gives_every_block_its_own_row():
    """The rows travel in the package record: a loaded program of a table plan whose first row is
    all zeros still gives the second block row 1."""
    from asymrnr_fx import deploy

    model, inputs, paths = _cogvideox(2)
    plan = Plan.from_table(q=torch.tensor([[0.0, 0.0], [0.5, 0.5]]), kv=torch.zeros(2, 2), cache_window=1)
    loaded = deploy.load(deploy.export(model, plan, kwargs=inputs))
    with torch.no_grad():
        loaded(**inputs)
    rt = asymrnr_fx.runtime_of(loaded)
    assert rt.site_order == {p: i for i, p in enumerate(paths)}
    assert {e.site for e in rt.events if e.kind == "match"} == {paths[1]}


def test_a_model_dynamo_never_captures_is_said_to_run_unreduced():
    """A model whose frames Dynamo skips (here ``compiler.disable``; in practice a graph break in a loop,
    or a block ``forward`` compiled past the recompile limit for other models in this process) hands no
    graph to the pass: no site, no report. Before, nothing said so and every call ran unreduced."""
    torch.manual_seed(0)
    dit = TinyVideoDiT(channels=4, dim=32, depth=2, heads=2, frames=2, height=8, width=8).eval()
    dit.forward = torch.compiler.disable(dit.forward)
    fast = asymrnr_fx.transform(dit, Plan.uniform(q=0.5, kv=0.3))
    with torch.no_grad(), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for t in (900.0, 800.0):
            fast(hidden_states=torch.randn(1, 4, 2, 8, 8), timestep=torch.tensor([t]))
    said = [str(w.message) for w in seen if issubclass(w.category, AsymRnRWarning)]
    assert len(said) == 1 and "captured no graph" in said[0] and "compile='regional'" in said[0]  # once, with the fix
    assert fast.runtime.counts["match"] == 0 and not fast.runtime.reports
