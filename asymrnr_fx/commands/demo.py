"""``asymrnr-fx demo``: the shipped toy text-to-video model, compiled, with and without AsymRnR.

What it runs: the newest shipped toy weights (:func:`asymrnr_fx.toy.newest_weights`;
``--weights`` picks another file) on held-out
prompts (attribute triples never trained on), 20 steps, with

* the baseline (unreduced model, compiled by inductor);
* AsymRnR with the plan a user would pick: a **calibrated** plan keeping
  :data:`PLAN_BUDGET` = 0.6 of the video-video attention cost, made by
  :func:`asymrnr_fx.calibration.calibrate` + :func:`~asymrnr_fx.calibration.measure_sensitivity` +
  :func:`~asymrnr_fx.calibration.plan_for_budget` on *other* prompts and noise (:data:`CALIBRATION_PROMPTS`
  training captions, seed :data:`CALIBRATION_SEED`; the demo's prompts are held out and use
  seed 0). It is computed once and shipped next to the weights
  (``<weights stem>.plan.safetensors``, plus its calibration ``<stem>.calibration.safetensors`` so
  other budgets are instant); ``asymrnr-fx demo --make-plan`` regenerates both. Without them
  (e.g. new weights) the demo calibrates itself (progress bars, several minutes) and keeps
  the result in the calibration cache;
* AsymRnR with a *uniform* plan at the same attention cost (the ``asymrnr`` plan of
  ``asymrnr-fx bench``), so the gain from calibrating is visible.

``--plan`` chooses another plan: ``calibrated:0.4`` (another budget), ``uniform:0.5,0.3``
(or ``--q/--kv``), ``published:cogvideox-2b:base`` (only where its site count fits the
model's; the toy model has 3 or 4 sites, so this explains how to get the paper's map
instead), or a saved plan file. A table calibrated for another step count is resampled
onto this run's steps (one ratio per step at the same position in the denoising schedule).

Each variant is compiled by a 1-step generation, then all variants generate the same videos
advanced one denoising step at a time in turn (:func:`asymrnr_fx.toy.model.generate_interleaved`):
every step of every variant is timed next to the others', and no extra timing generation is
needed (``--repeats`` adds some).

Writes a GIF (one labelled row per variant with its speedup and PSNR, each followed by 4x
its absolute difference to the baseline), a markdown table (step-time ratio measured
interleaved, attention cost kept, PSNR/SSIM against the baseline, colour / shape / direction
accuracy of every variant with the number of prompts, attributes the baseline model itself
gets wrong flagged) and a JSON summary to ``--out``.

``--quick`` (CI): 2 prompts, 4 steps, no inductor; the shipped plan is resampled to 4 steps
(or, without one, a similarity-only calibration at 4 steps is made). Nothing on the demo's
path imports ``transformers``: the ``[demo]`` extra is enough.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from .demo_plan import (  # noqa: F401  (tests reach some of these through this module)
    CALIBRATION_PROMPTS,
    CALIBRATION_SEED,
    PLAN_BUDGET,
    PLAN_STEPS,
    default_weights,
    weights_digest,
    plan_path,
    calibration_path,
    calibration_prompts,
    num_sites,
    make_plan,
    resample,
    resolve_plan,
)

GIF_NAME = "baseline_asymrnr_diff.gif"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="asymrnr-out/demo", help="output folder (default: %(default)s)")
    p.add_argument("--prompts", type=int, default=4, help="number of held-out prompts to generate")
    p.add_argument("--steps", type=int, default=PLAN_STEPS, help="sampling steps (default: %(default)s)")
    p.add_argument("--plan", default=None, metavar="PLAN",
                   help=f"'calibrated[:BUDGET]' (default: calibrated:{PLAN_BUDGET:g}, the shipped plan), "
                        "'uniform:Q,KV', 'published:MODEL:POINT' or a plan file")
    p.add_argument("--q", type=float, default=None, help="uniform plan: query reduction ratio (with --kv)")
    p.add_argument("--kv", type=float, default=None, help="uniform plan: key/value reduction ratio (with --q)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed generations of all variants, advanced step by step in turn (default: 2; 1 for "
                        "models of more than 1024 video tokens, to stay within a few minutes on a CPU)")
    p.add_argument("--quick", action="store_true", help="reduced mode: 2 prompts, 4 steps, no inductor (for CI)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the demo's generations")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (e.g. 1 when another job holds a core)")
    p.add_argument("--weights", type=Path, default=None,
                   help="toy weights file (default: the newest shipped, toy_t2v_vN.safetensors with the highest N)")
    p.add_argument("--make-plan", action="store_true",
                   help=f"(re)compute the shipped calibrated plan (budget {PLAN_BUDGET:g}, {PLAN_STEPS} steps) and its "
                        "calibration for the weights and write them next to the weights file, then exit")


# =========================================================================== weights and plan files
def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.make_plan:
        weights = Path(args.weights or default_weights())
        budget = float(args.plan.partition(":")[2]) if args.plan and args.plan.startswith("calibrated:") else PLAN_BUDGET
        t0 = time.perf_counter()
        p_file, c_file = make_plan(weights, budget)
        from asymrnr_fx.plan import Plan

        print(f"{Plan.load(p_file)}\nwrote {p_file} and {c_file} ({time.perf_counter() - t0:.0f} s)")
        return 0
    if args.quick:
        args.prompts, args.steps, args.repeats = 2, 4, 1
    return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import asymrnr_fx
    from asymrnr_fx import api
    from asymrnr_fx.evaluation import media, metrics
    from asymrnr_fx.evaluation.compare import method_plan
    from asymrnr_fx.evaluation.targets import toy_prompts
    from asymrnr_fx.toy import model as toy_model
    from asymrnr_fx.toy import scorer

    compile_ = not args.quick
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights or default_weights())
    model = toy_model.load_toy_model(path=weights)
    cfg = model.transformer.config
    if args.repeats is None:
        args.repeats = 2 if model.spec.tokens(cfg.patch_size, cfg.patch_size_t) <= 1024 else 1
    prompts = toy_prompts(args.prompts, spec=model.spec)
    plan, kind, source = resolve_plan(args, model, weights)
    if plan.is_table and plan.num_steps != args.steps:
        source += f", resampled from {plan.num_steps} to {args.steps} steps"
        plan = resample(plan, args.steps)
    cost = plan.attention_cost()
    labels = {"calibrated": "AsymRnR calibrated", "uniform": "AsymRnR uniform", "published": "AsymRnR published",
              "file": "AsymRnR plan file"}
    plans = {labels[kind]: plan}
    if kind != "uniform":  # the same attention cost spent evenly: what calibrating buys
        uniform = method_plan("asymrnr", cost, cache_window=plan.cache_window, seed=plan.seed)
        plans["AsymRnR uniform"] = dataclasses.replace(uniform, name=f"uniform@{cost:.2f}")
    variants = {"baseline": api.baseline(model.transformer, compile=compile_)}
    for name, p in plans.items():
        variants[name] = asymrnr_fx.transform(model.transformer, p, compile=compile_)

    videos, times = {}, {k: [] for k in variants}
    t_start = time.perf_counter()
    with tqdm(total=len(variants) + args.repeats, desc="demo (compile, then interleaved generations)") as bar:
        for fn in variants.values():  # compile: one 1-step generation at the same shapes
            toy_model.generate(prompts, num_steps=1, seed=args.seed, transformer=fn, model=model)
            bar.update()
        for _ in range(args.repeats):
            for name, fn in variants.items():
                if name != "baseline":
                    asymrnr_fx.reset(fn)
            out_videos, seconds = toy_model.generate_interleaved(prompts, variants, num_steps=args.steps,
                                                                 seed=args.seed, model=model)
            videos = videos or out_videos
            for name, per_step in seconds.items():
                times[name].append(sum(per_step) / args.steps)
            bar.update()
    wall = time.perf_counter() - t_start

    base = videos["baseline"]
    step_s = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
    acc = {k: scorer.prompt_accuracy(v, prompts, spec=model.spec) for k, v in videos.items()}
    rows = {}
    for name, v in videos.items():
        is_base = name == "baseline"
        rows[name] = {
            "plan": None if is_base else plans[name].name,
            "attention_cost_kept": 1.0 if is_base else plans[name].attention_cost(),
            "mean_q": 0.0 if is_base else float(plans[name].table("q").mean()),
            "mean_kv": 0.0 if is_base else float(plans[name].table("kv").mean()),
            "step_ms": 1000 * step_s[name],
            "speedup": step_s["baseline"] / step_s[name],
            "psnr_db": float("inf") if is_base else metrics.psnr(base, v, data_range=2.0),
            "ssim": 1.0 if is_base else metrics.ssim(base, v, data_range=2.0),
            "accuracy": {a: acc[name][a] for a in ("colour", "shape", "direction", "all")},
            "correct": {a: round(acc[name][a] * len(prompts)) for a in ("colour", "shape", "direction", "all")},
            "predictions": [list(p) for p in acc[name]["predictions"]],
            "same_as_baseline": sum(p == b for p, b in zip(acc[name]["predictions"], acc["baseline"]["predictions"])),
        }
    table = _table(rows, len(prompts), source)
    gif_rows = []
    for name, v in videos.items():
        r = rows[name]
        if name == "baseline":
            gif_rows.append((f"baseline (unreduced{', compiled' if compile_ else ''}): {r['step_ms']:.0f} ms/step", v))
            continue
        label = f"{name}, attention cost {r['attention_cost_kept']:.2f}: {r['speedup']:.2f}x, PSNR {r['psnr_db']:.1f} dB"
        gif_rows.append((label, v))
        gif_rows.append((f"4x |{name} - baseline|", media.difference(base, v)))
    gif = media.labelled_grid_gif(gif_rows, out / GIF_NAME, columns=prompts)
    header = (f"{len(prompts)} held-out prompts: {', '.join(prompts)}; {args.steps} steps, seed {args.seed}; "
              f"{'compiled by inductor' if compile_ else 'eager'}; weights {weights.name} "
              f"({model.spec.frames}x{model.spec.height}x{model.spec.width} px, {num_sites(model)} attention sites)")
    (out / "table.md").write_text(f"{header}\n\n{table}\n")
    summary = {
        "weights": weights.name, "prompts": prompts, "steps": args.steps, "seed": args.seed, "compiled": compile_,
        "plan_source": source, "calibration_prompts": calibration_prompts(model.spec), "calibration_seed": CALIBRATION_SEED,
        "variants": rows, "generation_wall_s": wall,
        "sites_rewritten": {k: len(v.report.rewritten) for k, v in variants.items() if k != "baseline"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(variants[next(iter(plans))].report)
    print()
    print(header)
    print(table)
    row_names = ["baseline"] + [row for n in plans for row in (n, f"4x |{n} - baseline|")]
    print(f"wrote {gif} (rows: {' | '.join(row_names)}), {out / 'table.md'}, {out / 'summary.json'}")
    return 0


def _table(rows: dict[str, dict], n: int, source: str) -> str:
    """The markdown table: one column per variant; attributes the baseline itself gets wrong are flagged."""
    names = list(rows)
    base = rows["baseline"]

    def line(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def per(fmt, key, baseline_cell=None):
        return [baseline_cell if (baseline_cell is not None and k == "baseline") else fmt(rows[k][key]) for k in names]

    out = [line("", names), "|---|" + "---|" * len(names)]
    out.append(line("median step time (ms, interleaved)", per(lambda v: f"{v:.1f}", "step_ms")))
    out.append(line("speedup", per(lambda v: f"{v:.2f}x", "speedup")))
    out.append(line("video-video attention cost kept", per(lambda v: f"{v:.2f}", "attention_cost_kept")))
    out.append(line("mean ratio q / kv", [f"{rows[k]['mean_q']:.2f} / {rows[k]['mean_kv']:.2f}" for k in names]))
    out.append(line("PSNR vs baseline (dB)", per(lambda v: f"{v:.2f}", "psnr_db", "-")))
    out.append(line("SSIM vs baseline", per(lambda v: f"{v:.3f}", "ssim", "-")))
    flagged = []
    for attr, label in (("colour", "colour"), ("shape", "shape"), ("direction", "direction"),
                        ("all", "colour + shape + direction")):
        wrong = n - base["correct"][attr]
        mark = ""
        if wrong:
            mark = "*"
            flagged.append((label, wrong))
        cells = [f"{rows[k]['accuracy'][attr]:.2f} ({rows[k]['correct'][attr]}/{n})" for k in names]
        out.append(line(f"prompt accuracy: {label}{mark}", cells))
    out.append(line("same colour, shape and direction as the baseline's video",
                    ["-"] + [f"{rows[k]['same_as_baseline']}/{n}" for k in names[1:]]))
    notes = [
        (f"Prompt accuracy: attributes read off the frames by `asymrnr_fx.toy.scorer`, over n = {n} held-out "
         "prompts (chance: colour 0.20, shape 0.33, direction 0.25)."),
        f"Plan of {names[1]}: {source}.",
    ]
    if len(names) > 2:
        notes.append("AsymRnR uniform: the same attention cost with q and kv ratios fixed everywhere "
                     "((1 - q) = c^(2/3), (1 - kv) = c^(1/3), as in `asymrnr-fx bench`).")
    if flagged:
        what = "; ".join(f"{label} on {w} of {n}" for label, w in flagged)
        notes.append(f"\\* The baseline (unreduced) model itself gets this wrong ({what}; what the toy model "
                     "learned: asymrnr_fx/toy/README.md), so a low number in that row is the model's, not "
                     "AsymRnR's. Compare each AsymRnR column with the baseline column, and see the last row.")
    return "\n".join(out) + "\n\n" + "\n".join(f"{note}  " for note in notes)
