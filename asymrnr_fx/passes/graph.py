"""Graph helpers shared by the passes."""
from __future__ import annotations

import re
from typing import Any, Iterator

import torch
import torch.fx as fx


def node_value(node: Any) -> Any:
    """The fake/example value Dynamo (``example_value``) or export (``val``) recorded for a node."""
    if not isinstance(node, fx.Node):
        return None
    return node.meta.get("val", node.meta.get("example_value"))


def node_shape(node: Any) -> tuple | None:
    val = node_value(node)
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


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


def is_parameter(node: fx.Node) -> bool:
    """A lifted parameter: Dynamo's ``..._parameters_...`` placeholder, export's ``p_...`` placeholder, or a get_attr."""
    if node.op == "get_attr":
        return True
    name = str(node.target)
    return node.op == "placeholder" and ("_parameters_" in name or name.startswith("p_"))


def nearest_parameter(node: fx.Node, max_nodes: int = 200) -> fx.Node | None:
    """The parameter closest upstream of ``node`` (breadth first), e.g. ``to_q.weight`` for an SDPA query.

    Why: a parameter identifies the module instance that ran, at run time, whatever the
    graph boundaries. A block graph shared by 30 blocks, or a frame resumed after a hook's
    graph break, sees the running block's own weights as inputs, while its module paths
    are relative and ambiguous.
    """
    seen, queue = {node}, [node]
    while queue and len(seen) < max_nodes:
        nxt = []
        for n in queue:
            for inp in n.all_input_nodes:
                if inp in seen:
                    continue
                if is_parameter(inp):
                    return inp
                seen.add(inp)
                nxt.append(inp)
        queue = nxt
    return None


def parameter_inputs(gm: fx.GraphModule) -> list[int]:
    """Positions (among placeholders) of lifted parameters: the graph wrapper reads one to tell models apart."""
    return [
        i for i, node in enumerate(gm.graph.find_nodes(op="placeholder")) if "_parameters_" in str(node.target)
    ]


def input_name(target: str) -> str:
    """The argument's own name for a Dynamo placeholder: ``timestep`` for ``L_timestep_`` /
    ``L_kwargs_timestep_`` / ``L_args_timestep_``."""
    return re.sub(r"^L_(kwargs_|args_)?|_$", "", target)
