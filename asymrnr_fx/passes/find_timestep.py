"""Analysis pass: the graph input that carries the denoising timestep.

Step tracking needs no callback because every rewritten site hands this tensor to the
runtime, which sees it change from step to step. Diffusers transformers name it
``timestep``; Dynamo turns that into a placeholder such as ``L_timestep_``.
"""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from .find_attention import node_value

_TIMESTEP_NAME = re.compile(r"(^|_)(timestep|timesteps|t)(_|$)", re.IGNORECASE)


def find_timestep(gm: fx.GraphModule) -> fx.Node | None:
    """The first tensor placeholder named like a timestep, or None (then steps are set explicitly)."""
    for node in gm.graph.find_nodes(op="placeholder"):
        name = str(node.target)
        if "parameters" in name or "buffers" in name:
            continue
        if _TIMESTEP_NAME.search(name) and isinstance(node_value(node), torch.Tensor):
            return node
    return None
