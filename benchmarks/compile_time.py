"""Cold and warm compile time of a 30-block tiny CogVideoX: whole model vs repeated blocks, inductor vs asymrnr.

Each figure is the wall time from "model built" to "first output" in a fresh Python process:

* cold: an empty inductor cache directory;
* warm: a second process on the same cache directory (inductor's FX graph cache and
  autotuning caches on), as a server restart would see it.

    python benchmarks/compile_time.py [--layers 30] [--threads 1] [--json out.json]

Regional compilation compiles one graph per block class and shape and reuses it for every
block; for the plain-inductor baseline that is ``block.compile()`` on every block (the
standard recipe when a model, like CogVideoX, declares no ``_repeated_blocks``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

MODES = ("inductor", "asymrnr", "inductor-regional", "asymrnr-regional")


def one(mode: str, layers: int, threads: int | None) -> float:
    """Build the model, compile it the ``mode`` way, run one call; return seconds to the first output."""
    import torch

    import asymrnr_fx
    from asymrnr_fx.testing.pipelines import tiny_transformer, transformer_inputs

    if threads:
        torch.set_num_threads(threads)
    model = tiny_transformer("cogvideox", layers=layers)
    inputs = transformer_inputs("cogvideox")
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    start = time.perf_counter()
    if mode == "inductor":
        fn = torch.compile(model, dynamic=False)
    elif mode == "asymrnr":
        fn = asymrnr_fx.transform(model, plan, compile=True)
    elif mode == "inductor-regional":
        for block in model.transformer_blocks:
            block.compile(dynamic=False)
        fn = model
    else:
        fn = asymrnr_fx.transform(model, plan, compile="regional")
    with torch.no_grad():
        fn(**inputs)
    return time.perf_counter() - start


def package_build(path: str, layers: int, threads: int | None) -> float:
    """Export the transformed model and build its AOTInductor package; return the seconds it took."""
    import torch

    import asymrnr_fx
    from asymrnr_fx.testing.pipelines import tiny_transformer, transformer_inputs

    if threads:
        torch.set_num_threads(threads)
    model = tiny_transformer("cogvideox", layers=layers)
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    start = time.perf_counter()
    asymrnr_fx.deploy.package(asymrnr_fx.deploy.export(model, plan, kwargs=transformer_inputs("cogvideox")), path)
    return time.perf_counter() - start


def package_load(path: str, threads: int | None) -> float:
    """Load the package in this (fresh) process and run one call; return seconds to the first output."""
    import torch

    import asymrnr_fx
    from asymrnr_fx.testing.pipelines import transformer_inputs

    if threads:
        torch.set_num_threads(threads)
    inputs = transformer_inputs("cogvideox")
    start = time.perf_counter()
    loaded = asymrnr_fx.deploy.load(path)
    with torch.no_grad():
        loaded(**inputs)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--package", action=argparse.BooleanOptionalAction, default=True,
                    help="also time export + AOTInductor packaging, and loading the package in a fresh process")
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # child process
    ap.add_argument("--build", help=argparse.SUPPRESS)  # child process: build a package here
    ap.add_argument("--load", help=argparse.SUPPRESS)  # child process: load this package
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps({"seconds": one(args.one, args.layers, args.threads)}))
        return {}
    if args.build:
        print(json.dumps({"seconds": package_build(args.build, args.layers, args.threads)}))
        return {}
    if args.load:
        print(json.dumps({"seconds": package_load(args.load, args.threads)}))
        return {}

    from tqdm import tqdm

    results: dict[str, dict[str, float]] = {}
    threads = ["--threads", str(args.threads)] if args.threads else []

    def child(*extra: str, env: dict | None = None) -> float:
        cmd = [sys.executable, __file__, "--layers", str(args.layers), *threads, *extra]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])["seconds"]

    with tqdm(total=2 * len(args.modes) + 2 * args.package, desc="compile time (fresh processes)") as bar:
        for mode in args.modes:
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
                row = {}
                for phase in ("cold", "warm"):
                    row[phase] = child("--one", mode, env=env)
                    bar.update()
                results[mode] = row
        if args.package:
            with tempfile.TemporaryDirectory() as tmp:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "cache"))
                path = os.path.join(tmp, "model.pt2")
                results["package"] = {"build": child("--build", path, env=env)}
                bar.update()
                results["package"]["load"] = child("--load", path, env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(tmp, "empty")))
                bar.update()
    print(f"\n{args.layers}-block tiny CogVideoX, seconds to first output (fresh process each)")
    print("| mode | cold | warm (2nd process, caches on) |\n|---|---|---|")
    for mode, row in results.items():
        if mode != "package":
            print(f"| {mode} | {row['cold']:.1f} | {row['warm']:.1f} |")
    if "package" in results:
        p = results["package"]
        print(f"AOTInductor package (asymrnr_fx.deploy.export + package, cold cache): build {p['build']:.1f} s; "
              f"asymrnr_fx.deploy.load + first output in a fresh process (empty cache): {p['load']:.1f} s")
    r = results
    if "asymrnr-regional" in r and "inductor-regional" in r:
        print(f"regional asymrnr / regional inductor, cold: {r['asymrnr-regional']['cold'] / r['inductor-regional']['cold']:.2f}x")
    if "asymrnr-regional" in r and "asymrnr" in r:
        print(f"whole-model asymrnr / regional asymrnr, cold: {r['asymrnr']['cold'] / r['asymrnr-regional']['cold']:.2f}x")
    if "asymrnr" in r and "inductor" in r:
        print(f"asymrnr / inductor, warm: {r['asymrnr']['warm'] / r['inductor']['warm']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
