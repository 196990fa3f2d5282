"""``asymrnr-fx bench``: AsymRnR vs SymRnR, ToDo-style and random matching at matched attention cost."""
from __future__ import annotations

import argparse
from pathlib import Path

from asymrnr_fx.evaluation.targets import TARGETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="built-in model(s) to benchmark (default: toy and cogvideox-shaped)")
    p.add_argument("--costs", type=_cost, nargs="+", default=[0.6, 0.35],
                   help="attention cost kept, each in (0, 1] (default: 0.6 0.35)")
    p.add_argument("--methods", nargs="+", default=None, help="subset of asymrnr symrnr todo random")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved timed runs per variant (default: 3; 1 with --small)")
    p.add_argument("--calibrated", action="store_true",
                   help="also run a calibrated plan per cost (calibrated on other prompts/seeds, with sensitivity)")
    p.add_argument("--window", default=None, metavar="T,H,W",
                   help="also run uniform AsymRnR (and SymRnR, when among --methods) with Plan(window=(T, H, W)): "
                        "matching within that many tiles (e.g. 0,1,1)")
    p.add_argument("--equal-speed", action="store_true",
                   help="also run uniform AsymRnR at 0.85x and 1.15x each cost and report its PSNR at SymRnR's "
                        "measured speeds (equal wall time rather than equal attention cost)")
    p.add_argument("--no-compile", action="store_true", help="run the rewritten graphs eagerly (fast start, slower runs)")
    p.add_argument("--small", action="store_true", help="tiny settings, for CI")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (e.g. 1 when another job holds a core)")
    p.add_argument("--out", default="asymrnr-out/bench", help="output folder (CSV, markdown table, PNG)")


def run(args: argparse.Namespace) -> int:
    from asymrnr_fx.evaluation.compare import (
        METHODS, compare, equal_speed, equal_speed_table, markdown_table, write_outputs,
    )

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    def windowed(method: str) -> str:  # the method's name on the windowed matching, in the table and the plot
        return f"{method} window={args.window}"

    rows = []
    for name in args.target or ["toy", "cogvideox-shaped"]:
        target = _target(name, args.steps or (4 if args.small else None), args.small)
        cache_window = 2 if args.small else 5
        extra = {"calibrated": _calibrated_plans(name, target, cache_window)} if args.calibrated else {}
        methods = list(args.methods or METHODS)
        if args.equal_speed:
            methods += [m for m in ("asymrnr", "symrnr") if m not in methods]
        for method in ("asymrnr", "symrnr") if args.window else ():
            if method == "asymrnr" or method in methods:  # the baseline on the same matching kernel
                extra[windowed(method)] = _windowed(method, args.window, cache_window)
        around = sorted({c for c in (round(c * f, 4) for c in args.costs for f in (0.85, 1.15)) if c < 1} - set(args.costs))
        extra_costs = {m: around for m in ("asymrnr", windowed("asymrnr")) if m in {*methods, *extra}}
        rows += compare(target, args.costs, methods, compile=not args.no_compile,
                        repeats=args.repeats or (1 if args.small else 3), cache_window=cache_window, extra_plans=extra or None,
                        extra_costs=extra_costs if args.equal_speed else None)
    paths = write_outputs(rows, Path(args.out))
    print(markdown_table(rows))
    (Path(args.out) / "bench_equal_speed.md").unlink(missing_ok=True)  # never one of an earlier run beside these
    if args.equal_speed:
        pairs = [("asymrnr", "symrnr")] + ([(windowed("asymrnr"), windowed("symrnr"))] if args.window else [])
        table = equal_speed_table([e for a, b in pairs for e in equal_speed(rows, a, b)])
        paths["equal_speed"] = Path(args.out) / "bench_equal_speed.md"
        paths["equal_speed"].write_text(table + "\n")
        print("\nAt equal speed (the first method's PSNR read off its speed-PSNR points at the second's speed):\n" + table)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cost(text: str) -> float:
    """An attention cost kept, in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:  # also NaN
        raise argparse.ArgumentTypeError(f"an attention cost kept is in (0, 1], got {text}")
    return value


def _windowed(method: str, text: str, cache_window: int):
    """cost -> ``method``'s uniform plan at that cost, matching within the window ``text`` ("T,H,W" tiles)."""
    import dataclasses

    from asymrnr_fx.evaluation.compare import method_plan

    try:
        window = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--window takes three integers T,H,W (tiles), got {text!r}") from None
    return lambda cost: dataclasses.replace(method_plan(method, cost, cache_window=cache_window), window=window)


def _target(name: str, steps: int | None, small: bool, **options):
    """A built-in model; the toy model generates held-out prompts (scored by prompt accuracy)."""
    from asymrnr_fx.evaluation.targets import toy_prompts

    if name == "toy" and "prompts" not in options:
        options["prompts"] = toy_prompts(2 if small else 4)
    return TARGETS[name](**({"steps": steps} if steps else {}), small=small, **options)


def _calibrated_plans(name, target, cache_window: int):
    """Calibrate on prompts / noise other than the evaluated ones; return cost -> budgeted plan."""
    from asymrnr_fx.calibration import calibrate, measure_sensitivity, plan_for_budget
    from asymrnr_fx.evaluation.targets import toy_prompts
    from asymrnr_fx.plan import Plan

    if name == "toy" and (shipped := _shipped_toy_calibration(target.steps, cache_window)) is not None:
        return lambda cost: plan_for_budget(shipped, attention_cost=cost)
    calib = target
    if name == "toy":  # training prompts, the same weights
        calib = _target(name, target.steps, False, prompts=toy_prompts(4, heldout=False))

    def run(model, index: int):
        return calib.run(model, 100 + index)  # seeds the evaluation never uses

    options = Plan(cache_window=cache_window)
    cal = calibrate(target.model, run, generations=1, plan=options, progress=True)
    cal = measure_sensitivity(target.model, cal, run, generations=1, progress=True)
    return lambda cost: plan_for_budget(cal, attention_cost=cost)


def _shipped_toy_calibration(steps: int, cache_window: int):
    """The demo's shipped calibration of the newest toy weights, when it was made with this run's
    recipe (same weights, steps and cache window; always the same 4 training prompts and seeds
    100, 101, ...): computing it again would give the same numbers for ~10-30 CPU-minutes."""
    from asymrnr_fx.toy import newest_weights

    from .demo_plan import _load_matching_calibration, calibration_path, model_label, weights_digest

    weights = newest_weights()
    if weights is None:
        return None
    cal = _load_matching_calibration(calibration_path(weights), model_label(weights, weights_digest(weights)))
    if cal is None or cal.num_steps != steps or cal.cache_window != cache_window:
        return None
    print(f"bench: calibrated toy plans from the shipped {calibration_path(weights).name} (same recipe)")
    return cal
