"""What the passes that move a reduction before an exchange share (:mod:`.ring_exchange`, :mod:`.ulysses_exchange`).

Why: both find a context-parallel exchange in the graph by its ops, re-issue a site's selection
on the tensor before the exchange, point the attention call at the exchanged reduced tensors,
and erase what no longer runs (a dead collective would still run, and cost its traffic).
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from ..sites import shard_min_dst
from .rewrite_attention import Reduction, _call

WAIT = "_c10d_functional::wait_tensor"


def op_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name
    schema = getattr(target, "_schema", None)
    return schema.name if schema is not None else ""


def is_method(node: Any, name: str, nargs: int) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_method" and node.target == name and len(node.args) == nargs


def skip_contiguous(node: Any) -> Any:
    """The input of a ``.contiguous()`` call, else ``node`` itself (exchange templates add one here and there)."""
    return node.args[0] if is_method(node, "contiguous", 1) else node


def single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def bshd_view_of(node: fx.Node, bshd: bool) -> fx.Node | None:
    """The ``[B, S, H, D]`` tensor a site's key/value argument is a view of (itself, or its heads-first transpose)."""
    if bshd:
        return node
    if is_method(node, "permute", 5) and tuple(node.args[1:]) == (0, 2, 1, 3):
        return node.args[0]
    if is_method(node, "transpose", 3) and tuple(node.args[1:]) == (1, 2):
        return node.args[0]
    return None


def heads_first(graph: fx.Graph, x: fx.Node, meta: dict) -> fx.Node:
    return _call(graph, torch.transpose, (x, 1, 2), meta)


def shard_reason(rep: Any, stride: tuple[int, int, int]) -> str:
    """Why ranks could keep different counts of a sharded site's tokens ("" when they cannot): a shard
    that may hold no dst token keeps all of its own (the runtime's rule), so exchanged sizes would differ."""
    if min(shard_min_dst(rep.grid, stride, rep.shards)) == 0:
        return "a shard may hold no dst token, so ranks could keep different counts"
    return ""


def replace_reduction(graph: fx.Graph, reduction: Reduction, reduced: tuple[fx.Node, ...], bshd: bool, meta: dict) -> None:
    """Make the call read ``reduced`` (already reduced, ``[B, S, H, D]``) and drop its own selection."""
    for old, new in zip(reduction.outputs, reduced):
        with graph.inserting_before(old):
            new = new if bshd else heads_first(graph, new, meta)
        old.replace_all_uses_with(new)
        graph.erase_node(old)
    for node in (reduction.keep, reduction.assign, reduction.select):
        if not node.users:
            graph.erase_node(node)


#: What :func:`erase_dead` may remove: views, and the collectives of an exchange that moved.
_ERASABLE = {"flatten", "permute", "transpose", "reshape", "reshape_as", "contiguous", "chunk", operator.getitem, torch.transpose}
_ERASABLE_OPS = {"_c10d_functional::all_to_all_single", "_c10d_functional::wait_tensor"}


def erase_dead(graph: fx.Graph, nodes: list[fx.Node]) -> None:
    """Erase the given nodes, and what feeds them, once nothing uses them (views and the collectives
    of a moved exchange only: an unused collective would still run, and cost its traffic)."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if getattr(node, "_erased", False) or node.users or node.op not in ("call_method", "call_function"):
            continue
        if node.target not in _ERASABLE and op_name(node) not in _ERASABLE_OPS:
            continue
        inputs = list(node.all_input_nodes)
        graph.erase_node(node)
        todo.extend(inputs)
