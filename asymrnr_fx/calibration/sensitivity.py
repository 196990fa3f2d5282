"""Sensitivity: how much the model's *output* changes when one part of the schedule is reduced.

Why: token similarity (the calibration) says which tokens could be merged cheaply, not how
much the final video cares. Reducing Q in the first blocks at the noisiest steps may cost
far less than the same reduction late in the run, and Q and K/V errors propagate
differently. :func:`~asymrnr_fx.calibration.probes.measure_sensitivity` reduces one (site
group, step range, feature) at a time at a probe ratio, runs the calibration generations,
and records the squared relative error of the output against the unreduced run; this
module holds the result. :meth:`Sensitivity.weights` turns that into a per-cell factor
that converts the calibration's distortion proxy into expected output error, which
:mod:`asymrnr_fx.calibration.budget` minimises.

The proxy tracks the Q error closely at every ratio, but under-predicts K/V error at high
ratios (on the tiny CogVideoX, error/proxy grows 3.5x from r=0.125 to 0.875 for K/V and
only 1.3x for Q); so a few whole-model probes per feature at ``shape_ratios`` measure how
the error grows with the ratio, and :meth:`Sensitivity.scale` corrects the proxy by it.
Errors of separate cells add up well (Q and K/V at 0.5 together: 7.5e-5 measured vs
7.6e-5 from the two alone), which is what makes the per-cell model usable.

It imports no other calibration module but :mod:`.common`, so
:meth:`Calibration.load <asymrnr_fx.calibration.result.Calibration.load>` can rebuild it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import torch

from ..plan import FEATURES
from .common import jsonable

class Calibration(Protocol):
    """What a sensitivity reads of a :class:`~asymrnr_fx.calibration.result.Calibration` (structural:
    the result module imports this one)."""

    def distortion(self, feature: str, ratio: float | torch.Tensor) -> torch.Tensor: ...


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
            "info": jsonable(self.info),
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
