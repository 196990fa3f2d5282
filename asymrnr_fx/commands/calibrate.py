"""``asymrnr-fx calibrate``: measure a built-in model's redundancy, write a calibration, a plan and heatmaps.

The built-in models live in :data:`TARGETS` (name -> builder); add an entry to make another
model available here and in ``benchmarks/calibrated_vs_uniform.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass
class Target:
    """A model plus how to run one full generation of it.

    ``run(model, seed)`` runs a whole sampling loop on ``model`` (the original or a
    transformed copy) from the noise of ``seed`` and returns the final latents/video.
    """

    model: Any
    run: Callable[[Any, int], torch.Tensor]
    description: str


def _euler(model: Any, x: torch.Tensor, steps: int, **kwargs: Any) -> torch.Tensor:
    """A flow-matching style Euler loop on t in [999, 1]: the sampler shape of a video DiT, for random-weight models."""
    ts = torch.linspace(999, 1, steps)
    for i, t in enumerate(ts):
        out = model(hidden_states=x, timestep=t.expand(x.shape[0]), **kwargs)
        out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
        t_next = ts[i + 1] if i + 1 < steps else torch.zeros(())
        x = x + (t_next - t) / 1000.0 * out
    return x


def tiny_dit(steps: int) -> Target:
    """examples/tiny_dit.py, random weights: 4 blocks, 4 heads x 16, grid (4, 8, 8) = 256 video tokens."""
    path = Path(__file__).resolve().parents[2] / "examples" / "tiny_dit.py"
    if not path.exists():
        raise FileNotFoundError(f"the tiny-dit model is defined in {path}, which this installation does not have")
    name = "asymrnr_fx_example_tiny_dit"
    module = sys.modules.get(name)
    if module is None:  # registered, because Dynamo re-imports the modules of the code it traces
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    torch.manual_seed(0)
    model = module.TinyVideoDiT(channels=4, dim=64, depth=4, heads=4, patch=2, frames=4, height=16, width=16).eval()

    def run(m: Any, seed: int) -> torch.Tensor:
        x = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(seed))
        return _euler(lambda hidden_states, timestep: m(hidden_states, timestep), x, steps)

    return Target(model, run, "hand-written DiT (random weights), 4 blocks, grid (4, 8, 8)")


def cogvideox_tiny(steps: int) -> Target:
    """diffusers CogVideoXTransformer3DModel, random weights: 4 blocks, 4 heads x 16, grid (4, 8, 8) + 8 text tokens."""
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    frames, size, text, grid = 4, 16, 8, (4, 8, 8)
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4, num_layers=4,
        text_embed_dim=32, time_embed_dim=16, sample_frames=(frames - 1) * 4 + 1, sample_height=size,
        sample_width=size, patch_size=2, max_text_seq_length=text, use_rotary_positional_embeddings=True,
    ).eval()
    rope = get_3d_rotary_pos_embed(16, ((0, 0), grid[1:]), grid[1:], frames)

    def run(m: Any, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, frames, 4, size, size, generator=g)
        prompt = torch.randn(1, text, 32, generator=g)
        return _euler(m, x, steps, encoder_hidden_states=prompt, image_rotary_emb=rope, return_dict=False)

    return Target(model, run, "diffusers CogVideoX transformer (random weights), 4 blocks, grid (4, 8, 8) + 8 text")


def toy(steps: int) -> Target:
    """The shipped trained toy text-to-video model (asymrnr_fx.toy), CFG, prompts cycling over the training captions."""
    from asymrnr_fx.toy import dataset
    from asymrnr_fx.toy.model import generate, load_toy_model

    bundle = load_toy_model()

    def run(m: Any, seed: int) -> torch.Tensor:
        prompt = dataset.caption(*dataset.TRAIN_COMBOS[seed % len(dataset.TRAIN_COMBOS)])
        return generate(prompt, num_steps=steps, seed=seed, transformer=m, model=bundle)

    return Target(bundle.transformer, run, "trained toy text-to-video CogVideoX (asymrnr_fx.toy), CFG 3")


#: Built-in models: name -> builder(steps) -> Target.
TARGETS: dict[str, Callable[[int], Target]] = {
    "tiny-dit": tiny_dit,
    "cogvideox-tiny": cogvideox_tiny,
    "toy": toy,
}


def toy_available() -> bool:
    """Whether trained toy weights are shipped (``asymrnr_fx/toy/weights/*.safetensors``)."""
    return any((Path(__file__).resolve().parents[1] / "toy" / "weights").glob("*.safetensors"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from asymrnr_fx.calibrate import default_cache_dir

    p.add_argument("--model", default="tiny-dit", choices=sorted(TARGETS), help="built-in model (default: %(default)s)")
    p.add_argument("--generations", type=int, default=2, help="sample generations to measure (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per generation (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--budget", type=float, default=None,
                      help="mean video-video attention cost to keep, in (0, 1] (default: 0.7)")
    goal.add_argument("--speedup", type=float, default=None, help="target ideal end-to-end speedup instead of a budget")
    p.add_argument("--attention-share", type=float, default=0.5,
                   help="fraction of a forward pass spent in attention, for --speedup (default: %(default)s)")
    p.add_argument("--published", default=None, metavar="MODEL:POINT",
                   help="also write the paper-style plan: this published threshold map on the calibrated tiers "
                        "(e.g. cogvideox-2b:base)")
    p.add_argument("--cache-window", type=int, default=5, help="matching cache window in steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="partition seed of the plans (default: %(default)s)")
    p.add_argument("--heads", type=int, default=None, help="sample this many heads per call (default: all)")
    p.add_argument("--sensitivity", action=argparse.BooleanOptionalAction, default=True,
                   help="measure output sensitivity and weight the plan by it (default: on)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="calibration cache (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")


def run(args: argparse.Namespace) -> int:
    from asymrnr_fx import Plan, budget
    from asymrnr_fx.calibrate import calibrate
    from asymrnr_fx.plot import plot_calibration, plot_plan
    from asymrnr_fx.sensitivity import measure_sensitivity

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "toy" and not toy_available():
        raise SystemExit("the toy model has no shipped weights (asymrnr_fx/toy/weights/*.safetensors)")
    target = TARGETS[args.model](args.steps)
    cache = None if args.no_cache else args.cache_dir
    options = Plan(cache_window=args.cache_window, seed=args.seed)
    t0 = time.perf_counter()
    cal = calibrate(target.model, target.run, generations=args.generations, plan=options, heads=args.heads,
                    cache_dir=cache, key=f"builtin:{args.model}:{args.steps}", name=args.model, progress=True)
    t_cal = time.perf_counter() - t0
    if args.sensitivity:
        t1 = time.perf_counter()
        cal = measure_sensitivity(target.model, cal, target.run, generations=args.generations, cache_dir=cache,
                                  key=f"builtin:{args.model}:{args.steps}", progress=True)
        t_sens = time.perf_counter() - t1
    if args.speedup is not None:
        plan = Plan.for_speedup(cal, args.speedup, args.attention_share)
    else:
        plan = Plan.for_budget(cal, 0.7 if args.budget is None else args.budget)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cal.save(out / "calibration.safetensors")
    plan.save(out / "plan.safetensors")
    plot_plan(plan, out / "plan.png")
    plot_calibration(cal, out / "calibration.png", plan=plan)
    print(f"{target.description}")
    print(cal)
    print(f"calibration {t_cal:.1f} s" + (f", sensitivity {t_sens:.1f} s" if args.sensitivity else "")
          + " (0 s when read from the cache)")
    print(f"{plan}\n  expected error (calibration estimate) {budget.expected_error(plan, cal):.3g}, "
          f"ideal speedup at attention share {args.attention_share:g}: "
          f"{budget.speedup_for_cost(plan.attention_cost(), args.attention_share):.3f}x")
    written = ["calibration.safetensors", "plan.safetensors", "plan.png", "calibration.png"]
    if args.published:
        paper = budget.plan_like_published(cal, args.published)
        paper.save(out / "plan_published_map.safetensors")
        plot_plan(paper, out / "plan_published_map.png")
        print(f"{paper}")
        written += ["plan_published_map.safetensors", "plan_published_map.png"]
    print(f"wrote {', '.join(str(out / w) for w in written)}")
    return 0
