"""The pass driver: one ordered list of passes over one captured graph.

Order (each pass in its own file)::

    find_attention      analysis        every SDPA call, with its arguments
    find_timestep       analysis        the graph input that carries the denoising time
    infer_grid          analysis        candidate (frames, height, width) video grids
    classify_attention  analysis        self / joint / cross / other, text length and side
    select_sites        analysis        which sites to rewrite, with which features
    rewrite_attention   transformation  select -> reduce -> attention -> restore, per site

The analysis passes never change the graph, so ``dry_run`` (for :func:`asymrnr_fx.inspect`)
stops before the last one. The driver is also the one place that turns an explicit grid
that explains no attention call into an error naming both numbers.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch.fx as fx

from ..plan import Plan
from .classify_attention import classify_attention
from .find_attention import find_attention
from .find_timestep import find_timestep
from .graph import nearest_parameter
from .infer_grid import infer_grids
from .rewrite_attention import rewrite_attention
from .select_sites import select_sites

if TYPE_CHECKING:  # pragma: no cover
    from ..report import GraphReport
    from ..runtime import Runtime

log = logging.getLogger("asymrnr_fx")

PASSES: tuple[str, ...] = (
    "find_attention", "find_timestep", "infer_grid", "classify_attention", "select_sites", "rewrite_attention",
)


def rewrite_graph(
    gm: fx.GraphModule,
    plan: Plan,
    runtime: "Runtime",
    *,
    grid: tuple[int, int, int] | None = None,
    prefix: str = "",
    shared: bool = False,
    dry_run: bool = False,
) -> "GraphReport":
    """Run :data:`PASSES` over ``gm`` in place and return what they found.

    ``prefix``/``shared`` describe a region graph (regional compilation: the module path of
    the block being captured, and whether the graph serves every block of its class).
    """
    from ..report import GraphReport
    from ..sites import GraphSite, encode_site

    calls = find_attention(gm)
    timestep = find_timestep(gm)
    explicit = tuple(grid) if grid is not None else plan.grid
    candidates = infer_grids(gm, explicit=explicit, hint=runtime.grid_hint, call_inputs=runtime.call_inputs)
    reports, chosen = classify_attention(calls, candidates, plan.text_position)
    _check_explicit_grid(explicit, reports, bool(calls))
    # only a graph that takes the model's timestep is surely the model's own top level, with full
    # module paths; any other graph may be a block fragment that Dynamo reuses for every block
    shared = shared or timestep is None
    select_sites(reports, plan, runtime, prefix=prefix, shared=shared)
    if not dry_run:
        for call, rep in zip(calls, reports):  # classify_attention keeps the order of the calls
            if not rep.rewrite:
                continue
            site = GraphSite(
                rep.path, rep.occurrence, rep.kind, rep.grid, rep.text_len, rep.text_position == "first", plan.stride
            )
            rewrite_attention(
                gm, call, site=encode_site(site), features=rep.features, mode=plan.mode, symmetric=plan.symmetric,
                anchor=nearest_parameter(call.query),
            )
        gm.graph.lint()
        gm.recompile()
    report = GraphReport(
        reports,
        grid=chosen.grid if chosen else None,
        grid_source=chosen.source if chosen else "",
        timestep=timestep.name if timestep is not None else None,
        rows=() if shared else tuple(dict.fromkeys(prefix + r.path for r in reports if r.ordinal is not None)),
    )
    log.info("asymrnr_fx: rewrote %d of %d attention sites", len(report.rewritten), len(reports))
    return report


def _check_explicit_grid(explicit: tuple[int, int, int] | None, reports: list, any_calls: bool) -> None:
    """Raise when an explicit grid explains no attention call of this graph.

    Sites over the prompt alone (text refiners, tagged ``prompt_only`` by classify_attention) do
    not count: a graph holding only those is a piece of the model call before a graph break
    (HunyuanVideo 1.5, Framepack), and the video attention runs in another graph.
    """
    if explicit is None or not any_calls:
        return
    n = explicit[0] * explicit[1] * explicit[2]
    reports = [r for r in reports if not r.extra.get("prompt_only")]
    if reports and not any(r.kind == "joint" or n in (r.q_len, r.kv_len) for r in reports):
        lengths = sorted({r.q_len for r in reports if r.q_len is not None})
        raise ValueError(
            f"grid {explicit} gives {n} video tokens, but the attention sites have sequence lengths {lengths}; "
            "give the grid in tokens after patching (frames / temporal patch, height / patch, width / patch)"
        )
