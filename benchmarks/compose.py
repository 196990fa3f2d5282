"""AsymRnR with diffusers' FirstBlockCache on the CogVideoX-shaped model: alone and together.

Four variants compiled with inductor (whole model) and run interleaved in one process:
baseline, AsymRnR alone, FirstBlockCache alone, both. Prints each one's whole-run speedup
over the baseline and its fidelity (PSNR of the final latents against the baseline run).
Speedups within a step (AsymRnR) and across steps (the step cache) should multiply.

    python benchmarks/compose.py [--steps 10] [--repeats 2] [--threshold 0.05] [--threads N]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from tqdm import tqdm

import asymrnr_fx
from asymrnr_fx.evaluation.bench import cogvideox_shaped, run_generation
from asymrnr_fx.evaluation.metrics import psnr


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.05, help="FirstBlockCache threshold")
    ap.add_argument("--q", type=float, default=0.5)
    ap.add_argument("--kv", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model, inputs = cogvideox_shaped()
    cached = copy.deepcopy(model)
    apply_first_block_cache(cached, FirstBlockCacheConfig(threshold=args.threshold))
    plan = asymrnr_fx.Plan.uniform(q=args.q, kv=args.kv, cache_window=5)
    variants = {
        "baseline": asymrnr_fx.api.baseline(model),
        "AsymRnR": asymrnr_fx.transform(model, plan, compile=True),
        "FirstBlockCache": asymrnr_fx.api.baseline(cached),
        "both": asymrnr_fx.transform(cached, plan, compile=True),
    }

    def generate(name: str, fn) -> tuple[torch.Tensor, float]:
        ctx = asymrnr_fx.generation(fn) if isinstance(fn, asymrnr_fx.AsymRnRModule) else None
        model_of = cached if name in ("FirstBlockCache", "both") else None
        start = time.perf_counter()
        with torch.no_grad():
            if ctx is not None:
                ctx.__enter__()
            try:
                if model_of is not None:
                    with model_of.cache_context("bench"):
                        out = run_generation(fn, inputs, args.steps)
                else:
                    out = run_generation(fn, inputs, args.steps)
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
        return out, time.perf_counter() - start

    outs, times = {}, {k: [] for k in variants}
    for name, fn in tqdm(variants.items(), desc="compile + warm-up", file=sys.stderr):
        outs[name], _ = generate(name, fn)
    for _ in tqdm(range(args.repeats), desc="interleaved runs", file=sys.stderr):
        for name, fn in variants.items():
            times[name].append(generate(name, fn)[1])
    base = statistics.median(times["baseline"])
    print(f"CogVideoX-shaped, {args.steps} steps, {torch.get_num_threads()} threads; AsymRnR q={args.q} kv={args.kv}, "
          f"FirstBlockCache threshold {args.threshold}")
    print("| variant | whole-run speedup | PSNR vs baseline (dB) |\n|---|---|---|")
    results = {}
    for name in variants:
        speed = base / statistics.median(times[name])
        quality = float("inf") if name == "baseline" else psnr(outs["baseline"], outs[name])
        results[name] = {"speedup": speed, "psnr": quality}
        print(f"| {name} | {speed:.2f}x | {'-' if name == 'baseline' else f'{quality:.1f}'} |")
    return results


if __name__ == "__main__":
    main()
