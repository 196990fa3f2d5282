"""Train the toy text-to-video model with rectified-flow (flow-matching) loss.

The shipped toy model, v7 (16 x 32 x 32 pixels, 2,048 video tokens, started from v5's
weights; recipe, reasons and curves of every version in ``asymrnr_fx/toy/README.md``)::

    nice -n 19 python -m asymrnr_fx.toy.train --preset v7 --seed 0 --threads 2

32 minutes on two threads, a resumable checkpoint in ``--checkpoint-dir`` (default: the current
directory) every ~10 minutes (continue an interrupted run with ``--resume``), a CSV log of loss
and held-out prompt accuracy there too; plot it with::

    python -m asymrnr_fx.toy.train --plot train_log.csv curve.png

``--preset v7`` is the default. The other recipes stay as presets: ``v1`` (8 x 24 x 24, 33
minutes on one thread; the original data, noise, timestep and dropout streams and loss; not
re-run after the rewrite that added stages and checkpoints), ``v2``, ``v2-finish``, ``v3``
(from scratch), ``v4``, ``v5`` (from v1's weights) and ``v6``. Evaluate prompt accuracy of a
weights file with::

    python -m asymrnr_fx.toy.train --eval-only asymrnr_fx/toy/weights/toy_t2v_v7.safetensors

Why these choices: CPU threads only. Noise levels are shifted towards high noise (see
:func:`sample_sigmas`), where an object's place, colour and shape are decided. Training runs in
*stages* of increasing clip length (short clips first: they are many times cheaper per step,
so most of the budget goes to colour, size and shape; RoPE positions and all weights carry over
to the longer stages, which learn the motion). A stage may train on a smaller canvas than the
model's (RoPE is relative, so what it learns carries over): on a canvas the object nearly
fills, its place is nearly known and its outline is what the caption has to explain, which is
how v7 learned shape where v1-v6, trained on the full canvas, did not.
v1 and v2 also weighted object pixels (:func:`foreground_weights`, :func:`shape_weights`);
that biased them to oversized blobs, and v3 onwards train on the plain loss. An EMA of the
weights gives cleaner samples for the same budget; 10% caption dropout trains the unconditional
branch used by classifier-free guidance. Everything (init, data, noise, timesteps) derives from
``--seed``; checkpoints and ``--resume`` do not change the result. ``--minutes`` is a per-
invocation wall-clock cap: when it triggers the run writes a checkpoint and stops; resume it.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

from . import dataset
from .evaluate import evaluate
from .losses import foreground_weights, lr_factor, sample_sigmas, shape_weights
from .model import (
    DEFAULT_GUIDANCE,
    SCHEDULER_CONFIG,
    build_toy_model,
    default_configs,
    load_toy_model,
    rotary_embeddings,
    save_toy_model,
)
from .recipes import CHECKPOINT_DIR, HYPER, PRESETS, clip_offset, eval_spec, parse_stages, part_spec
from .train_log import append_csv, plot_log, truncate_csv

CHECKPOINT_NAME = "last.pt"
LOG_NAME = "train_log.csv"


def _load_grown(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict``, except that a table with more rows than ``state`` has (a vocabulary
    grown by words appended at its end, as v3 added "ring" and "bar" after v1's words) takes
    the stored rows and keeps its fresh initialisation for the new ones."""
    own = module.state_dict()
    merged = {}
    for name, value in state.items():
        target = own[name]
        if value.shape != target.shape and value.shape[1:] == target.shape[1:] and value.shape[0] < target.shape[0]:
            value = torch.cat([value, target[value.shape[0]:]])
        merged[name] = value
    module.load_state_dict(merged)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="v7")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=None,
                   help="FRAMES[@CANVAS][+...]:STEPS[:BATCH],... e.g. 4:5000,16:1000 or 2@24+8:3000,16:600 "
                        "(@CANVAS: square clips of that side; + : steps alternate between the parts)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--ema", type=float, default=None)
    p.add_argument("--cond-dropout", type=float, default=None)
    p.add_argument("--fg-weight", type=float, default=None, help="extra loss weight on object pixels")
    p.add_argument("--shape-weight", type=float, default=None, help="extra loss weight where the shapes disagree")
    p.add_argument("--sigma-shift", type=float, default=None, help="noise-level shift of training (3 = scheduler's)")
    p.add_argument("--init-from", default=None,
                   help="start from the EMA weights of this checkpoint (.pt) or finished model (.safetensors); "
                        "a name in --checkpoint-dir or a path")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    p.add_argument("--out", default=None, help="weights file written when training finishes")
    p.add_argument("--evals-per-stage", type=int, default=None, help="held-out evaluations per stage (CSV)")
    p.add_argument("--eval-samples", type=int, default=None, help="held-out samples per periodic evaluation")
    p.add_argument("--final-eval-samples", type=int, default=None, help="held-out samples of the final evaluation")
    p.add_argument("--final-train-samples", type=int, default=None, help="training-prompt samples of the final evaluation")
    p.add_argument("--eval-steps", type=int, default=None, help="sampler steps of the evaluations")
    # run control (not part of the recipe)
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR,
                   help="folder of last.pt, train_log.csv and the preset's output (default: the current directory)")
    p.add_argument("--resume", action="store_true", help="continue from CHECKPOINT_DIR/last.pt (recipe from the checkpoint)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint interval (wall clock)")
    p.add_argument("--minutes", type=float, default=180.0, help="wall-clock cap of this invocation (then checkpoint + stop)")
    p.add_argument("--stop-after", type=int, default=None, help="checkpoint and stop after this many steps (smoke tests)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    # other modes
    p.add_argument("--eval-only", type=Path, default=None, metavar="WEIGHTS", help="only evaluate these weights")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--plot", nargs=2, type=Path, default=None, metavar=("CSV", "PNG"), help="plot a training log")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


# ---------------------------------------------------------------- logging, checkpoints


def _csv_path(args: argparse.Namespace) -> Path:
    return Path(args.checkpoint_dir) / LOG_NAME


def _hyper(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in HYPER}


def save_checkpoint(path: Path, *, args, step, elapsed, model, ema_model, opt, gen) -> None:
    """Everything needed to continue bit for bit: weights, EMA, optimizer, next step, RNG states.
    Written to a temporary file and renamed, so an interrupted save never loses the last one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": 1,
        "hyper": _hyper(args),
        "configs": model.configs,
        "step": step,
        "elapsed": elapsed,
        "transformer": model.transformer.state_dict(),
        "text_encoder": model.text_encoder.state_dict(),
        "ema_transformer": ema_model.transformer.state_dict(),
        "ema_text_encoder": ema_model.text_encoder.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {"gen": gen.get_state(), "torch": torch.get_rng_state()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- training


def train(args: argparse.Namespace) -> None:
    ckpt_path = Path(args.checkpoint_dir) / CHECKPOINT_NAME
    ckpt = None
    if args.resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        for key, value in {"sigma_shift": SCHEDULER_CONFIG["shift"], "init_from": None, **ckpt["hyper"]}.items():
            if getattr(args, key) != value:
                print(f"resume: using the checkpoint's {key}={value!r} (command line had {getattr(args, key)!r})")
            setattr(args, key, value)
    stages = parse_stages(args.stages, args.batch_size)
    total = sum(s[1] for s in stages)
    configs = ckpt["configs"] if ckpt else default_configs(args.version)
    base_spec = dataset.VideoSpec.from_dict(configs["video_spec"])
    specs = [eval_spec(base_spec, parts) for parts, _, _ in stages]
    train_combos = dataset.combos(base_spec, "train")
    tcfg = configs["transformer_config"]
    for parts, _, _ in stages:
        for frames, canvas in parts:
            if frames > tcfg["sample_frames"]:
                raise ValueError(f"stage longer than the model's sample_frames={tcfg['sample_frames']}")
            if canvas is not None and canvas > min(tcfg["sample_height"], tcfg["sample_width"]):
                raise ValueError(f"canvas {canvas} larger than the model's RoPE grid "
                                 f"({tcfg['sample_height']}x{tcfg['sample_width']} px)")
            if canvas is not None and args.version == 1:
                raise ValueError("the v1 preset replays the original 24 px data stream; it has no @CANVAS stages")
            if not part_spec(base_spec, (frames, canvas)).fits():
                raise ValueError(f"{frames}-frame clips of {base_spec.shapes} do not fit a {canvas} px canvas; "
                                 "use a larger canvas or shorter clips")

    torch.manual_seed(args.seed)
    model = build_toy_model(seed=args.seed, configs=configs)
    transformer, text_encoder = model.transformer.train(), model.text_encoder.train()
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema_model = copy.deepcopy(model)
    ema_params = list(ema_model.transformer.parameters()) + list(ema_model.text_encoder.parameters())
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, elapsed0 = 0, 0.0
    log_csv = _csv_path(args)
    log_csv.parent.mkdir(parents=True, exist_ok=True)
    if ckpt:
        transformer.load_state_dict(ckpt["transformer"])
        text_encoder.load_state_dict(ckpt["text_encoder"])
        ema_model.transformer.load_state_dict(ckpt["ema_transformer"])
        ema_model.text_encoder.load_state_dict(ckpt["ema_text_encoder"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"]["gen"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step, elapsed0 = ckpt["step"], ckpt["elapsed"]
        truncate_csv(log_csv, step)
        print(f"resumed from {ckpt_path} at step {step}/{total} ({elapsed0 / 60:.1f} min trained)")
        del ckpt
    else:
        if log_csv.exists():
            log_csv.unlink()  # a fresh run starts a fresh log
        if args.init_from:
            init_path = Path(args.init_from)
            init_path = init_path if init_path.is_absolute() else Path(args.checkpoint_dir) / init_path
            if init_path.suffix == ".safetensors":  # a finished model (its weights are the EMA's)
                src = load_toy_model(path=init_path)
                init = {"ema_transformer": src.transformer.state_dict(),
                        "ema_text_encoder": src.text_encoder.state_dict(), "step": "final"}
            else:  # a training checkpoint
                init = torch.load(init_path, map_location="cpu", weights_only=True)
            for m in (model, ema_model):
                m.transformer.load_state_dict(init["ema_transformer"])
                _load_grown(m.text_encoder, init["ema_text_encoder"])
            print(f"initialised from the EMA weights of {init_path} (step {init['step']})", flush=True)
            del init

    n_params = sum(p.numel() for p in params)
    print(f"preset {args.preset} seed {args.seed}: {n_params / 1e6:.2f}M parameters, stages "
          + ", ".join("+".join(f"{q.frames}x{q.height}x{q.width} ({q.tokens()} tokens)"
                               for q in (part_spec(base_spec, part) for part in parts)) + f" x {n} steps of {b}"
                      for parts, n, b in stages), flush=True)
    stage_starts = [sum(s[1] for s in stages[:i]) for i in range(len(stages))]  # first global step of each
    eval_at = {}
    for i, ((_, n, _), start) in enumerate(zip(stages, stage_starts)):
        for j in range(1, args.evals_per_stage + 1):
            eval_at[start + round(j * n / args.evals_per_stage)] = i
    eval_at.pop(total, None)  # the final evaluation replaces it

    null_ids = dataset.tokenize([""])[0]
    t_run = time.time()
    t_ckpt = t_run
    rotary_cache: dict[int, tuple] = {}
    losses: list[float] = []
    t_log, cpu_log, steps_since_log = time.time(), time.process_time(), 0

    def checkpoint(next_step: int) -> None:
        nonlocal t_ckpt
        save_checkpoint(ckpt_path, args=args, step=next_step, elapsed=elapsed0 + time.time() - t_run,
                        model=model, ema_model=ema_model, opt=opt, gen=gen)
        t_ckpt = time.time()
        print(f"checkpoint at step {next_step}: {ckpt_path} ({ckpt_path.stat().st_size / 2**20:.1f} MiB)", flush=True)

    while step < total:
        stage, first_clip = clip_offset(stages, step)
        parts, batch = stages[stage][0], stages[stage][2]
        spec = specs[stage]  # evaluation geometry of the stage
        clip_spec = part_spec(base_spec, parts[(step - stage_starts[stage]) % len(parts)])
        geometry = (clip_spec.frames, clip_spec.height, clip_spec.width)
        if geometry not in rotary_cache:
            rotary_cache[geometry] = rotary_embeddings(transformer.config, *geometry)
        lr = args.lr * lr_factor(step, total, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        indices = range(first_clip, first_clip + batch)
        data_spec = None if args.version == 1 else clip_spec  # v1: exactly the original data stream
        if args.shape_weight > 0:
            x0, attrs, shape_maps = dataset.make_training_batch(args.seed, indices, train_combos, data_spec)
        else:
            x0, attrs = dataset.make_batch(args.seed, indices, train_combos, data_spec)
        ids = dataset.tokenize([dataset.caption(*a) for a in attrs])
        drop = torch.rand(len(attrs), generator=gen) < args.cond_dropout
        ids[drop] = null_ids

        noise = torch.randn(x0.shape, generator=gen)
        sigma = sample_sigmas(len(attrs), gen, shift=args.sigma_shift)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        target = noise - x0  # velocity: d x_t / d sigma

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            pred = transformer(
                hidden_states=xt,
                encoder_hidden_states=text_encoder(ids),
                timestep=sigma * 1000.0,
                image_rotary_emb=rotary_cache[geometry],
                return_dict=False,
            )[0]
        if args.fg_weight > 0 or args.shape_weight > 0:
            weights = foreground_weights(x0, args.fg_weight)
            if args.shape_weight > 0:
                weights = weights + shape_weights(shape_maps, args.shape_weight)
            loss = (weights * (pred.float() - target) ** 2).mean()
        else:
            loss = torch.nn.functional.mse_loss(pred.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        step += 1
        losses.append(loss.item())
        steps_since_log += 1

        if step % args.log_every == 0 or step == total:
            now = time.time()
            sec_per_step = (now - t_log) / steps_since_log
            cpu_per_step = (time.process_time() - cpu_log) / steps_since_log
            append_csv(log_csv, dict(step=step, stage=stage, frames=clip_spec.frames,
                                      elapsed_min=round((elapsed0 + now - t_run) / 60, 3), lr=f"{lr:.3e}",
                                      loss=f"{sum(losses) / len(losses):.5f}"))
            if step % (10 * args.log_every) == 0 or step == total:
                left = stages[stage][1] - (step - stage_starts[stage])
                print(f"step {step}/{total} stage {stage} ({'+'.join(str(f) for f, _ in parts)} frames) loss {sum(losses) / len(losses):.4f} "
                      f"lr {lr:.2e} {sec_per_step:.2f} s/step ({cpu_per_step:.2f} CPU s/step), "
                      f"stage done in ~{left * sec_per_step / 60:.0f} min", flush=True)
            losses.clear()
            t_log, cpu_log, steps_since_log = now, time.process_time(), 0

        if step in eval_at:
            t0, c0 = time.time(), time.process_time()
            res = evaluate(ema_model, args.eval_samples, args.eval_steps, args.guidance, spec=spec, splits=("heldout",))
            acc = res["heldout"]
            append_csv(log_csv, dict(step=step, stage=stage, frames=spec.frames,
                                      elapsed_min=round((elapsed0 + time.time() - t_run) / 60, 3), split="heldout",
                                      n=acc["n"], **{k: round(acc[k], 4) for k in ("colour", "shape", "direction", "all")}))
            print(f"eval step {step} ({spec.frames} frames, {acc['n']} held-out prompts, {time.time() - t0:.0f} s): "
                  + " ".join(f"{k} {acc[k]:.2f}" for k in ("colour", "shape", "direction", "all")), flush=True)
            t_log += time.time() - t0  # keep evaluation time out of s/step
            cpu_log += time.process_time() - c0

        # Time-triggered checkpoints and pauses wait for a log boundary, so that a resumed run logs
        # the same loss rows as an uninterrupted one.
        at_log = step % args.log_every == 0
        stage_end = step < total and clip_offset(stages, step)[0] != stage
        paused = (args.stop_after is not None and step >= args.stop_after) or (
            at_log and time.time() - t_run > args.minutes * 60)
        if step < total and (stage_end or paused or (at_log and time.time() - t_ckpt > args.ckpt_minutes * 60)):
            checkpoint(step)
        if step < total and paused:
            print(f"paused after step {step}/{total}; continue with the same command plus --resume", flush=True)
            return

    # finished: final evaluation on the full geometry, weights file, final checkpoint
    t0 = time.time()
    res = evaluate(ema_model, args.final_eval_samples, args.eval_steps, args.guidance, spec=specs[-1], splits=("heldout",))
    res.update(evaluate(ema_model, args.final_train_samples, args.eval_steps, args.guidance, spec=specs[-1],
                        splits=("train",)))
    for split in ("heldout", "train"):
        acc = res[split]
        append_csv(log_csv, dict(step=step, stage=len(stages) - 1, frames=specs[-1].frames,
                                  elapsed_min=round((elapsed0 + time.time() - t_run) / 60, 3), split=split, n=acc["n"],
                                  **{k: round(acc[k], 4) for k in ("colour", "shape", "direction", "all")}))
        print(f"final eval {split} ({acc['n']} prompts): "
              + " ".join(f"{k} {acc[k]:.2f}" for k in ("colour", "shape", "direction", "all", "colour_direction")))
    print(f"final evaluation took {time.time() - t0:.0f} s")
    elapsed = elapsed0 + time.time() - t_run
    ema_model.spec = specs[-1]
    meta = {"train": {**_hyper(args), "steps_done": step, "seconds": round(elapsed)},
            "eval": {split: {k: v for k, v in res[split].items()} for split in ("heldout", "train")}}
    out_path = Path(args.out)
    if not out_path.parent.exists():  # resumed from a checkpoint written in another checkout
        out_path = Path(args.checkpoint_dir) / out_path.name
    out = save_toy_model(ema_model, out_path, meta)
    checkpoint(step)
    print(f"saved {out} after {step} steps in {elapsed / 60:.1f} min", flush=True)

def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.plot is not None:
        print(plot_log(*args.plot))
        return
    if args.eval_only is not None:
        model = load_toy_model(path=args.eval_only)
        res = evaluate(model, args.final_eval_samples, args.eval_steps, args.guidance)
        for split, acc in res.items():
            print(split, {k: round(v, 3) if isinstance(v, float) else v for k, v in acc.items()})
        return
    train(args)


if __name__ == "__main__":
    sys.exit(main())
