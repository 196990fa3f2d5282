"""A tiny diffusers CogVideoXTransformer3DModel (joint text+video attention, RoPE) against the reference."""
import pytest
import torch

import asymrnr_fx
from asymrnr_fx import Plan
from reference import RefSite, ReferenceAsymRnR, patched_sdpa

diffusers = pytest.importorskip("diffusers")
from diffusers import CogVideoXTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import get_3d_rotary_pos_embed  # noqa: E402

FRAMES, HEIGHT, WIDTH, TEXT = 4, 12, 12, 8
GRID = (FRAMES, HEIGHT // 2, WIDTH // 2)
STEPS = 10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, num_layers=2,
        text_embed_dim=32, time_embed_dim=16, sample_frames=(FRAMES - 1) * 4 + 1, sample_height=HEIGHT,
        sample_width=WIDTH, patch_size=2, max_text_seq_length=TEXT, use_rotary_positional_embeddings=True,
    ).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    rope = get_3d_rotary_pos_embed(16, ((0, 0), GRID[1:]), GRID[1:], FRAMES)
    return {
        "hidden_states": torch.randn(2, FRAMES, 4, HEIGHT, WIDTH, generator=g),
        "encoder_hidden_states": torch.randn(2, TEXT, 32, generator=g),
        "image_rotary_emb": rope,
    }


def plan_changing_every_step(**kw):
    q = torch.tensor([[0.5, 0.3, 0.7, 0.0, 0.6, 0.8, 0.2, 0.5, 0.4, 0.75], [0.7, 0.6, 0.0, 0.5, 0.3, 0.75, 0.4, 0.8, 0.2, 0.1]])
    kv = torch.tensor([[0.3, 0.0, 0.5, 0.2, 0.4, 0.1, 0.6, 0.3, 0.35, 0.0], [0.4, 0.5, 0.2, 0.0, 0.3, 0.3, 0.1, 0.6, 0.2, 0.5]])
    return Plan.from_table(q=q, kv=kv, cache_window=4, **kw)


def run(fn, inputs, before_step=None):
    x, outs = inputs["hidden_states"], []
    for i, t in enumerate(torch.linspace(999, 1, STEPS).long()):
        if before_step:
            before_step(i)
        out = fn(**{**inputs, "hidden_states": x}, timestep=t.expand(2), return_dict=False)[0]
        outs.append(out)
        x = x - 0.1 * out
    return outs


@pytest.fixture(scope="module")
def transformed_outputs(model, inputs):
    torch._dynamo.reset()
    fast = asymrnr_fx.transform(model, plan_changing_every_step())
    with torch.no_grad():
        return run(fast, inputs), fast


def test_sites_grid_and_text_position_are_inferred(transformed_outputs):
    _, fast = transformed_outputs
    report = fast.report
    assert [(s.kind, s.text_position, s.text_len) for s in report.sites] == [("joint", "first", TEXT)] * 2
    assert report.graphs[0].grid == GRID and len(report.rewritten) == 2
    assert fast.runtime.matching_steps() == [0, 4, 8]


def test_transformed_matches_reference(model, inputs, transformed_outputs):
    outs, _ = transformed_outputs
    ref = ReferenceAsymRnR(plan_changing_every_step(), [RefSite(GRID, TEXT, True)] * 2)
    with torch.no_grad(), patched_sdpa(ref):
        ref_outs = run(model, inputs, before_step=ref.start_forward)
    for step, (a, b) in enumerate(zip(outs, ref_outs)):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-5, msg=f"step {step}")
    with torch.no_grad():
        full = run(model, inputs)
    assert (outs[-1] - full[-1]).abs().max() > 1e-3


def test_compiled_matches_transformed_and_compiles_once(model, inputs, transformed_outputs):
    outs, _ = transformed_outputs
    plan = plan_changing_every_step()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, backend="asymrnr", options={"plan": plan}, fullgraph=True)
    with torch.no_grad():
        c_outs = run(compiled, inputs)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert asymrnr_fx.runtime_of(plan).matching_steps() == [0, 4, 8]
    for step, (a, b) in enumerate(zip(c_outs, outs)):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4, msg=f"step {step}")


def test_ratio_zero_is_exact_and_bfloat16_runs(model, inputs):
    fast = asymrnr_fx.transform(model, Plan.uniform(0.0, 0.0))
    with torch.no_grad(), pytest.warns(asymrnr_fx.AsymRnRWarning):
        a = run(fast, inputs)[-1]
    with torch.no_grad():
        b = run(model, inputs)[-1]
    assert torch.equal(a, b)
    m16 = CogVideoXTransformer3DModel.from_config(model.config).to(torch.bfloat16).eval()
    m16.load_state_dict(model.state_dict())
    fast16 = asymrnr_fx.transform(m16, Plan.uniform(0.5, 0.3))
    i16 = {k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    with torch.no_grad():
        out = run(fast16, i16)[-1]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
