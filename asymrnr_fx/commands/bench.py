"""``asymrnr-fx bench``: AsymRnR vs SymRnR, ToDo-style and random matching at matched attention cost."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", action="append", choices=["toy", "cogvideox-shaped"],
                   help="model(s) to benchmark (default: both)")
    p.add_argument("--costs", type=float, nargs="+", default=[0.6, 0.35], help="attention cost kept (default: 0.6 0.35)")
    p.add_argument("--methods", nargs="+", default=None, help="subset of asymrnr symrnr todo random")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: 20 toy, 10 cogvideox-shaped)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per variant")
    p.add_argument("--calibrated", action="store_true",
                   help="also run a calibrated plan per cost (calibrated on other prompts/seeds, with sensitivity)")
    p.add_argument("--no-compile", action="store_true", help="run the rewritten graphs eagerly (fast start, slower runs)")
    p.add_argument("--small", action="store_true", help="tiny settings, for CI")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (e.g. 1 when another job holds a core)")
    p.add_argument("--out", default="asymrnr-out/bench", help="output folder (CSV, markdown table, PNG)")


def run(args: argparse.Namespace) -> int:
    from asymrnr_fx.compare import METHODS, compare, markdown_table, write_outputs
    from asymrnr_fx.targets import cogvideox_target, toy_prompts, toy_target

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    for name in args.target or ["toy", "cogvideox-shaped"]:
        if name == "toy":
            steps = args.steps or (4 if args.small else 20)
            target = toy_target(toy_prompts(2 if args.small else 4), steps=steps)
        else:
            target = cogvideox_target(steps=args.steps or (4 if args.small else 10), small=args.small)
        cache_window = 2 if args.small else 5
        extra = {"calibrated": _calibrated_plans(name, target, cache_window, args.small)} if args.calibrated else None
        rows += compare(target, args.costs, args.methods or METHODS, compile=not args.no_compile,
                        repeats=1 if args.small else args.repeats, cache_window=cache_window, extra_plans=extra)
    paths = write_outputs(rows, Path(args.out))
    print(markdown_table(rows))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _calibrated_plans(name, target, cache_window: int, small: bool):
    """Calibrate on prompts / noise other than the evaluated ones; return cost -> budgeted plan."""
    import asymrnr_fx
    from asymrnr_fx.targets import cogvideox_target, toy_prompts, toy_target

    if name == "toy":
        calib = toy_target(toy_prompts(4, heldout=False), steps=target.steps, seed=100)
    else:
        calib = cogvideox_target(steps=target.steps, small=small, input_seed=100)
    options = asymrnr_fx.Plan(cache_window=cache_window)
    cal = asymrnr_fx.calibrate(target.model, calib.run, generations=1, plan=options, progress=True)
    cal = asymrnr_fx.measure_sensitivity(target.model, cal, calib.run, generations=1, progress=True)
    return lambda cost: asymrnr_fx.Plan.for_budget(cal, attention_cost=cost)
