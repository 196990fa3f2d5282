"""``torch.nn.attention.flex_attention`` as an attention form (the higher-order op in Dynamo graphs).

Why only some calls: flex_attention's ``score_mod`` and ``block_mask`` are functions of the
query and key *positions*. After reduction the kept tokens sit at new positions, so any
position-dependent modification would be applied to the wrong pairs. A call with neither
(what diffusers' ``flex`` backend does without a mask, and a plain
``flex_attention(q, k, v)``) is plain attention and is reduced; flex then builds its default
one-block mask (lengths ``(1, 1)``, block size ``2**30``), which holds for any length. Any
other ``score_mod`` or ``block_mask`` leaves the call intact with the reason.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx

from .base import AttentionForm, heads_reason

FLEX = torch.ops.higher_order.flex_attention
_DEFAULT_BLOCK = 1 << 30  # flex's block size for "no block_mask": one block over any length


def _subgraph(node: Any) -> fx.Graph | None:
    if isinstance(node, fx.Node) and node.op == "get_attr":
        module = node.graph.owning_module.get_submodule(str(node.target))
        return module.graph if isinstance(module, fx.GraphModule) else None
    return None


def _returns(graph: fx.Graph) -> Any:
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    return out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out


def _identity_score(node: Any) -> bool:
    graph = _subgraph(node)
    return graph is not None and _returns(graph) is next(iter(graph.find_nodes(op="placeholder")), None)


def _keeps_all(node: Any) -> bool:
    """A mask_mod that is ``True`` for every pair (flex's noop mask)."""
    graph = _subgraph(node)
    if graph is None:
        return False
    out = _returns(graph)
    return (isinstance(out, fx.Node) and out.op == "call_method" and out.target == "new_ones"
            and out.kwargs.get("dtype") is torch.bool)


def _near_ancestors(node: Any, depth: int = 6) -> set:
    """``node`` and the computed nodes up to ``depth`` steps above it (the layout changes and rotary
    embedding between a projection and the attention call), never graph inputs or constants."""
    found, frontier = set(), [node] if isinstance(node, fx.Node) else []
    for _ in range(depth + 1):
        frontier = [n for n in frontier if n.op == "call_function" or n.op == "call_method"]
        found.update(frontier)
        frontier = [p for n in frontier for p in n.all_input_nodes if p not in found]
    return found


def _reads(value: Any, nodes: set, limit: int = 500) -> bool:
    """Whether any fx node in ``value`` (a block mask's tuple) is computed from one of ``nodes``."""
    todo = [v for v in (value if isinstance(value, (tuple, list)) else (value,)) if isinstance(v, fx.Node)]
    seen = set(todo)
    while todo and len(seen) < limit:
        node = todo.pop()
        if node in nodes:
            return True
        for parent in node.all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False


def _check_flex(a: Mapping[str, Any], q_shape: tuple, k_shape: tuple) -> str:
    if not _identity_score(a["score_mod"]):
        return "flex_attention with a score_mod: it reads token positions, which reduction changes"
    block = a["block_mask"]
    default = (isinstance(block, tuple) and len(block) >= 3 and tuple(block[:2]) == (1, 1)
               and tuple(block[-3:-1]) == (_DEFAULT_BLOCK, _DEFAULT_BLOCK) and _keeps_all(block[-1]))
    if not default:
        if _reads(block, _near_ancestors(a["query"]) | _near_ancestors(a["key"])):
            return ("flex_attention with a block_mask computed from this call's queries and keys (block-sparse, "
                    "e.g. NABLA): which key blocks each query block sees changes with the activations, so a reduced "
                    "query's dst may see other keys, and the mask is built for the original token positions")
        return "flex_attention with a block_mask: it is built for the original token positions"
    if a["score_mod_other_buffers"] or a["mask_mod_other_buffers"]:
        return "flex_attention with captured buffers in its score_mod / mask_mod"
    return heads_reason(q_shape, k_shape)


#: ``(out, logsumexp, max) = flex_attention(q, k, v, score_mod, block_mask, scale, kernel_options, ...)``
FLEX_ATTENTION = AttentionForm(
    name="flex",
    describe="flex_attention",
    targets={FLEX: "flex"},
    arg_names=("query", "key", "value", "score_mod", "block_mask", "scale", "kernel_options",
               "score_mod_other_buffers", "mask_mod_other_buffers"),
    defaults={"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "enable_gqa": False,
              "score_mod_other_buffers": (), "mask_mod_other_buffers": ()},
    check=_check_flex,
    reduces_mask=False,  # no attn_mask: masks are block masks, refused above
    outputs={0: "tokens", 1: "lse", 2: "lse"},  # the row max is per query, restored like the log-sum-exp
    write_positional=True,
)
