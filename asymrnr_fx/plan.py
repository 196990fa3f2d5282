"""Plans: which fraction of video tokens to drop, per attention site, denoising step and feature.

A plan is a value: it holds ratios and method options, never runtime state (that lives in
:class:`asymrnr_fx.runtime.Runtime`), so one plan can be saved, shared and reused.

File format (``Plan.save`` / ``Plan.load``): a safetensors file with float64 tensors
``q`` and ``kv`` (0-d for a uniform plan, ``[sites, steps]`` for a table) and the options
as JSON in the metadata entry ``"asymrnr_fx.plan"``.
"""
from __future__ import annotations

import dataclasses
import json

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .ops import MATCHINGS, MODES, max_ratio

FEATURES: tuple[str, ...] = ("q", "kv")
TEXT_POSITIONS: tuple[str, ...] = ("auto", "first", "last")
_META_KEY = "asymrnr_fx.plan"


@dataclass(frozen=True)
class PublishedSchedule:
    """One of the paper's tier tables, with the options it was published for."""

    file: str
    stride: tuple[int, int, int]
    cache_window: int
    maps: Mapping[str, tuple[Mapping[int, float], Mapping[int, float]]]  # point -> (q map, v map)


PUBLISHED: dict[str, PublishedSchedule] = {
    "cogvideox-2b": PublishedSchedule(
        "euclidean_cogvideox-2b_cache5.safetensors", (2, 2, 2), 5,
        {"base": ({6: 0.4, 7: 0.8}, {8: 0.3}), "fast": ({6: 0.6, 7: 0.8}, {7: 0.3, 9: 0.4})},
    ),
    "cogvideox-5b": PublishedSchedule("euclidean_cogvideox-5b_cache5.safetensors", (2, 2, 2), 5, {}),
    "mochi": PublishedSchedule(
        "euclidean_mochi_cache3.safetensors", (6, 2, 2), 3,
        {"base": ({10: 0.7}, {14: 0.3}), "fast": ({9: 0.6, 10: 0.7}, {14: 0.3})},
    ),
    "hunyuanvideo": PublishedSchedule(
        "euclidean_hyvideo_cache3.safetensors", (6, 2, 2), 3,
        {"base": ({7: 0.9}, {8: 0.3}), "fast": ({5: 0.3, 7: 0.9}, {8: 0.3})},
    ),
    "fastvideo-hunyuan": PublishedSchedule(
        "euclidean_fast-hyvideo_cache1.safetensors", (6, 2, 2), 1,
        {"base": ({7: 0.9}, {8: 0.3}), "fast": ({7: 0.9}, {8: 0.4})},
    ),
}


def published_tiers(model: str) -> dict[str, torch.Tensor]:
    """The tier tables (``h``, ``q``, ``k``, ``v``; each ``[blocks, steps]``) shipped for ``model``."""
    from safetensors.torch import load_file

    if model not in PUBLISHED:
        raise ValueError(f"no published schedule for {model!r}; known: {sorted(PUBLISHED)}")
    ref = resources.files("asymrnr_fx") / "data" / "official" / PUBLISHED[model].file
    with resources.as_file(ref) as path:
        return load_file(str(path))


def tiers_to_ratios(tiers: torch.Tensor, threshold_map: Mapping[int, float]) -> torch.Tensor:
    """The paper's rule: a cell takes the largest ratio whose threshold is <= its tier (else 0)."""
    out = torch.zeros(tiers.shape, dtype=torch.float64)
    for threshold, ratio in threshold_map.items():
        out = torch.where(tiers >= int(threshold), torch.clamp(out, min=float(ratio)), out)
    return out


def _as_ratio_tensor(value: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() not in (0, 2):
        raise ValueError(
            f"plan ratios for {name!r} must be a number or a [sites, steps] table, got shape {tuple(t.shape)}"
        )
    return t


@dataclass(eq=False)
class Plan:
    """Reduction ratios plus the method's options.

    ``q`` and ``kv`` are either one number for every site and step or a ``[sites, steps]``
    table; sites are the rewritten attention calls in execution order (one per block for
    the usual video DiT). ``grid`` is the video token grid (frames, height, width) when it
    cannot be inferred from the model's inputs. ``cross_attention`` opts in to reducing
    the video queries of cross-attention sites (Q side only), which the paper does not do.

    Baselines for comparison run through the same pass: ``symmetric=True`` reduces Q, K and
    V with one matching (computed on K) and the ``q`` ratio (ToMe/SymRnR style);
    ``dst="fixed"`` puts each tile's dst at its origin instead of a random cell, and the
    ``similarity`` may also be ``"random"`` or ``"spatial"`` (see :data:`asymrnr_fx.ops.MATCHINGS`).
    """

    q: torch.Tensor | float = 0.0
    kv: torch.Tensor | float = 0.0
    stride: tuple[int, int, int] = (2, 2, 2)
    cache_window: int = 5
    similarity: str = "euclidean"
    mode: str = "replace"
    seed: int = 0
    grid: tuple[int, int, int] | None = None
    text_position: str = "auto"
    cross_attention: bool = False
    dst: str = "random"
    symmetric: bool = False
    name: str = ""
    _tables: dict[str, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tables = {"q": _as_ratio_tensor(self.q, "q"), "kv": _as_ratio_tensor(self.kv, "kv")}
        self.stride = tuple(int(s) for s in self.stride)  # type: ignore[assignment]
        if self.grid is not None:
            self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        self.validate()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, q: float = 0.5, kv: float = 0.3, **options: Any) -> "Plan":
        """The same ratios at every site and step."""
        return cls(q=float(q), kv=float(kv), **options)

    @classmethod
    def from_table(cls, q: Any, kv: Any, **options: Any) -> "Plan":
        """Per-site, per-step ratios: ``q`` and ``kv`` are ``[sites, steps]`` tables."""
        return cls(q=torch.as_tensor(q, dtype=torch.float64), kv=torch.as_tensor(kv, dtype=torch.float64), **options)

    @classmethod
    def from_tiers(
        cls,
        tiers: str | Path | Mapping[str, torch.Tensor],
        q_map: Mapping[int, float],
        kv_map: Mapping[int, float],
        **options: Any,
    ) -> "Plan":
        """The paper's format: tier tables (``q`` and ``v``, ``[blocks, steps]``) plus threshold maps.

        ``tiers`` is a safetensors file or a dict of tensors; ``v`` tiers drive K/V
        (K is pruned with V's matching, as in the reference).
        """
        if not isinstance(tiers, Mapping):
            from safetensors.torch import load_file

            tiers = load_file(str(tiers))
        missing = [k for k in ("q", "v") if k not in tiers]
        if missing:
            raise ValueError(f"tier tables need 'q' and 'v' tensors; missing {missing} (found {sorted(tiers)})")
        return cls.from_table(tiers_to_ratios(tiers["q"], q_map), tiers_to_ratios(tiers["v"], kv_map), **options)

    @classmethod
    def published(cls, model: str, operating_point: str = "base", **options: Any) -> "Plan":
        """A plan from the paper's shipped schedules, e.g. ``Plan.published("cogvideox-2b", "fast")``."""
        sched = PUBLISHED.get(model)
        if sched is None:
            raise ValueError(f"no published schedule for {model!r}; known: {sorted(PUBLISHED)}")
        if operating_point not in sched.maps:
            raise ValueError(
                f"{model!r} has no published threshold map {operating_point!r}; "
                f"available: {sorted(sched.maps) or 'none (use Plan.from_tiers with your own map)'}"
            )
        q_map, v_map = sched.maps[operating_point]
        opts = {"stride": sched.stride, "cache_window": sched.cache_window, "name": f"{model}:{operating_point}"}
        opts.update(options)
        return cls.from_tiers(published_tiers(model), q_map, v_map, **opts)

    @classmethod
    def for_budget(cls, calibration: Any, attention_cost: float = 0.7, **kwargs: Any) -> "Plan":
        """The least-expected-error plan keeping ``attention_cost`` of full attention (see :mod:`asymrnr_fx.budget`)."""
        from .budget import plan_for_budget

        return plan_for_budget(calibration, attention_cost, **kwargs)

    @classmethod
    def for_speedup(cls, calibration: Any, speedup: float = 1.3, attention_share: float = 0.5, **kwargs: Any) -> "Plan":
        """A budgeted plan for an ideal end-to-end ``speedup`` when attention is ``attention_share`` of a forward pass."""
        from .budget import plan_for_speedup

        return plan_for_speedup(calibration, speedup, attention_share, **kwargs)

    # ------------------------------------------------------------------ queries
    @property
    def is_table(self) -> bool:
        return any(t.dim() == 2 for t in self._tables.values())

    @property
    def num_sites(self) -> int | None:
        return next((t.shape[0] for t in self._tables.values() if t.dim() == 2), None)

    @property
    def num_steps(self) -> int | None:
        return next((t.shape[1] for t in self._tables.values() if t.dim() == 2), None)

    def table(self, feature: str, num_sites: int | None = None, num_steps: int | None = None) -> torch.Tensor:
        """The ``[sites, steps]`` ratio table of ``feature`` (a uniform plan is broadcast)."""
        t = self._tables[_check_feature(feature)]
        if t.dim() == 2:
            return t.clone()
        sites = num_sites or self.num_sites or 1
        steps = num_steps or self.num_steps or 1
        return t.expand(sites, steps).clone()

    def ratio(self, site: int, step: int, feature: str) -> float:
        """The ratio for one cell; a step or site beyond the table is an error naming the table size."""
        t = self._tables[_check_feature(feature)]
        if t.dim() == 0:
            return float(t)
        sites, steps = t.shape
        if site >= sites:
            raise ValueError(
                f"plan {self.name or ''} has ratios for {sites} attention sites but the model has more "
                f"(site index {site}); build the plan for this model's number of blocks"
            )
        if step >= steps:
            raise ValueError(
                f"plan {self.name or ''} covers {steps} denoising steps but the model is at step {step}; "
                f"use a plan with as many steps as the sampler runs, or call asymrnr_fx.reset() between generations"
            )
        return float(t[site, step])

    def features_used(self, site: int) -> tuple[str, ...]:
        """Features this site ever reduces; a site with none is left untouched by the pass."""
        used = []
        for feature, t in self._tables.items():
            row = t if t.dim() == 0 else (t[site] if site < t.shape[0] else torch.zeros(()))
            if bool((row != 0).any()):
                used.append(feature)
        return tuple(used)

    def is_zero(self) -> bool:
        return all(bool((t == 0).all()) for t in self._tables.values())

    def attention_cost(self, num_sites: int | None = None, num_steps: int | None = None) -> float:
        """Mean remaining video-to-video attention cost, ``mean((1 - r_q)(1 - r_kv))``."""
        q = self.table("q", num_sites, num_steps)
        kv = q if self.symmetric else self.table("kv", num_sites, num_steps)
        return float(((1 - q) * (1 - kv)).mean())

    def with_options(self, **changes: Any) -> "Plan":
        """A copy with some options (or ratios) replaced."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        fields["q"], fields["kv"] = self._tables["q"], self._tables["kv"]
        fields.update(changes)
        return Plan(**fields)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Reject plans the method cannot run, saying what to change."""
        if len(self.stride) != 3 or any(s < 1 for s in self.stride):
            raise ValueError(f"stride must be three positive integers (frames, height, width), got {self.stride}")
        if self.cache_window < 1:
            raise ValueError(f"cache_window must be >= 1 (1 = match at every step), got {self.cache_window}")
        if self.similarity not in MATCHINGS:
            raise ValueError(f"unknown similarity {self.similarity!r}; use one of {MATCHINGS}")
        if self.dst not in ("random", "fixed"):
            raise ValueError(f"dst must be 'random' (one random dst per tile) or 'fixed' (tile origin), got {self.dst!r}")
        if self.symmetric and bool((self._tables["kv"] != 0).any()):
            raise ValueError("a symmetric plan reduces Q, K and V with the q ratio; set kv=0")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.text_position not in TEXT_POSITIONS:
            raise ValueError(f"text_position must be one of {TEXT_POSITIONS}, got {self.text_position!r}")
        if self.grid is not None and (len(self.grid) != 3 or any(g < 1 for g in self.grid)):
            raise ValueError(f"grid must be (frames, height, width) in tokens, got {self.grid}")
        limit = max_ratio(self.stride)
        shapes = {f: tuple(t.shape) for f, t in self._tables.items() if t.dim() == 2}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"q and kv tables must have the same [sites, steps] shape, got {shapes}")
        for feature, t in self._tables.items():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{feature} ratios must be finite numbers; found NaN or inf")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0:
                raise ValueError(f"{feature} ratio {lo} is negative; ratios are fractions of tokens removed, in [0, {limit:.4g}]")
            if hi > limit + 1e-12:
                raise ValueError(
                    f"{feature} ratio {hi} is above {limit:.4g}, the largest useful ratio for stride {self.stride} "
                    f"(one dst token per tile is always kept); lower the ratio or use a larger stride"
                )

    # ------------------------------------------------------------------ persistence
    def options(self) -> dict[str, Any]:
        return {
            "stride": list(self.stride),
            "cache_window": self.cache_window,
            "similarity": self.similarity,
            "mode": self.mode,
            "seed": self.seed,
            "grid": list(self.grid) if self.grid else None,
            "text_position": self.text_position,
            "cross_attention": self.cross_attention,
            "dst": self.dst,
            "symmetric": self.symmetric,
            "name": self.name,
        }

    def save(self, path: str | Path) -> Path:
        """Write the plan as safetensors (ratios) + JSON metadata (options)."""
        from safetensors.torch import save_file

        path = Path(path)
        save_file(
            {k: t.contiguous() for k, t in self._tables.items()},
            str(path),
            metadata={_META_KEY: json.dumps(self.options())},
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            if meta is None:
                raise ValueError(
                    f"{path} is not an asymrnr_fx plan (no {_META_KEY!r} metadata); "
                    "for the paper's tier tables use Plan.from_tiers(path, q_map, kv_map)"
                )
            tables = {k: f.get_tensor(k) for k in FEATURES}
        opts = json.loads(meta)
        return cls(q=tables["q"], kv=tables["kv"], **opts)

    def __repr__(self) -> str:
        if self.is_table:
            ratios = f"table {self.num_sites} sites x {self.num_steps} steps, cost {self.attention_cost():.3f}"
        else:
            ratios = f"q={float(self._tables['q']):g} kv={float(self._tables['kv']):g}"
        name = f"{self.name!r} " if self.name else ""
        return (
            f"Plan({name}{ratios}, stride={self.stride}, cache_window={self.cache_window}, "
            f"similarity={self.similarity!r}, mode={self.mode!r}, seed={self.seed}"
            + (f", grid={self.grid}" if self.grid else "")
            + ")"
        )


def _check_feature(feature: str) -> str:
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    return feature


DEFAULT_PLAN_RATIOS = {"q": 0.5, "kv": 0.3}


def default_plan() -> Plan:
    """The plan the ``asymrnr`` backend uses when none is given: q=0.5, kv=0.3, stride (2,2,2)."""
    return Plan.uniform(**DEFAULT_PLAN_RATIOS, name="default")


def coerce_plan(plan: Plan | Mapping[str, Any] | str | Path | None) -> Plan:
    """Accept a Plan, a dict of Plan fields, a saved plan path, or None (the default plan)."""
    if plan is None:
        return default_plan()
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, Mapping):
        return Plan(**plan)
    if isinstance(plan, (str, Path)):
        return Plan.load(plan)
    raise TypeError(f"expected a Plan, a dict of Plan options or a plan file path, got {type(plan).__name__}")


