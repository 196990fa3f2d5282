"""Calibration: measure, on the unreduced model, the redundancy that AsymRnR exploits.

Why: the paper's schedules come from profiling how similar each token is to its nearest
neighbour, per block, denoising step and feature, but the profiling code was not released
and the published tables only fit the models they were measured on. :func:`calibrate`
runs a few sample generations of *any* model through the FX pass with a recording runtime
(:class:`~asymrnr_fx.calibration.recording.RecordingRuntime`, which also says what is
recorded); the outputs are unchanged. The result is a
:class:`~asymrnr_fx.calibration.result.Calibration` — per (site, step, feature)
statistics — from which :mod:`asymrnr_fx.calibration.budget` builds plans and
:mod:`asymrnr_fx.calibration.plot` draws heatmaps.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..plan import Plan
from .common import fingerprint, progress_bar
from .recording import COSINE_THRESHOLDS, QUANTILES, RecordingRuntime
from .result import FORMAT_VERSION, Calibration
from .sampling import Sampler, base_model, installed


# =========================================================================== calibrate()
def calibrate(
    model: Any,
    run: Callable[..., Any] | None = None,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    generations: int = 1,
    plan: Plan | None = None,
    heads: int | Sequence[int] | None = None,
    batch: int | Sequence[int] | None = None,
    component: str = "transformer",
    cache_dir: str | Path | None = None,
    key: str | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Calibration:
    """Run the unreduced model over sample generations and record redundancy per site, step and feature.

    Two ways to say what a generation is:

    * ``run``: a callable that runs one generation on what it is given — the transformed
      model, or (for a diffusers pipeline ``model``) the pipeline with its transformer
      swapped — and returns the output. It is called ``generations`` times, as
      ``run(target, index)`` if it takes two arguments, else ``run(target)``. Steps are
      read from the timestep the model receives.
    * ``inputs`` (a list of keyword-argument dicts, one per generation) and ``timesteps``
      (the schedule): the model is called at every timestep, ``hidden_states`` updated by
      an Euler step on ``t / 1000``.

    ``plan`` supplies the options the plans will use (stride, cache window, similarity,
    seed, grid, text position, window); its ratios are ignored; ``shards`` > 1 is refused. ``heads``/``batch`` sample that
    many heads/batch elements per call (or the given indices) to make it cheaper.
    With ``cache_dir`` the result is stored under a key from the model (config and
    weights), the generations and the options, and reloaded on the next identical call;
    ``key`` adds your own text to it (e.g. when ``run`` depends on state not visible in its closure).
    """
    t0 = time.perf_counter()
    if plan is not None and plan.shards > 1:  # its plans would come back with shards=1, measured on whole-video matchings
        raise ValueError(
            f"calibrate() measures whole-video matchings, not Plan.shards={plan.shards}: calibrate with shards=1, then "
            "set it on the plan it gives (dataclasses.replace(plan, shards=...)); under ring context parallelism "
            "every plan runs shard-local anyway"
        )
    sampler = Sampler(run=run, inputs=inputs, timesteps=timesteps, generations=generations)
    options = (plan or Plan()).options(calibrated=True)
    base = base_model(model, component)
    cache_key = fingerprint(
        {"model": base, "sampler": sampler.fingerprint(), "options": options, "heads": heads, "batch": batch,
         "user": key, "version": FORMAT_VERSION}
    )[:24]
    path = Path(cache_dir) / f"calibration-{cache_key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        return Calibration.load(path)

    capture = Plan.uniform(0.5, 0.5, **{k: v for k, v in options.items() if v is not None})
    bar = progress_bar(progress, sampler.generations * sampler.num_steps if sampler.num_steps else None, "calibrate")
    runtime = RecordingRuntime(capture, heads=heads, batch=batch, on_step=(lambda _s: bar.update(1)) if bar is not None else None)
    with torch.no_grad(), installed(model, runtime, component) as target:
        for i in range(sampler.generations):
            runtime.reset()
            sampler(target, i, runtime)
            if bar is not None and bar.total is None:  # steps known after the first generation
                bar.total = sampler.generations * (runtime.step + 1)
                bar.refresh()
    if bar is not None:
        bar.close()
    stats = runtime.recorder.tables(runtime.num_sites)
    cal = Calibration(
        stats=stats,
        sites=list(runtime.site_order),
        options=options,
        curve_ratios=runtime.ratios,
        info={
            "model": name or type(base).__name__,
            "generations": sampler.generations,
            "heads": heads if not isinstance(heads, Sequence) else list(heads),
            "batch": batch if not isinstance(batch, Sequence) else list(batch),
            "seconds": time.perf_counter() - t0,
            "key": cache_key,
            "quantiles": list(QUANTILES),
            "cosine_thresholds": list(COSINE_THRESHOLDS),
            "torch": torch.__version__,
        },
    )
    if path is not None:
        cal.save(path)
    return cal
