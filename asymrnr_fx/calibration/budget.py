"""Plans from a calibration: the paper's tiers + threshold maps, or the least-error plan for a budget.

Two ways, because they answer different questions:

* :func:`plan_from_tiers` / :func:`plan_like_published` reproduce the paper's recipe on a
  new model: bin the measured redundancy of each (site, cache window, feature) into tiers
  (0..9 like the reference) and apply a threshold map, e.g. the published CogVideoX-2B
  ``base`` map. With ``like="cogvideox-2b"`` the tiers follow the published table's
  histogram, so the map switches on as large a share of cells as it did in the paper.
* :func:`plan_for_budget` / :func:`plan_for_speedup` start from what you can afford: a
  mean remaining video-to-video attention cost ``mean((1 - r_q)(1 - r_kv))``, or an
  end-to-end speedup through the cost model ``1 / (1 - f (1 - c))`` of ``docs/method.md`` (section 8).
  They reduce where the expected error per unit of cost saved is smallest (greedy over
  (site, cache window, feature) units), the expected error of a cell being its measured
  distortion times its sensitivity weight and the measured growth of error with the ratio
  (:mod:`asymrnr_fx.calibration.sensitivity`) when measured.

Ratios are constant inside each cache window (a matching is reused across the window, so a
schedule that changes inside it would cut one ranking at several places for no benefit)
and never exceed ``1 - 1/prod(stride)``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .. import ops
from ..plan import FEATURES, PUBLISHED, Plan, published_tiers
from .result import Calibration

DEFAULT_LEVELS = 10


# =========================================================================== cost model
def cost_range(stride: tuple[int, int, int] | Any) -> tuple[float, float]:
    """Reachable mean attention cost: ``((1 - max_ratio)^2, 1]`` (both features at their maximum .. nothing reduced)."""
    top = ops.max_ratio(stride)
    return (1 - top) ** 2, 1.0


def speedup_for_cost(attention_cost: float, attention_share: float) -> float:
    """Ideal end-to-end speedup ``1 / (1 - f (1 - c))`` (before matching and gather overheads)."""
    return 1.0 / (1.0 - attention_share * (1.0 - attention_cost))


def cost_for_speedup(speedup: float, attention_share: float, stride: tuple[int, int, int] = (2, 2, 2)) -> float:
    """The mean attention cost that gives ``speedup`` when attention is ``attention_share`` of a forward pass."""
    if not 0 < attention_share <= 1:
        raise ValueError(f"attention_share is the fraction of a forward pass spent in attention, in (0, 1]; got {attention_share}")
    lo, _ = cost_range(stride)
    best = speedup_for_cost(lo, attention_share)
    if not 1 <= speedup <= best + 1e-12:
        raise ValueError(
            f"speedup {speedup} is not reachable with attention share {attention_share} and stride {tuple(stride)}: "
            f"the ideal speedup ranges from 1.0 (no reduction) to {best:.4g} (every cell at the maximum ratio)"
        )
    return 1.0 - (1.0 - 1.0 / speedup) / attention_share


def _check_budget(attention_cost: float, stride: tuple[int, int, int]) -> None:
    lo, hi = cost_range(stride)
    if not (attention_cost == attention_cost) or attention_cost <= 0 or attention_cost > hi:
        raise ValueError(
            f"attention_cost is the fraction of full video-to-video attention cost kept, in (0, 1]; got {attention_cost}. "
            f"Reachable range for stride {tuple(stride)}: [{lo:.4g}, 1]"
        )
    if attention_cost < lo - 1e-12:
        raise ValueError(
            f"attention_cost {attention_cost} is unreachable: with stride {tuple(stride)} the largest ratio is "
            f"{ops.max_ratio(stride):.4g}, so the lowest mean cost is {lo:.4g}; reachable range [{lo:.4g}, 1]"
        )


# =========================================================================== tiers
def window_mean(table: torch.Tensor, cal: Calibration) -> torch.Tensor:
    """``[sites, steps]`` with each cache window replaced by its mean (NaN cells ignored)."""
    out = table.clone().double()
    for start, end in cal.windows():
        out[:, start:end] = table[:, start:end].double().nanmean(dim=1, keepdim=True)
    return out


def tiers(
    cal: Calibration,
    feature: str,
    *,
    levels: int = DEFAULT_LEVELS,
    method: str = "quantile",
    like: str | None = None,
    statistic: str = "cos_mean",
) -> torch.Tensor:
    """Redundancy tiers ``[sites, steps]`` (int64, 0 = least redundant), constant per cache window.

    ``method="quantile"``: cells are ranked and split into ``levels`` equal groups;
    ``"absolute"``: ``floor(levels * statistic)`` for a statistic in [0, 1] (comparable
    across models only as far as the statistic is); ``like="cogvideox-2b"`` (any published
    schedule): ranks are mapped onto that table's tier histogram for the same feature.
    Unmeasured cells get tier 0.
    """
    red = window_mean(cal.redundancy(feature, statistic), cal)
    valid = torch.isfinite(red)
    out = torch.zeros(red.shape, dtype=torch.int64)
    if not bool(valid.any()):
        return out
    values = red[valid]
    if like is not None:
        ref = published_tiers(like)["q" if feature == "q" else "v"].flatten().sort().values
        rank = _ranks(values)
        out[valid] = ref[(rank * ref.numel()).long().clamp(max=ref.numel() - 1)]
    elif method == "quantile":
        out[valid] = (_ranks(values) * levels).long().clamp(max=levels - 1)
    elif method == "absolute":
        out[valid] = (values.clamp(0, 1) * levels).floor().long().clamp(0, levels - 1)
    else:
        raise ValueError(f"method must be 'quantile' or 'absolute' (or give like=<published model>), got {method!r}")
    return out


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Fraction of values strictly below each value, in [0, 1): ties share a tier."""
    sorted_vals = values.sort().values
    return torch.searchsorted(sorted_vals, values.contiguous(), right=False).double() / values.numel()


def plan_from_tiers(
    cal: Calibration,
    q_map: Mapping[int, float],
    kv_map: Mapping[int, float],
    *,
    levels: int = DEFAULT_LEVELS,
    method: str = "quantile",
    like: str | None = None,
    statistic: str = "cos_mean",
    **options: Any,
) -> Plan:
    """The paper's way: tiers from the calibration plus threshold maps (tier -> ratio), via :meth:`Plan.from_tiers`."""
    tables = {
        "q": tiers(cal, "q", levels=levels, method=method, like=like, statistic=statistic),
        "v": tiers(cal, "kv", levels=levels, method=method, like=like, statistic=statistic),
    }
    opts = {**cal.plan_options(), "name": f"tiers:{like or method}", **options}
    plan = Plan.from_tiers(tables, q_map, kv_map, **opts)
    cal.check_plan(plan)
    return plan


def plan_like_published(cal: Calibration, schedule: str = "cogvideox-2b:base", **options: Any) -> Plan:
    """A published threshold map (``"model:point"``) applied to this model's tiers, matched to that model's histogram."""
    model, _, point = schedule.partition(":")
    point = point or "base"
    sched = PUBLISHED.get(model)
    if sched is None or point not in sched.maps:
        known = [f"{m}:{p}" for m, s in PUBLISHED.items() for p in s.maps]
        raise ValueError(f"no published threshold map {schedule!r}; known: {known}")
    q_map, v_map = sched.maps[point]
    return plan_from_tiers(cal, q_map, v_map, like=model, **{"name": f"like:{model}:{point}", **options})


# =========================================================================== budgets
def cell_weights(cal: Calibration, feature: str, weights: Any = "auto") -> torch.Tensor:
    """``[sites, steps]`` factors turning distortion into expected error.

    ``"auto"``: the measured sensitivity if the calibration has one, else 1; ``"uniform"``:
    1; a mapping ``{"q": w, "kv": w}`` of numbers or ``[sites, steps]`` tables.
    """
    shape = (cal.num_sites, cal.num_steps)
    if isinstance(weights, Mapping):
        return torch.as_tensor(weights[feature], dtype=torch.float64).expand(shape).clone()
    if weights == "uniform" or (weights == "auto" and cal.sensitivity is None):
        return torch.ones(shape, dtype=torch.float64)
    if weights in ("auto", "sensitivity"):
        if cal.sensitivity is None:
            raise ValueError("weights='sensitivity' needs a calibration with measured sensitivity (measure_sensitivity)")
        return cal.sensitivity.weights(cal, feature)
    raise ValueError(f"weights must be 'auto', 'uniform', 'sensitivity' or a {{'q': ..., 'kv': ...}} mapping, got {weights!r}")


def ratio_scale(cal: Calibration, feature: str, weights: Any, ratio: float | torch.Tensor) -> torch.Tensor:
    """The measured growth of error per unit of distortion with the ratio (1 without sensitivity)."""
    ratio = torch.as_tensor(ratio, dtype=torch.float64)
    if isinstance(weights, Mapping) or weights == "uniform" or cal.sensitivity is None:
        return torch.ones_like(ratio)
    return cal.sensitivity.scale(cal, feature, ratio)


def expected_error(plan: Plan, cal: Calibration, weights: Any = "auto") -> float:
    """The calibration's estimate of a plan's output error: ``sum_cells weight * distortion(ratio)`` (NaN cells skipped)."""
    cal.check_plan(plan)
    total = 0.0
    for f in FEATURES:
        ratios = plan.table(f, cal.num_sites, cal.num_steps)
        factor = cell_weights(cal, f, weights) * ratio_scale(cal, f, weights, ratios)
        total += float((factor * cal.distortion(f, ratios)).nansum())
    return total


def plan_for_budget(
    cal: Calibration,
    attention_cost: float = 0.7,
    *,
    weights: Any = "auto",
    name: str | None = None,
    **options: Any,
) -> Plan:
    """The plan with mean attention cost ``attention_cost`` whose expected error is (greedily) smallest.

    Units are (site, cache window, feature); each moves up a ladder of ratios (the
    calibration's curve ratios, up to the stride's maximum) by whichever step costs the
    least expected error per unit of attention cost saved. The last move is shortened so
    the plan's :meth:`~asymrnr_fx.plan.Plan.attention_cost` equals the budget.
    """
    _check_budget(float(attention_cost), cal.stride)
    budget = float(attention_cost)
    S, T = cal.num_sites, cal.num_steps
    windows = cal.windows()
    n_w = torch.tensor([b - a for a, b in windows], dtype=torch.float64)
    rungs = torch.tensor((0.0, *cal.curve_ratios), dtype=torch.float64)
    err = torch.stack([_unit_errors(cal, f, weights, windows) for f in FEATURES])  # [2, S, W, K]
    k_idx = torch.zeros(2, S, len(windows), dtype=torch.long)
    r = torch.zeros(2, S, len(windows), dtype=torch.float64)
    scale = n_w / (S * T)  # cost weight of one unit's window

    def cost() -> float:
        return float((scale * (1 - r[0]) * (1 - r[1])).sum())

    current = cost()
    while current > budget + 1e-12:
        other = (1 - r.flip(0)) * scale  # d cost / d ratio of each unit
        dr = rungs.view(1, 1, 1, -1) - r.unsqueeze(-1)
        dcost = other.unsqueeze(-1) * dr
        derr = err - err.gather(-1, k_idx.unsqueeze(-1))
        eff = torch.where(dr > 1e-12, derr / dcost.clamp_min(1e-300), torch.full_like(derr, float("inf")))
        eff = torch.where(torch.isfinite(err), eff, torch.full_like(eff, float("inf")))
        best = int(eff.argmin())
        if not bool(torch.isfinite(eff.view(-1)[best])):
            raise ValueError(
                f"attention_cost {budget} is unreachable for this calibration: only measured sites can be reduced, "
                f"and reducing all of them to the maximum leaves cost {current:.4g}"
            )
        f, s, w, k = (int(i) for i in torch.unravel_index(torch.tensor(best), eff.shape))
        step_cost = float(dcost[f, s, w, k])
        if current - step_cost < budget:  # shorten the last move: land on the budget exactly
            r[f, s, w] += (current - budget) / float(other[f, s, w])
            break
        k_idx[f, s, w], r[f, s, w] = k, rungs[k]
        current -= step_cost
    tables = {f: _expand(r[i], windows, T) for i, f in enumerate(FEATURES)}
    top = ops.max_ratio(cal.stride)
    opts = {**cal.plan_options(), "name": name or f"budget:{budget:g}", **options}
    return Plan.from_table(tables["q"].clamp(0, top), tables["kv"].clamp(0, top), **opts)


def plan_for_speedup(
    cal: Calibration, speedup: float = 1.3, attention_share: float = 0.5, **kwargs: Any
) -> Plan:
    """:func:`plan_for_budget` at the attention cost that gives ``speedup`` under the cost model of ``docs/method.md``."""
    cost = cost_for_speedup(float(speedup), float(attention_share), cal.stride)
    kwargs.setdefault("name", f"speedup:{speedup:g}@{attention_share:g}")
    return plan_for_budget(cal, cost, **kwargs)


def _unit_errors(cal: Calibration, feature: str, weights: Any, windows: list[tuple[int, int]]) -> torch.Tensor:
    """``[sites, windows, rungs]`` expected error of each unit at each ladder ratio (rung 0 = no reduction).

    Units with no measured cell cannot be reduced (infinite error above rung 0).
    """
    curve = cal.statistic("distortion", feature)  # [S, T, K]
    w = cell_weights(cal, feature, weights).unsqueeze(-1)
    cells = w * ratio_scale(cal, feature, weights, torch.tensor(cal.curve_ratios, dtype=torch.float64)) * curve
    measured = torch.isfinite(curve).all(-1)  # [S, T]
    units = []
    for a, b in windows:
        e = cells[:, a:b].nansum(1)  # [S, K]
        any_measured = measured[:, a:b].any(1, keepdim=True)
        e = torch.where(any_measured, e, torch.full_like(e, float("inf")))
        units.append(torch.cat([torch.zeros(e.shape[0], 1, dtype=e.dtype), e], -1))
    return torch.stack(units, 1)


def _expand(per_window: torch.Tensor, windows: list[tuple[int, int]], steps: int) -> torch.Tensor:
    out = torch.zeros(per_window.shape[0], steps, dtype=torch.float64)
    for i, (a, b) in enumerate(windows):
        out[:, a:b] = per_window[:, i : i + 1]
    return out
