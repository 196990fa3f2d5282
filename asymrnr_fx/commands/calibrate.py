"""``asymrnr-fx calibrate``: measure a built-in model's redundancy, write a calibration, a plan and heatmaps.

The built-in models are :data:`asymrnr_fx.evaluation.targets.TARGETS`; add an entry there to
make another model available here, in ``bench`` and in ``benchmarks/calibrated_vs_uniform.py``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from asymrnr_fx.calibration.common import default_cache_dir
from asymrnr_fx.evaluation.targets import TARGETS, toy_available


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny-dit", choices=sorted(TARGETS), help="built-in model (default: %(default)s)")
    p.add_argument("--generations", type=int, default=2, help="sample generations to measure (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per generation (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--budget", type=float, default=None,
                      help="mean video-video attention cost to keep, in (0, 1] (default: 0.7)")
    goal.add_argument("--speedup", type=float, default=None, help="target ideal end-to-end speedup instead of a budget")
    p.add_argument("--attention-share", type=float, default=0.5,
                   help="fraction of a forward pass spent in attention, for --speedup (default: %(default)s)")
    p.add_argument("--published", default=None, metavar="MODEL:POINT",
                   help="also write the paper-style plan: this published threshold map on the calibrated tiers "
                        "(e.g. cogvideox-2b:base)")
    p.add_argument("--cache-window", type=int, default=5, help="matching cache window in steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="partition seed of the plans (default: %(default)s)")
    p.add_argument("--heads", type=int, default=None, help="sample this many heads per call (default: all)")
    p.add_argument("--sensitivity", action=argparse.BooleanOptionalAction, default=True,
                   help="measure output sensitivity and weight the plan by it (default: on)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="calibration cache (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def run(args: argparse.Namespace) -> int:
    from asymrnr_fx.calibration import budget, calibrate, measure_sensitivity, plot_calibration, plot_plan
    from asymrnr_fx.plan import Plan

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "toy" and not toy_available():
        raise SystemExit("the toy model has no shipped weights (asymrnr_fx/toy/weights/*.safetensors)")
    target = TARGETS[args.model](args.steps)
    cache = None if args.no_cache else args.cache_dir
    options = Plan(cache_window=args.cache_window, seed=args.seed)
    t0 = time.perf_counter()
    cal = calibrate(target.model, target.run, generations=args.generations, plan=options, heads=args.heads,
                    cache_dir=cache, key=f"builtin:{args.model}:{args.steps}", name=args.model, progress=True)
    t_cal = time.perf_counter() - t0
    if args.sensitivity:
        t1 = time.perf_counter()
        cal = measure_sensitivity(target.model, cal, target.run, generations=args.generations, cache_dir=cache,
                                  key=f"builtin:{args.model}:{args.steps}", progress=True)
        t_sens = time.perf_counter() - t1
    if args.speedup is not None:
        plan = budget.plan_for_speedup(cal, args.speedup, args.attention_share)
    else:
        plan = budget.plan_for_budget(cal, 0.7 if args.budget is None else args.budget)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cal.save(out / "calibration.safetensors")
    plan.save(out / "plan.safetensors")
    plot_plan(plan, out / "plan.png")
    plot_calibration(cal, out / "calibration.png", plan=plan)
    print(f"{target.description}")
    print(cal)
    print(f"calibration {t_cal:.1f} s" + (f", sensitivity {t_sens:.1f} s" if args.sensitivity else "")
          + " (0 s when read from the cache)")
    print(f"{plan}\n  expected error (calibration estimate) {budget.expected_error(plan, cal):.3g}, "
          f"ideal speedup at attention share {args.attention_share:g}: "
          f"{budget.speedup_for_cost(plan.attention_cost(), args.attention_share):.3f}x")
    written = ["calibration.safetensors", "plan.safetensors", "plan.png", "calibration.png"]
    if args.published:
        paper = budget.plan_like_published(cal, args.published)
        paper.save(out / "plan_published_map.safetensors")
        plot_plan(paper, out / "plan_published_map.png")
        print(f"{paper}")
        written += ["plan_published_map.safetensors", "plan_published_map.png"]
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0
