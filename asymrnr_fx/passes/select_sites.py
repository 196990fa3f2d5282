"""Analysis pass: which classified sites get rewritten, and what the graph tells the runtime about each.

Why a pass of its own: "is this site eligible" mixes the classification (kind, reason), the
plan (cross-attention opt-in, features with a nonzero ratio, the stride against the grid)
and the region being compiled (a block graph serves every block of its class, so it must
carry every feature any block uses). Keeping it apart leaves classification plan-free and
the rewrite mechanical.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from ..ops import site_stride
from ..plan import Plan
from ..report import SiteReport
from .analysis import Analysis

_VIDEO_KINDS = ("self", "joint")


def select_sites(
    reports: list[SiteReport], plan: Plan, rows: Mapping[str, int] | None = None, *, prefix: str = "", shared: bool = False
) -> list[SiteReport]:
    """Mark the reports to rewrite (``rewrite``, ``features``, ``ordinal``, ``occurrence``) and return them.

    ``prefix`` is the module path of the compiled region (regional compilation); ``shared``
    says the graph may run for several modules (every block of a class, or a frame resumed
    after a graph break inside a block), so the features are those the plan uses at *any*
    site rather than at this one. ``rows`` are the plan rows the model already numbered
    (module path -> row, from the capture context).
    """
    rows = rows if rows is not None else {}
    occurrences: Counter[str] = Counter()
    provisional: dict[str, int] = {}
    chosen = []
    for rep in reports:
        if rep.kind == "cross" and not plan.cross_attention:
            rep.reason = rep.reason or "cross-attention is left alone by default (Plan(cross_attention=True) reduces its queries)"
            rep.extra["left_alone"] = True  # as asked: not a reduction that stopped
        eligible = (rep.kind in _VIDEO_KINDS or (rep.kind == "cross" and plan.cross_attention)) and not rep.reason
        if not eligible:
            continue
        # provisional: the runtime numbers sites when they run (a graph's own names may be relative)
        path = prefix + rep.path
        rep.ordinal = rows.get(path, provisional.setdefault(path, len(rows) + len(provisional)))
        if not shared and plan.num_sites is not None and rep.ordinal >= plan.num_sites:
            raise ValueError(
                f"plan {plan.name or ''} has ratios for {plan.num_sites} attention sites, but the model has more "
                f"(site {rep.ordinal + 1} is {path}); build the plan for this model's number of attention blocks"
            )
        rep.occurrence = occurrences[rep.path]
        occurrences[rep.path] += 1
        features = _features(plan, rep.ordinal, shared)
        if rep.kind == "cross":
            features = tuple(f for f in features if f == "q")
        if not features:
            rep.reason = "the plan's ratio is 0 at every step for this site"
            rep.extra["zero_plan"] = True  # left intact as asked: not a reduction that stopped
            continue
        stride = site_stride(rep.grid, plan.stride)
        if math.prod(stride) == 1:
            rep.reason = f"grid {rep.grid} is one token per tile of the stride {plan.stride}: no src tokens to remove"
            continue
        if stride != tuple(plan.stride):
            rep.extra["stride"] = f"{stride} (the plan's {tuple(plan.stride)} clamped to the grid)"
        rep.rewrite, rep.features = True, features
        if plan.symmetric and rep.kind != "cross":  # one matching (of the keys) cuts Q, K and V at q's ratio
            rep.extra["symmetric"] = True
        chosen.append(rep)
    return _whole_ring_rounds(chosen)


def _whole_ring_rounds(chosen: list[SiteReport]) -> list[SiteReport]:
    """Leave a ring site intact unless its calls come in whole rounds (one call per rank).

    The runtime reads a ring call's shard and round off its occurrence (``shard_select.ring_round``):
    calls ``0 .. ranks-1`` of a module are the first round, and so on. Any other count cannot be
    told apart, and guessing would reduce a call with another call's matching.
    """
    calls = Counter(rep.path for rep in chosen if rep.shard_local)
    for rep in chosen:
        if rep.shard_local and calls[rep.path] % rep.shards:
            rep.rewrite, rep.features = False, ()
            rep.reason = (f"{calls[rep.path]} ring attention calls of this module for {rep.shards} ranks: not whole "
                          "rounds of one call per rank, so which shard each call holds is unknown")
    return [rep for rep in chosen if rep.rewrite]


def _features(plan: Plan, ordinal: int, shared: bool) -> tuple[str, ...]:
    if not shared or plan.num_sites is None:
        return plan.features_used(ordinal)
    used = {f for site in range(plan.num_sites) for f in plan.features_used(site)}
    return tuple(f for f in ("q", "kv") if f in used)


def select_sites_pass(a: Analysis) -> None:
    select_sites(a.reports, a.plan, a.capture.rows, prefix=a.prefix, shared=a.shared)
