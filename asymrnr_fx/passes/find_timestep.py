"""Analysis pass: the graph input that carries the denoising timestep.

Step tracking needs no callback: whoever runs the graph reads this input once per call,
outside the graph, and the runtime sees it change from step to step. Diffusers
transformers name it ``timestep`` (``timesteps``, ``t``, ``sigma`` elsewhere); Dynamo turns
that into a placeholder such as ``L_timestep_``.
"""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from .analysis import Analysis
from .graph import input_name, node_value, user_inputs

#: Argument names that carry the denoising time (also used on call arguments by the API).
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma", "sigmas")
_TIMESTEP_NAME = re.compile(r"(^|_)(" + "|".join(TIMESTEP_NAMES) + r")(_|$)", re.IGNORECASE)


def timestep_match(name: str) -> int:
    """How surely an argument named ``name`` carries the denoising time: 2 exactly a timestep name
    (``timestep``, ``t``, ...), 1 one of them as a ``_``-separated part (Cosmos3's
    ``vision_timesteps``), 0 not at all. The graph and the call arguments are read by this one rule."""
    if name.lower() in TIMESTEP_NAMES:
        return 2
    return 1 if _TIMESTEP_NAME.search(name) else 0


def find_timestep(gm: fx.GraphModule) -> fx.Node | None:
    """The tensor placeholder that carries the denoising time, or None (then steps are set explicitly).

    An input named exactly like a timestep (``timestep``, ``t``, ...) wins over one that only
    contains the word: MiniMax-H3 takes ``timestep`` (the noise levels) and ``timestep_indices``
    (a per-row index into them), and only the first moves from step to step.
    """
    loose = None
    for node in user_inputs(gm):
        target = str(node.target)
        if not _TIMESTEP_NAME.search(target) or not isinstance(node_value(node), torch.Tensor):
            continue
        if timestep_match(input_name(target)) == 2:
            return node
        loose = loose or node
    return loose


def find_timestep_pass(a: Analysis) -> None:
    a.timestep = find_timestep(a.gm)
    # only a graph that takes the model's timestep is surely the model's own top level, with full
    # module paths; any other graph may be a block fragment that Dynamo reuses for every block
    a.shared = a.shared or a.timestep is None
