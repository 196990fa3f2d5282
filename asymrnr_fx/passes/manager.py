"""The pass manager: one ordered list of passes, each ``pass(analysis)``, over one captured graph.

Order (each pass in its own file)::

    find_attention      analysis        every SDPA call, with its arguments
    find_timestep       analysis        the graph input that carries the denoising time
    infer_grid          analysis        candidate (frames, height, width) video grids
    classify_attention  analysis        self / joint / cross / other, text length and side
    select_sites        analysis        which sites to rewrite, with which features
    rewrite_attention   transformation  select -> reduce -> attention -> restore, per site
    ring_exchange       transformation  ring attention: keys/values reduced before the all-gather
    ulysses_exchange    transformation  Ulysses with Plan(shards=N): tokens reduced before the all-to-all

Every pass reads and fills one :class:`~.analysis.Analysis` (as Torch-TensorRT's
``build_from_passlist`` runs one signature). The analysis passes never change the graph,
so ``dry_run`` (for :func:`asymrnr_fx.inspect`) stops before the first transformation.
"""
from __future__ import annotations

import logging

import torch.fx as fx

from ..context import Capture
from ..plan import Plan
from ..report import GraphReport
from .analysis import Analysis, Pass
from .classify_attention import classify_attention_pass
from .find_attention import find_attention_pass
from .find_timestep import find_timestep_pass
from .infer_grid import infer_grid_pass
from .rewrite_attention import rewrite_attention_pass
from .ring_exchange import ring_exchange_pass
from .ulysses_exchange import ulysses_exchange_pass
from .select_sites import select_sites_pass

log = logging.getLogger("asymrnr_fx")

ANALYSES: tuple[Pass, ...] = (
    find_attention_pass, find_timestep_pass, infer_grid_pass, classify_attention_pass, select_sites_pass,
)
TRANSFORMATIONS: tuple[Pass, ...] = (rewrite_attention_pass, ring_exchange_pass, ulysses_exchange_pass)
#: Every pass, in the order :func:`rewrite_graph` runs them.
PASSES: tuple[Pass, ...] = ANALYSES + TRANSFORMATIONS


def rewrite_graph(
    gm: fx.GraphModule,
    plan: Plan,
    capture: Capture | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
    prefix: str = "",
    shared: bool = False,
    dry_run: bool = False,
) -> GraphReport:
    """Run :data:`PASSES` over ``gm`` in place and return what they found.

    ``capture`` is what the model call in progress tells the pass (grid hint, 5-D inputs, plan
    rows known so far; see :class:`asymrnr_fx.context.Capture`). ``prefix``/``shared``
    describe a region graph (regional compilation: the module path of the block being
    captured, and whether the graph serves every block of its class).
    """
    a = Analysis(gm, plan, capture if capture is not None else Capture(), grid=tuple(grid) if grid else None,
                 prefix=prefix, shared=shared)
    for run in ANALYSES if dry_run else PASSES:
        run(a)
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    report = GraphReport(
        a.reports,
        grid=a.chosen.grid if a.chosen else None,
        grid_source=a.chosen.source if a.chosen else "",
        timestep=a.timestep.name if a.timestep is not None else None,
        timestep_index=placeholders.index(a.timestep) if a.timestep in placeholders else None,
        rows=() if a.shared else tuple(dict.fromkeys(prefix + r.path for r in a.reports if r.ordinal is not None)),
    )
    log.info("asymrnr_fx: rewrote %d of %d attention sites", len(report.rewritten), len(a.reports))
    return report
