"""AsymRnR with step caches on the CogVideoX-shaped model: each tool alone and paired with AsymRnR.

Tools: diffusers' FirstBlockCache, MagCache and TaylorSeer, and cache-dit's DBCache (when
cache-dit is installed). Every variant is compiled with inductor (AsymRnR compiles the whole
model, or below the hooks for the hooks that need it) and all run interleaved in one process:
the baseline, AsymRnR alone, each tool alone, each tool with AsymRnR. Prints each one's
whole-run speedup over the baseline and its fidelity (PSNR of the final latents against the
unreduced, uncached baseline run). Speedups within a step (AsymRnR) and across steps (the
cache) should multiply.

The caches' thresholds are fixed schedules, not tuned: the model has random weights, so a
data-driven threshold would skip at random. They are printed with the table.

    python benchmarks/compose.py [--steps 10] [--repeats 2] [--threads N]
    python benchmarks/compose.py --smoke   # tiny model, 6 steps, 1 repeat: checks the script runs, no figures
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from typing import Any, Callable

import torch
from tqdm import tqdm

import asymrnr_fx
from asymrnr_fx.evaluation.bench import cogvideox_shaped, run_generation
from asymrnr_fx.evaluation.metrics import psnr

ATTN = r"transformer_blocks\.\d+\.attn1"


def _tools(args: argparse.Namespace) -> dict[str, tuple[str, Callable[[torch.nn.Module], Any]]]:
    """Tool name -> (its settings, as printed; a function applying it to a model)."""
    from diffusers.hooks import (FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig, apply_first_block_cache,
                                 apply_mag_cache, apply_taylorseer_cache)

    steps = args.steps
    tools = {
        "FirstBlockCache": (f"threshold {args.threshold} (data-driven: the first block's residual change; random weights "
                            "may never go below it, see the note under the table)",
                            lambda m: apply_first_block_cache(m, FirstBlockCacheConfig(threshold=args.threshold))),
        # MagCache needs magnitude ratios calibrated on the real model; a random model has none, so a
        # constant ratio gives a fixed schedule: compute the first 20 % of steps, then skip at most 2 in a row
        "MagCache": (f"mag_ratios {args.mag_ratio} (constant: fixed schedule), threshold 0.06, retention 0.2, max_skip_steps 2",
                     lambda m: apply_mag_cache(m, MagCacheConfig(
                         threshold=0.06, num_inference_steps=steps, retention_ratio=0.2, max_skip_steps=2,
                         mag_ratios=[1.0] + [args.mag_ratio] * (steps - 1)))),
        "TaylorSeer": ("cache_interval 3, disable_cache_before_step 2, on every attn1 (Taylor order 1)",
                       lambda m: apply_taylorseer_cache(m, TaylorSeerCacheConfig(
                           cache_interval=3, disable_cache_before_step=2, cache_identifiers=[ATTN],
                           taylor_factors_dtype=torch.float32))),
    }
    try:
        import cache_dit
    except ImportError:
        print("cache-dit not installed: its DBCache rows are left out", file=sys.stderr)
        return tools

    # the residual diffs of a random model are large (about 0.7 at every step of the smoke run), so a
    # threshold never skips: a static mask does (compute 2 steps, then every other step; the last computed)
    n = max(0, -(-(steps - 2) // 2))
    mask = cache_dit.steps_mask(compute_bins=[2] + [1] * n, cache_bins=[1] * n, total_steps=steps)[:steps]
    mask[-1] = 1

    def dbcache(m: torch.nn.Module) -> None:
        cache_dit.enable_cache(m, cache_config=cache_dit.DBCacheConfig(
            Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=args.db_threshold, max_warmup_steps=2,
            steps_computation_mask=list(mask), steps_computation_policy="static"))
        cache_dit.refresh_context(m, num_inference_steps=steps)  # transformer only: a new context every `steps` calls

    tools["cache-dit DBCache"] = (f"F1B0, static steps_computation_mask {''.join(map(str, mask))} (1: compute)", dbcache)
    return tools


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.05, help="FirstBlockCache threshold")
    ap.add_argument("--mag-ratio", type=float, default=0.98, help="MagCache's constant magnitude ratio")
    ap.add_argument("--db-threshold", type=float, default=0.08, help="cache-dit DBCache residual_diff_threshold")
    ap.add_argument("--q", type=float, default=0.5)
    ap.add_argument("--kv", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="tools to run (default: all)")
    ap.add_argument("--smoke", action="store_true", help="tiny model, 6 steps, 1 repeat: the script runs; figures mean nothing")
    args = ap.parse_args(argv)
    shape: dict[str, Any] = {}
    if args.smoke:
        args.steps, args.repeats = 6, 1
        shape = {"layers": 2, "size": 16, "frames": 2, "text": 16, "head_dim": 32}
    if args.threads:
        torch.set_num_threads(args.threads)
    model, inputs = cogvideox_shaped(**shape)
    plan = asymrnr_fx.Plan.uniform(q=args.q, kv=args.kv, cache_window=5)
    tools = {k: v for k, v in _tools(args).items() if args.only is None or k in args.only}
    variants: dict[str, tuple[Callable[..., Any], torch.nn.Module]] = {
        "baseline": (asymrnr_fx.api.baseline(model), model),
        "AsymRnR": (asymrnr_fx.transform(model, plan, compile=True), model),
    }
    for name, (_, apply) in tools.items():
        for paired in (False, True):
            cached = copy.deepcopy(model)
            apply(cached)
            fn = asymrnr_fx.transform(cached, plan, compile=True) if paired else asymrnr_fx.api.baseline(cached)
            variants[f"{name} + AsymRnR" if paired else name] = (fn, cached)

    def generate(fn: Callable[..., Any], owner: torch.nn.Module) -> tuple[torch.Tensor, float]:
        reset = getattr(owner, "_reset_stateful_cache", None)
        if reset is not None:
            reset()  # diffusers' hooks start every generation afresh, as a pipeline call does
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            if isinstance(fn, asymrnr_fx.AsymRnRModule):
                stack.enter_context(asymrnr_fx.generation(fn))
            if hasattr(owner, "cache_context"):
                stack.enter_context(owner.cache_context("bench"))
            out = run_generation(fn, inputs, args.steps)
        return out, time.perf_counter() - start

    outs, times = {}, {k: [] for k in variants}
    for name, (fn, owner) in tqdm(variants.items(), desc="compile + warm-up", file=sys.stderr):
        outs[name], _ = generate(fn, owner)
    for _ in tqdm(range(args.repeats), desc="interleaved runs", file=sys.stderr):
        for name, (fn, owner) in variants.items():
            times[name].append(generate(fn, owner)[1])
    base = statistics.median(times["baseline"])
    label = "SMOKE RUN (tiny model; the figures only show the script works)" if args.smoke else "CogVideoX-shaped"
    print(f"{label}, {args.steps} steps, {torch.get_num_threads()} threads; AsymRnR q={args.q} kv={args.kv}, cache window 5")
    print("Cache settings (fixed schedules where the tool has one, not tuned: random weights make data-driven "
          "thresholds skip at random):")
    for name, (settings, _) in tools.items():
        print(f"  {name}: {settings}")
    print("| variant | whole-run speedup | PSNR vs baseline (dB) |\n|---|---|---|")
    results = {}
    for name in variants:
        speed = base / statistics.median(times[name])
        quality = float("inf") if name == "baseline" else psnr(outs["baseline"], outs[name])
        results[name] = {"speedup": speed, "psnr": quality}
        print(f"| {name} | {speed:.2f}x | {'-' if name == 'baseline' else f'{quality:.1f}'} |")
    for name in tools:
        if results[name]["psnr"] > 100:  # float noise only: the cache computed every step
            print(f"Note: {name} alone matches the baseline to {results[name]['psnr']:.0f} dB: it never skipped a step")
    return results


if __name__ == "__main__":
    main()
