"""FX passes, one per file, in the order the pipeline runs them.

``find_attention`` (analysis) -> ``find_timestep`` (analysis) -> ``infer_grid`` (analysis)
-> ``classify_attention`` (analysis) -> ``rewrite_attention`` (transformation).
:func:`asymrnr_fx.backend.rewrite_graph` drives them.
"""
from .classify_attention import SiteReport, classify_attention
from .find_attention import AttentionCall, find_attention
from .find_timestep import find_timestep
from .infer_grid import GridCandidate, infer_grids
from .rewrite_attention import rewrite_attention

__all__ = [
    "AttentionCall",
    "GridCandidate",
    "SiteReport",
    "classify_attention",
    "find_attention",
    "find_timestep",
    "infer_grids",
    "rewrite_attention",
]
