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

from .find_attention import node_value
from .graph import user_inputs

#: Argument names that carry the denoising time (also used on call arguments by the API).
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma", "sigmas")
_TIMESTEP_NAME = re.compile(r"(^|_)(" + "|".join(TIMESTEP_NAMES) + r")(_|$)", re.IGNORECASE)


def find_timestep(gm: fx.GraphModule) -> fx.Node | None:
    """The first tensor placeholder named like a timestep, or None (then steps are set explicitly)."""
    for node in user_inputs(gm):
        if _TIMESTEP_NAME.search(str(node.target)) and isinstance(node_value(node), torch.Tensor):
            return node
    return None
