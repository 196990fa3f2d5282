"""Real diffusers pipelines (CogVideoX, HunyuanVideo, Wan, Mochi, LTX) end to end on CPU with tiny components.

No callback anywhere: the step and each new generation are read off the timestep the
pipeline passes to its transformer. Five steps with cache window 3 cross one window
boundary (matching at steps 0 and 3).
"""
from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import asymrnr_fx  # noqa: E402
from asymrnr_fx import Plan  # noqa: E402
from tiny_diffusers import FAMILIES, changing_plan, tiny_pipeline  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*[Aa]utocast"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
torch.set_num_threads(1)

STEPS = 5
PLAN = Plan.uniform(0.5, 0.3, cache_window=3)
#: Families whose pipeline runs the conditional and unconditional batch as separate calls.
SEPARATE_CFG = {"hunyuanvideo": {"true_cfg_scale": 2.0}, "wan": {}}
#: Decoded video shape per family (pipelines return [B, F, C, H, W] for output_type="pt").
VIDEO_SHAPES = {
    "cogvideox": (1, 16, 3, 32, 32),
    "hunyuanvideo": (1, 13, 3, 16, 16),
    "wan": (1, 13, 3, 64, 64),
    "mochi": (1, 19, 3, 64, 64),
    "ltx": (1, 9, 3, 32, 32),
}


def generate(tp, **kw):
    args = {"num_inference_steps": STEPS, "output_type": "latent", **SEPARATE_CFG.get(tp.family, {}), **kw}
    return tp(generator=torch.Generator().manual_seed(0), **args).frames


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_end_to_end(family):
    tp = tiny_pipeline(family)
    pipe, original = tp.pipe, tp.pipe.transformer
    ref = generate(tp)

    asymrnr_fx.apply(pipe, Plan.uniform(0.0, 0.0, cache_window=3), fullgraph=True)
    with pytest.warns(asymrnr_fx.AsymRnRWarning):
        assert torch.equal(generate(tp), ref)  # ratio 0: exactly the pipeline's own output

    asymrnr_fx.apply(pipe, PLAN, fullgraph=True)
    fast = pipe.transformer
    assert fast.model is original and fast.config is original.config and fast.dtype == original.dtype
    assert pipe.config.transformer[1] == type(original).__name__  # the pipeline's config is untouched
    torch._dynamo.utils.counters.clear()
    out = generate(tp)
    rt = fast.runtime
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1 and len(rt.reports) == 1
    assert rt.generation == 0 and rt.step == STEPS - 1 and rt.matching_steps() == [0, 3]
    if family in SEPARATE_CFG:  # cond and uncond calls keep their own matchings
        assert {ctx for ctx, _, _ in rt.cache} == {"cond", "uncond"}

    first_state = rt.last_state
    again = generate(tp)  # second pipeline call: a generation of its own, fresh matching at its step 0
    assert rt.last_state is not first_state and rt.matching_steps() == [0, 3]
    first = next(e for e in rt.events if e.state == rt.last_state.uid)
    assert first.step == 0 and first.kind == "match"
    assert rt.default_state().cache == {}  # apply() never touched the implicit state
    assert torch.equal(again, out)  # same seed, same prompt: a cache carried over would show here

    video = tp(generator=torch.Generator().manual_seed(0), num_inference_steps=2,
               **SEPARATE_CFG.get(family, {})).frames  # decoded through the VAE
    assert tuple(video.shape) == VIDEO_SHAPES[family] and torch.isfinite(video).all()
    assert len({e.state for e in rt.events}) == 3  # one generation per pipeline call

    asymrnr_fx.remove(pipe)
    assert pipe.transformer is original and torch.equal(generate(tp), ref)


@pytest.mark.parametrize("family", ["cogvideox", "wan", "mochi"])
def test_pipeline_bfloat16_two_videos(family):
    """bfloat16 weights and activations, two prompts (batch 4 under CFG for CogVideoX and Mochi)."""
    tp = tiny_pipeline(family, dtype=torch.bfloat16)
    two = {"prompt": ["a cat walking in the garden", "a red car on the road"], "negative_prompt": ["dark"] * 2}
    ref = generate(tp, **two)
    asymrnr_fx.apply(tp.pipe, PLAN, fullgraph=True)
    out = generate(tp, **two)
    rt = tp.pipe.transformer.runtime
    assert out.shape == ref.shape and out.dtype == torch.bfloat16 == ref.dtype
    assert torch.isfinite(out.float()).all() and not torch.equal(out, ref)
    assert rt.matching_steps() == [0, 3]
    # batch per matching: CFG doubles CogVideoX's 2 videos; Wan runs cond/uncond apart; Mochi loops per sample
    batch = {"cogvideox": 4, "wan": 2, "mochi": 1}[family]
    assert all(e.matching.nearest.shape[0] == batch for e in rt.cache.values())


def test_pipeline_inductor_agrees_with_eager():
    """CogVideoX with compile=True: ratios change at every step, inductor compiles once for the whole run."""
    tp = tiny_pipeline("cogvideox")
    plan = changing_plan(1, steps=STEPS, window=3)
    asymrnr_fx.apply(tp.pipe, plan)
    eager = generate(tp)
    asymrnr_fx.apply(tp.pipe, plan, compile=True, fullgraph=True)
    torch._dynamo.utils.counters.clear()
    compiled = generate(tp)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert asymrnr_fx.pipelines.runtimes(tp.pipe)["transformer"].matching_steps() == [0, 3]
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_apply_needs_a_transformer():
    class NotAPipeline:
        unet = None

    with pytest.raises(ValueError, match="has none of"):
        asymrnr_fx.apply(NotAPipeline(), PLAN)


def test_wan22_two_experts_each_get_their_own_runtime():
    """Wan 2.2 A14B-style: ``transformer`` above the boundary timestep, ``transformer_2`` below; both rewritten."""
    import diffusers

    from asymrnr_fx.testing.pipelines import tiny_transformer

    tp = tiny_pipeline("wan")
    pipe = diffusers.WanPipeline(
        tokenizer=tp.pipe.tokenizer, text_encoder=tp.pipe.text_encoder, vae=tp.pipe.vae, scheduler=tp.pipe.scheduler,
        transformer=tp.pipe.transformer, transformer_2=tiny_transformer("wan", seed=5), boundary_ratio=0.75,
    )
    pipe.set_progress_bar_config(disable=True)
    tp.pipe = pipe
    ref = generate(tp, num_inference_steps=8)
    asymrnr_fx.apply(pipe, PLAN, fullgraph=True)
    out = generate(tp, num_inference_steps=8)
    rts = asymrnr_fx.pipelines.runtimes(pipe)
    assert set(rts) == {"transformer", "transformer_2"} and not torch.equal(out, ref)
    # 8 steps, boundary t=750: 4 steps each; each expert counts its own steps from its first call
    assert all(rt.matching_steps() == [0, 3] for rt in rts.values()), {k: rt.matching_steps() for k, rt in rts.items()}
    asymrnr_fx.remove(pipe)
    assert torch.equal(generate(tp, num_inference_steps=8), ref)


def test_steps_follow_the_scheduler_when_timesteps_repeat():
    """Neighbouring timesteps can be equal in the model's dtype (HunyuanVideo's 50 steps in bfloat16: 997.1 and
    994.1 both 996). A pipeline given to apply() counts its scheduler's steps, so each step keeps its own plan
    step; before, the repeat merged two steps and every later step ran one plan step early. Here the repeat is
    made explicit: sigmas 1.0, 0.6, 0.6, 0.2 give timesteps 1000, 600, 600, 200, with true CFG (two calls per
    step, each in its cache context)."""
    tp = tiny_pipeline("hunyuanvideo")
    plan = Plan.uniform(0.5, 0.3, cache_window=1)
    asymrnr_fx.apply(tp.pipe, plan)
    tp(num_inference_steps=4, sigmas=[1.0, 0.6, 0.6, 0.2], output_type="latent", generator=torch.Generator().manual_seed(0),
       **SEPARATE_CFG["hunyuanvideo"])
    runtime = asymrnr_fx.runtime_of(tp.pipe)
    assert runtime.matching_steps() == [0, 1, 2, 3]
    asymrnr_fx.remove(tp.pipe)
    assert "step" not in vars(tp.pipe.scheduler)  # the scheduler's own step again


def test_a_timestep_repeated_beyond_a_steps_calls_warns_in_a_loop_of_ones_own():
    """Outside a pipeline the clock can only read timesteps: a repeat is a step's next call (CFG as two calls),
    unless a step makes more calls than step 0 did, which is what two steps merged by rounding look like."""
    from tiny_diffusers import step_inputs, tiny_transformer, transformer_inputs

    fast = asymrnr_fx.transform(tiny_transformer("wan"), Plan.uniform(0.5, 0.3, cache_window=1))
    inputs = transformer_inputs("wan")
    with torch.no_grad(), pytest.warns(asymrnr_fx.AsymRnRWarning, match="600 came in 2 calls in a row at step 1"):
        for i, t in enumerate((900.0, 600.0, 600.0, 300.0)):
            fast(**step_inputs(inputs, t, i))
    with torch.no_grad(), asymrnr_fx.generation(fast), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        for i, t in enumerate((900.0, 900.0, 600.0, 600.0)):  # two calls a step from the start: no warning
            fast(**step_inputs(inputs, t, i // 2))
