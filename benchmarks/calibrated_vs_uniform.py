"""Uniform vs calibrated plans at the same attention budget: output error of a full sampling run.

For each built-in model (:data:`asymrnr_fx.evaluation.targets.TARGETS`, default: the
hand-written DiT and a tiny diffusers CogVideoX with random weights, plus the trained toy
model when its weights are shipped), the script calibrates on a few generations (seeds
0..G-1), measures output sensitivity, and then, at each budget (mean remaining video-video attention cost), runs
held-out generations (seeds 1000..) with:

* ``uniform-q``     q = 1 - c, kv = 0 (reduce only queries, everywhere);
* ``uniform-qkv``   q = kv = 1 - sqrt(c) (both features, everywhere);
* ``uniform-split`` the published CogVideoX-2B "base" split of the cost between Q and K/V
  (mean Q cost 0.85, K/V 0.91 at cost 0.76), scaled to c: q = 1 - c^a, kv = 1 - c^(1-a);
* ``calibrated``    :func:`~asymrnr_fx.calibration.budget.plan_for_budget` with sensitivity weights;
* ``calibrated-sim`` :func:`~asymrnr_fx.calibration.budget.plan_for_budget` from token similarity only (no sensitivity).

Errors are against the unreduced model on the same seed: relative L2 of the final output
and PSNR (peak = the reference's value range), averaged over the held-out seeds. All plans
of a model run through one captured graph (a switchable runtime), eager, no inductor.

    python benchmarks/calibrated_vs_uniform.py [--models tiny-dit cogvideox-tiny toy] [--budgets 0.6 0.4]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from asymrnr_fx import Plan
from asymrnr_fx.calibration import (
    SwitchableRuntime,
    budget,
    calibrate,
    measure_sensitivity,
    plan_for_budget,
    plot_calibration,
    plot_plans,
)
from asymrnr_fx.calibration.sampling import installed
from asymrnr_fx.evaluation.targets import TARGETS, toy_available

# Published CogVideoX-2B base: the mean Q keep-fraction and K/V keep-fraction, to split a budget like the paper.
_PUB = Plan.published("cogvideox-2b", "base")
_Q_SHARE = math.log(float((1 - _PUB.table("q")).mean())) / math.log(
    float((1 - _PUB.table("q")).mean()) * float((1 - _PUB.table("kv")).mean())
)


def uniform_plans(cost: float, opts: dict) -> dict[str, Plan]:
    r = 1 - math.sqrt(cost)
    a = _Q_SHARE
    return {
        "uniform-q": Plan.uniform(1 - cost, 0.0, name="uniform-q", **opts),
        "uniform-qkv": Plan.uniform(r, r, name="uniform-qkv", **opts),
        "uniform-split": Plan.uniform(1 - cost**a, 1 - cost ** (1 - a), name="uniform-split", **opts),
    }


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    out, ref = out.double(), ref.double()
    rel = float((out - ref).norm() / ref.norm())
    mse = float((out - ref).square().mean())
    peak = float(ref.max() - ref.min())
    psnr = float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)
    return rel, psnr


def bench_model(name: str, steps: int, window: int, generations: int, eval_seeds: list[int], budgets: list[float],
                plots: Path | None) -> list[dict]:
    target = TARGETS[name](steps)
    opts = Plan(cache_window=window)
    t0 = time.perf_counter()
    cal = calibrate(target.model, target.run, generations=generations, plan=opts, name=name)
    t_cal = time.perf_counter() - t0
    torch._dynamo.reset()
    t0 = time.perf_counter()
    cal = measure_sensitivity(target.model, cal, target.run, generations=generations)
    t_sens = time.perf_counter() - t0
    print(f"\n## {name}: {target.description}")
    print(f"{cal}\ncalibration {t_cal:.1f} s ({generations} generations x {steps} steps), "
          f"sensitivity {t_sens:.1f} s ({generations * (1 + cal.sensitivity.error.numel() + cal.sensitivity.shape_error.numel())} "
          "generations)")
    plan_opts = cal.plan_options()
    rows = []
    torch._dynamo.reset()
    runtime = SwitchableRuntime(Plan.uniform(0.5, 0.5, **plan_opts))
    with torch.no_grad(), installed(target.model, runtime) as fast:
        runtime.use(Plan.uniform(0.0, 0.0, **plan_opts))
        refs = {s: target.run(fast, s) for s in eval_seeds}
        for cost in budgets:
            plans = uniform_plans(cost, plan_opts)
            plans["calibrated"] = plan_for_budget(cal, cost, name="calibrated")
            plans["calibrated-sim"] = plan_for_budget(cal, cost, weights="uniform", name="calibrated-sim")
            for label, plan in plans.items():
                runtime.use(plan)
                errs = [errors(target.run(fast, s), refs[s]) for s in eval_seeds]
                rel = sum(e[0] for e in errs) / len(errs)
                psnr = sum(e[1] for e in errs) / len(errs)
                rows.append({
                    "model": name, "budget": cost, "plan": label,
                    "cost": plan.attention_cost(cal.num_sites, cal.num_steps),
                    "mean_q": float(plan.table("q", cal.num_sites, cal.num_steps).mean()),
                    "mean_kv": float(plan.table("kv", cal.num_sites, cal.num_steps).mean()),
                    "rel_l2": rel, "psnr": psnr,
                    "expected": budget.expected_error(plan, cal),
                })
            if plots is not None:
                plot_plans([plans["calibrated"], plans["calibrated-sim"]], plots / f"{name}_budget{cost:g}.png",
                           num_sites=cal.num_sites, num_steps=cal.num_steps,
                           title=f"{name}: calibrated plans at attention cost {cost:g}")
    if plots is not None:
        plot_calibration(cal, plots / f"{name}_calibration.png", plan=plan_for_budget(cal, budgets[0]))
    for r in rows:
        r.update(calibration_s=t_cal, sensitivity_s=t_sens)
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| model | budget | plan | cost | mean r_q | mean r_kv | rel. L2 | PSNR dB | est. error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['budget']:g} | {r['plan']} | {r['cost']:.3f} | {r['mean_q']:.3f} | "
              f"{r['mean_kv']:.3f} | {r['rel_l2']:.4f} | {r['psnr']:.2f} | {r['expected']:.3g} |")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: tiny-dit cogvideox-tiny (+ toy if shipped)")
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.6, 0.4])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--window", type=int, default=5, help="matching cache window")
    ap.add_argument("--generations", type=int, default=2, help="calibration generations (seeds 0..)")
    ap.add_argument("--eval", type=int, default=3, help="held-out generations (seeds 1000..)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plots", type=Path, default=None, help="write plan/calibration heatmaps here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = args.models or ["tiny-dit", "cogvideox-tiny"] + (["toy"] if toy_available() else [])
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in models:
        rows += bench_model(name, args.steps, args.window, args.generations, [1000 + i for i in range(args.eval)],
                            args.budgets, args.plots)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
