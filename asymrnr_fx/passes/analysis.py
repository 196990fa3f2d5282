"""The one object every pass reads and fills, in :data:`~asymrnr_fx.passes.manager.PASSES` order.

Why one object: the passes are a list the manager runs (one signature, ``pass(analysis)``),
not stages wired by hand, so a new pass only needs its inputs to be here already. It holds
the graph, what the caller knows (plan, capture context, region) and each pass's findings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.fx as fx

from ..context import Capture
from ..plan import Plan
from ..report import SiteReport


@dataclass
class Analysis:
    """One graph under rewrite: inputs first, then what each pass found."""

    gm: fx.GraphModule
    plan: Plan
    capture: Capture = field(default_factory=Capture)
    grid: tuple[int, int, int] | None = None  # explicit grid (transform(grid=...)), else the plan's
    prefix: str = ""  # module path of the compiled region (regional compilation)
    shared: bool = False  # the graph may serve several modules (every block of a class)
    # found by the passes, in order
    # (the pass modules define the record types and import this one, so they are Any here)
    calls: list[Any] = field(default_factory=list)  # find_attention: AttentionCall per call
    timestep: fx.Node | None = None  # find_timestep
    candidates: list[Any] = field(default_factory=list)  # infer_grid: GridCandidate, most trusted first
    reports: list[SiteReport] = field(default_factory=list)  # classify_attention, select_sites
    chosen: Any = None  # classify_attention: the GridCandidate kept
    rewrites: list[Any] = field(default_factory=list)  # rewrite_attention: (SiteReport, SiteRewrite) per rewritten site


#: A pass: reads and fills the analysis; a transformation also edits ``analysis.gm``.
Pass = Callable[[Analysis], Any]
