"""The five diffusers video transformer families, unchanged: sites, grids, one-graph capture, reference agreement."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from asymrnr_fx import Plan  # noqa: E402
from asymrnr_fx.integrations import diffusers as integ  # noqa: E402
from reference import RefSite, ReferenceAsymRnR, patched_sdpa  # noqa: E402
from tiny_diffusers import (  # noqa: E402
    EXPECTED_SITES,
    FAMILIES,
    GRID,
    TEXT_POSITION,
    VideoOnlyReference,
    changing_plan,
    num_sites,
    step_inputs,
    tiny_transformer,
    transformer_inputs,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*[Aa]utocast"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
torch.set_num_threads(1)
TIMESTEPS = (900.0, 700.0, 500.0, 300.0)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {f: tiny_transformer(f) for f in FAMILIES}


def run_steps(fn, inputs, before=None):
    outs = []
    with torch.no_grad():
        for i, t in enumerate(TIMESTEPS):
            if before is not None:
                before(i)
            outs.append(fn(**step_inputs(inputs, t, i))[0])
    return outs


# --------------------------------------------------------------------------- inspect
@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_lists_every_site_with_its_class(models, family):
    model = models[family]
    report = asymrnr_fx.inspect(model, **transformer_inputs(family, batch=2))  # no grid given
    got = list(dict.fromkeys((s.path, s.kind, s.rewrite) for s in report.sites))
    assert got == EXPECTED_SITES[family], str(report)
    for s in report.rewritten:
        assert s.grid == GRID and s.features == ("q", "kv")
        if s.kind == "joint":
            assert s.text_position == TEXT_POSITION[family]
    assert report.graphs[0].grid_source == "model config and inputs" and report.graphs[0].timestep
    left_alone = [s for s in report.sites if not s.rewrite]
    assert all(s.reason for s in left_alone)  # every site that stays is explained
    if family == "mochi":  # per-sample loop: one call per batch element, one graph
        assert len(report.graphs) == 1 and len(report.rewritten) == 4
    text = str(report)
    assert "(4, 4, 4)" in text and "model config" in text


def test_cross_attention_is_opt_in(models):
    for family in ("wan", "ltx"):
        report = asymrnr_fx.inspect(models[family], plan=Plan.uniform(0.5, 0.3, cross_attention=True),
                                    **transformer_inputs(family))
        cross = [s for s in report.sites if s.kind == "cross"]
        assert len(cross) == 1 and cross[0].rewrite and cross[0].features == ("q",), str(report)
    fast = asymrnr_fx.transform(models["wan"], Plan.uniform(0.5, 0.3, cross_attention=True), fullgraph=True)
    inputs = transformer_inputs("wan")
    outs = run_steps(fast, inputs)
    ref = run_steps(models["wan"], inputs)
    assert all(torch.isfinite(o).all() for o in outs) and not torch.equal(outs[0], ref[0])
    assert {e.site for e in fast.runtime.events if e.kind == "match"} == {"blocks.0.attn1", "blocks.0.attn2"}


# --------------------------------------------------------------------------- grid inference
def test_grid_fns_read_config_and_arguments():
    import diffusers

    cog15 = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=16, num_layers=1, patch_size=2, patch_size_t=2, sample_frames=9,
        use_rotary_positional_embeddings=True,
    )
    x = torch.zeros(1, 6, 4, 12, 16)  # [B, F, C, H, W]
    assert integ.grid_fn_for(cog15)(cog15, (x,), {}) == (3, 6, 8)
    wan = tiny_transformer("wan")
    assert integ.grid_fn_for(wan)(wan, (), {"hidden_states": torch.zeros(1, 16, 5, 6, 10)}) == (5, 3, 5)
    ltx = tiny_transformer("ltx")
    grid = integ.grid_fn_for(ltx)
    # positional call, as a user might write it: hidden_states, encoder_hidden_states, timestep, mask, F, H, W
    args = (torch.zeros(1, 2 * 3 * 5, 8), None, None, None, 2, 3, 5)
    assert grid(ltx, args, {}) == (2, 3, 5)
    assert integ.grid_fn_for(torch.nn.Linear(2, 2)) is None


def test_grid_is_read_per_call_for_new_shapes(models):
    """A second resolution is a second graph with its own grid, from the same grid_fn."""
    fast = asymrnr_fx.transform(models["hunyuanvideo"], Plan.uniform(0.5, 0.3), fullgraph=True)
    inputs = transformer_inputs("hunyuanvideo")
    big = dict(inputs, hidden_states=torch.randn(1, 4, 2, 6, 4))
    with torch.no_grad():
        fast(**inputs)
        fast(**big)
    assert [g.grid for g in fast.report.graphs] == [(4, 4, 4), (2, 6, 4)]


# --------------------------------------------------------------------------- one graph, compiled once
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype,batch", [(torch.float32, 2), (torch.bfloat16, 1)], ids=["fp32-b2", "bf16-b1"])
def test_fullgraph_multistep_captures_once(models, family, dtype, batch):
    model = copy.deepcopy(models[family]).to(dtype) if dtype != torch.float32 else models[family]
    plan = changing_plan(num_sites(family), window=2)
    fast = asymrnr_fx.transform(model, plan, fullgraph=True)
    inputs = transformer_inputs(family, batch=batch, dtype=dtype)
    torch._dynamo.utils.counters.clear()
    outs = run_steps(fast, inputs)
    ref = run_steps(model, inputs)
    rt = fast.runtime
    assert len(rt.reports) == 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert rt.matching_steps() == [0, 2] and rt.generation == 0
    for o, r in zip(outs, ref):
        assert o.shape == r.shape and o.dtype == dtype and torch.isfinite(o).all()
    assert not torch.equal(outs[0], ref[0])


def test_zero_plan_is_exact(models):
    """Sites whose ratio is 0 everywhere are not rewritten: outputs are bitwise those of the model."""
    for family in ("cogvideox", "mochi"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", asymrnr_fx.AsymRnRWarning)
            fast = asymrnr_fx.transform(models[family], Plan.uniform(0.0, 0.0), fullgraph=True)
            inputs = transformer_inputs(family, batch=2)
            assert all(torch.equal(a, b) for a, b in zip(run_steps(fast, inputs), run_steps(models[family], inputs)))


def test_backend_by_name_with_fullgraph(models):
    """torch.compile(model, backend="asymrnr") on an unchanged diffusers model (eager backend run)."""
    model = models["wan"]
    plan = changing_plan(1, window=2)
    compiled = torch.compile(model, backend="asymrnr", options={"plan": plan, "compile": False}, fullgraph=True)
    inputs = transformer_inputs("wan", batch=2)
    outs = run_steps(compiled, inputs)
    rt = asymrnr_fx.runtime_of(plan)
    assert len(rt.reports) == 1 and rt.reports[0].grid == GRID and rt.matching_steps() == [0, 2]
    expected = run_steps(asymrnr_fx.transform(model, plan), inputs)
    for x, y in zip(outs, expected):
        torch.testing.assert_close(x, y)


# --------------------------------------------------------------------------- numeric agreement with the reference
REFERENCE_SITES = {
    "cogvideox": [RefSite(GRID, 8, True)],
    "hunyuanvideo": [RefSite(GRID, 8, False)] * 2,
    "wan": [RefSite(GRID)],
    "mochi": [RefSite(GRID, 8, False)] * 2,
    "ltx": [RefSite(GRID)],
}


@pytest.mark.parametrize("family", ["cogvideox", "hunyuanvideo", "wan", "mochi", "ltx"])
def test_matches_slow_reference(models, family):
    """Each rewritten site against tests/reference.py over 4 steps (ratios change every step, window 2).

    Batch 2 with a shorter second prompt where the family masks text (HunyuanVideo's key
    padding mask); Mochi runs batch 1 because its per-sample loop would make the
    reference's call-order site numbering count samples as sites.
    """
    model = models[family]
    batch = 1 if family == "mochi" else 2
    plan = changing_plan(num_sites(family), window=2)
    inputs = transformer_inputs(family, batch=batch)
    fast = asymrnr_fx.transform(model, plan, fullgraph=True)
    outs = run_steps(fast, inputs)
    ref = VideoOnlyReference(ReferenceAsymRnR(plan, REFERENCE_SITES[family]), num_video=64)
    with patched_sdpa(ref):
        ref_outs = run_steps(model, inputs, before=ref.start_forward)
    for o, r in zip(outs, ref_outs):
        torch.testing.assert_close(o, r, atol=2e-4, rtol=2e-4)
    assert sorted({s for s, _, _ in ref.reference.matched_at}) == fast.runtime.matching_steps() == [0, 2]
    assert not torch.equal(outs[0], run_steps(model, inputs)[0])
