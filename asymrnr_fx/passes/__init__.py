"""FX passes, one per file, run in the order of :data:`manager.PASSES` by :func:`manager.rewrite_graph`.

``find_attention`` -> ``find_timestep`` -> ``infer_grid`` -> ``classify_attention`` ->
``select_sites`` (analysis) -> ``rewrite_attention`` (transformation), each ``pass(analysis)``
over one :class:`~.analysis.Analysis`. What an attention op looks like is its form's
knowledge (:mod:`.forms`), never a pass's.
"""
from ..report import SiteReport
from .analysis import Analysis
from .classify_attention import classify_attention
from .find_attention import AttentionCall, find_attention
from .find_timestep import TIMESTEP_NAMES, find_timestep, timestep_match
from .infer_grid import GridCandidate, infer_grids
from .manager import PASSES, rewrite_graph
from .rewrite_attention import rewrite_attention
from .select_sites import select_sites

__all__ = [
    "PASSES",
    "Analysis",
    "TIMESTEP_NAMES",
    "AttentionCall",
    "GridCandidate",
    "SiteReport",
    "classify_attention",
    "find_attention",
    "find_timestep",
    "timestep_match",
    "infer_grids",
    "rewrite_attention",
    "rewrite_graph",
    "select_sites",
]
