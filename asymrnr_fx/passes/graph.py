"""Graph helpers shared by the passes."""
from __future__ import annotations

from typing import Iterator

import torch.fx as fx


def user_inputs(gm: fx.GraphModule) -> Iterator[fx.Node]:
    """Placeholders that are call arguments, not lifted parameters or buffers.

    Dynamo names lifted module state ``L_self_modules_..._parameters_weight_``; torch.export
    names it ``p_...``/``b_...`` and records it in the graph signature, which we cannot see
    here, so only Dynamo's naming is filtered.
    """
    for node in gm.graph.find_nodes(op="placeholder"):
        name = str(node.target)
        if "parameters" in name or "buffers" in name:
            continue
        yield node


def parameter_inputs(gm: fx.GraphModule) -> list[int]:
    """Positions (among placeholders) of lifted parameters: the graph wrapper reads one to tell models apart."""
    return [
        i for i, node in enumerate(gm.graph.find_nodes(op="placeholder")) if "_parameters_" in str(node.target)
    ]
