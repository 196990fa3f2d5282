"""Plans: which fraction of video tokens to drop, per attention site, denoising step and feature.

A :class:`Plan` is a frozen, validated value: it holds ratios and method options, never
runtime state (that lives in :class:`asymrnr_fx.runtime.Runtime`), so one plan can be
saved, shared and reused. Every field is type- and range-checked when a plan is built,
copied with :func:`dataclasses.replace` or loaded from a file; a bad value raises
:class:`PlanError` naming the field. To change a field, make a new plan::

    faster = dataclasses.replace(plan, q=0.6)

What the ratios and options mean for the method: ``docs/method.md``.

The fields fall in three groups, declared once on the dataclass (field metadata) and used
by :meth:`Plan.options`, :meth:`Plan.save`/:meth:`Plan.load` and the calibration:

* **capture** options (:data:`CAPTURE_OPTIONS`): how tokens are partitioned, matched and
  merged and which attention sites are rewritten. A transformed model is captured with
  them; a plan swapped in later
  (:meth:`asymrnr_fx.calibration.recording.SwitchableRuntime.use`) must agree on all of them.
* the **schedule** (:data:`SCHEDULE_FIELDS`): how much is reduced and when: the ``q`` and
  ``kv`` ratio tables, ``cache_window`` and ``seed``. Read on every call.
* the **label** ``name``.

:data:`CALIBRATION_OPTIONS` are the options a calibration is measured under (and that
plans built from it inherit).

This module holds the :class:`Plan` class and what is derived from its field list; the
rest lives in modules below it (the public names of the first and the last are re-exported
here, so ``from asymrnr_fx.plan import PlanError, PUBLISHED`` keeps working):

* :mod:`asymrnr_fx.plan_fields`: :class:`PlanError`, the limits and the per-field checks;
* :mod:`asymrnr_fx.plan_files`: the file format of :meth:`Plan.save` / :meth:`Plan.load`;
* :mod:`asymrnr_fx.schedules`: the paper's published tier tables (:data:`PUBLISHED`,
  :func:`published_tiers`, :func:`tiers_to_ratios`) behind :meth:`Plan.published`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .ops import MATCHINGS, MODES, max_ratio
from .plan_fields import (
    DSTS,
    FEATURES,
    MAX_NAME_CHARS,
    MAX_TABLE_CELLS,
    STAGES,
    TEXT_POSITIONS,
    PlanError,
    PlanTypeError,
    Ratios,
    RatiosLike,
    check_bool,
    check_cache_window,
    check_feature,
    check_grid,
    check_name,
    check_ratios,
    check_seed,
    check_shards,
    check_window,
    check_stride,
    choice,
    describe,
    option,
)
from .plan_files import read_plan, write_plan
from .schedules import (
    PUBLISHED,
    PublishedSchedule,
    published_schedule,
    published_tiers,
    tiers_to_ratios,
)

# defined here, plus the public names of .plan_fields and .schedules (re-exported)
__all__ = [
    "CALIBRATION_OPTIONS", "CAPTURE_OPTIONS", "DEFAULT_PLAN_RATIOS", "DSTS", "FEATURES", "MAX_NAME_CHARS",
    "MAX_TABLE_CELLS", "OPTIONS", "PUBLISHED", "SCHEDULE_FIELDS", "STAGES", "TEXT_POSITIONS", "Plan", "PlanError",
    "PlanTypeError", "PublishedSchedule", "Ratios", "RatiosLike", "coerce_plan", "default_plan", "published_tiers",
    "tiers_to_ratios",
]


# =========================================================================== the plan
@dataclass(frozen=True, eq=False)
class Plan:
    """Reduction ratios plus the method's options: a frozen value, validated on construction.

    AsymRnR removes a fraction of the video tokens from the query side (``q``) and from
    the key/value side (``kv``, K pruned with V's matching) of every rewritten attention
    call, and restores the output to full length. Build plans with :meth:`uniform`,
    :meth:`from_table`, :meth:`from_tiers`, :meth:`published`, :meth:`load`, or a
    calibration (:func:`asymrnr_fx.calibration.budget.plan_for_budget`); change one with
    ``dataclasses.replace(plan, field=value)`` (validated again). Equality is identity
    (a plan keys its default runtime); compare :meth:`options` and :meth:`table` instead.

    Args (every one optional; a value outside its range raises :class:`PlanError` naming it):
     - q: fraction of video *query* tokens removed, one number for every site and step or a
          ``[sites, steps]`` table (sites are the video attention modules, rewritten or not, in execution
          order, one per block in the usual video DiT). Range ``[0, 1 - 1/prod(stride)]``
          (0.875 at stride (2, 2, 2): one dst token per tile is always kept). 0 leaves the
          queries alone. Higher is faster and loses more quality. ``0.5`` is the default
          plan's; queries tolerate more than keys and values (the published tables reach
          0.8-0.9 in their most redundant blocks and steps), so for more than the default
          prefer a published or calibrated table, which reduces only where tokens are redundant.
     - kv: fraction of video *key/value* tokens removed, same form and range as ``q``.
          K/V are more sensitive than Q: ``0.3`` is the default; the published tables
          stay at or below 0.4. Must be 0 when ``symmetric=True``.
     - stride [three ints >= 1, (frames, height, width)]: the tile size of the partition;
          each tile keeps one dst token and its other tokens may be removed. Larger tiles
          allow larger ratios (``1 - 1/prod(stride)``) but match over longer distances.
          ``(2, 2, 2)`` (default) for CogVideoX-like models; the paper uses ``(6, 2, 2)``
          for Mochi and HunyuanVideo. On an axis where the grid is shorter (one frame) the
          tile is clamped to the grid; a grid of one token per tile is left intact.
     - cache_window [int >= 1]: denoising steps a matching is reused for; the matching is
          computed at the first step of each window. 1 re-matches every step (slowest, most
          faithful); the paper uses 5 for CogVideoX (default), 3 for Mochi/HunyuanVideo and
          1 for the 6-step FastVideo HunyuanVideo. Keep it well below the number of steps.
     - similarity [one of ``asymrnr_fx.ops.MATCHINGS``]: how a src token finds its dst:
          ``"euclidean"`` (default, the paper's), ``"cosine"`` or ``"dot"``; ``"random"``
          and ``"spatial"`` are baselines for comparisons, not for use.
     - mode [``"replace"`` or ``"mean"``]: ``"replace"`` (default, the paper's) drops the
          removed tokens; ``"mean"`` makes each kept token the mean of the tokens assigned to
          it (ToMe-style merging).
     - seed [int in ``[0, 2**63)``]: seed of the random dst choice in each tile (combined
          with site, feature and window, so matchings are reproducible). Any value; change
          it only to measure run-to-run variation.
     - grid [None or three ints >= 1]: the video size in tokens after patching, (frames,
          height, width). ``None`` (default) infers it from the model's config and inputs;
          give it when inference fails (the report says so). A grid whose token count
          matches no attention call, or the prompt, is an error.
     - text_position [``"auto"``, ``"first"`` or ``"last"``]: where the text sits in a
          joint text+video sequence. ``"auto"`` (default) reads it off the graph; set it
          only when the report asks for it.
     - cross_attention [bool]: also reduce the video *queries* of cross-attention sites
          (video attending to text). False (default) leaves them alone, as the paper does.
     - dst [``"random"`` or ``"fixed"``]: the dst token of each tile is a random cell
          (default, the paper's) or the tile's origin (a baseline).
     - symmetric [bool]: the ToMe/SymRnR baseline: reduce Q, K and V with one matching
          (computed on K) at the ``q`` ratio; ``kv`` must be 0. False (default) for AsymRnR.
     - shards [int in ``[1, 4096]``]: restrict the partition and the matching to this many equal,
          contiguous pieces of the video tokens (raster order), each keeping its own share. 1
          (default) matches over the whole video. Under ring context parallelism over R ranks
          every rank holds one piece, so the run computes ``shards=R`` whatever is set here
          (1 or R are accepted); set ``shards=R`` on one process to reproduce such a run.
     - window [None or three ints >= 0, (frames, rows, columns) in tiles]: match each src
          token only against the dst tokens of the tiles within this many tiles of its own
          (a border token outside every full tile counts as in the nearest one). None
          (default, the paper's) searches the whole video. A window scores a fraction of the
          pairs, so a matching step costs less: the matching is a GEMM as large as a real
          share of the attention it saves. ``(0, 1, 1)`` (the tiles of the same frames, one
          tile around) is a good start: cheapest, and the closest to the unreduced model on
          the toy (docs/benchmarks.md); check fidelity on your model. With ``shards`` > 1 (or
          ring context parallelism) a src sees its own shard's dst only; one whose window holds
          none (a shard boundary cut its tile and its neighbours') searches its whole shard.
     - name [str, at most 200 characters]: a label for reports, plots and files.
    """

    q: RatiosLike = option(0.0, check_ratios, "schedule")  # stored as Ratios (immutable)
    kv: RatiosLike = option(0.0, check_ratios, "schedule")
    stride: tuple[int, int, int] = option((2, 2, 2), check_stride, "capture", calibrated=True)
    cache_window: int = option(5, check_cache_window, "schedule", calibrated=True)
    similarity: str = option("euclidean", choice(MATCHINGS), "capture", calibrated=True)
    mode: str = option("replace", choice(MODES), "capture")
    seed: int = option(0, check_seed, "schedule", calibrated=True)
    grid: tuple[int, int, int] | None = option(None, check_grid, "capture", calibrated=True)
    text_position: str = option("auto", choice(TEXT_POSITIONS), "capture", calibrated=True)
    cross_attention: bool = option(False, check_bool, "capture")
    dst: str = option("random", choice(DSTS), "capture", calibrated=True)
    symmetric: bool = option(False, check_bool, "capture")
    shards: int = option(1, check_shards, "capture")
    window: tuple[int, int, int] | None = option(None, check_window, "schedule", calibrated=True)
    name: str = option("", check_name, "label")
    _tables: dict[str, torch.Tensor] = field(init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the fields only, not the runtimes a compiled model keeps on its plan."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_asymrnr")}

    def __post_init__(self) -> None:
        # Canonicalise every declared field (the one place a Plan is written after __init__).
        for f in _declared_fields():
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))
        tables = {k: torch.tensor(getattr(self, k), dtype=torch.float64) for k in FEATURES}
        object.__setattr__(self, "_tables", tables)
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve several fields."""
        q, kv = self._tables["q"], self._tables["kv"]
        if q.dim() == 2 and kv.dim() == 2 and q.shape != kv.shape:
            raise PlanError(
                "kv", f"table shape {tuple(kv.shape)} differs from q's {tuple(q.shape)}: "
                "q and kv tables must have the same [sites, steps] shape"
            )
        limit = max_ratio(self.stride)
        for feature, t in self._tables.items():
            lo, hi = float(t.min()), float(t.max())
            if lo < 0:
                raise PlanError(
                    feature, f"ratio {lo} is negative; ratios are fractions of tokens removed, in [0, {limit:.4g}]"
                )
            if hi > limit + 1e-12:
                raise PlanError(
                    feature,
                    f"ratio {hi} is above {limit:.4g}, the largest useful ratio for stride {self.stride} "
                    "(one dst token per tile is always kept); lower the ratio or use a larger stride",
                )
        if self.window is not None:
            if self.similarity in ("random", "spatial"):
                raise PlanError("window", f"applies to the euclidean, cosine and dot matchings, not {self.similarity!r}")
        if self.symmetric and bool((kv != 0).any()):
            raise PlanError("kv", "a symmetric plan reduces Q, K and V with the q ratio; set kv=0")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, q: float = 0.5, kv: float = 0.3, **options: Any) -> "Plan":
        """The same ratios at every site and step (defaults: the default plan's q=0.5, kv=0.3)."""
        return cls(q=q, kv=kv, **options)

    @classmethod
    def from_table(cls, q: Any, kv: Any, **options: Any) -> "Plan":
        """Per-site, per-step ratios: ``q`` and ``kv`` are ``[sites, steps]`` tables (tensors, arrays or lists)."""
        return cls(q=q, kv=kv, **options)

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
        (K is pruned with V's matching, as in the paper; see ``docs/method.md``).
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
        sched = published_schedule(model)
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
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> "Plan":
        """A plan from a mapping of field names (``q``, ``kv`` and :data:`OPTIONS`); unknown names are errors."""
        if not isinstance(values, Mapping):
            raise PlanTypeError("options", f"must be a mapping of plan fields, got {describe(values)}", source)
        known = FEATURES + OPTIONS
        for key in values:
            if key not in known:
                raise PlanError(str(key)[:80], f"is not a plan field; known: {list(known)}", source)
        try:
            return cls(**values)
        except PlanError as e:
            raise (e.located(source) if source else e) from None

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
        """The ``[sites, steps]`` ratio table of ``feature`` as a new float64 tensor (a uniform plan is broadcast)."""
        t = self._tables[check_feature(feature)]
        if t.dim() == 2:
            return t.clone()
        sites = num_sites or self.num_sites or 1
        steps = num_steps or self.num_steps or 1
        return t.expand(sites, steps).clone()

    def ratio(self, site: int, step: int, feature: str) -> float:
        """The ratio for one cell; a step or site beyond the table is an error naming the table size."""
        t = self._tables[check_feature(feature)]
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

    # ------------------------------------------------------------------ options
    def options(self, stage: str | None = None, *, calibrated: bool | None = None) -> dict[str, Any]:
        """The non-ratio fields as JSON-ready values (tuples as lists), in declaration order.

        ``stage`` keeps one group (``"capture"``, ``"schedule"`` or ``"label"``);
        ``calibrated=True`` keeps :data:`CALIBRATION_OPTIONS`.
        """
        if stage is not None and stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        out = {}
        for f in _declared_fields():
            if f.name in FEATURES or (stage is not None and f.metadata["stage"] != stage):
                continue
            if calibrated is not None and f.metadata["calibrated"] != calibrated:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def differing_options(
        self, other: "Plan", stage: str | None = None, *, labels: bool = True
    ) -> dict[str, tuple[Any, Any]]:
        """Options (of ``stage``, or all; ``labels=False``: those that change how it runs) whose values
        differ: ``{name: (self's, other's)}``."""
        mine, theirs = self.options(stage), other.options(stage)
        skip = () if labels else self.options("label")
        return {k: (mine[k], theirs[k]) for k in mine if k not in skip and mine[k] != theirs[k]}

    def runs_like(self, other: "Plan") -> bool:
        """Whether ``other`` reduces exactly as this plan does: the same ratios and options (names aside).
        (Plans compare by identity: their ratio tables are tensors.)"""
        same_ratios = all(a.shape == b.shape and bool((a == b).all())
                          for a, b in ((self._tables[f], other._tables[f]) for f in FEATURES))
        return same_ratios and not self.differing_options(other, labels=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the plan as safetensors (ratios) + JSON metadata (options); see :mod:`asymrnr_fx.plan_files`."""
        return write_plan(path, self._tables, self.options())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan written by :meth:`save`; every field is checked as on construction."""
        return cls.from_dict(read_plan(path), source=str(path))

    def __repr__(self) -> str:
        if self.is_table:
            ratios = f"table {self.num_sites} sites x {self.num_steps} steps, cost {self.attention_cost():.3f}"
        else:
            ratios = f"q={float(self._tables['q']):g} kv={float(self._tables['kv']):g}"
        name = f"{self.name!r} " if self.name else ""
        shown = ("q", "kv", "name", "stride", "cache_window", "similarity", "mode", "seed")
        # every other option where it differs from its default: two plans that run differently never print alike
        rest = "".join(f", {f.name}={getattr(self, f.name)!r}" for f in _declared_fields()
                       if f.name not in shown and getattr(self, f.name) != f.default)
        return (
            f"Plan({name}{ratios}, stride={self.stride}, cache_window={self.cache_window}, "
            f"similarity={self.similarity!r}, mode={self.mode!r}, seed={self.seed}{rest})"
        )


def _declared_fields() -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(Plan) if "stage" in f.metadata)


#: Every option (non-ratio field) of a plan, in declaration order: what a plan file stores.
OPTIONS: tuple[str, ...] = tuple(f.name for f in _declared_fields() if f.name not in FEATURES)
#: Options fixed when a model is captured; a plan swapped in later must share them.
CAPTURE_OPTIONS: tuple[str, ...] = tuple(f.name for f in _declared_fields() if f.metadata["stage"] == "capture")
#: The run-time schedule: ratio tables, cache window and seed.
SCHEDULE_FIELDS: tuple[str, ...] = tuple(f.name for f in _declared_fields() if f.metadata["stage"] == "schedule")
#: Options a calibration is measured under, which plans built from it inherit.
CALIBRATION_OPTIONS: tuple[str, ...] = tuple(f.name for f in _declared_fields() if f.metadata["calibrated"])


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
        return Plan.from_dict(plan)
    if isinstance(plan, (str, Path)):
        return Plan.load(plan)
    raise TypeError(f"expected a Plan, a dict of Plan options or a plan file path, got {type(plan).__name__}")
