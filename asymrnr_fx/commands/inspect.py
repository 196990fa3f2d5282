"""``asymrnr-fx inspect``: the attention sites of a built-in model, classified."""
from __future__ import annotations

import argparse

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="cogvideox-shaped", choices=["cogvideox-shaped", "toy"],
                   help="which built-in model to capture (default: %(default)s)")
    p.add_argument("--q", type=float, default=0.5, help="query ratio of the plan to check against")
    p.add_argument("--kv", type=float, default=0.3, help="key/value ratio of the plan to check against")


def run(args: argparse.Namespace) -> int:
    import asymrnr_fx

    if args.model == "toy":
        from asymrnr_fx.evaluation.targets import toy_inputs

        model, inputs = toy_inputs()
    else:
        from asymrnr_fx.evaluation.bench import cogvideox_shaped

        model, inputs = cogvideox_shaped(layers=2, size=32)
    report = asymrnr_fx.inspect(model, plan=asymrnr_fx.Plan.uniform(args.q, args.kv), timestep=torch.tensor([500]), **inputs)
    print(report)
    return 0
