"""What the pass found and did, as a table people can read and a dict tools can use.

A leaf (it imports only :mod:`.errors`): the passes fill these records, and everything above
reads them.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import AsymRnRWarning

__all__ = ["AsymRnRWarning", "GraphReport", "Report", "SiteReport", "warn_nothing_rewritten"]


@dataclass
class SiteReport:
    """One row of the report: an attention call, its class, and whether/why it is rewritten."""

    node: str
    path: str
    module_type: str
    form: str
    kind: str = "other"
    q_len: int | None = None
    kv_len: int | None = None
    heads: int | None = None
    grid: tuple[int, int, int] | None = None
    text_len: int = 0
    text_position: str | None = None
    rewrite: bool = False
    features: tuple[str, ...] = ()
    ordinal: int | None = None
    occurrence: int = 0
    shards: int = 1  # partition and matching restricted to this many pieces of the video (Plan.shards, ring ranks)
    shard_local: bool = False  # the call holds one of them (a ring rank)
    factorized: str = ""  # "spatial" (a batch row per frame) or "temporal" (per position): grid is one row's
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d["grid"] = list(self.grid) if self.grid else None
        d["features"] = list(self.features)
        return d


#: ``SiteReport.extra`` entries ``inspect()`` shows for a rewritten site (how its reduction met an exchange).
_NOTED = ("ring exchange", "ulysses exchange")


@dataclass
class GraphReport:
    """The sites of one captured graph."""

    sites: list[SiteReport]
    grid: tuple[int, int, int] | None = None
    grid_source: str = ""
    timestep: str | None = None
    #: Position of the timestep among the graph's inputs (placeholders), for whoever runs the graph.
    timestep_index: int | None = None
    #: Full module paths of every video site of a graph that is surely the model's top level, in
    #: the order they run, rewritten or not (a site the plan zeroes everywhere keeps its row):
    #: the plan rows the runtime hands out. Empty for a graph that may serve several modules.
    rows: tuple[str, ...] = ()

    @property
    def rewritten(self) -> list[SiteReport]:
        return [s for s in self.sites if s.rewrite]


@dataclass
class Report:
    """Every attention site of a model (over all its captured graphs), classified."""

    graphs: list[GraphReport] = field(default_factory=list)
    #: The plan the sites were classified for (its repr: ratios and every option it sets), shown in the header.
    plan: str = ""
    #: Where the step clock reads the timestep when the caller reads it (a transformed model: its call's
    #: argument), rather than a graph input; a region's graph has none of its own.
    clock: str = ""
    #: What stops this plan from running on this model (a table plan for another number of sites), shown in the header.
    problem: str = ""

    @property
    def sites(self) -> list[SiteReport]:
        return [s for g in self.graphs for s in g.sites]

    @property
    def rewritten(self) -> list[SiteReport]:
        return [s for s in self.sites if s.rewrite]

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.kind for s in self.sites))

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "problem": self.problem,
            "graphs": [
                {"grid": g.grid, "grid_source": g.grid_source, "timestep": g.timestep, "sites": [s.as_dict() for s in g.sites]}
                for g in self.graphs
            ]
        }

    def __str__(self) -> str:
        rows = [("#", "module", "class", "kind", "q x kv tokens", "text", "rewrite", "note")]
        for i, s in enumerate(self.sites):
            lens = f"{s.q_len} x {s.kv_len}" if s.q_len is not None else "?"
            text = f"{s.text_len} {s.text_position or '?'}" if s.text_len else "-"
            rw = "+".join(s.features) if s.rewrite else "no"
            if s.rewrite and s.extra.get("symmetric"):
                rw = "q+k+v (one matching)"
            if s.rewrite and s.shards > 1:  # matched within pieces of the video (Plan.shards, or a ring rank's)
                rw += f" (1 of {s.shards} shards)" if s.shard_local else f" ({s.shards} shards)"
            kind = f"{s.kind} ({s.factorized})" if s.factorized else s.kind
            note = s.reason or "; ".join(f"{k}: {s.extra[k]}" for k in _NOTED if k in s.extra)
            rows.append((str(i), s.path, s.module_type, kind, lens, text, rw, note))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        grids = {(g.grid, g.grid_source) for g in self.graphs if g.grid}
        head = [f"asymrnr_fx: {len(self.sites)} attention sites, {len(self.rewritten)} rewritten; kinds {self.counts()}"]
        head += [f"plan {self.plan}"] if self.plan else []
        head += [f"this plan cannot run on this model: {self.problem}"] if self.problem else []
        head += [f"video grid {grid} from {src}" for grid, src in sorted(grids, key=str)]
        ts = sorted({g.timestep for g in self.graphs if g.timestep})
        head.append(
            f"step tracking from {self.clock}" if self.clock else f"step tracking from graph input {ts[0]}" if ts
            else "step tracking: no timestep input found; use asymrnr_fx.set_step()"
        )
        return "\n".join(head + lines)


def warn_nothing_rewritten(
    report: GraphReport, dynamic: bool = False, hooks: list[str] | None = None, new_shape: bool = False
) -> None:
    """Say why a graph reduces nothing (``new_shape``: at an input shape after earlier ones that did)."""
    if dynamic and not report.rewritten:
        msg = (
            "asymrnr_fx rewrote nothing: Dynamo captured this graph with symbolic (dynamic) shapes, and AsymRnR "
            "needs the token counts of every attention call. This happens with torch.compile(dynamic=True), and "
            "with the default dynamic=None after a second input shape (automatic dynamic shapes). Use "
            "asymrnr_fx.transform(model, plan, compile=True) (one graph per shape), or torch.compile(..., "
            "dynamic=False)"
        )
    elif not report.sites and hooks:
        msg = (
            "asymrnr_fx rewrote nothing: no scaled_dot_product_attention call reached a compiled graph. The model "
            f"carries diffusers hooks ({', '.join(hooks)}); hooks that run their blocks outside the compiled graph "
            "(compiler.disable, e.g. MagCache and leaf-level group offloading) hide the attention from the pass. "
            "Use asymrnr_fx.transform(model, plan, compile=True), which compiles below the cache hooks it knows, "
            "or remove the hook"
        )
    elif not report.sites:
        msg = (
            "asymrnr_fx rewrote nothing: the captured graph has no scaled_dot_product_attention call. "
            "AsymRnR only rewrites torch.nn.functional.scaled_dot_product_attention; models using a custom "
            "attention kernel or explicit softmax(QK^T)V are left unchanged."
        )
    else:
        reasons = "; ".join(sorted({f"{s.path}: {s.reason or s.kind}" for s in report.sites})[:5])
        msg = f"asymrnr_fx rewrote none of the {len(report.sites)} attention sites ({reasons})"
        if new_shape:
            msg = msg.replace("asymrnr_fx rewrote", "asymrnr_fx: at this new input shape the model runs unreduced: it rewrote", 1)
    warnings.warn(msg, AsymRnRWarning, stacklevel=3)
