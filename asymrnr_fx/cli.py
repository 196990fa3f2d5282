"""The ``asymrnr-fx`` command: one subcommand per module in :mod:`asymrnr_fx.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when chosen so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "run the shipped toy text-to-video model with and without AsymRnR; write a GIF and a table",
    "inspect": "list the attention sites of a built-in model and how each would be rewritten",
    "bench": "compare AsymRnR with other token reducers at matched attention cost",
    "calibrate": "measure redundancy per site, step and feature; write a calibration and a plan",
    "plot": "draw heatmaps (sites x steps) of a plan's ratios or a calibration's redundancy",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asymrnr-fx", description="AsymRnR for video diffusion transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"asymrnr_fx.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
