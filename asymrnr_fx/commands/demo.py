"""``asymrnr-fx demo``: the shipped toy text-to-video model, compiled, with and without AsymRnR.

Prints a short table (step-time ratio measured interleaved, attention cost kept, PSNR/SSIM
against the baseline, prompt accuracy of both) and writes a side-by-side GIF
(baseline | AsymRnR | 4x absolute difference) and the table to the output folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="asymrnr-out/demo", help="output folder (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=4, help="number of held-out prompts to generate")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--q", type=float, default=0.5, help="query reduction ratio (default: %(default)s)")
    p.add_argument("--kv", type=float, default=0.3, help="key/value reduction ratio (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed generations per variant")
    p.add_argument("--quick", action="store_true", help="reduced mode: 2 prompts, 4 steps, no inductor (for CI)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (e.g. 1 when another job holds a core)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    import asymrnr_fx
    from asymrnr_fx import api
    from asymrnr_fx.evaluation import media, metrics
    from asymrnr_fx.evaluation.targets import toy_prompts
    from asymrnr_fx.toy import model as toy_model
    from asymrnr_fx.toy import scorer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.prompts, args.steps, args.repeats = 2, 4, 1
    compile_ = not args.quick
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = toy_model.load_toy_model()
    prompts = toy_prompts(args.prompts)
    plan = asymrnr_fx.Plan.uniform(q=args.q, kv=args.kv, cache_window=5 if args.steps >= 10 else 2, seed=args.seed)
    variants = {
        "baseline": api.baseline(model.transformer, compile=compile_),
        "asymrnr": asymrnr_fx.transform(model.transformer, plan, compile=compile_),
    }

    def generate(fn):
        return toy_model.generate(prompts, num_steps=args.steps, seed=args.seed, transformer=fn, model=model)

    videos, times = {}, {k: [] for k in variants}
    with tqdm(total=len(variants) * (args.repeats + 1), desc="demo (compile, then interleaved timing)") as bar:
        for name, fn in variants.items():
            videos[name] = generate(fn)
            bar.update()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                if name == "asymrnr":
                    asymrnr_fx.reset(fn)
                start = time.perf_counter()
                generate(fn)
                times[name].append((time.perf_counter() - start) / args.steps)
                bar.update()

    base, fast = videos["baseline"], videos["asymrnr"]
    base_t, fast_t = statistics.median(times["baseline"]), statistics.median(times["asymrnr"])
    acc_base = scorer.prompt_accuracy(base, prompts)
    acc_fast = scorer.prompt_accuracy(fast, prompts)
    report = variants["asymrnr"].report
    summary = {
        "prompts": prompts,
        "steps": args.steps,
        "compiled": compile_,
        "plan": repr(plan),
        "sites_rewritten": len(report.rewritten),
        "step_ms_baseline": 1000 * base_t,
        "step_ms_asymrnr": 1000 * fast_t,
        "speedup": base_t / fast_t,
        "attention_cost_kept": plan.attention_cost(),
        "psnr_db": metrics.psnr(base, fast, data_range=2.0),
        "ssim": metrics.ssim(base, fast, data_range=2.0),
        "prompt_accuracy_baseline": acc_base["all"],
        "prompt_accuracy_asymrnr": acc_fast["all"],
        "colour_direction_accuracy_baseline": acc_base["colour_direction"],
        "colour_direction_accuracy_asymrnr": acc_fast["colour_direction"],
    }
    table = "\n".join([
        "| | baseline | AsymRnR |",
        "|---|---|---|",
        f"| median step time (ms, interleaved) | {summary['step_ms_baseline']:.1f} | {summary['step_ms_asymrnr']:.1f} |",
        f"| speedup | 1.00x | {summary['speedup']:.2f}x |",
        f"| video-video attention cost kept | 1.00 | {summary['attention_cost_kept']:.2f} |",
        f"| PSNR vs baseline (dB) | - | {summary['psnr_db']:.2f} |",
        f"| SSIM vs baseline | - | {summary['ssim']:.3f} |",
        f"| prompt accuracy, colour+direction | {acc_base['colour_direction']:.2f} | {acc_fast['colour_direction']:.2f} |",
        f"| prompt accuracy, colour+shape+direction | {acc_base['all']:.2f} | {acc_fast['all']:.2f} |",
    ])
    gif = media.side_by_side_gif(
        [torch.cat(list(base), dim=-1), torch.cat(list(fast), dim=-1), torch.cat(list(media.difference(base, fast)), dim=-1)],
        out / "baseline_asymrnr_diff.gif",
    )
    (out / "table.md").write_text(f"prompts: {', '.join(prompts)}\n\n{table}\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(report)
    print()
    print(f"prompts: {', '.join(prompts)}; {args.steps} steps; {'compiled by inductor' if compile_ else 'eager'}")
    print(table)
    print(f"wrote {gif} (rows: baseline | AsymRnR | 4x |difference|), {out / 'table.md'}, {out / 'summary.json'}")
    return 0
