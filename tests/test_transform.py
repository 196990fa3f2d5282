"""End to end on the hand-written DiT (examples/tiny_dit.py): transform, backend, cache, errors."""
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

import asymrnr_fx
from asymrnr_fx import Plan
from reference import RefSite, ReferenceAsymRnR, patched_sdpa
from tiny_dit import TinyVideoDiT

GRID = (4, 6, 6)
STEPS = 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyVideoDiT(dim=32, heads=2, depth=2, frames=4, height=12, width=12).eval()


@pytest.fixture(scope="module")
def latents():
    return torch.randn(2, 4, 4, 12, 12, generator=torch.Generator().manual_seed(1))


def changing_plan(sites=2, steps=STEPS, window=4, **kw):
    """Ratios that change at every step, nonzero at every window start."""
    q = torch.tensor([[0.5, 0.3, 0.7, 0.0, 0.6, 0.8, 0.2, 0.5, 0.4, 0.75]])[:, :steps].repeat(sites, 1)
    kv = torch.tensor([[0.3, 0.0, 0.5, 0.2, 0.4, 0.1, 0.6, 0.3, 0.35, 0.0]])[:, :steps].repeat(sites, 1)
    if sites > 1:
        q[1] = q[1].flip(0)
    return Plan.from_table(q=q, kv=kv, cache_window=window, **kw)


def timesteps(n=STEPS):
    return torch.linspace(999, 1, n)


def sample(fn, x, ts=None, before_step=None):
    outs = []
    for i, t in enumerate(timesteps() if ts is None else ts):
        if before_step:
            before_step(i)
        eps = fn(x, t.expand(x.shape[0]))
        outs.append(eps)
        x = x - 0.1 * eps
    return x, outs


def reference_run(model, plan, x):
    ref = ReferenceAsymRnR(plan, [RefSite(GRID)] * 2)
    with torch.no_grad(), patched_sdpa(ref):
        out, outs = sample(model, x, before_step=ref.start_forward)
    return out, outs, ref


def test_ratio_zero_is_exact(model, latents):
    fast = asymrnr_fx.transform(model, Plan.uniform(q=0.0, kv=0.0))
    with torch.no_grad(), pytest.warns(asymrnr_fx.AsymRnRWarning, match="ratio is 0"):
        a, _ = sample(fast, latents)
    with torch.no_grad():
        b, _ = sample(model, latents)
    assert torch.equal(a, b)


def test_transformed_matches_reference_over_ten_steps(model, latents):
    plan = changing_plan()
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        out, outs = sample(fast, latents)
    ref_out, ref_outs, ref = reference_run(model, plan, latents)
    for step, (a, b) in enumerate(zip(outs, ref_outs)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5, msg=f"step {step}")
    with torch.no_grad():
        full, _ = sample(model, latents)
    assert (out - full).abs().max() > 1e-3  # it did reduce
    # cache is observable and matches the reference's schedule: windows start at 0, 4, 8
    assert fast.runtime.matching_steps() == [0, 4, 8]
    assert sorted({s for s, _, _ in ref.matched_at}) == [0, 4, 8]
    assert fast.runtime.counts["match"] == 3 * 2 * 2  # windows x sites x features
    report = fast.report
    assert [s.kind for s in report.sites] == ["self", "self"] and len(report.rewritten) == 2
    assert report.graphs[0].grid == GRID


def test_mean_mode_and_other_similarities_match_reference(model, latents):
    symmetric = changing_plan(window=3)
    symmetric = Plan.from_table(q=symmetric.table("q"), kv=torch.zeros(2, STEPS), cache_window=3, symmetric=True)
    for opts in ({"mode": "mean"}, {"similarity": "cosine"}, {"similarity": "dot", "seed": 3}, {"symmetric": True}):
        plan = symmetric if opts.get("symmetric") else changing_plan(window=3, **opts)
        fast = asymrnr_fx.transform(model, plan)
        with torch.no_grad():
            out, _ = sample(fast, latents)
        ref_out, _, _ = reference_run(model, plan, latents)
        torch.testing.assert_close(out, ref_out, atol=5e-5, rtol=5e-5, msg=str(opts))


def test_compiled_agrees_and_compiles_once(model, latents):
    plan = changing_plan()
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        eager_out, _ = sample(fast, latents)
    torch._dynamo.utils.counters.clear()
    # without fullgraph=True Dynamo would refuse the data-dependent kept count: no graph break allowed
    compiled = torch.compile(model, backend="asymrnr", options={"plan": plan})
    rt = asymrnr_fx.runtime_of(plan)
    with torch.no_grad():
        out, _ = sample(compiled, latents)
    assert len(rt.reports) == 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert rt.matching_steps() == [0, 4, 8]
    torch.testing.assert_close(out, eager_out, atol=1e-4, rtol=1e-4)
    # zero plan through the backend reproduces plain inductor exactly
    zero = Plan.uniform(0.0, 0.0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", asymrnr_fx.AsymRnRWarning)
        a = torch.compile(model, backend="asymrnr", options={"plan": zero})(latents, torch.full((2,), 500.0))
        b = torch.compile(model, backend="inductor")(latents, torch.full((2,), 500.0))
    assert torch.equal(a, b)


def test_new_generation_resets_cache_and_explicit_steps(model, latents):
    fast = asymrnr_fx.transform(model, Plan.uniform(0.5, 0.3, cache_window=2))
    with torch.no_grad():
        sample(fast, latents, ts=timesteps(4))
        assert fast.runtime.generation == 0 and fast.runtime.step == 3
        first = [e for e in fast.runtime.events if e.kind == "match"]
        sample(fast, latents, ts=timesteps(4))  # timestep goes back up: new generation
    rt = fast.runtime
    assert rt.generation == 1 and rt.matching_steps() == [0, 2] and rt.matching_steps(0) == [0, 2]
    assert len([e for e in rt.events if e.kind == "match"]) == 2 * len(first)
    # explicit API: pin steps; the same timestep at every call no longer drives tracking
    asymrnr_fx.reset(fast)
    with torch.no_grad():
        for i in range(4):
            asymrnr_fx.set_step(fast, i)
            fast(latents, torch.full((2,), 7.0))
    assert rt.matching_steps() == [0, 2] and rt.step == 3


def test_export_graph_with_aten_attention(model, latents):
    plan = changing_plan(window=2)
    ep = torch.export.export(model, (latents, torch.full((2,), 999.0)))
    gm = ep.module()
    assert any(n.target is torch.ops.aten.scaled_dot_product_attention.default for n in gm.graph.nodes)
    fast_gm = asymrnr_fx.transform_graph(gm, plan)
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        a, _ = sample(fast_gm, latents)
        b, _ = sample(fast, latents)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert asymrnr_fx.runtime_of(fast_gm).matching_steps() == [0, 2, 4, 6, 8]
    # inspect() of the rewritten graph reports its own rewrite and plan, not an analysis of it as a model
    report = asymrnr_fx.inspect(fast_gm, latents, torch.full((2,), 999.0))
    assert len(report.rewritten) == 2 and "plan Plan(table 2 sites" in str(report)
    with pytest.raises(ValueError, match="transformed with"):
        asymrnr_fx.inspect(fast_gm, latents, torch.full((2,), 999.0), plan=Plan.uniform(0.5, 0.3))


def test_a_call_without_a_timestep_to_read_warns_that_steps_stand_still(model, latents):
    """A timestep argument under another name: every call would run as step 0 (its ratios, its matching)."""

    class Renamed(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, hidden_states: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
            return self.inner(hidden_states, noise_level)

    fast = asymrnr_fx.transform(Renamed(model), changing_plan(window=2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        fast(hidden_states=latents, noise_level=torch.full((2,), 999.0))  # step 0 is step 0 either way
        with pytest.warns(asymrnr_fx.AsymRnRWarning, match="no timestep to read.*asymrnr_fx.set_step"):
            fast(hidden_states=latents, noise_level=torch.full((2,), 900.0))
        asymrnr_fx.reset(fast)
        for step in range(3):  # pinned steps are read from nowhere: no warning
            asymrnr_fx.set_step(fast, step)
            fast(hidden_states=latents, noise_level=torch.full((2,), 999.0 - step))
    assert asymrnr_fx.runtime_of(fast).matching_steps() == [0, 2]


def test_inspect_reports_sites_without_changing_the_model(model, latents):
    report = asymrnr_fx.inspect(model, latents, torch.full((2,), 3.0))
    text = str(report)
    assert "blocks.0" in text and "blocks.1" in text and "self" in text and "(4, 6, 6)" in text
    assert len(report.rewritten) == 2 and report.graphs[0].timestep is not None
    assert "plan Plan('default' q=0.5 kv=0.3" in text and "shards" not in text  # the plan it was inspected with
    # the plan's matching options are in the header, its shards on every site they cut
    text = str(asymrnr_fx.inspect(model, latents, torch.full((2,), 3.0), plan=Plan.uniform(0.5, 0.3, shards=2, window=(0, 1, 1))))
    assert "shards=2, window=(0, 1, 1))" in text and text.count("q+kv (2 shards)") == 2
    text = str(asymrnr_fx.inspect(model, latents, torch.full((2,), 3.0), plan=Plan.uniform(0.3, 0, symmetric=True)))
    assert "symmetric=True)" in text and text.count("q+k+v (one matching)") == 2  # not "q": K and V are cut too
    # a table plan for another number of sites: transform() raises at the first call, so inspect() says it
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match="30 attention sites but the model has 2"):
        report = asymrnr_fx.inspect(model, latents, torch.full((2,), 3.0), plan=Plan.published("cogvideox-2b", "base"))
    assert "this plan cannot run on this model" in str(report) and "30 attention sites" in report.as_dict()["problem"]
    # a transformed model is reported with its own plan, never silently instead of another one asked for
    fast = asymrnr_fx.transform(model, Plan.uniform(0.4, 0.2))
    with pytest.raises(ValueError, match="transformed with"):
        asymrnr_fx.inspect(fast, latents, torch.full((2,), 3.0), plan=Plan.uniform(0.5, 0.3))
    assert "q=0.4 kv=0.2" in str(asymrnr_fx.inspect(fast, latents, torch.full((2,), 3.0), plan=Plan.uniform(0.4, 0.2)))
    # its call is a request of its own: the model's next request does not reuse its matching
    asymrnr_fx.inspect(fast, torch.randn_like(latents), torch.full((2,), 3.0))
    with torch.no_grad():
        after = fast(latents, torch.full((2,), 3.0))
        alone = asymrnr_fx.transform(model, Plan.uniform(0.4, 0.2))(latents, torch.full((2,), 3.0))
    torch.testing.assert_close(after, alone, rtol=0, atol=0)


# ---------------------------------------------------------------------------- bad input
def test_plan_with_wrong_number_of_sites(model, latents):
    for sites, match in ((3, "3 attention sites but the model has 2"), (1, "has more")):
        fast = asymrnr_fx.transform(model, changing_plan(sites=sites))
        with torch.no_grad(), pytest.raises(Exception, match=match):
            fast(latents, torch.full((2,), 999.0))


def test_plan_with_too_few_steps(model, latents):
    fast = asymrnr_fx.transform(model, changing_plan(steps=3))
    with torch.no_grad(), pytest.raises(Exception, match="covers 3 denoising steps"):
        sample(fast, latents, ts=timesteps(5))


def test_grid_mismatch_names_both_numbers(model, latents):
    fast = asymrnr_fx.transform(model, Plan.uniform(0.5, 0.3), grid=(3, 3, 3))
    with torch.no_grad(), pytest.raises(Exception, match=r"27 video tokens.*\[144\]"):
        fast(latents, torch.full((2,), 999.0))


def test_model_without_attention_warns():
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match="no scaled_dot_product_attention"):
        asymrnr_fx.transform(mlp, Plan.uniform(0.5, 0.3))(torch.randn(2, 4))


def test_unsupported_sites_are_left_intact_and_reported():
    class Causal(torch.nn.Module):
        def forward(self, x):
            q = x.view(1, 2, 16, 4)
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    x = torch.randn(1, 2 * 16 * 4)
    fast = asymrnr_fx.transform(Causal(), Plan.uniform(0.5, 0.3), grid=(1, 4, 4))
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match="causal"):
        out = fast(x)
    assert torch.equal(out, Causal()(x))
    assert "causal" in fast.report.sites[0].reason


def test_backend_resolves_by_name_in_a_fresh_interpreter():
    code = textwrap.dedent(
        """
        import sys, torch
        import torch.nn.functional as F
        class M(torch.nn.Module):
            def forward(self, hidden_states, timestep):
                q = hidden_states.flatten(2).transpose(1, 2).unflatten(-1, (2, -1)).transpose(1, 2)
                return F.scaled_dot_product_attention(q, q, q) * timestep.view(-1, 1, 1, 1)
        assert "asymrnr_fx" not in sys.modules
        m = torch.compile(M(), backend="asymrnr", options={"compile": False})
        out = m(torch.randn(1, 4, 2, 4, 4), torch.tensor([1.0]))
        import asymrnr_fx
        rewritten = [r for r in asymrnr_fx.backend.all_runtimes() if r.sites]
        assert len(rewritten) == 1 and rewritten[0].plan.name == "default"
        print("OK", tuple(out.shape))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK (1, 2, 32, 2)" in res.stdout


def test_options_are_one_validated_object(model):
    plan = Plan.uniform(0.5, 0.3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['gird'\]"):
        asymrnr_fx.transform(model, plan, gird=(4, 6, 6))
    with pytest.raises(ValueError, match="compile must be False, True or 'regional'"):
        asymrnr_fx.transform(model, plan, compile="yes")
    with pytest.raises(ValueError, match="grid must be three ints"):
        asymrnr_fx.transform(model, plan, grid=(2.5, 6, 6))
    with pytest.raises(ValueError, match="runs its own plan"):
        asymrnr_fx.transform(model, plan, runtime=asymrnr_fx.runtime.Runtime(Plan.uniform(0.2, 0.1)))
    fast = asymrnr_fx.transform(model, plan, grid=[4, 6, 6])
    assert fast.options.grid == (4, 6, 6) and fast.options == asymrnr_fx.api.Options(grid=(4, 6, 6))
