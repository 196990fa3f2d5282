"""Transformation pass: under Ulysses with ``Plan(shards=N)``, reduce each rank's tokens *before* the all-to-all.

diffusers' Ulysses attention (``TemplatedUlyssesAttention``) turns each rank's ``[B, S, H, D]``
tokens (its shard of the sequence, every head) into ``[B, N*S, H/N, D]`` (every shard, its
heads) with one all-to-all per query / key / value, and the output back with another. By
default the reduction runs after it, on the whole sequence of the rank's heads: exactly the
one-process result, but the exchanges carry every token.

With ``Plan(shards=N)`` (N the Ulysses degree) the result asked for is shard-local AsymRnR,
which can be computed on each rank's own shard before the exchange::

    q_keep, q_assign = asymrnr.select(q_local, ...)        # this rank's shard, every head
    q = ulysses_scatter(gather(q_local, q_keep))           # the exchange carries kept tokens only
    ... attention over every shard's kept queries and keys/values ...
    out = restore(ulysses_gather(out), q_assign)           # back to this rank's shard, restored

The graph's own exchanges are sized with constants, so the pass rebuilds them from the reduced
tensors (:mod:`asymrnr_fx.collective_ops`). Every rank keeps the same count per shard (the
runtime guarantees it), so the all-to-all splits stay equal. A site whose graph does not
have exactly diffusers' shape, or whose call has a mask or returns its log-sum-exp, keeps
the reduction after the exchange: the same result, without the smaller exchange; ``inspect()``
says which (``extra["ulysses exchange"]``).
"""
from __future__ import annotations

import dataclasses
import operator
from typing import Any

import torch.fx as fx

from .. import collective_ops, ops
from ..sites import decode_site, encode_site
from .analysis import Analysis
from .exchange import (
    WAIT, bshd_view_of, erase_dead, heads_first, is_method, op_name, replace_reduction, shard_reason, single_user, skip_contiguous,
)
from .rewrite_attention import Reduction, SiteRewrite, _call

_A2A = "_c10d_functional::all_to_all_single"
_KEY = "ulysses exchange"
BEFORE = "tokens reduced before the all-to-all (shard-local, this rank's shard)"


def _scattered(node: fx.Node) -> tuple[fx.Node, str, int] | None:
    """``(x, group, ranks)`` when ``node`` is ``x`` ``[B, S, H, D]`` after Ulysses' first all-to-all."""
    n = skip_contiguous(node)
    if not (is_method(n, "permute", 5) and tuple(n.args[1:]) == (1, 0, 2, 3)):
        return None
    n = n.args[0]
    if not (is_method(n, "flatten", 3) and tuple(n.args[1:]) == (0, 1)):
        return None
    n = n.args[0]
    if not (is_method(n, "reshape", 2) and isinstance(n.args[0], fx.Node) and op_name(n.args[0]) == WAIT):
        return None
    a2a = n.args[0].args[0]
    if not (isinstance(a2a, fx.Node) and op_name(a2a) == _A2A):
        return None
    n = a2a.args[0]
    if is_method(n, "flatten", 1):
        n = n.args[0]
    n = skip_contiguous(n)
    if not (is_method(n, "permute", 6) and tuple(n.args[1:]) == (2, 1, 0, 3, 4)):
        return None
    n = n.args[0]
    if not (is_method(n, "reshape", 6) and isinstance(n.args[3], int)):
        return None
    return n.args[0], a2a.args[3], n.args[3]


def _gathered(node: fx.Node) -> fx.Node | None:
    """The ``[B, S, H, D]`` node after Ulysses' second all-to-all of ``node`` (``[B, N*S, H/N, D]``), or None."""
    n = single_user(node)
    if not (is_method(n, "reshape", 6) and is_method(single_user(n), "permute", 6)):
        return None
    n = single_user(single_user(n))
    steps = 0
    while n is not None and steps < 4 and op_name(n) != _A2A:  # contiguous, flatten
        n, steps = single_user(n), steps + 1
    if n is None or op_name(n) != _A2A:
        return None
    n = single_user(n)
    if n is None or op_name(n) != WAIT:
        return None
    n = single_user(n)
    if not is_method(n, "reshape", 2):
        return None
    n = single_user(n)
    if not (is_method(n, "flatten", 3) and tuple(n.args[1:]) == (0, 1)):
        return None
    n = single_user(n)
    if not (is_method(n, "permute", 5) and tuple(n.args[1:]) == (1, 2, 0, 3)):
        return None
    after = single_user(n)
    return after if is_method(after, "contiguous", 1) else n


def _reason(rep: Any, rewrite: SiteRewrite, stride: tuple[int, int, int]) -> str:
    if rewrite.masked:
        return "the call has a mask"
    if rewrite.q is not None and len(rewrite.restores) != 1:
        return "the call's log-sum-exp is used"
    if shard_reason(rep, stride):
        return shard_reason(rep, stride)
    if rep.text_len:
        return "the call holds text tokens, which the all-to-all interleaves with each shard's video"
    return ""


def ulysses_exchange_pass(a: Analysis) -> None:
    """Move the reduction of each site before Ulysses' all-to-all (see the module doc)."""
    ranks = a.capture.ulysses
    if ranks <= 1 or a.capture.sharding is not None or a.plan.shards != ranks:
        return
    moved = False
    for rep, rewrite in a.rewrites:
        if rep.shards != ranks or rep.shard_local:
            continue
        reason = _reason(rep, rewrite, ops.site_stride(rep.grid, a.plan.stride)) or _move(a, rewrite, ranks)
        rep.extra[_KEY] = BEFORE if not reason else f"after the all-to-all: {reason}"
        moved |= not reason
    if moved:
        a.gm.graph.lint()
        a.gm.recompile()


def _local_site(select: fx.Node) -> str:
    """The site string of ``select`` for a call that holds one shard (this rank's)."""
    return encode_site(dataclasses.replace(decode_site(select.args[2]), local=True))


def _move(a: Analysis, rewrite: SiteRewrite, ranks: int) -> str:
    """Rewrite one site; return why not ("") if the graph is not diffusers' Ulysses shape."""
    bshd = rewrite.bshd
    sources: list[tuple[Reduction, list[tuple[fx.Node, str, int]]]] = []
    for reduction in (rewrite.q, rewrite.kv):
        if reduction is None:
            continue
        found = [_scattered(bshd_view_of(x, bshd)) if bshd_view_of(x, bshd) is not None else None for x in reduction.inputs]
        if any(f is None or f[2] != ranks for f in found):
            return "no all-to-all of this call's tokens found in the graph"
        sources.append((reduction, found))
    back = None
    if rewrite.q is not None:
        restore = rewrite.restores[0]
        out = restore
        if not bshd:
            out = single_user(restore)
            if not (is_method(out, "permute", 5) and tuple(out.args[1:]) == (0, 2, 1, 3)):
                return "the attention output does not go back through the all-to-all"
        back = _gathered(out)
        if back is None:
            return "the attention output does not go back through the all-to-all"
    graph, meta = a.gm.graph, rewrite.node.meta
    group = sources[0][1][0][1]
    order = {n: i for i, n in enumerate(graph.nodes)}
    first = min((r.select for r, _ in sources), key=order.__getitem__)
    reduce = ops.gather_tokens_bshd if a.plan.mode == "replace" else ops.merge_tokens_bshd
    dead: list[fx.Node] = []
    local_assign = None
    for reduction, found in sources:
        with graph.inserting_before(first):
            sel = _call(graph, reduction.select.target,
                        (heads_first(graph, found[-1][0], meta), reduction.select.args[1], _local_site(reduction.select),
                         *reduction.select.args[3:]), meta)
            keep, assign = (_call(graph, operator.getitem, (sel, i), meta) for i in (0, 1))
            extra = (keep,) if reduce is ops.gather_tokens_bshd else (keep, assign)
            exchanged = tuple(_call(graph, collective_ops.ulysses_scatter, (_call(graph, reduce, (x, *extra), meta), ranks, group), meta)
                              for x, _, _ in found)
        if reduction is rewrite.q:
            local_assign = assign
        dead += reduction.inputs
        replace_reduction(graph, reduction, exchanged, bshd, meta)
    if back is not None:
        restore = rewrite.restores[0]
        with graph.inserting_after(back):
            out = restore.args[0] if bshd else heads_first(graph, restore.args[0], meta)
        with graph.inserting_after(out):
            gathered = _call(graph, collective_ops.ulysses_gather, (out, ranks, group), meta)
        with graph.inserting_after(gathered):
            restored = _call(graph, ops.restore_tokens_bshd, (gathered, local_assign), meta)
        back.replace_all_uses_with(restored)
        erase_dead(graph, [back])
        if not restore.users:
            graph.erase_node(restore)
        for node in (rewrite.q.keep, rewrite.q.assign, rewrite.q.select):
            if not getattr(node, "_erased", False) and not node.users:
                graph.erase_node(node)
    erase_dead(graph, dead)
    return ""
