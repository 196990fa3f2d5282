"""The calibration itself: :class:`Calibration`, per (site, step, feature) redundancy
statistics of one model under one set of plan options, with its file format.

A calibration file is safetensors: the statistics as ``stats.<name>`` (and, when output
sensitivity was measured, ``sensitivity.<name>``) plus JSON metadata under
:data:`META_KEY`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..plan import CALIBRATION_OPTIONS, FEATURES, Plan
from .common import jsonable
from .recording import COSINE_THRESHOLDS
from .sensitivity import Sensitivity

META_KEY = "asymrnr_fx.calibration"
FORMAT_VERSION = 1


@dataclass(eq=False)
class Calibration:
    """Redundancy statistics of one model under one set of plan options.

    ``stats`` maps a statistic name to a ``[sites, steps, 2, ...]`` tensor (feature axis:
    ``q``, ``kv``); ``sites`` are the rewritten attention modules in plan order;
    ``options`` are the plan options measured under (stride, cache window, similarity,
    seed, grid, text position), which plans built from this calibration inherit.
    """

    stats: dict[str, torch.Tensor]
    sites: list[str]
    options: dict[str, Any]
    curve_ratios: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    sensitivity: Sensitivity | None = None

    # ------------------------------------------------------------------ shape
    @property
    def num_sites(self) -> int:
        return int(self.stats["count"].shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.stats["count"].shape[1])

    @property
    def stride(self) -> tuple[int, int, int]:
        return tuple(self.options["stride"])  # type: ignore[return-value]

    @property
    def cache_window(self) -> int:
        return int(self.options["cache_window"])

    @property
    def key(self) -> str:
        return str(self.info.get("key", ""))

    def windows(self) -> list[tuple[int, int]]:
        """``[start, end)`` step ranges of the cache windows (the last may be short)."""
        w = self.cache_window
        return [(s, min(s + w, self.num_steps)) for s in range(0, self.num_steps, w)]

    # ------------------------------------------------------------------ statistics
    def statistic(self, name: str, feature: str) -> torch.Tensor:
        """A recorded statistic for one feature, ``[sites, steps, ...]``."""
        if name not in self.stats:
            raise KeyError(f"no statistic {name!r}; recorded: {sorted(self.stats)}")
        return self.stats[name][:, :, feature_index(feature)].clone()

    def redundancy(self, feature: str, statistic: str = "cos_mean") -> torch.Tensor:
        """One number per (site, step): how alike src tokens are to their nearest dst (larger = more redundant).

        ``cos_mean`` (default) is scale-free; ``frac_above:0.9`` gives the fraction of src
        tokens above a cosine threshold; ``score_mean`` the raw best-match score.
        """
        if statistic.startswith("frac_above:"):
            thr = float(statistic.split(":", 1)[1])
            thresholds = list(self.info.get("cosine_thresholds", COSINE_THRESHOLDS))
            if thr not in thresholds:
                raise ValueError(f"threshold {thr} was not recorded; available: {thresholds}")
            return self.statistic("frac_above", feature)[..., thresholds.index(thr)]
        return self.statistic(statistic, feature)

    def distortion(self, feature: str, ratio: float | torch.Tensor) -> torch.Tensor:
        """Error proxy of reducing ``feature`` at ``ratio`` (a number or a ``[sites, steps]`` table), per cell.

        Linear interpolation of the recorded curve, 0 at ratio 0; NaN where nothing was recorded.
        """
        curve = self.statistic("distortion", feature)  # [S, T, K]
        xs = torch.tensor((0.0, *self.curve_ratios), dtype=torch.float64)
        ys = torch.cat([torch.zeros(*curve.shape[:2], 1, dtype=curve.dtype), curve], -1)
        r = torch.as_tensor(ratio, dtype=torch.float64).expand(curve.shape[:2]).clamp(0, float(xs[-1]))
        hi = torch.searchsorted(xs, r.contiguous().unsqueeze(-1), right=False).clamp(1, len(xs) - 1).squeeze(-1)
        x0, x1 = xs[hi - 1], xs[hi]
        y0 = ys.gather(-1, (hi - 1).unsqueeze(-1)).squeeze(-1)
        y1 = ys.gather(-1, hi.unsqueeze(-1)).squeeze(-1)
        return y0 + (y1 - y0) * (r - x0) / (x1 - x0)

    def valid(self) -> torch.Tensor:
        """``[sites, steps, 2]`` bool: cells that were measured (a site the pass skipped never is)."""
        return self.stats["count"] > 0

    # ------------------------------------------------------------------ plans
    def plan_options(self) -> dict[str, Any]:
        """Options for :class:`~asymrnr_fx.plan.Plan` that reproduce the measured partitions and windows."""
        opts = {k: self.options[k] for k in CALIBRATION_OPTIONS if k in self.options}
        opts["stride"] = tuple(opts["stride"])
        if opts.get("grid") is not None:
            opts["grid"] = tuple(opts["grid"])
        return opts

    def check_plan(self, plan: Plan) -> None:
        """Raise if ``plan`` cannot describe the calibrated model (sites, steps or partition options differ)."""
        if plan.is_table and (plan.num_sites, plan.num_steps) != (self.num_sites, self.num_steps):
            raise ValueError(
                f"plan {plan.name or ''} covers {plan.num_sites} sites x {plan.num_steps} steps but the calibration "
                f"({self.info.get('model', 'model')}) has {self.num_sites} sites x {self.num_steps} steps; "
                "build the plan from this calibration or calibrate the model the plan is for"
            )
        if tuple(plan.stride) != self.stride:
            raise ValueError(f"plan stride {plan.stride} differs from the calibration's {self.stride}")

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        meta = {
            "version": FORMAT_VERSION,
            "sites": list(self.sites),
            "options": jsonable(self.options),
            "curve_ratios": list(self.curve_ratios),
            "info": jsonable(self.info),
        }
        if self.sensitivity is not None:
            meta["sensitivity"] = self.sensitivity.metadata()
        return meta

    def save(self, path: str | Path) -> Path:
        """safetensors (statistics, and sensitivity errors if measured) + JSON metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"stats.{k}": v.contiguous() for k, v in self.stats.items()}
        if self.sensitivity is not None:
            tensors.update({f"sensitivity.{k}": v.contiguous() for k, v in self.sensitivity.tensors().items()})
        save_file(tensors, str(path), metadata={META_KEY: json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        """Read a file written by :meth:`save`; any damaged or foreign file is a ``ValueError`` naming it."""
        from safetensors import SafetensorError, safe_open

        redo = "re-run asymrnr_fx.calibration.calibrate() (it writes a new file)"
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(META_KEY)
                if raw is None:
                    raise ValueError(f"{path} is not an asymrnr_fx calibration (no {META_KEY!r} metadata)")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as e:  # not safetensors at all, a bad header, truncated data
            raise ValueError(f"{path} is not a readable asymrnr_fx calibration ({e}); {redo}") from None
        try:
            return cls._from_saved(json.loads(raw), tensors)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as e:
            raise ValueError(
                f"{path} is a damaged asymrnr_fx calibration ({type(e).__name__}: {str(e)[:200]}); {redo}"
            ) from None

    @classmethod
    def _from_saved(cls, meta: Any, tensors: dict[str, torch.Tensor]) -> "Calibration":
        stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
        cal = cls(
            stats=stats,
            sites=list(meta["sites"]),
            options=dict(meta["options"]),
            curve_ratios=tuple(meta["curve_ratios"]),
            info=dict(meta.get("info", {})),
        )
        if "sensitivity" in meta:
            sens = {k[12:]: v for k, v in tensors.items() if k.startswith("sensitivity.")}
            cal.sensitivity = Sensitivity.from_saved(meta["sensitivity"], sens)
        return cal

    @staticmethod
    def is_calibration_file(path: str | Path) -> bool:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return META_KEY in (f.metadata() or {})
        except Exception:  # noqa: BLE001 - not a safetensors file at all
            return False

    def with_sensitivity(self, sensitivity: Sensitivity) -> "Calibration":
        return dataclasses.replace(self, sensitivity=sensitivity)

    def __repr__(self) -> str:
        q = float(self.redundancy("q").nanmean())
        kv = float(self.redundancy("kv").nanmean())
        sens = ", with sensitivity" if self.sensitivity is not None else ""
        return (
            f"Calibration({self.info.get('model', '')!r}, {self.num_sites} sites x {self.num_steps} steps, "
            f"stride={self.stride}, cache_window={self.cache_window}, mean matched cosine q={q:.3f} kv={kv:.3f}, "
            f"{self.info.get('generations', '?')} generations in {self.info.get('seconds', float('nan')):.1f} s{sens})"
        )


def feature_index(feature: str) -> int:
    if feature == "v":
        feature = "kv"
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    return FEATURES.index(feature)
