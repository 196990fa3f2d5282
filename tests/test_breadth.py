"""Video DiTs beyond the README's families, fixed one by one (docs/coverage.md, "Root causes").

Each fixed class is built from its tiny coverage config (asymrnr_fx/evaluation/coverage/configs.py)
and checked three ways: the site is rewritten with the model's own grid, the reduced output equals
the slow reference (tests/reference.py) at two steps, and the coverage probe finds every probed
video token on the row the site assumes. Classes still left intact are checked for their reason.
Eager only; each test takes a few seconds.
"""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from asymrnr_fx import Plan  # noqa: E402
from asymrnr_fx.evaluation import coverage  # noqa: E402
from asymrnr_fx.evaluation.coverage.checking import _tensors  # noqa: E402
from asymrnr_fx.integrations import diffusers as integ  # noqa: E402
from asymrnr_fx.passes.attention_masks import video_rows_variation  # noqa: E402
from asymrnr_fx.passes.infer_grid import GridCandidate  # noqa: E402
from asymrnr_fx.report import AsymRnRWarning  # noqa: E402
from reference import RefSite, ReferenceAsymRnR, patched_sdpa  # noqa: E402
from tiny_diffusers import VideoOnlyReference, capture  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PLAN = Plan.uniform(q=0.5, kv=0.3)
GRID = (2, 4, 4)
#: passes/infer_grid.py carries an integration's text side (GridHint.text_position) into the candidates
HINT_CARRIES_TEXT_SIDE = "text_position" in {f.name for f in dataclasses.fields(GridCandidate)}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name: str, configs: str = "ours"):
    case = coverage.cases(configs)[name]
    return case, coverage.build_model(case)


def _video_site(report):
    (site,) = [s for s in report.sites if s.kind in ("self", "joint")]
    return site


def _agrees_with_reference(case, model, plan, site, inputs=None, **options):
    """``transform`` at coverage.TIMESTEPS against tests/reference.py's AsymRnR on the same calls."""
    inputs = inputs or case.inputs
    n = site.grid[0] * site.grid[1] * site.grid[2]
    fast = asymrnr_fx.transform(model, plan, **options)
    with warnings.catch_warnings():
        # HunyuanVideo 1.5: backend.py warns about its text-refiner graph before the block graph is
        # captured (docs/coverage.md); every other class here must not warn
        warnings.simplefilter("ignore" if case.name.startswith("HunyuanVideo15") else "error", AsymRnRWarning)
        with asymrnr_fx.generation(fast), torch.no_grad():
            outs = [_tensors(fast(**inputs(t))) for t in coverage.TIMESTEPS]
    text_len = site.q_len - n if site.kind == "joint" else 0
    ref = VideoOnlyReference(
        ReferenceAsymRnR(plan, [RefSite(site.grid, text_len, site.text_position == "first")]), num_video=n,
        original=F.scaled_dot_product_attention,
    )
    ref_outs = []
    with patched_sdpa(ref), torch.no_grad():
        for i, t in enumerate(coverage.TIMESTEPS):
            ref.start_forward(i)
            ref_outs.append(_tensors(model(**inputs(t))))
    with torch.no_grad():
        plain = _tensors(model(**inputs(coverage.TIMESTEPS[0])))
    for got, want in zip(outs, ref_outs):
        for x, y in zip(got, want):
            torch.testing.assert_close(x, y, atol=2e-4, rtol=2e-4)
    assert not torch.allclose(outs[0][0], plain[0]), "the rewritten site never ran"
    return fast


def _check(name, plan=PLAN, inputs=None, grid=GRID, configs="ours", **options):
    """The default report rewrites the video site on the model's grid; the probe and the reference agree."""
    case, model = _model(name, configs)
    inputs = inputs or case.inputs
    report = asymrnr_fx.inspect(model, plan=plan, **inputs(coverage.TIMESTEPS[0]))
    site = _video_site(report)
    assert site.rewrite and site.grid == coverage.expected_grid(case, model, inputs(900.0)) == grid, site
    assert coverage.geometry_problem(model, dataclasses.replace(case, inputs=inputs), report, grid) is None
    _agrees_with_reference(case, model, plan, site, inputs=inputs, **options)
    return report, site


# --------------------------------------------------------------------------- JoyImage-Edit-Plus
def test_joyimage_edit_plus_grid_is_the_target():
    report, site = _check("JoyImageEditPlusTransformer3DModel")
    assert (site.kind, site.text_len, site.text_position) == ("joint", 12, "last")


def test_joyimage_edit_plus_with_a_reference_image_is_left_intact():
    """A reference image packed after the target: the image block is not the target's grid, so no
    grid is read (the pass has no video span) and the site stays intact, with the reason."""
    case, model = _model("JoyImageEditPlusTransformer3DModel")
    inputs = case.inputs(900.0)
    inputs["hidden_states"] = torch.cat([inputs["hidden_states"], inputs["hidden_states"][:, :16]], 1)
    inputs["shape_list"] = [[(2, 4, 4), (1, 4, 4)]]
    assert integ.grid_joyimage_edit_plus(model, (), inputs) is None
    with torch.no_grad():
        model(**inputs)  # a valid call
    (site,) = asymrnr_fx.inspect(model, **inputs).sites
    assert not site.rewrite and "no video grid given or inferable" in site.reason
    padded = dict(case.inputs(900.0), hidden_states=torch.randn(1, 40, 16, 1, 2, 2))  # 8 padding tokens
    assert integ.grid_joyimage_edit_plus(model, (), padded) is None


# --------------------------------------------------------------------------- Wan-Animate 2
def test_wan_animate2_grid_from_the_latent_list():
    report, site = _check("WanAnimate2Transformer3DModel")
    assert site.kind == "self"


def test_wan_animate2_samples_of_different_grids_give_no_grid():
    case, model = _model("WanAnimate2Transformer3DModel")
    inputs = case.inputs(900.0)
    assert integ.grid_wan_animate2(model, (), inputs) == GRID
    inputs["hidden_states"] = [inputs["hidden_states"][0], torch.randn(4, 2, 8, 4)]
    assert integ.grid_wan_animate2(model, (), inputs) is None


# --------------------------------------------------------------------------- MiniMax-H3
def test_minimax_h3_grid_and_text_side_from_position_ids():
    case, model = _model("MiniMaxH3Transformer3DModel")
    hint = integ.grid_minimax_h3(model, (), case.inputs(900.0))
    assert hint == GRID and hint.text_position == "first"
    # the step is read from `timestep`, not from `timestep_indices`
    report = asymrnr_fx.inspect(model, **case.inputs(900.0))
    assert report.graphs[0].timestep in ("l_timestep_", "l_kwargs_timestep_")
    (site,) = [s for s in report.sites if s.q_len == 42]  # [4 text, 6 audio, 32 video]
    if HINT_CARRIES_TEXT_SIDE:
        assert site.rewrite and site.grid == GRID and site.text_position == "first"
    else:  # the grid is read, the side is lost in passes/infer_grid.py: left intact, saying why
        assert not site.rewrite and "no cat of 32 video and 10 text tokens upstream" in site.reason
    # the text side given by the plan: rewritten on the grid read from position_ids (no grid=)
    _, site = _check("MiniMaxH3Transformer3DModel", plan=dataclasses.replace(PLAN, text_position="first"))
    assert (site.kind, site.text_len) == ("joint", 10)


def test_minimax_h3_rows_off_the_grid_give_no_grid():
    case, model = _model("MiniMaxH3Transformer3DModel")
    inputs = case.inputs(900.0)
    pos = inputs["position_ids"].clone()
    pos[inputs["video_indices"][[3, 4]]] = pos[inputs["video_indices"][[4, 3]]]  # two video rows swapped
    assert integ.grid_minimax_h3(model, (), dict(inputs, position_ids=pos)) is None
    rolled = torch.roll(inputs["video_indices"], 1)  # video rows not in sequence order
    assert integ.grid_minimax_h3(model, (), dict(inputs, video_indices=rolled)) is None


# --------------------------------------------------------------------------- HunyuanVideo 1.5
def _hunyuan15_padded(t: float) -> dict:
    """The coverage inputs with 2 of the 6 prompt tokens padded: the joint mask's text rows differ."""
    inputs = coverage.cases()["HunyuanVideo15Transformer3DModel"].inputs(t)
    inputs["encoder_attention_mask"] = torch.tensor([[1.0, 1, 1, 1, 0, 0]])
    return inputs


def test_hunyuan_video15_mask_with_equal_video_rows_is_reduced():
    report, site = _check("HunyuanVideo15Transformer3DModel", inputs=_hunyuan15_padded)
    assert (site.kind, site.text_len, site.text_position) == ("joint", 13, "last")
    assert "video query rows 0..31 equal" in site.extra["mask"]
    refiner = next(s for s in report.sites if s.kind == "other")
    assert refiner.reason == "attention over the prompt alone (encoder_hidden_states: 6 tokens), not over the video"


def test_hunyuan_video15_explicit_grid_does_not_raise_on_the_refiner_graph():
    case, model = _model("HunyuanVideo15Transformer3DModel")
    report = asymrnr_fx.inspect(model, grid=GRID, **case.inputs(900.0))
    assert _video_site(report).rewrite


def _mask_node(gm):
    (node,) = [n for n in gm.graph.nodes if n.op == "output"]
    return node.args[0][0] if isinstance(node.args[0], (tuple, list)) else node.args[0]


def test_video_rows_analysis():
    """``a & a.mT`` of a key mask padded with True over the video: video rows equal, text rows not.
    Padded on the other side, or a causal mask: not shown, left intact."""
    n, keep = 8, torch.tensor([[1.0, 1, 0]])

    def joint(m):  # video first, then 3 text tokens (HunyuanVideo 1.5's construction)
        a = F.pad(m, (n, 0), value=True).bool().view(1, 1, 1, n + 3).repeat(1, 1, n + 3, 1)
        return a & a.transpose(2, 3)

    def text_first(m):
        a = F.pad(m, (0, n), value=True).bool().view(1, 1, 1, n + 3).repeat(1, 1, n + 3, 1)
        return a & a.transpose(2, 3)

    def causal(m):
        return torch.ones(n + 3, n + 3, dtype=torch.bool).tril() & m.bool().sum().bool()

    assert video_rows_variation(_mask_node(capture(joint, keep)), 0, n) == ""
    assert video_rows_variation(_mask_node(capture(text_first, keep)), 3, 3 + n) == ""
    assert video_rows_variation(_mask_node(capture(text_first, keep)), 0, n) != ""  # the wrong span
    assert video_rows_variation(_mask_node(capture(causal, keep)), 0, n) != ""
    rows = joint(keep)[0, 0]
    assert (rows[:n] == rows[0]).all() and not (rows[n:] == rows[0]).all()


# --------------------------------------------------------------------------- Sana-Video
def test_sana_video_says_linear_attention():
    res = coverage.check("SanaVideoTransformer3DModel", retry=False, cap=120)
    assert res.status == "not applicable" and res.why.startswith("linear attention: ")
    assert "SanaLinearAttnProcessor3_0" in res.why


# --------------------------------------------------------------------------- factorized attention, GQA over [text, video] keys
@pytest.mark.parametrize("name,kinds", [
    # spatial blocks (frames folded into the batch), temporal blocks (the spatial grid folded into it)
    ("LatteTransformer3DModel", [("self", "spatial", (1, 4, 4)), ("self", "temporal", (2, 1, 1))]),
    # generation queries over [understanding (text), generation] keys, 2 query heads on 1 key/value head
    ("Cosmos3OmniTransformer", [("joint", "", (2, 4, 4))]),
])
def test_factorized_and_gqa_classes_work_out_of_the_box(name, kinds):
    """Probe (every probed token on the row its site assumes, per-row grids), ratio 0 exact, reduced."""
    res = coverage.check(name, retry=False, cap=120)
    assert res.status == "works out of the box", f"{name}: {res.label}; {res.note}\n{res.error or ''}"
    assert "ratio 0 exact" in res.note and res.finite and res.differs and not res.warnings
    case, model = _model(name)
    report = asymrnr_fx.inspect(model, plan=PLAN, **case.inputs(coverage.TIMESTEPS[0]))
    assert [(s.kind, s.factorized, s.grid) for s in report.rewritten] == kinds


def test_cosmos3_steps_follow_its_vision_timesteps():
    """Its timestep argument is ``vision_timesteps``: the call is read by the rule that finds it in the graph,
    so the steps advance (before, every call ran as step 0: step 0's ratios and matching throughout)."""
    case, model = _model("Cosmos3OmniTransformer")
    fast = asymrnr_fx.transform(model, Plan.uniform(0.5, 0.3, cache_window=1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", AsymRnRWarning)
        for t in (*coverage.TIMESTEPS, 500.0):
            fast(**case.inputs(t))
    runtime = asymrnr_fx.runtime_of(fast)
    assert runtime.step == 2 and runtime.matching_steps() == [0, 1, 2]


def test_cosmos3_grid_only_for_one_vision_item_filling_the_tail():
    case, model = _model("Cosmos3OmniTransformer")
    inputs = case.inputs(900.0)
    assert integ.grid_cosmos3(model, (), inputs) == GRID
    assert integ.grid_cosmos3(model, (), {**inputs, "vision_sequence_indexes": inputs["vision_sequence_indexes"].flip(0)}) is None


# --------------------------------------------------------------------------- left intact, with the reason
@pytest.mark.parametrize("name,reason", [
    # their video attention is flex_attention with a block mask (read as a form, refused for the mask)
    ("AnyFlowFARTransformer3DModel", "flex_attention with a block_mask: it is built for the original token positions"),
    ("Kandinsky6SRTransformer3DModel", "flex_attention with a block_mask computed from this call's queries and keys"),
    ("HunyuanVideoFramepackTransformer3DModel", "no cat of 32 video and 45 text tokens"),  # video mid-sequence
])
def test_classes_left_intact_say_why(name, reason):
    """Each class the pass cannot reduce yet is left unreduced (never silently wrong) and says why."""
    res = coverage.check(name, retry=False, cap=120)
    assert res.status == "not applicable", f"{name}: {res.label}"
    assert reason in res.why, res.why


# --------------------------------------------------------------------------- diffusers' own test configs
def test_every_class_has_a_diffusers_test_config_or_says_none():
    names = set(coverage.video_dit_classes())
    theirs = set(coverage.cases("diffusers"))
    assert theirs <= names and names == theirs | set(coverage.NO_TEST_CONFIG), names ^ (theirs | set(coverage.NO_TEST_CONFIG))
    assert set(coverage.SOURCES) == theirs and all(f.startswith("tests/") for f in coverage.SOURCES.values())


def test_one_frame_is_reduced_with_the_stride_clamped_to_the_grid():
    """Latte as diffusers tests it: one latent frame, batch 2 (its spatial attention then sees every video
    token). The (2, 2, 2) stride has no full tile on a (1, 4, 4) grid; the site is reduced with (1, 2, 2)
    tiles and agrees with the reference, which clamps the tile on its own."""
    report, site = _check("LatteTransformer3DModel", grid=(1, 4, 4), configs="diffusers")
    assert site.kind == "self" and site.extra["stride"].startswith("(1, 2, 2)")
    assert asymrnr_fx.ops.site_stride((1, 4, 4), (2, 2, 2)) == (1, 2, 2)
    assert asymrnr_fx.ops.site_stride((3, 1, 5), (2, 2, 2)) == (2, 1, 2)


class _ByCallOrder:
    """Routes the SDPA calls numbered ``video_calls`` in each forward to the reference, the rest to SDPA
    (lengths cannot tell them apart here: every call is 8 x 8)."""

    def __init__(self, reference, video_calls, original):
        self.reference, self.video_calls, self.original, self.n = reference, video_calls, original, 0

    def start_forward(self, step):
        self.reference.start_forward(step)
        self.n = 0

    def __call__(self, **kw):
        self.n += 1
        return (self.reference if self.n - 1 in self.video_calls else self.original)(**kw)


def test_prompt_as_long_as_the_video_is_not_taken_for_it():
    """Kandinsky 5 with its pipeline test's config: 8 prompt tokens, a (2, 2, 2) grid of 8 video tokens.
    By lengths alone the text block's self-attention and the video-to-text cross-attention look like video
    self-attention; the probe flags that report, the library classifies them from their inputs, and the
    two video self-attention sites agree with the reference."""
    from types import SimpleNamespace

    case, model = _model("Kandinsky5Transformer3DModel", "diffusers")
    report = asymrnr_fx.inspect(model, **case.inputs(900.0))
    kinds = {s.path: (s.kind, s.rewrite) for s in report.sites}
    assert kinds["text_transformer_blocks.0.self_attention"] == ("other", False)
    assert report.sites[0].reason == "attention over the prompt alone (encoder_hidden_states: 8 tokens), not over the video"
    for i in (0, 1):
        assert kinds[f"visual_transformer_blocks.{i}.self_attention"] == ("self", True)
        assert kinds[f"visual_transformer_blocks.{i}.cross_attention"] == ("cross", False)
    grid = (2, 2, 2)
    assert coverage.geometry_problem(model, case, report, grid) is None
    # what lengths alone gave: five 8 x 8 "self" sites, one per call; the probe sees calls that never move
    fake = [SimpleNamespace(kind="self", q_len=8, kv_len=8, grid=grid, path=s.path, text_position=None) for s in report.sites]
    problem = coverage.probe_layout(model, case, fake, grid)
    assert problem and "never sees the video latents" in problem
    # the reference, on the two video self-attention calls (every other call runs unreduced)
    plan = PLAN
    fast = asymrnr_fx.transform(model, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AsymRnRWarning)
        with asymrnr_fx.generation(fast), torch.no_grad():
            outs = [_tensors(fast(**case.inputs(t))) for t in coverage.TIMESTEPS]
    ref = _ByCallOrder(ReferenceAsymRnR(plan, [RefSite(grid), RefSite(grid)]), video_calls=(1, 3),
                       original=F.scaled_dot_product_attention)
    ref_outs = []
    with patched_sdpa(ref), torch.no_grad():
        for i, t in enumerate(coverage.TIMESTEPS):
            ref.start_forward(i)
            ref_outs.append(_tensors(model(**case.inputs(t))))
    for got, want in zip(outs, ref_outs):
        torch.testing.assert_close(got[0], want[0], atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("name,status,why", [
    ("CogVideoXTransformer3DModel", "works out of the box", ""),  # one frame, batch 2, two layers
    # positions (0, i % 4, i % 2) for 8 video rows are no grid: grid_minimax_h3 reads none, the site stays intact
    ("MiniMaxH3Transformer3DModel", "not applicable", "no video grid given or inferable"),
    # a one-token target and a one-token reference image: nothing to reduce, no grid read
    ("JoyImageEditPlusTransformer3DModel", "not applicable", "no video grid given or inferable"),
])
def test_diffusers_test_configs(name, status, why):
    res = coverage.check(name, retry=False, cap=120, configs="diffusers")
    assert res.status == status and why in res.why, f"{name}: {res.label}; {res.note}\n{res.error or ''}"
    if status == "works out of the box":
        assert "ratio 0 exact" in res.note and res.finite and res.differs and not res.warnings
