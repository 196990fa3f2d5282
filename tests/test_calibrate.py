"""Calibration, sensitivity, budgeted/tiered plans and heatmaps on the hand-written DiT and a tiny CogVideoX."""
import math

import pytest
import torch

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.calibration import Calibration
from asymrnr_fx.calibration import (
    RecordingRuntime,
    SwitchableRuntime,
    budget,
    calibrate,
    euler,
    measure_sensitivity,
    plan_for_budget,
    plan_for_speedup,
    plot_calibration,
    plot_plan,
)
from asymrnr_fx.ops import kept_count, max_ratio
from asymrnr_fx.testing import TinyVideoDiT

STEPS, WINDOW = 8, 4
GRID = (4, 6, 6)
TIMESTEPS = torch.linspace(999, 1, STEPS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread for the module's fixtures too: tiny ops on a shared 2-core machine crawl with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- hand-written DiT
@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return TinyVideoDiT(dim=32, heads=4, depth=2, frames=4, height=12, width=12).eval()


@pytest.fixture(scope="module")
def dit_inputs():
    return [{"hidden_states": torch.randn(2, 4, 4, 12, 12, generator=torch.Generator().manual_seed(i))} for i in range(2)]


def dit_calibration(model, inputs, **kw):
    return calibrate(model, inputs=inputs, timesteps=TIMESTEPS, plan=Plan(cache_window=WINDOW, **kw.pop("opts", {})), **kw)


@pytest.fixture(scope="module")
def dit_cal(dit, dit_inputs):
    torch._dynamo.reset()
    return dit_calibration(dit, dit_inputs)


@pytest.fixture(scope="module")
def dit_cal_sens(dit, dit_inputs, dit_cal):
    torch._dynamo.reset()
    return measure_sensitivity(dit, dit_cal, inputs=dit_inputs, timesteps=TIMESTEPS)


def test_calibration_shape_and_statistics(dit_cal):
    cal = dit_cal
    assert (cal.num_sites, cal.num_steps) == (2, STEPS)
    assert cal.sites == ["blocks.0", "blocks.1"]
    assert bool(cal.valid().all())
    # every call of both sites at every step of both generations was recorded (2 generations)
    assert torch.equal(cal.stats["count"], torch.full((2, STEPS, 2), 2.0, dtype=torch.float64))
    cos = cal.redundancy("q")
    assert bool(((cos > -1) & (cos <= 1)).all())
    frac = cal.statistic("frac_above", "kv")
    assert bool((frac[..., :-1] >= frac[..., 1:]).all())  # higher thresholds, fewer tokens
    curve = cal.statistic("distortion", "q")
    assert bool((curve[..., 1:] >= curve[..., :-1]).all()) and bool((curve >= 0).all())
    assert cal.curve_ratios[-1] == max_ratio((2, 2, 2))
    assert torch.allclose(cal.distortion("q", 0.0), torch.zeros(2, STEPS, dtype=torch.float64))
    assert torch.allclose(cal.distortion("q", cal.curve_ratios[2]), curve[..., 2])


def test_calibration_with_a_window_records_the_windowed_matching(dit, dit_inputs, dit_cal):
    """The score and cosine statistics come from the plan's own matching (before: always the global one)."""
    from asymrnr_fx import ops
    from asymrnr_fx.calibration.recording import match_statistics
    from reference import ref_match_one

    stride, window = (2, 2, 2), (0, 0, 0)  # the own tile only: (4, 6, 6) has 2 x 3 x 3 tiles
    x = torch.randn(1, 2, math.prod(GRID), 8, generator=torch.Generator().manual_seed(3))
    dst, src = ops.partition(GRID, stride, ops.draw_tile_choices(GRID, stride, 0))
    stats = match_statistics(x, dst, src, "euclidean", None, (0.5,), (GRID, stride, window))
    cos = [torch.nn.functional.cosine_similarity(x[0, h, src], x[0, h, dst[ref_match_one(
        x[0, h], dst.tolist(), src.tolist(), "euclidean", window, GRID, stride)[0]]], dim=-1) for h in range(2)]
    torch.testing.assert_close(stats["cos_mean"], torch.cat(cos).mean())
    cal = dit_calibration(dit, dit_inputs, opts={"window": window})
    assert not torch.equal(cal.statistic("cos_mean", "q"), dit_cal.statistic("cos_mean", "q"))
    with pytest.raises(ValueError, match="shards=1"):
        dit_calibration(dit, dit_inputs, opts={"shards": 2})


def test_recording_leaves_outputs_unchanged(dit, dit_inputs):
    x = dit_inputs[0]["hidden_states"]
    rec = asymrnr_fx.transform(dit, runtime=RecordingRuntime(Plan.uniform(0.5, 0.5, cache_window=WINDOW)))
    with torch.no_grad():
        ref, out = euler(dit, {"hidden_states": x}, TIMESTEPS), euler(rec, {"hidden_states": x}, TIMESTEPS)
    assert rec.report.graphs[0].grid == GRID and len(rec.report.rewritten) == 2
    assert rec.runtime.recorder.counts  # it did record
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_calibration_is_deterministic_for_a_seed(dit, dit_inputs, dit_cal):
    again = dit_calibration(dit, dit_inputs)
    for name, t in dit_cal.stats.items():
        torch.testing.assert_close(again.stats[name], t, rtol=0, atol=0, equal_nan=True, msg=name)
    other_seed = dit_calibration(dit, dit_inputs, opts={"seed": 1})
    assert not torch.equal(other_seed.stats["distortion"], dit_cal.stats["distortion"])


def test_sampled_heads_give_stable_statistics(dit, dit_inputs, dit_cal):
    a = dit_calibration(dit, dit_inputs, heads=[0, 1])
    b = dit_calibration(dit, dit_inputs, heads=[2, 3])
    for feature in ("q", "kv"):
        ra, rb = a.redundancy(feature), b.redundancy(feature)
        assert (ra - rb).abs().max() < 0.05, feature  # mean matched cosine, two disjoint head pairs
        assert (ra.mean() - rb.mean()).abs() < 0.02
        da, db = a.distortion(feature, 0.5), b.distortion(feature, 0.5)
        assert (da - db).abs().max() < 0.25 * float(dit_cal.distortion(feature, 0.5).mean()), feature
    # the budgeted plans built from either half agree closely
    pa, pb = plan_for_budget(a, 0.6), plan_for_budget(b, 0.6)
    assert abs(budget.expected_error(pa, dit_cal) - budget.expected_error(pb, dit_cal)) < 0.1 * budget.expected_error(pa, dit_cal)
    sampled = dit_calibration(dit, dit_inputs, heads=2, batch=1)
    assert sampled.info["heads"] == 2 and bool(sampled.valid().all())


# --------------------------------------------------------------------------- budgets
def window_constant(table):
    return all(bool((table[:, a:a + WINDOW] == table[:, a:a + 1]).all()) for a in range(0, STEPS, WINDOW))


def realized_cost(plan, num_video=GRID[0] * GRID[1] * GRID[2]):
    """Cost from the token counts the runtime actually keeps (floor(N (1 - r)))."""
    keep = {f: plan.table(f).apply_(lambda r: kept_count(num_video, r) / num_video) for f in ("q", "kv")}
    return float((keep["q"] * keep["kv"]).mean())


@pytest.mark.parametrize("cost", [0.95, 0.7, 0.6, 0.4, 0.1, 1 / 64])
def test_budgeted_plans_meet_the_budget(dit_cal_sens, cost):
    plan = plan_for_budget(dit_cal_sens, attention_cost=cost)
    assert abs(plan.attention_cost() - cost) <= 0.02 * cost
    assert abs(realized_cost(plan) - cost) <= 0.02 * cost + 1 / 144
    top = max_ratio(plan.stride)
    for f in ("q", "kv"):
        t = plan.table(f)
        assert float(t.max()) <= top and float(t.min()) >= 0
        assert window_constant(t)
    dit_cal_sens.check_plan(plan)
    assert plan.cache_window == WINDOW and plan.stride == (2, 2, 2)


def test_budget_prefers_redundant_cheap_cells_and_speedup_matches_cost_model(dit_cal_sens):
    cal = dit_cal_sens
    calibrated = plan_for_budget(cal, 0.6)
    uniform = Plan.from_table(torch.full((2, STEPS), 0.4), torch.zeros(2, STEPS), **cal.plan_options())
    assert budget.expected_error(calibrated, cal) <= budget.expected_error(uniform, cal) + 1e-15
    plan = plan_for_speedup(cal, speedup=1.25, attention_share=0.6)
    assert budget.speedup_for_cost(plan.attention_cost(), 0.6) == pytest.approx(1.25, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.5, float("nan"), 0.01])
def test_bad_budgets_fail_naming_the_reachable_range(dit_cal, bad):
    with pytest.raises(ValueError, match=r"[Rr]eachable range.*0\.01562, 1"):
        plan_for_budget(dit_cal, attention_cost=bad)


def test_unreachable_speedup_fails_naming_the_range(dit_cal):
    with pytest.raises(ValueError, match=r"from 1\.0 .* to 1\.9"):
        plan_for_speedup(dit_cal, speedup=3.0, attention_share=0.5)
    with pytest.raises(ValueError, match="attention_share"):
        plan_for_speedup(dit_cal, speedup=1.1, attention_share=1.5)


def test_mismatched_plans_and_models_fail_clearly(dit, dit_inputs, dit_cal, tmp_path):
    published = Plan.published("cogvideox-2b", "base")
    with pytest.raises(ValueError, match=r"30 sites x 50 steps .* 2 sites x 8 steps"):
        dit_cal.check_plan(published)
    with pytest.raises(ValueError, match="30 sites x 50 steps"):
        budget.expected_error(published, dit_cal)
    with pytest.raises(ValueError, match="30 sites x 50 steps"):
        plot_calibration(dit_cal, tmp_path / "x.png", plan=published)
    with pytest.raises(ValueError, match="covers 8 denoising steps but this run took 6"):
        measure_sensitivity(dit, dit_cal, inputs=dit_inputs[:1], timesteps=TIMESTEPS[:6])


# --------------------------------------------------------------------------- sensitivity and tiers
def test_sensitivity_weights_reproduce_the_probes(dit_cal_sens):
    cal = dit_cal_sens
    sens = cal.sensitivity
    assert sens.error.shape == (2, 2, 2) and bool((sens.error > 0).all())  # 2 site groups x 2 windows x (q, kv)
    for f_i, f in enumerate(("q", "kv")):
        w = sens.weights(cal, f)
        proxy = cal.distortion(f, sens.probe_ratio)
        for g, sites in enumerate(sens.site_groups):
            for r, (a, b) in enumerate(sens.step_ranges):
                predicted = float((w[sites, a:b] * proxy[sites, a:b]).sum())
                assert predicted == pytest.approx(float(sens.error[g, r, f_i]), rel=1e-9)


def test_sensitivity_measures_how_error_grows_with_the_ratio(dit_cal_sens):
    cal = dit_cal_sens
    sens = cal.sensitivity
    assert sens.shape_ratios == (0.25, 0.5, 0.75, max_ratio((2, 2, 2)))
    assert sens.shape_error.shape == (2, 4) and bool((sens.shape_error[:, 1:] > sens.shape_error[:, :-1]).all())
    for f in ("q", "kv"):
        assert float(sens.scale(cal, f, sens.probe_ratio)) == pytest.approx(1.0)
        scale = sens.scale(cal, f, torch.tensor(cal.curve_ratios))
        assert bool((scale > 0).all()) and bool(torch.isfinite(scale).all())
    # the model of expected error predicts the whole-model probes it was not fitted to within a factor 2
    for f_i, f in enumerate(("q", "kv")):
        for k, r in enumerate(sens.shape_ratios):
            plan = Plan.uniform(r if f == "q" else 0.0, r if f == "kv" else 0.0, **cal.plan_options())
            assert 0.5 < budget.expected_error(plan, cal) / float(sens.shape_error[f_i, k]) < 2.0, (f, r)


def test_paper_style_tiers_and_published_maps(dit_cal):
    t = budget.tiers(dit_cal, "q")
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) <= 9 and window_constant(t)
    assert len(set(t.flatten().tolist())) == 4  # 4 (site, window) units, distinct ranks
    absolute = budget.tiers(dit_cal, "kv", method="absolute")
    assert bool((absolute == (budget.window_mean(dit_cal.redundancy("kv"), dit_cal) * 10).floor().clamp(0, 9).long()).all())
    plan = budget.plan_like_published(dit_cal, "cogvideox-2b:base")
    assert set(plan.table("q").unique().tolist()) <= {0.0, 0.4, 0.8}
    assert set(plan.table("kv").unique().tolist()) <= {0.0, 0.3}
    assert plan.stride == (2, 2, 2) and plan.cache_window == WINDOW
    custom = budget.plan_from_tiers(dit_cal, {0: 0.5}, {5: 0.25})
    assert bool((custom.table("q") == 0.5).all())
    with pytest.raises(ValueError, match="known"):
        budget.plan_like_published(dit_cal, "cogvideox-5b:base")


# --------------------------------------------------------------------------- persistence and cache
def test_save_load_round_trip(dit_cal_sens, tmp_path):
    cal = dit_cal_sens
    back = Calibration.load(cal.save(tmp_path / "cal.safetensors"))
    assert back.sites == cal.sites and back.options == cal.options and back.curve_ratios == cal.curve_ratios
    assert back.info == cal.info
    for name, t in cal.stats.items():
        torch.testing.assert_close(back.stats[name], t, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(back.sensitivity.error, cal.sensitivity.error)
    assert back.sensitivity.site_groups == cal.sensitivity.site_groups
    assert back.sensitivity.step_ranges == cal.sensitivity.step_ranges
    plan = plan_for_budget(back, 0.6)
    assert torch.equal(plan.table("q"), plan_for_budget(cal, 0.6).table("q"))
    loaded = Plan.load(plan.save(tmp_path / "plan.safetensors"))
    assert torch.equal(loaded.table("q"), plan.table("q")) and torch.equal(loaded.table("kv"), plan.table("kv"))
    assert loaded.options() == plan.options()
    with pytest.raises(ValueError, match="not an asymrnr_fx calibration"):
        Calibration.load(tmp_path / "plan.safetensors")


def test_cache_reuses_and_keys_on_inputs(dit, dit_inputs, dit_cal, tmp_path):
    first = dit_calibration(dit, dit_inputs, cache_dir=tmp_path)
    files = list(tmp_path.glob("calibration-*.safetensors"))
    assert len(files) == 1 and first.key in files[0].name
    second = dit_calibration(dit, dit_inputs, cache_dir=tmp_path)  # no model run: loaded
    assert second.info["seconds"] == first.info["seconds"] and torch.equal(second.stats["count"], first.stats["count"])
    other = dit_calibration(dit, dit_inputs[:1], cache_dir=tmp_path)
    assert other.key != first.key and len(list(tmp_path.glob("calibration-*.safetensors"))) == 2


# --------------------------------------------------------------------------- heatmaps and CLI
def _is_png(path):
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmaps_are_written(dit_cal_sens, tmp_path):
    plan = plan_for_budget(dit_cal_sens, 0.6)
    assert _is_png(asymrnr_fx.calibration.plot_plan(plan, tmp_path / "plan.png"))
    assert _is_png(asymrnr_fx.calibration.plot_calibration(dit_cal_sens, tmp_path / "cal.png", plan=plan))
    assert _is_png(plot_plan(Plan.published("cogvideox-2b", "base"), tmp_path / "published.png"))
    assert _is_png(plot_plan(Plan.uniform(0.5, 0.3), tmp_path / "uniform.png", num_sites=4, num_steps=10))


def test_cli_plot_accepts_plans_calibrations_and_published_names(dit_cal, tmp_path):
    from asymrnr_fx.cli import main

    dit_cal.save(tmp_path / "cal.safetensors")
    plan_for_budget(dit_cal, 0.7).save(tmp_path / "plan.safetensors")
    for source, out in [
        (str(tmp_path / "cal.safetensors"), "a.png"),
        (str(tmp_path / "plan.safetensors"), "b.png"),
        ("published:cogvideox-2b:base", "c.png"),
        ("published:mochi", "d.png"),
    ]:
        assert main(["plot", source, "--out", str(tmp_path / out)]) == 0
        assert _is_png(tmp_path / out), source


def test_cli_calibrate_writes_calibration_plan_and_heatmaps(tmp_path, capsys):
    from asymrnr_fx.cli import main

    out = tmp_path / "out"
    argv = ["calibrate", "--model", "tiny-dit", "--generations", "1", "--steps", "4", "--cache-window", "2",
            "--out", str(out), "--budget", "0.6", "--cache-dir", str(tmp_path / "cache"), "--published", "cogvideox-2b:fast"]
    assert main(argv) == 0
    cal = Calibration.load(out / "calibration.safetensors")
    plan = Plan.load(out / "plan.safetensors")
    assert (cal.num_sites, cal.num_steps) == (4, 4) and cal.sensitivity is not None
    assert plan.attention_cost() == pytest.approx(0.6, rel=0.02)
    cal.check_plan(plan)
    for name in ("plan.png", "calibration.png", "plan_published_map.png"):
        assert _is_png(out / name), name
    assert "expected error" in capsys.readouterr().out


# --------------------------------------------------------------------------- diffusers CogVideoX
diffusers = pytest.importorskip("diffusers")
FRAMES, HEIGHT, WIDTH, TEXT = 4, 12, 12, 8


@pytest.fixture(scope="module")
def cog():
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, num_layers=2,
        text_embed_dim=32, time_embed_dim=16, sample_frames=(FRAMES - 1) * 4 + 1, sample_height=HEIGHT,
        sample_width=WIDTH, patch_size=2, max_text_seq_length=TEXT, use_rotary_positional_embeddings=True,
    ).eval()
    rope = get_3d_rotary_pos_embed(16, ((0, 0), GRID[1:]), GRID[1:], FRAMES)
    return model, rope


def cog_generation(outputs):
    """A ``run(model, index)`` callable: one Euler run from seed ``index``; keeps each output."""

    def run(model, index):
        g = torch.Generator().manual_seed(index)
        x = torch.randn(2, FRAMES, 4, HEIGHT, WIDTH, generator=g)
        text = torch.randn(2, TEXT, 32, generator=g)
        inputs = {"hidden_states": x, "encoder_hidden_states": text, "image_rotary_emb": run.rope, "return_dict": False}
        x = euler(model, inputs, STEPS)
        outputs.append(x)
        return x

    return run


def test_cogvideox_calibration_is_deterministic_and_leaves_outputs_unchanged(cog):
    model, rope = cog
    outs_a, outs_b, plain = [], [], []
    run_a, run_b, run_plain = cog_generation(outs_a), cog_generation(outs_b), cog_generation(plain)
    for r in (run_a, run_b, run_plain):
        r.rope = rope
    opts = Plan(cache_window=WINDOW)
    a = calibrate(model, run_a, generations=2, plan=opts, name="cogvideox-tiny")
    torch._dynamo.reset()
    b = calibrate(model, run_b, generations=2, plan=opts)
    with torch.no_grad():
        for i in range(2):
            run_plain(model, i)
    assert (a.num_sites, a.num_steps) == (2, STEPS) and all(s.startswith("transformer_blocks.") for s in a.sites)
    for name, t in a.stats.items():
        torch.testing.assert_close(b.stats[name], t, rtol=0, atol=0, equal_nan=True, msg=name)
    for x, y in zip(outs_a, plain):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    plan = plan_for_budget(a, 0.7)
    assert abs(plan.attention_cost() - 0.7) <= 0.014 and float(plan.table("q").max()) <= max_ratio(plan.stride)
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        out = cog_generation([])
        out.rope = rope
        reduced = out(fast, 0)
    assert torch.isfinite(reduced).all() and not torch.equal(reduced, plain[0])
    assert math.isfinite(budget.expected_error(plan, a))


def test_pipeline_calibration_restores_the_transformer_and_its_outputs():
    from tiny_diffusers import tiny_pipeline

    tp = tiny_pipeline("cogvideox", layers=2)
    original = tp.pipe.transformer
    with torch.no_grad():
        ref = tp(generator=torch.Generator().manual_seed(0)).frames
    outputs = []

    def generation(pipe, index):
        out = pipe(**{**tp.call, "generator": torch.Generator().manual_seed(index)})
        outputs.append(out.frames)
        return out

    cal = calibrate(tp.pipe, generation, generations=1)
    assert tp.pipe.transformer is original
    assert torch.equal(outputs[0], ref)
    assert (cal.num_sites, cal.num_steps) == (2, tp.call["num_inference_steps"]) and bool(cal.valid().all())
    cal = measure_sensitivity(tp.pipe, cal, generation, generations=1)
    assert tp.pipe.transformer is original and bool((cal.sensitivity.error > 0).all())
    plan = plan_for_budget(cal, 0.5)
    assert plan.attention_cost() == pytest.approx(0.5, rel=0.02)
    asymrnr_fx.apply(tp.pipe, plan)
    with torch.no_grad():
        reduced = tp(generator=torch.Generator().manual_seed(0)).frames
    asymrnr_fx.remove(tp.pipe)
    assert reduced.shape == ref.shape and torch.isfinite(reduced).all()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a safetensors file", "is not a readable asymrnr_fx calibration"),
        ("{not json", "is a damaged asymrnr_fx calibration .JSONDecodeError"),
        ("[" * 100_000 + "]" * 100_000, "is a damaged asymrnr_fx calibration .RecursionError"),
        ('{"sites": ["a"]}', "is a damaged asymrnr_fx calibration .KeyError: 'options'"),
        ('{"sites": 3, "options": {}, "curve_ratios": []}', "is a damaged asymrnr_fx calibration .TypeError"),
    ],
    ids=["junk", "bad-json", "deep-json", "missing-key", "wrong-type"],
)
def test_damaged_calibration_files_name_the_file(tmp_path, content, message):
    """A damaged or hostile calibration file is a ValueError naming the file and the fix, never a bare parser error."""
    from safetensors.torch import save_file

    from asymrnr_fx.calibration.result import META_KEY

    path = tmp_path / "cal.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        save_file({"stats.x": torch.zeros(1)}, str(path), metadata={META_KEY: content})
    with pytest.raises(ValueError, match=message) as raised:
        Calibration.load(path)
    assert str(path) in str(raised.value) and "re-run asymrnr_fx.calibration.calibrate()" in str(raised.value)


def test_switching_plans_on_a_captured_graph_accepts_other_ratios_only():
    """The probes switch ratios on one captured graph; an option baked into the graph or the partitions
    must not be switched silently, while a name is only a label."""
    runtime = SwitchableRuntime(Plan.uniform(0.5, 0.5))
    runtime.use(Plan.uniform(0.3, 0.1, name="another"))
    assert runtime.active.q == Plan.uniform(0.3, 0.1).q
    for option in ({"window": (0, 1, 1)}, {"cache_window": 2}, {"seed": 3}, {"similarity": "cosine"}):
        with pytest.raises(ValueError, match=f"plan option {next(iter(option))}="):
            runtime.use(Plan.uniform(0.3, 0.1, **option))
    assert runtime.active.q == Plan.uniform(0.3, 0.1).q  # a refused plan leaves the active one
    # a feature the captured plan never reduced has no selection in the graph: refused, not dropped
    q_only = SwitchableRuntime(Plan.from_table(q=[[0.5, 0.5], [0.5, 0.5]], kv=[[0.3, 0.3], [0.0, 0.0]]))
    q_only.use(Plan.uniform(0.2, 0.0))
    with pytest.raises(ValueError, match="reduces kv at site 1, which the captured plan never reduced"):
        q_only.use(Plan.uniform(0.2, 0.1))
