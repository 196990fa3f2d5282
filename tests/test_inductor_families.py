"""Inductor, not only the eager backend: each diffusers family compiles whole with its attention reduced.

``transform(model, plan, compile=True)`` must give inductor exactly one graph (no graph
break) in which the rewritten sites' kept counts are unbacked sizes, so 3 steps with
different timesteps and kept counts run without recompiling, and agree with the eager
rewrite. HunyuanVideo runs batch 2: its key-padding mask ``[B, 1, 1, L]`` then has real
padding, and the reduced SDPA must not guard on the kept count (issue 10).
"""
from __future__ import annotations

import pytest
import torch
import torch._inductor.compile_fx as inductor_compile_fx

import asymrnr_fx
from asymrnr_fx import Plan
from tiny_diffusers import EXPECTED_SITES, FAMILIES, num_sites, step_inputs, tiny_transformer, transformer_inputs

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*[Aa]utocast"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
torch.set_num_threads(1)
TIMESTEPS = (900.0, 700.0, 500.0)
BATCH = {"hunyuanvideo": 2}


def nonzero_plan(sites: int) -> Plan:
    """Nonzero ratios that differ per site and step: every step reduces, with another kept count."""
    q = torch.tensor([0.5, 0.3, 0.6])
    kv = torch.tensor([0.3, 0.5, 0.2])
    return Plan.from_table(
        q=torch.stack([q.roll(i) for i in range(sites)]), kv=torch.stack([kv.roll(i) for i in range(sites)]),
        cache_window=2,
    )


def run_steps(fn, inputs):
    with torch.no_grad():
        return [fn(**step_inputs(inputs, t, i))[0] for i, t in enumerate(TIMESTEPS)]


@pytest.mark.parametrize("family", FAMILIES)
def test_inductor_compiles_one_graph_equal_to_eager(family, monkeypatch):
    model = tiny_transformer(family)
    plan = nonzero_plan(num_sites(family))
    inputs = transformer_inputs(family, batch=BATCH.get(family, 1))
    expected = run_steps(asymrnr_fx.transform(model, plan), inputs)  # the rewrite, run eagerly

    compiles = []
    real_compile_fx = inductor_compile_fx.compile_fx

    def spy(gm, example_inputs, *args, **kwargs):
        compiles.append(gm)
        return real_compile_fx(gm, example_inputs, *args, **kwargs)

    monkeypatch.setattr(inductor_compile_fx, "compile_fx", spy)
    counters = torch._dynamo.utils.counters
    counters.clear()
    fast = asymrnr_fx.transform(model, plan, compile=True)
    outs = run_steps(fast, inputs)

    graphs = {id(gm) for gm in compiles}  # compile_fx re-enters itself once when given config patches
    assert len(graphs) == 1, f"inductor compiled {len(graphs)} graphs"
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"], dict(counters["graph_break"])
    rewritten = {s.path for s in fast.report.rewritten}
    assert rewritten == {p for p, _, rw in EXPECTED_SITES[family] if rw}, str(fast.report)
    assert any(e.kind == "match" for e in fast.runtime.events)
    for o, e in zip(outs, expected):
        assert o.shape == e.shape and torch.isfinite(o).all()
        torch.testing.assert_close(o, e, atol=1e-4, rtol=1e-4)


def test_native_math_attention_backend_compiles_reduced():
    """diffusers' ``_native_math`` backend: inductor's bmm lowering used to guard on the kept count being 1."""
    model = tiny_transformer("wan")
    model.set_attention_backend("_native_math")
    plan = nonzero_plan(num_sites("wan"))
    inputs = transformer_inputs("wan")
    eager = run_steps(asymrnr_fx.transform(model, plan), inputs)
    fast = asymrnr_fx.transform(model, plan, compile=True)
    compiled = run_steps(fast, inputs)
    assert fast.report.rewritten and fast.runtime.counts["match"] > 0
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
