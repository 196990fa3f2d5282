"""Does AsymRnR work on every video DiT in the installed diffusers? A thin CLI over
:mod:`asymrnr_fx.evaluation.coverage`.

    python benchmarks/coverage.py                       # eager sweep, table to stdout and docs/coverage.md
    python benchmarks/coverage.py --inductor            # also transform(compile=True) vs eager within 1e-4
    python benchmarks/coverage.py --only Wan,Latte      # classes whose name contains any of these
    python benchmarks/coverage.py --json results.json --out -   # machine-readable, no docs file

Tiny random-weight configs, nothing downloaded; each class runs in a try/except under a time cap.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inductor", action="store_true", help="also compile (inductor) and compare with eager within 1e-4")
    p.add_argument("--only", default="", help="comma-separated substrings of class names to run")
    p.add_argument("--cap", type=float, default=None, help="per-class time cap in seconds (default: coverage.TIME_CAP)")
    p.add_argument("--out", default=str(ROOT / "docs" / "coverage.md"), help="markdown file to write ('-': none)")
    p.add_argument("--json", default="", help="also write the results as JSON here")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--configs", default="both", choices=("ours", "diffusers", "both"),
                   help="config set: ours, diffusers' test configs, or both (default; the docs report both)")
    p.add_argument("--list", action="store_true", help="list the classes and exit")
    args = p.parse_args(argv)

    import torch

    from asymrnr_fx.evaluation import coverage

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    names = coverage.video_dit_classes()
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        names = [n for n in names if any(k in n for k in keys)]
    if args.list:
        print("\n".join(names))
        return 0
    swept: dict[str, tuple[list, float]] = {}
    for configs in ("ours", "diffusers") if args.configs == "both" else (args.configs,):
        start = time.perf_counter()
        results = coverage.sweep(names, inductor=args.inductor, cap=args.cap or coverage.TIME_CAP, configs=configs)
        swept[configs] = (results, time.perf_counter() - start)
        print(f"\n{configs} configs:")
        print(coverage.markdown_table(results, inductor=args.inductor))
        print(f"\n{coverage.reduce_count(results)} reduce out of the box; {coverage.summary(results)}; "
              f"{len(results)} classes in {swept[configs][1]:.0f} s")
    if args.out and args.out != "-":
        if "ours" not in swept:
            p.error("docs/coverage.md needs our configs: use --configs both or ours, or --out -")
        (ours, seconds), (theirs, t_seconds) = swept["ours"], swept.get("diffusers", (None, None))
        Path(args.out).write_text(coverage.markdown_report(ours, seconds=seconds, inductor=args.inductor,
                                                           test_results=theirs, test_seconds=t_seconds))
        print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: [r.as_dict() for r in v] for k, (v, _) in swept.items()},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
