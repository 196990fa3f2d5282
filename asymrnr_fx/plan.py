"""Plans: which fraction of video tokens to drop, per attention site, denoising step and feature.

A :class:`Plan` is a frozen, validated value: it holds ratios and method options, never
runtime state (that lives in :class:`asymrnr_fx.runtime.Runtime`), so one plan can be
saved, shared and reused. Every field is type- and range-checked when a plan is built,
copied with :func:`dataclasses.replace` or loaded from a file; a bad value raises
:class:`PlanError` naming the field. To change a field, make a new plan::

    faster = dataclasses.replace(plan, q=0.6)

The fields fall in three groups, declared once on the dataclass (field metadata) and used
by :meth:`Plan.options`, :meth:`Plan.save`/:meth:`Plan.load` and the calibration:

* **capture** options (:data:`CAPTURE_OPTIONS`): how tokens are partitioned, matched and
  merged and which attention sites are rewritten. A transformed model is captured with
  them; a plan swapped in later (``SwitchableRuntime.use`` in
  :mod:`asymrnr_fx.calibration.recording`) must agree on all of them.
* the **schedule** (:data:`SCHEDULE_FIELDS`): how much is reduced and when: the ``q`` and
  ``kv`` ratio tables, ``cache_window`` and ``seed``. Read on every call.
* the **label** ``name``.

:data:`CALIBRATION_OPTIONS` are the options a calibration is measured under (and that
plans built from it inherit).

File format (``Plan.save`` / ``Plan.load``): a safetensors file with float64 tensors
``q`` and ``kv`` (0-d for a uniform plan, ``[sites, steps]`` for a table) and the options
as JSON in the metadata entry ``"asymrnr_fx.plan"``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import torch

from .ops import MATCHINGS, MODES, max_ratio

FEATURES: tuple[str, ...] = ("q", "kv")
TEXT_POSITIONS: tuple[str, ...] = ("auto", "first", "last")
DSTS: tuple[str, ...] = ("random", "fixed")
STAGES: tuple[str, ...] = ("capture", "schedule", "label")
#: Longest plan name accepted (a name is a label for reports and file listings).
MAX_NAME_CHARS = 200
#: Most cells a ratio table may have (sites x steps); a million is far beyond any real model.
MAX_TABLE_CELLS = 1 << 20
_META_KEY = "asymrnr_fx.plan"

#: A ratio field after validation: one number, or a [sites, steps] table as nested tuples.
Ratios = Union[float, tuple[tuple[float, ...], ...]]
#: What a ratio field accepts: a number, or a [sites, steps] tensor, array or nested sequence.
RatiosLike = Union[float, torch.Tensor, Sequence[Sequence[float]]]


class PlanError(ValueError):
    """A plan field with an invalid value; :attr:`field` names it."""

    def __init__(self, field_name: str, detail: str, source: str | None = None) -> None:
        self.field = field_name
        self.detail = detail
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"Plan.{field_name}{where}: {detail}")

    def located(self, source: str) -> "PlanError":
        """The same error, saying where the value came from (e.g. a plan file)."""
        return type(self)(self.field, self.detail, source)


class PlanTypeError(PlanError, TypeError):
    """A plan field of the wrong type (also a :class:`PlanError`, hence a ``ValueError``)."""


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


# =========================================================================== field checks
# Each check takes (field name, value) and returns the canonical value or raises PlanError.
def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _integer(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PlanTypeError(name, f"must be {what}, got {_describe(value)}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PlanTypeError(name, f"must be True or False, got {_describe(value)}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise PlanTypeError(name, f"must be one of {choices}, got {_describe(value)}")
        if value not in choices:
            raise PlanError(name, f"unknown {name} {value!r}; use one of {choices}")
        return value

    return check


def _triple(name: str, value: Any, what: str) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, torch.Size)):
        raise PlanTypeError(name, f"must be three positive integers {what}, got {_describe(value)}")
    if len(value) != 3:
        raise PlanError(name, f"must be three positive integers {what}, got {len(value)} values {tuple(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise PlanTypeError(name, f"must be three positive integers {what}; element {i} is {_describe(v)}")
        out.append(int(v))
    out = tuple(out)
    if any(v < 1 for v in out):
        raise PlanError(name, f"must be three positive integers {what}, got {out}")
    return out  # type: ignore[return-value]


def _check_stride(name: str, value: Any) -> tuple[int, int, int]:
    return _triple(name, value, "(frames, height, width): the tile size in tokens")


def _check_grid(name: str, value: Any) -> tuple[int, int, int] | None:
    return None if value is None else _triple(name, value, "(frames, height, width): the video size in tokens, or None")


def _check_cache_window(name: str, value: Any) -> int:
    window = _integer(name, value, "a whole number of denoising steps >= 1")
    if window < 1:
        raise PlanError(name, f"must be >= 1 (1 = match at every step), got {window}")
    return window


def _check_seed(name: str, value: Any) -> int:
    seed = _integer(name, value, "an integer in [0, 2**63)")
    if not 0 <= seed < 2**63:
        raise PlanError(name, f"must be in [0, 2**63), got {seed}")
    return seed


def _check_name(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PlanTypeError(name, f"must be a string, got {_describe(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise PlanError(name, f"is {len(value)} characters long; at most {MAX_NAME_CHARS} are allowed")
    return value


def _check_ratios(name: str, value: Any) -> Ratios:
    """A number, or a [sites, steps] table (tensor, array or nested sequence); range is checked with the stride."""
    what = "a ratio in [0, 1) or a [sites, steps] table of ratios"
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise PlanTypeError(name, f"must be {what}, got {_describe(value)}")
    if isinstance(value, numbers.Real):
        ratio = float(value)
        if not math.isfinite(ratio):
            raise PlanError(name, f"ratios must be finite numbers; got {ratio}")
        return ratio
    try:
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PlanTypeError(name, f"must be {what}, got {_describe(value)} ({e})") from None
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise PlanTypeError(name, f"must be {what}; got a table of {t.dtype}")
    t = t.to(torch.float64)
    if t.dim() == 0:
        return _check_ratios(name, float(t))
    if t.numel() == 0:
        raise PlanError(name, f"table is empty (shape {tuple(t.shape)}); it needs at least one site and one step")
    if t.dim() != 2:
        raise PlanError(name, f"must be {what}; got shape {tuple(t.shape)}")
    if t.numel() > MAX_TABLE_CELLS:
        raise PlanError(name, f"table of shape {tuple(t.shape)} has more than {MAX_TABLE_CELLS} cells")
    if not bool(torch.isfinite(t).all()):
        raise PlanError(name, "ratios must be finite numbers; found NaN or inf")
    return tuple(tuple(row) for row in t.tolist())


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _option(default: Any, check: Callable[[str, Any], Any], stage: str, *, calibrated: bool = False) -> Any:
    """Declare a plan field: its default, its check, its stage, and whether a calibration is measured under it."""
    assert stage in STAGES
    return field(default=default, metadata={"check": check, "stage": stage, "calibrated": calibrated})


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
          ``[sites, steps]`` table (sites are the rewritten attention modules in execution
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
          for Mochi and HunyuanVideo. A site whose grid is smaller than the stride is left
          intact.
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
     - name [str, at most 200 characters]: a label for reports, plots and files.
    """

    q: RatiosLike = _option(0.0, _check_ratios, "schedule")  # stored as Ratios (immutable)
    kv: RatiosLike = _option(0.0, _check_ratios, "schedule")
    stride: tuple[int, int, int] = _option((2, 2, 2), _check_stride, "capture", calibrated=True)
    cache_window: int = _option(5, _check_cache_window, "schedule", calibrated=True)
    similarity: str = _option("euclidean", _choice(MATCHINGS), "capture", calibrated=True)
    mode: str = _option("replace", _choice(MODES), "capture")
    seed: int = _option(0, _check_seed, "schedule", calibrated=True)
    grid: tuple[int, int, int] | None = _option(None, _check_grid, "capture", calibrated=True)
    text_position: str = _option("auto", _choice(TEXT_POSITIONS), "capture", calibrated=True)
    cross_attention: bool = _option(False, _check_bool, "capture")
    dst: str = _option("random", _choice(DSTS), "capture", calibrated=True)
    symmetric: bool = _option(False, _check_bool, "capture")
    name: str = _option("", _check_name, "label")
    _tables: dict[str, torch.Tensor] = field(init=False, repr=False, compare=False)

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
    def from_dict(cls, values: Mapping[str, Any], source: str | None = None) -> "Plan":
        """A plan from a mapping of field names (``q``, ``kv`` and :data:`OPTIONS`); unknown names are errors."""
        if not isinstance(values, Mapping):
            raise PlanTypeError("options", f"must be a mapping of plan fields, got {_describe(values)}", source)
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

    def differing_options(self, other: "Plan", stage: str | None = None) -> dict[str, tuple[Any, Any]]:
        """Options (of ``stage``, or all) whose values differ: ``{name: (self's, other's)}``."""
        mine, theirs = self.options(stage), other.options(stage)
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}

    # ------------------------------------------------------------------ persistence
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
        """Read a plan written by :meth:`save`; every field is checked as on construction."""
        from safetensors import safe_open

        where = str(path)
        with safe_open(where, framework="pt") as f:
            meta = (f.metadata() or {}).get(_META_KEY)
            if meta is None:
                raise ValueError(
                    f"{path} is not an asymrnr_fx plan (no {_META_KEY!r} metadata); "
                    "for the paper's tier tables use Plan.from_tiers(path, q_map, kv_map)"
                )
            tables = {}
            for k in FEATURES:
                if k not in f.keys():
                    raise PlanError(k, "tensor missing from the plan file", where)
                shape = f.get_slice(k).get_shape()
                if math.prod(shape) > MAX_TABLE_CELLS:
                    raise PlanError(k, f"table of shape {tuple(shape)} has more than {MAX_TABLE_CELLS} cells", where)
                tables[k] = f.get_tensor(k)
        try:
            opts = json.loads(meta)
        except json.JSONDecodeError as e:
            raise PlanError("options", f"metadata is not valid JSON ({e})", where) from None
        if not isinstance(opts, dict):
            raise PlanTypeError("options", f"metadata must be a JSON object, got {type(opts).__name__}", where)
        for k in FEATURES:
            if k in opts:
                raise PlanError(k, "ratios belong in the file's tensors, not in its options", where)
        return cls.from_dict({**opts, **tables}, source=where)

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
        return Plan.from_dict(plan)
    if isinstance(plan, (str, Path)):
        return Plan.load(plan)
    raise TypeError(f"expected a Plan, a dict of Plan options or a plan file path, got {type(plan).__name__}")
