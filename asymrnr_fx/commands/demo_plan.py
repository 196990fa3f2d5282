"""The demo's plans: the shipped weights, the calibrated plan next to them, and ``--plan`` parsing.

Kept apart from :mod:`.demo` (which runs and reports) because making a plan is its own job:
calibrating on training prompts, shipping the result beside the weights, and resampling a
plan onto another step count.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

#: Fraction of the full video-video attention cost the default (calibrated) plan keeps.
PLAN_BUDGET = 0.6
#: Sampling steps and matching cache window the shipped plan is calibrated for (the demo's defaults).
PLAN_STEPS = 20
PLAN_WINDOW = 5
#: Calibration data: this many *training* captions (never the held-out demo prompts), noise seed below.
CALIBRATION_PROMPTS = 4
CALIBRATION_SEED = 100


def default_weights() -> Path:
    from asymrnr_fx.toy import newest_weights

    weights = newest_weights()
    if weights is None:
        raise SystemExit("the toy model has no shipped weights (asymrnr_fx/toy/weights/toy_t2v*.safetensors)")
    return weights


def weights_digest(weights: Path) -> str:
    """First 12 hex digits of the weights file's SHA-256 (ties a plan to the weights it was made for)."""
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:12]


def plan_path(weights: Path) -> Path:
    """Where the calibrated plan of ``weights`` is shipped: ``<stem>.plan.safetensors`` next to it."""
    return Path(weights).with_name(Path(weights).stem + ".plan.safetensors")


def calibration_path(weights: Path) -> Path:
    """Where the calibration of ``weights`` is shipped: ``<stem>.calibration.safetensors`` next to it."""
    return Path(weights).with_name(Path(weights).stem + ".calibration.safetensors")


def calibration_prompts(spec: Any = None) -> list[str]:
    """The captions the plan is calibrated on: training combinations of ``spec``'s shape words
    (default: the newest shipped model's), never a held-out one."""
    from asymrnr_fx.evaluation.targets import toy_prompts

    return toy_prompts(CALIBRATION_PROMPTS, heldout=False, spec=spec)


def model_label(weights: Path, digest: str) -> str:
    return f"toy:{Path(weights).name}#{digest}"


def num_sites(model: Any) -> int:
    """Attention sites of the toy CogVideoX: one joint text+video attention per block."""
    return int(model.transformer.config.num_layers)


def calibrate_toy(model: Any, weights: Path, *, steps: int = PLAN_STEPS, cache_window: int = PLAN_WINDOW,
                  sensitivity: bool = True, progress: bool = True, cache_dir: Path | None = None):
    """Calibrate the toy model on :func:`calibration_prompts` (seed :data:`CALIBRATION_SEED`), with
    output sensitivity unless ``sensitivity=False``. About 6 CPU-minutes for v1 at 20 steps (34 generations)."""
    from asymrnr_fx.calibration import calibrate, measure_sensitivity
    from asymrnr_fx.plan import Plan
    from asymrnr_fx.toy import model as toy_model

    prompts = calibration_prompts(model.spec)
    digest = weights_digest(weights)

    def run(fn, index: int):
        return toy_model.generate(prompts, num_steps=steps, seed=CALIBRATION_SEED + index, transformer=fn, model=model)

    key = f"demo:{model_label(weights, digest)}:{steps}"
    options = Plan(cache_window=cache_window)
    cal = calibrate(model.transformer, run, generations=1, plan=options, cache_dir=cache_dir, key=key,
                    name=model_label(weights, digest), progress=progress)
    if sensitivity:
        cal = measure_sensitivity(model.transformer, cal, run, generations=1, cache_dir=cache_dir, key=key,
                                  progress=progress)
    return cal


def plan_name(weights: Path, digest: str, budget: float, steps: int, source: str = "calibrated") -> str:
    return (f"{source}@{budget:g} {model_label(weights, digest)} {steps} steps; "
            f"{CALIBRATION_PROMPTS} training prompts, seed {CALIBRATION_SEED}")


def make_plan(weights: Path | None = None, budget: float = PLAN_BUDGET, out_dir: Path | None = None,
              progress: bool = True) -> tuple[Path, Path]:
    """Regenerate the shipped plan and calibration of ``weights`` (default: the newest shipped)
    and write them next to the weights (or into ``out_dir``). Returns (plan file, calibration file)."""
    from asymrnr_fx.calibration import plan_for_budget
    from asymrnr_fx.calibration.common import default_cache_dir
    from asymrnr_fx.toy import model as toy_model

    weights = Path(weights or default_weights())
    model = toy_model.load_toy_model(path=weights)
    cal = calibrate_toy(model, weights, progress=progress, cache_dir=default_cache_dir())
    digest = weights_digest(weights)
    plan = plan_for_budget(cal, budget, name=plan_name(weights, digest, budget, cal.num_steps))
    p_file, c_file = plan_path(weights), calibration_path(weights)
    if out_dir is not None:
        p_file, c_file = Path(out_dir) / p_file.name, Path(out_dir) / c_file.name
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    plan.save(p_file)
    cal.save(c_file)
    for f in (p_file, c_file):
        f.chmod(0o644)  # package data: readable by everyone (safetensors writes 0600)
    return p_file, c_file


def _load_matching_plan(path: Path, digest: str, budget: float):
    from asymrnr_fx.plan import Plan

    if not path.exists():
        return None
    plan = Plan.load(path)
    if f"#{digest}" not in plan.name or abs(plan.attention_cost() - budget) > 1e-6:
        return None
    return plan


def _load_matching_calibration(path: Path, label: str):
    from asymrnr_fx.calibration import Calibration

    if not path.exists():
        return None
    cal = Calibration.load(path)
    return cal if cal.info.get("model") == label and cal.sensitivity is not None else None


def calibrated_plan(model: Any, weights: Path, budget: float = PLAN_BUDGET, *, quick: bool = False,
                    steps: int = PLAN_STEPS):
    """The calibrated plan at ``budget`` for ``weights`` and where it came from.

    In order: the shipped plan file (if made for these weights and this budget); the shipped
    or cached calibration (:func:`~asymrnr_fx.calibration.plan_for_budget`, instant); else a
    new calibration — with ``quick``, a similarity-only one at ``steps`` (no sensitivity, one
    generation), otherwise the full recipe of the shipped plan (progress bars, minutes), kept
    in the calibration cache so it is computed once.
    """
    from asymrnr_fx.calibration import plan_for_budget
    from asymrnr_fx.calibration.common import default_cache_dir

    weights = Path(weights)
    digest = weights_digest(weights)
    label = model_label(weights, digest)
    plan = _load_matching_plan(plan_path(weights), digest, budget)
    if plan is not None:
        return plan, f"shipped {plan_path(weights).name}"
    cache = default_cache_dir() / "demo"
    cached = cache / f"{weights.stem}-{digest}.calibration.safetensors"
    for source, path in (("shipped", calibration_path(weights)), ("cached", cached)):
        cal = _load_matching_calibration(path, label)
        if cal is not None:
            plan = plan_for_budget(cal, budget, name=plan_name(weights, digest, budget, cal.num_steps))
            return plan, f"plan_for_budget({budget:g}) on the {source} calibration {path.name}"
    if quick:
        print(f"no calibrated plan shipped for {weights.name}: quick similarity-only calibration at {steps} steps")
        cal = calibrate_toy(model, weights, steps=steps, cache_window=max(1, min(PLAN_WINDOW, steps // 2)),
                            sensitivity=False)
        plan = plan_for_budget(cal, budget, name=plan_name(weights, digest, budget, steps, "similarity-only"))
        return plan, "similarity-only calibration (quick mode)"
    print(f"no calibrated plan shipped for {weights.name} ({plan_path(weights).name}): calibrating once on "
          f"{CALIBRATION_PROMPTS} training prompts, about 35-45 eager generations of {PLAN_STEPS} steps "
          f"(~6 CPU-minutes for toy v1, ~20 for v2), kept in {cache}; `asymrnr-fx demo --make-plan` ships it")
    cal = calibrate_toy(model, weights, cache_dir=default_cache_dir())
    cal.save(cached)
    plan = plan_for_budget(cal, budget, name=plan_name(weights, digest, budget, cal.num_steps))
    return plan, f"calibrated now, cached in {cached}"


# =========================================================================== other plans
def resample(plan: Any, steps: int) -> Any:
    """A ``[sites, T]`` plan on ``steps`` steps: step ``j`` takes the ratios of step
    ``floor((j + 1/2) T / steps)`` (the same position in the denoising schedule); the cache
    window scales likewise. A 20-step plan with 5-step windows on 4 steps keeps one ratio
    per window and its attention cost exactly."""
    if not plan.is_table or plan.num_steps == steps:
        return plan
    t = plan.num_steps
    idx = [min(t - 1, int((j + 0.5) * t / steps)) for j in range(steps)]
    window = max(1, round(plan.cache_window * steps / t))
    name = f"{plan.name} -> {steps} steps"[:200]
    return dataclasses.replace(plan, q=plan.table("q")[:, idx], kv=plan.table("kv")[:, idx], cache_window=window,
                               name=name)


def _uniform_window(steps: int) -> int:
    return PLAN_WINDOW if steps >= 2 * PLAN_WINDOW else max(1, steps // 2)


def resolve_plan(args: argparse.Namespace, model: Any, weights: Path) -> tuple[Any, str, str]:
    """(plan, kind, where it came from) for ``--plan`` / ``--q --kv``; kind is calibrated, uniform, published or file."""
    from asymrnr_fx.plan import PUBLISHED, Plan

    spec = args.plan
    if args.q is not None or args.kv is not None:
        if spec is not None and not spec.startswith("uniform"):
            raise SystemExit(f"--q/--kv give a uniform plan; they cannot be combined with --plan {spec}")
        q = 0.5 if args.q is None else args.q
        kv = 0.3 if args.kv is None else args.kv
        spec = f"uniform:{q},{kv}"
    spec = spec or "calibrated"
    kind, _, rest = spec.partition(":")
    if kind == "calibrated":
        try:
            budget = float(rest) if rest else PLAN_BUDGET
            plan, source = calibrated_plan(model, weights, budget, quick=args.quick, steps=args.steps)
        except ValueError as e:  # e.g. a budget out of range
            raise SystemExit(f"--plan {spec}: {e}") from None
        return plan, "calibrated", source
    if kind == "uniform":
        try:
            q, kv = (float(x) for x in rest.split(","))
        except ValueError:
            raise SystemExit(f"--plan uniform:Q,KV takes two ratios, e.g. uniform:0.5,0.3; got {spec!r}") from None
        plan = Plan.uniform(q=q, kv=kv, cache_window=_uniform_window(args.steps), seed=args.seed,
                            name=f"uniform q={q:g} kv={kv:g}")
        return plan, "uniform", "uniform ratios"
    if kind == "published":
        name, _, point = rest.partition(":")
        if name not in PUBLISHED:
            raise SystemExit(f"no published plan {name!r}; known: {sorted(PUBLISHED)}")
        plan = Plan.published(name, point or "base")
        sites = num_sites(model)
        if plan.num_sites != sites:
            raise SystemExit(
                f"the published plan {name}:{point or 'base'} has ratios for {plan.num_sites} attention sites "
                f"({plan.num_sites} blocks of {name}) x {plan.num_steps} steps, but the toy model has {sites} sites. "
                "Published tables only fit the model they were measured on. To use the paper's threshold map on "
                f"this model's own redundancy tiers: asymrnr-fx calibrate --model toy --steps {args.steps} "
                f"--published {name}:{point or 'base'} --out DIR, then "
                "asymrnr-fx demo --plan DIR/plan_published_map.safetensors"
            )
        return plan, "published", f"published {name}:{point or 'base'}"
    path = Path(spec)
    if not path.exists():
        raise SystemExit(f"--plan {spec!r}: not 'calibrated[:BUDGET]', 'uniform:Q,KV', 'published:MODEL:POINT' "
                         "or an existing plan file")
    plan = Plan.load(path)
    if plan.is_table and plan.num_sites != num_sites(model):
        raise SystemExit(f"plan file {path} has ratios for {plan.num_sites} attention sites; "
                         f"the toy model ({Path(weights).name}) has {num_sites(model)}")
    return plan, "file", f"plan file {path}"


# =========================================================================== the demo
