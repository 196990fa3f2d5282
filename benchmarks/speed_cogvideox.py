"""Compiled baseline vs compiled AsymRnR on a CogVideoX-shaped random-weight model (CPU or CUDA).

Prints, per operating point: median step-time speedup on matching steps and on reuse steps,
and over whole runs (interleaved with the baseline in one process), the ideal speedup from
attention FLOPs and the measured attention share, and the fraction of the ideal gain achieved.

    python benchmarks/speed_cogvideox.py [--repeats 3] [--steps 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter

import torch
from tqdm import tqdm

import asymrnr_fx
from asymrnr_fx.evaluation.bench import StepTimes, attention_seconds, cogvideox_shaped, ideal_speedup, joint_attention_cost, run_generation

POINTS = [(0.5, 0.3), (0.8, 0.4)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="generations per variant (interleaved)")
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per generation (cache window 5)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="latent height/width (patch 2)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (e.g. 1 when another job holds a core)")
    ap.add_argument("--regional", action="store_true", help="also time regional compilation at the last point")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    model, inputs = cogvideox_shaped(layers=args.layers, frames=args.frames, size=args.size, dtype=dtype)
    model = model.to(args.device)
    inputs = {k: (v.to(args.device) if isinstance(v, torch.Tensor) else tuple(t.to(args.device) for t in v)) for k, v in inputs.items()}
    num_video = args.frames * (args.size // 2) ** 2
    text = inputs["encoder_hidden_states"].shape[1]

    variants = {"baseline": asymrnr_fx.api.baseline(model)}
    plans = {}
    for q, kv in POINTS:
        plan = asymrnr_fx.Plan.uniform(q=q, kv=kv, cache_window=5)
        plans[f"q={q} kv={kv}"] = plan
        variants[f"q={q} kv={kv}"] = asymrnr_fx.transform(model, plan, compile=True)
        if args.regional and (q, kv) == POINTS[-1]:
            plans[f"q={q} kv={kv} regional"] = plan
            variants[f"q={q} kv={kv} regional"] = asymrnr_fx.transform(model, plan, compile="regional")
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def timed(fn):
        def call(**kw):
            out = fn(**kw)
            sync()
            return out
        return call

    times = {name: StepTimes() for name in variants}
    with torch.no_grad():
        for name, fn in tqdm(variants.items(), desc="compile + warm-up", file=sys.stderr):
            run_generation(timed(fn), inputs, 2)
        for name in plans:  # host time spent inside asymrnr::select, per step (the overhead breakdown)
            asymrnr_fx.runtime_of(variants[name]).timings = Counter()
        for _ in tqdm(range(args.repeats), desc="interleaved generations", file=sys.stderr):
            for name, fn in variants.items():
                if name in plans:
                    asymrnr_fx.reset(fn)
                run_generation(timed(fn), inputs, args.steps, times[name])
    base = times["baseline"].median()
    attn_s = attention_seconds(model, {"timestep": torch.tensor([500.0], device=args.device), **inputs})
    share = attn_s / base
    match_steps = list(range(0, args.steps, 5))
    reuse_steps = [s for s in range(args.steps) if s not in match_steps]
    results = {"device": args.device, "dtype": args.dtype, "baseline_step_s": base, "attention_share": share, "points": {}}
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else f'CPU, {torch.get_num_threads()} threads'}), "
          f"{args.dtype}, {num_video} video + {text} text tokens, {args.layers} layers")
    print(f"baseline median step {base * 1000:.1f} ms; attention share of a step f = {share:.3f} "
          f"({attn_s * 1000:.1f} ms in its SDPA calls, each replayed alone)")
    print(f"{'plan':<14} {'cost kept':>9} {'ideal':>7} {'reuse':>7} {'match':>7} {'run':>7} {'gain/ideal':>10} {'match/reuse':>11}")
    for name in plans:
        q, kv = (float(p.split("=")[1]) for p in name.split()[:2])
        c = joint_attention_cost(num_video, text, q, kv)
        ideal = ideal_speedup(share, c)
        reuse = base / times[name].median(reuse_steps)
        match = base / times[name].median(match_steps)
        whole = sum(map(statistics.mean, times["baseline"].by_step.values())) / sum(
            map(statistics.mean, times[name].by_step.values()))
        frac = (reuse - 1) / (ideal - 1)
        overhead = times[name].median(match_steps) / times[name].median(reuse_steps) - 1
        results["points"][name] = {"attention_cost_kept": c, "ideal_speedup": ideal, "reuse_speedup": reuse,
                                   "match_speedup": match, "run_speedup": whole, "gain_fraction_of_ideal": frac, "matching_overhead": overhead}
        print(f"{name:<14} {c:9.3f} {ideal:6.2f}x {reuse:6.2f}x {match:6.2f}x {whole:6.2f}x {frac:10.1%} {overhead:+10.1%}")
    print("targets: gain/ideal >= 85% on reuse steps; matching steps <= +15% over reuse steps")
    print("overhead breakdown: host ms per step inside asymrnr::select (matching, selection, cache lookups)")
    gens = args.repeats
    for name in plans:
        t = asymrnr_fx.runtime_of(variants[name]).timings
        m = sum(t[s] for s in match_steps) / max(len(match_steps) * gens, 1) * 1000
        r = sum(t[s] for s in reuse_steps) / max(len(reuse_steps) * gens, 1) * 1000
        step_ms = times[name].median(reuse_steps) * 1000
        print(f"  {name:<22} matching steps {m:7.1f} ms   reuse steps {r:6.2f} ms   (reuse step total {step_ms:.1f} ms)")
        results["points"][name]["select_ms_match_step"], results["points"][name]["select_ms_reuse_step"] = m, r
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
