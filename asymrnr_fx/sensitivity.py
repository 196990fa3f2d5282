"""Sensitivity: how much the model's *output* changes when one part of the schedule is reduced.

Why: token similarity (the calibration) says which tokens could be merged cheaply, not how
much the final video cares. Reducing Q in the first blocks at the noisiest steps may cost
far less than the same reduction late in the run, and Q and K/V errors propagate
differently. :func:`measure_sensitivity` reduces one (site group, step range, feature)
at a time at a probe ratio, runs the calibration generations, and records the squared
relative error of the output against the unreduced run. :meth:`Sensitivity.weights`
turns that into a per-cell factor that converts the calibration's distortion proxy into
expected output error, which :mod:`asymrnr_fx.budget` minimises.

The proxy tracks the Q error closely at every ratio, but under-predicts K/V error at high
ratios (on the tiny CogVideoX, error/proxy grows 3.5x from r=0.125 to 0.875 for K/V and
only 1.3x for Q); so a few whole-model probes per feature at ``shape_ratios`` measure how
the error grows with the ratio, and :meth:`Sensitivity.scale` corrects the proxy by it.
Errors of separate cells add up well (Q and K/V at 0.5 together: 7.5e-5 measured vs
7.6e-5 from the two alone), which is what makes the per-cell model usable.

The model is captured once: a :class:`~asymrnr_fx.calibrate.SwitchableRuntime` swaps the
probe plans between generations without recompiling.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from . import ops
from .calibrate import (
    Calibration,
    Sampler,
    SwitchableRuntime,
    _base_model,
    _jsonable,
    _progress,
    fingerprint,
    installed,
)
from .plan import FEATURES, Plan


@dataclass(eq=False)
class Sensitivity:
    """Measured output error of reducing one (site group, step range, feature) at ``probe_ratio``.

    ``error[g, r, f]`` is the mean over generations of ``||out - ref||^2 / ||ref||^2``;
    ``shape_error[f, k]`` the same for reducing feature ``f`` everywhere at ``shape_ratios[k]``.
    """

    site_groups: list[list[int]]
    step_ranges: list[tuple[int, int]]
    probe_ratio: float
    error: torch.Tensor  # [groups, ranges, 2]
    shape_ratios: tuple[float, ...] = ()
    shape_error: torch.Tensor | None = None  # [2, len(shape_ratios)]
    info: dict[str, Any] = field(default_factory=dict)

    def cells(self, g: int, r: int) -> tuple[list[int], slice]:
        start, end = self.step_ranges[r]
        return self.site_groups[g], slice(start, end)

    def table(self, feature: str) -> torch.Tensor:
        """``[sites, steps]``: the measured error of the probe each cell belongs to (for plots)."""
        f = FEATURES.index(feature)
        sites = max(s for g in self.site_groups for s in g) + 1
        steps = self.step_ranges[-1][1]
        out = torch.full((sites, steps), float("nan"), dtype=torch.float64)
        for g in range(len(self.site_groups)):
            for r in range(len(self.step_ranges)):
                rows, cols = self.cells(g, r)
                out[rows, cols] = float(self.error[g, r, f])
        return out

    def weights(self, cal: Calibration, feature: str) -> torch.Tensor:
        """Per-cell factor ``w`` with ``sum_cells w * distortion(probe_ratio) == measured error`` per probe.

        Probes whose proxy is 0 (nothing measurable) take the median factor of the others.
        """
        f = FEATURES.index(feature)
        proxy = cal.distortion(feature, self.probe_ratio)
        w = torch.full_like(proxy, float("nan"))
        for g in range(len(self.site_groups)):
            for r in range(len(self.step_ranges)):
                rows, cols = self.cells(g, r)
                p = float(proxy[rows, cols].nansum())
                if p > 0:
                    w[rows, cols] = float(self.error[g, r, f]) / p
        finite = w[torch.isfinite(w)]
        fill = float(finite.median()) if finite.numel() else 1.0
        return torch.where(torch.isfinite(w), w, torch.full_like(w, fill))

    def scale(self, cal: Calibration, feature: str, ratio: float | torch.Tensor) -> torch.Tensor:
        """How much more error per unit of proxy a reduction at ``ratio`` costs than one at ``probe_ratio``.

        From the whole-model probes: ``u(r) / u(r0)`` with ``u(r) = E(r) / D(r)`` (measured
        error over summed distortion), linear in ``r`` between the measured ratios and
        constant beyond them; 1 when no shape probes were run.
        """
        ratio = torch.as_tensor(ratio, dtype=torch.float64)
        if not self.shape_ratios or self.shape_error is None:
            return torch.ones_like(ratio)
        f = FEATURES.index(feature)
        xs = torch.tensor(self.shape_ratios, dtype=torch.float64)
        ys = torch.tensor(
            [float(self.shape_error[f, k]) / max(float(cal.distortion(feature, r).nansum()), 1e-300)
             for k, r in enumerate(self.shape_ratios)],
            dtype=torch.float64,
        )
        keep = torch.isfinite(ys) & (ys > 0)
        xs, ys = xs[keep], ys[keep]
        if xs.numel() < 2:
            return torch.ones_like(ratio)
        order = xs.argsort()
        xs, ys = xs[order], ys[order]
        return _interp(ratio, xs, ys) / _interp(torch.tensor(self.probe_ratio, dtype=torch.float64), xs, ys)

    def factor(self, cal: Calibration, feature: str, ratio: float | torch.Tensor) -> torch.Tensor:
        """``[sites, steps]`` error per unit of distortion for reducing each cell at ``ratio``."""
        return self.weights(cal, feature) * self.scale(cal, feature, ratio)

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        return {
            "site_groups": self.site_groups,
            "step_ranges": [list(r) for r in self.step_ranges],
            "probe_ratio": self.probe_ratio,
            "shape_ratios": list(self.shape_ratios),
            "info": _jsonable(self.info),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"error": self.error.double()}
        if self.shape_error is not None:
            out["shape_error"] = self.shape_error.double()
        return out

    @classmethod
    def from_saved(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> "Sensitivity":
        return cls(
            site_groups=[list(g) for g in meta["site_groups"]],
            step_ranges=[tuple(r) for r in meta["step_ranges"]],  # type: ignore[misc]
            probe_ratio=float(meta["probe_ratio"]),
            error=tensors["error"],
            shape_ratios=tuple(meta.get("shape_ratios", ())),
            shape_error=tensors.get("shape_error"),
            info=dict(meta.get("info", {})),
        )


def _interp(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation, constant beyond the ends."""
    x = x.clamp(float(xs[0]), float(xs[-1]))
    hi = torch.searchsorted(xs, x.contiguous().reshape(-1)).clamp(1, len(xs) - 1).reshape(x.shape)
    x0, x1, y0, y1 = xs[hi - 1], xs[hi], ys[hi - 1], ys[hi]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


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

    Generations are described as in :func:`~asymrnr_fx.calibrate.calibrate`. Each local
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
        {"cal": cal.key, "model": _base_model(model, component), "sampler": sampler.fingerprint(),
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
    bar = _progress(progress, sampler.generations * (1 + len(probes)), "sensitivity")
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
