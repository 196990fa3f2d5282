"""Measuring output sensitivity: reduce one (site group, step range, feature) at a time and
record how far the output moves (see :mod:`asymrnr_fx.calibration.sensitivity` for what
the result means and how plans use it).

The model is captured once: a :class:`~asymrnr_fx.calibration.recording.SwitchableRuntime`
swaps the probe plans between generations without recompiling.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from .. import ops
from ..plan import FEATURES, Plan
from .common import fingerprint, progress_bar
from .recording import SwitchableRuntime
from .result import Calibration
from .sampling import Sampler, base_model, installed
from .sensitivity import Sensitivity


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``n`` items in ``min(parts, n)`` contiguous, nearly equal ``[start, end)`` chunks."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


def default_groups(cal: Calibration, site_groups: int | Sequence[Sequence[int]] | None,
                   step_ranges: int | Sequence[tuple[int, int]] | None) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Contiguous site groups, and step ranges made of whole cache windows (so probes match whole windows)."""
    if site_groups is None or isinstance(site_groups, int):
        groups = [list(range(a, b)) for a, b in split(cal.num_sites, site_groups or 4)]
    else:
        groups = [list(g) for g in site_groups]
    if step_ranges is None or isinstance(step_ranges, int):
        windows = cal.windows()
        ranges = [(windows[a][0], windows[b - 1][1]) for a, b in split(len(windows), step_ranges or 4)]
    else:
        ranges = [(int(a), int(b)) for a, b in step_ranges]
    covered = sorted(s for g in groups for s in g)
    if covered != list(range(cal.num_sites)):
        raise ValueError(f"site_groups must partition the calibration's {cal.num_sites} sites, got {groups}")
    steps = sorted(s for a, b in ranges for s in range(a, b))
    if steps != list(range(cal.num_steps)):
        raise ValueError(f"step_ranges must partition the calibration's {cal.num_steps} steps, got {ranges}")
    return groups, ranges


def probe_plan(cal: Calibration, rows: Sequence[int], cols: slice, feature: str, ratio: float) -> Plan:
    """A plan reducing only ``feature`` at ``ratio`` in the given sites and steps."""
    tables = {f: torch.zeros(cal.num_sites, cal.num_steps, dtype=torch.float64) for f in FEATURES}
    tables[feature][list(rows), cols] = ratio
    return Plan.from_table(tables["q"], tables["kv"], name=f"probe:{feature}", **cal.plan_options())


def relative_sq_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref||^2 / ||ref||^2`` in float64."""
    ref = ref.double()
    return float((out.double() - ref).square().sum() / ref.square().sum().clamp_min(1e-30))


def default_shape_ratios(stride: Sequence[int], probe_ratio: float) -> tuple[float, ...]:
    """Whole-model probe ratios: 0.25, 0.5, 0.75, the stride's maximum, and the local probe ratio."""
    top = ops.max_ratio(stride)
    return tuple(sorted({r for r in (0.25, 0.5, 0.75) if r < top} | {top, float(probe_ratio)}))


def measure_sensitivity(
    model: Any,
    cal: Calibration,
    run: Callable[..., Any] | None = None,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    generations: int = 1,
    probe_ratio: float = 0.5,
    site_groups: int | Sequence[Sequence[int]] | None = None,
    step_ranges: int | Sequence[tuple[int, int]] | None = None,
    shape_ratios: Sequence[float] | None = None,
    component: str = "transformer",
    cache_dir: str | Path | None = None,
    key: str | None = None,
    progress: bool = False,
) -> Calibration:
    """Measure output sensitivity per (site group, step range, feature); returns ``cal`` with it attached.

    Generations are described as in :func:`~asymrnr_fx.calibration.measure.calibrate`. Each local
    probe reduces one feature at ``probe_ratio`` in one (site group, step range); each
    shape probe reduces one feature everywhere at one of ``shape_ratios`` (default
    :func:`default_shape_ratios`; ``()`` skips them). Cost: ``generations * (1 + 2 *
    (groups * ranges + len(shape_ratios)))`` generations — with the defaults (up to 4
    contiguous site groups, 4 ranges of whole cache windows, 4 shape ratios) at most 41
    per generation.
    """
    limit = ops.max_ratio(cal.stride)
    if not 0 < probe_ratio <= limit:
        raise ValueError(f"probe_ratio must be in (0, {limit:.4g}] for stride {cal.stride}, got {probe_ratio}")
    shapes = default_shape_ratios(cal.stride, probe_ratio) if shape_ratios is None else tuple(float(r) for r in shape_ratios)
    if any(not 0 < r <= limit for r in shapes):
        raise ValueError(f"shape_ratios must lie in (0, {limit:.4g}] for stride {cal.stride}, got {shapes}")
    t0 = time.perf_counter()
    sampler = Sampler(run=run, inputs=inputs, timesteps=timesteps, generations=generations)
    groups, ranges = default_groups(cal, site_groups, step_ranges)
    cache_key = fingerprint(
        {"cal": cal.key, "model": base_model(model, component), "sampler": sampler.fingerprint(),
         "probe": probe_ratio, "groups": groups, "ranges": ranges, "shapes": shapes, "user": key}
    )[:24]
    path = Path(cache_dir) / f"sensitivity-{cache_key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        cached = Calibration.load(path)
        if cached.sensitivity is not None:
            return cal.with_sensitivity(cached.sensitivity)

    opts = cal.plan_options()
    error = torch.zeros(len(groups), len(ranges), len(FEATURES), dtype=torch.float64)
    shape_error = torch.zeros(len(FEATURES), len(shapes), dtype=torch.float64)
    probes: list[tuple[Plan, torch.Tensor, tuple[int, ...]]] = []
    for g in range(len(groups)):
        for r in range(len(ranges)):
            for fi, f in enumerate(FEATURES):
                probes.append((probe_plan(cal, groups[g], slice(*ranges[r]), f, probe_ratio), error, (g, r, fi)))
    for fi, f in enumerate(FEATURES):
        for k, ratio in enumerate(shapes):
            plan = Plan.uniform(ratio if f == "q" else 0.0, ratio if f == "kv" else 0.0, **opts)
            probes.append((plan, shape_error, (fi, k)))
    runtime = SwitchableRuntime(Plan.uniform(0.5, 0.5, **opts))
    bar = progress_bar(progress, sampler.generations * (1 + len(probes)), "sensitivity")
    with torch.no_grad(), installed(model, runtime, component) as target:
        refs = []
        for i in range(sampler.generations):
            runtime.use(Plan.uniform(0.0, 0.0, **opts))
            refs.append(sampler(target, i, runtime))
            _check_shape(cal, runtime)
            if bar is not None:
                bar.update(1)
        for plan, table, index in probes:
            runtime.use(plan)
            errs = []
            for i in range(sampler.generations):
                runtime.reset()
                errs.append(relative_sq_error(sampler(target, i, runtime), refs[i]))
                if bar is not None:
                    bar.update(1)
            table[index] = sum(errs) / len(errs)
    if bar is not None:
        bar.close()
    sens = Sensitivity(groups, ranges, float(probe_ratio), error, shapes, shape_error,
                       info={"generations": sampler.generations, "seconds": time.perf_counter() - t0, "key": cache_key})
    out = cal.with_sensitivity(sens)
    if path is not None:
        out.save(path)
    return out


def _check_shape(cal: Calibration, runtime: SwitchableRuntime) -> None:
    if runtime.num_sites != cal.num_sites:
        raise ValueError(
            f"the calibration has {cal.num_sites} attention sites but this model has {runtime.num_sites}; "
            "measure sensitivity on the model that was calibrated"
        )
    if runtime.step + 1 != cal.num_steps:
        raise ValueError(
            f"the calibration covers {cal.num_steps} denoising steps but this run took {runtime.step + 1}; "
            "use the same sampler schedule as for calibration"
        )
