"""The command line: demo and bench in reduced mode, and the method plans they compare."""
import argparse
import csv
import json
import math
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from asymrnr_fx import cli
from asymrnr_fx.calibration import Calibration
from asymrnr_fx.commands import demo
from asymrnr_fx.evaluation.compare import METHODS, method_plan
from asymrnr_fx.evaluation.metrics import psnr
from asymrnr_fx.evaluation.targets import toy_prompts
from asymrnr_fx.plan import Plan
from asymrnr_fx.toy import newest_weights as newest_toy_weights
from asymrnr_fx.toy import shipped_weights as toy_weights_files


@pytest.mark.parametrize("cost", [0.6, 0.35])
@pytest.mark.parametrize("method", METHODS)
def test_method_plans_keep_the_requested_attention_cost(method, cost):
    plan = method_plan(method, cost)
    q, kv = plan.ratio(0, 0, "q"), plan.ratio(0, 0, "kv")
    kept = (1 - q) ** 2 if plan.symmetric else (1 - q) * (1 - kv)
    assert kept == pytest.approx(cost) and plan.attention_cost() == pytest.approx(cost)
    if method == "todo":
        assert q == 0 and plan.mode == "mean" and plan.similarity == "spatial"


def test_psnr_against_formula():
    a = torch.zeros(1, 2, 3, 8, 8)
    b = a + 0.1
    assert psnr(a, a, data_range=2.0) == math.inf
    assert psnr(a, b, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01), rel=1e-6)


def test_demo_quick_writes_gif_and_table(tmp_path, capsys, monkeypatch):
    # the [demo] extra has no transformers: make any import of it on the demo's path fail. diffusers, installed
    # here beside transformers, imports it while loading its CogVideoX class (a [demo]-only install's diffusers
    # knows it is absent): loaded first, so the test does not depend on whether an earlier test loaded it
    import diffusers.models.transformers.cogvideox_transformer_3d  # noqa: F401

    monkeypatch.setitem(sys.modules, "transformers", None)
    assert cli.main(["demo", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    gif, table = tmp_path / "baseline_asymrnr_diff.gif", (tmp_path / "table.md").read_text()
    assert gif.stat().st_size > 1000 and "speedup" in table
    with Image.open(gif) as im:  # baseline + 2 AsymRnR rows + their difference rows, 4x upscaled, labelled
        assert im.n_frames >= 8 and im.height > 5 * 4 * 24
    for attribute in ("colour", "shape", "direction"):
        assert f"prompt accuracy: {attribute}" in table
    assert table.count("/2)") >= 12  # every accuracy cell says out of how many prompts
    assert "AsymRnR calibrated" in table and "AsymRnR uniform" in table
    out = capsys.readouterr().out
    assert "prompt accuracy" in out
    shipped = demo.plan_path(newest_toy_weights())
    if shipped.exists():  # the shipped 20-step plan, resampled onto the quick mode's 4 steps
        assert f"shipped {shipped.name}, resampled from 20 to 4 steps" in out


def _weights_metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


@pytest.mark.parametrize("weights", toy_weights_files(), ids=lambda p: p.name)
def test_shipped_plan_fits_the_shipped_weights(weights):
    plan_file = demo.plan_path(weights)
    assert plan_file.exists(), f"no calibrated plan for {weights.name}: run `asymrnr-fx demo --make-plan`"
    plan = Plan.load(plan_file)
    sites = _weights_metadata(weights)["transformer_config"]["num_layers"]  # one joint attention per block
    assert (plan.num_sites, plan.num_steps) == (sites, demo.PLAN_STEPS)
    assert plan.attention_cost() == pytest.approx(demo.PLAN_BUDGET)
    assert f"#{demo.weights_digest(weights)}" in plan.name, "plan made for other weights: rerun --make-plan"
    cal = Calibration.load(demo.calibration_path(weights))
    assert cal.num_sites == sites and cal.sensitivity is not None


def test_calibration_prompts_are_not_the_demo_prompts():
    assert not set(demo.calibration_prompts()) & set(toy_prompts(12))
    assert demo.CALIBRATION_SEED != 0


def test_resampled_plan_keeps_the_attention_cost():
    q = torch.tensor([[0.875] * 5 + [0.5] * 5 + [0.1] * 5 + [0.0] * 5] * 3, dtype=torch.float64)
    plan = Plan.from_table(q, torch.zeros_like(q), cache_window=5)
    short = demo.resample(plan, 4)
    assert (short.num_sites, short.num_steps, short.cache_window) == (3, 4, 1)
    assert short.table("q")[0].tolist() == [0.875, 0.5, 0.1, 0.0]
    assert short.attention_cost() == pytest.approx(plan.attention_cost())


@pytest.fixture(scope="module")
def toy_bundle():
    from asymrnr_fx.toy import model as toy_model

    weights = newest_toy_weights()
    return toy_model.load_toy_model(path=weights), weights


def _args(**kw):
    base = {"plan": None, "q": None, "kv": None, "quick": False, "steps": 20, "seed": 0}
    return argparse.Namespace(**{**base, **kw})


def test_demo_plan_choices(toy_bundle):
    model, weights = toy_bundle
    plan, kind, _ = demo.resolve_plan(_args(), model, weights)  # default: the shipped calibrated plan
    assert kind == "calibrated" and plan.attention_cost() == pytest.approx(demo.PLAN_BUDGET)
    plan, kind, source = demo.resolve_plan(_args(plan="calibrated:0.4"), model, weights)  # from the shipped calibration
    assert kind == "calibrated" and plan.attention_cost() == pytest.approx(0.4) and "calibration" in source
    for args in (_args(plan="uniform:0.5,0.3"), _args(q=0.5, kv=0.3)):
        plan, kind, _ = demo.resolve_plan(args, model, weights)
        assert kind == "uniform" and (plan.ratio(0, 0, "q"), plan.ratio(0, 0, "kv")) == (0.5, 0.3)
    with pytest.raises(SystemExit, match="attention sites"):
        demo.resolve_plan(_args(plan="published:cogvideox-2b:base"), model, weights)


def test_bench_small_writes_csv_and_plot(tmp_path):
    args = ["bench", "--target", "cogvideox-shaped", "--small", "--no-compile", "--costs", "0.5",
            "--methods", "asymrnr", "--window", "0,1,1", "--equal-speed", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    # --equal-speed adds SymRnR, and runs both AsymRnRs at 1.15x and 0.85x the cost as well
    assert [(r["method"], float(r["cost_target"])) for r in rows] == [
        ("baseline", 1), ("asymrnr", 0.575), ("asymrnr window=0,1,1", 0.575),
        ("asymrnr", 0.5), ("symrnr", 0.5), ("asymrnr window=0,1,1", 0.5), ("symrnr window=0,1,1", 0.5),
        ("asymrnr", 0.425), ("asymrnr window=0,1,1", 0.425)]
    assert all(float(r["attention_cost"]) == pytest.approx(float(r["cost_target"])) for r in rows[1:])
    by = {(r["method"], float(r["cost_target"])): float(r["psnr"]) for r in rows}
    assert by["asymrnr", 0.5] < float("inf")  # it reduced something
    assert by["asymrnr window=0,1,1", 0.5] != by["asymrnr", 0.5]  # the window changed the matching
    assert by["symrnr window=0,1,1", 0.5] != by["symrnr", 0.5]  # ... SymRnR's too (same kernel for both baselines)
    assert (tmp_path / "bench.png").stat().st_size > 1000
    table = (tmp_path / "bench_equal_speed.md").read_text().splitlines()
    assert len(table) == 4 and "| symrnr | 0.5 |" in table[2] and "| symrnr window=0,1,1 | 0.5 |" in table[3]
    with pytest.raises(SystemExit):  # a cost outside (0, 1] is refused by the parser, naming the range
        cli.main(["bench", "--costs", "1.5"])


def test_equal_speed_reads_the_curve_at_the_other_methods_speed():
    from asymrnr_fx.evaluation.compare import Row, equal_speed

    def row(method, cost, speedup, psnr, target="m"):
        return Row(target, method, cost, cost, speedup, psnr, 0.0, None, 0.0, 0.0, 1.0)

    # AsymRnR on the line psnr = 40 - 10 * speedup; SymRnR below it, one point beyond its range, one of another model
    # (a point that reduced nothing, infinite PSNR, is no point of the curve: it would make every gain infinite)
    rows = [row("asymrnr", 0.7, 1.1, 29.0), row("asymrnr", 0.5, 1.5, 25.0), row("asymrnr", 0.6, 1.3, 27.0),
            row("asymrnr", 0.99, 1.0, math.inf), row("symrnr", 0.6, 1.35, 24.0), row("symrnr", 0.4, 1.6, 23.0),
            row("symrnr", 0.6, 1.3, 20.0, target="n"), row("symrnr", 0.8, 1.05, 28.0), row("symrnr", 0.99, 1.2, math.inf)]
    got = equal_speed(rows)
    assert [(e.cost, e.against_psnr) for e in got] == [(0.6, 24.0), (0.4, 23.0), (0.6, 20.0), (0.8, 28.0), (0.99, math.inf)]
    assert got[0].psnr == pytest.approx(40 - 13.5) and got[0].between == (0.6, 0.5)
    assert got[1].psnr is None and got[1].between is None  # 1.6x is faster than any AsymRnR point: not extrapolated
    assert got[2].psnr is None  # no AsymRnR point of model "n"
    assert got[3].psnr is None  # 1.05x lies only between the unreduced point and the others
    assert got[4].psnr is None and "reduced nothing" in got[4].reason  # SymRnR's point: no gain to state
    assert "more costs" in got[1].reason and "more costs" in got[3].reason
    # timing noise put a lower cost below a higher one: no curve to read, said so, rather than a line
    # drawn between whichever two points happen to bracket the speed
    noisy = [row("asymrnr", 0.7, 1.1, 29.0), row("asymrnr", 0.6, 1.45, 27.0), row("asymrnr", 0.5, 1.3, 25.0),
             row("symrnr", 0.6, 1.2, 24.0)]
    (got,) = equal_speed(noisy)
    assert got.psnr is None and "not in cost order" in got.reason


def test_inspect_command_lists_sites(capsys):
    assert cli.main(["inspect", "--model", "toy"]) == 0
    out = capsys.readouterr().out
    from asymrnr_fx.toy import weights_spec

    grid = weights_spec().token_grid()  # the newest shipped toy's clip, in (2, 2, 2) patches
    assert out.count("joint") >= 3 and str(grid) in out


def test_bench_reuses_the_shipped_toy_calibration_only_for_its_recipe():
    from asymrnr_fx.commands.bench import _shipped_toy_calibration
    from asymrnr_fx.commands.demo_plan import model_label

    cal = _shipped_toy_calibration(demo.PLAN_STEPS, 5)
    assert cal is not None and cal.num_steps == demo.PLAN_STEPS and cal.sensitivity is not None
    weights = newest_toy_weights()
    assert cal.info.get("model") == model_label(weights, demo.weights_digest(weights))
    assert _shipped_toy_calibration(4, 2) is None  # another step count: calibrate anew
    assert _shipped_toy_calibration(demo.PLAN_STEPS, 2) is None  # another cache window
