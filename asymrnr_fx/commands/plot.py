"""``asymrnr-fx plot``: heatmaps of a saved plan, a saved calibration, a tier table or a published schedule."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="PLAN_OR_CALIBRATION",
                   help="a plan or calibration file (.safetensors), a tier table with q/v tensors, "
                        "'published:MODEL:POINT' (a published plan, e.g. published:cogvideox-2b:base) "
                        "or 'published:MODEL' (its tier tables)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--plan", default=None, help="with a calibration: also draw this plan's ratios (file or published:...)")
    p.add_argument("--sites", type=int, default=None, help="rows to draw a uniform plan at")
    p.add_argument("--steps", type=int, default=None, help="columns to draw a uniform plan at")
    p.add_argument("--title", default=None, help="figure title")


def load_plan(source: str):
    """A Plan from a file or from ``published:MODEL[:POINT]`` (default point: base)."""
    from asymrnr_fx import Plan

    if source.startswith("published:"):
        _, model, *point = source.split(":")
        return Plan.published(model, point[0] if point else "base")
    return Plan.load(source)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from asymrnr_fx.calibration import Calibration, plot_calibration, plot_plan, plot_tiers
    from asymrnr_fx.plan import published_tiers

    src: str = args.source
    if src.startswith("published:") and src.count(":") == 1:
        model = src.split(":", 1)[1]
        path = plot_tiers(published_tiers(model), args.out, title=args.title or f"{model}: published redundancy tiers")
    elif src.startswith("published:"):
        path = plot_plan(load_plan(src), args.out, title=args.title)
    elif not Path(src).exists():
        raise SystemExit(f"{src}: no such file (or use published:MODEL:POINT)")
    elif Calibration.is_calibration_file(src):
        cal = Calibration.load(src)
        path = plot_calibration(cal, args.out, plan=load_plan(args.plan) if args.plan else None, title=args.title)
    else:
        try:
            plan = load_plan(src)
        except ValueError:
            tables = load_file(src)
            if not {"q", "v"} <= set(tables):
                raise SystemExit(f"{src} is neither an asymrnr_fx plan, a calibration nor a tier table with q and v")
            path = plot_tiers(tables, args.out, title=args.title or Path(src).stem)
        else:
            path = plot_plan(plan, args.out, num_sites=args.sites, num_steps=args.steps, title=args.title)
    print(f"wrote {path}")
    return 0
