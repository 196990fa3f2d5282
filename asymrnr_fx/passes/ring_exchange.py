"""Transformation pass: under ring attention, reduce each rank's keys/values *before* they are exchanged.

diffusers' ring attention (``TemplatedRingAttention``) all-gathers every rank's keys and
values at once, then calls attention once per shard::

    buf  = all_gather(cat([key.flatten(), value.flatten()]))       # every rank's [key, value]
    kv_j = buf.chunk(ranks)[j]                                       # shard j's piece
    k_j, v_j = kv_j[:key.numel()].reshape_as(key), kv_j[key.numel():].reshape_as(value)

After :mod:`.rewrite_attention` each of those calls selects and reduces the keys/values it
received, so every rank matches every shard and the exchange carries them whole. This pass
moves the reduction of the rank's own shard (the first call of each round) in front of the
all-gather and makes the other calls read the already reduced pieces::

    kv_keep = asymrnr.select(value, ...)                             # this rank's shard only
    buf  = all_gather(cat([gather(key, kv_keep).flatten(), gather(value, kv_keep).flatten()]))
    k_j, v_j = split_exchanged(buf.chunk(ranks)[j], reduced key, reduced value)

The result is the same (shard ``j``'s keys are matched on shard ``j``'s values, by the rank
that holds them, as before); each rank matches one shard instead of all, and sends the kept
fraction of its keys/values. It needs every rank to keep the same number of tokens, which
shard-local reduction guarantees (:meth:`asymrnr_fx.runtime.Runtime.select_site`) when every
shard holds dst tokens. A graph that does not have exactly this shape (another ring
implementation, a mask to reduce with the keys) keeps the reduction after the exchange, and
``inspect()`` says which (``extra["ring exchange"]``).
"""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from .. import collective_ops, ops
from .analysis import Analysis
from .exchange import (
    WAIT, bshd_view_of, erase_dead, heads_first, is_method, op_name, replace_reduction, shard_reason, skip_contiguous,
)
from .rewrite_attention import SiteRewrite, _call

_ALL_GATHER = "_c10d_functional::all_gather_into_tensor"
_KEY = "ring exchange"
BEFORE = "keys/values reduced before the all-gather (this rank's shard), sent reduced"
RECEIVED = "keys/values arrive reduced by the rank that holds them"


@dataclass
class _Exchange:
    """A ring all-gather of ``cat([key.flatten(), value.flatten()])`` and what reads it."""

    key: fx.Node
    value: fx.Node
    cat: fx.Node
    gathered: fx.Node  # the waited all-gather output
    ranks: int
    pieces: dict[fx.Node, int]  # reshape_as(buf.chunk(ranks)[j][:k] or [k:], key or value) -> j


def _exchanged(gather: fx.Node) -> _Exchange | None:
    """The :class:`_Exchange` of an all-gather node, or None if it is not ring attention's."""
    buf = gather.args[0]
    cat = skip_contiguous(buf)
    if not (isinstance(cat, fx.Node) and cat.target is torch.cat and cat.kwargs.get("dim", 0) == 0
            and len(cat.args) == 1 and len(cat.args[0]) == 2 and all(is_method(f, "flatten", 1) for f in cat.args[0])):
        return None
    key, value = (f.args[0] for f in cat.args[0])
    waits = list(gather.users)
    if len(waits) != 1 or op_name(waits[0]) != WAIT:
        return None
    chunks = list(waits[0].users)
    if len(chunks) != 1 or not is_method(chunks[0], "chunk", 2):
        return None
    pieces: dict[fx.Node, int] = {}
    for piece in chunks[0].users:
        if piece.target is not operator.getitem:
            return None
        for part in piece.users:
            if part.target is not operator.getitem or not isinstance(part.args[1], slice):
                return None
            for shaped in part.users:
                if not (is_method(shaped, "reshape_as", 2) and shaped.args[1] is (key if part.args[1].start is None else value)):
                    return None
                pieces[shaped] = piece.args[1]
    ranks = chunks[0].args[1]
    return _Exchange(key, value, cat, waits[0], ranks, pieces) if isinstance(ranks, int) else None


def _reason(records: list[tuple[Any, SiteRewrite]], stride: tuple[int, int, int]) -> str:
    """Why a ring site's keys/values cannot be reduced before the exchange ("" when they can)."""
    rep = records[0][0]
    if any(r.masked for _, r in records):
        return "the call has a mask, which each shard's keys would need reduced by another rank"
    if shard_reason(rep, stride):
        return shard_reason(rep, stride)
    first = records[0][0].occurrence
    if [r.occurrence for r, _ in records] != list(range(first, first + rep.shards)) or first % rep.shards:
        return f"ring calls {[r.occurrence for r, _ in records]} are not one round of {rep.shards} shards"
    return ""


def ring_exchange_pass(a: Analysis) -> None:
    """Move each ring site's key/value reduction before its all-gather (see the module doc)."""
    sites: dict[str, list[tuple[Any, SiteRewrite]]] = defaultdict(list)
    for rep, rewrite in a.rewrites:
        if rep.shard_local and rewrite.kv is not None:
            sites[rep.path].append((rep, rewrite))
    if not sites:
        return
    exchanges = [e for n in a.gm.graph.nodes if n.op == "call_function" and op_name(n) == _ALL_GATHER
                 if (e := _exchanged(n)) is not None]
    moved = False
    for calls in sites.values():
        calls.sort(key=lambda r: r[0].occurrence)
        ranks = calls[0][0].shards
        for start in range(0, len(calls), ranks):  # one round of ring calls per run of the module (a per-sample loop)
            records = calls[start:start + ranks]
            reason = _reason(records, ops.site_stride(records[0][0].grid, a.plan.stride)) or _move(a, records, exchanges)
            for rep, _ in records:
                rep.extra[_KEY] = (RECEIVED if rep.occurrence % ranks else BEFORE) if not reason else f"after the all-gather: {reason}"
            moved |= not reason
    if moved:
        a.gm.graph.lint()
        a.gm.recompile()


def _move(a: Analysis, records: list[tuple[Any, SiteRewrite]], exchanges: list) -> str:
    """Rewrite one ring site's calls; return why not ("") if the graph is not diffusers' ring shape."""
    own = records[0][1]
    key0, value0 = (bshd_view_of(x, own.bshd) for x in own.kv.inputs)
    found = next((e for e in exchanges if e.key is key0 and e.value is value0), None)
    if found is None:
        return "no all-gather of this call's keys and values found in the graph"
    cat, pieces = found.cat, found.pieces
    received = []
    for _, rewrite in records[1:]:
        k, v = (bshd_view_of(x, rewrite.bshd) for x in rewrite.kv.inputs)
        if k not in pieces or v not in pieces or pieces[k] != pieces[v]:
            return "a ring call's keys/values do not come from the all-gather"
        received.append((rewrite, pieces[k]))
    graph, meta, select = a.gm.graph, own.kv.select.meta, own.kv.select
    reduce = ops.gather_tokens_bshd if a.plan.mode == "replace" else ops.merge_tokens_bshd
    with graph.inserting_before(cat):  # this rank's selection, now ahead of the exchange
        select = _call(graph, select.target, (heads_first(graph, value0, meta), *select.args[1:]), meta)
        keep, assign = (_call(graph, operator.getitem, (select, i), meta) for i in (0, 1))
        args = (keep,) if reduce is ops.gather_tokens_bshd else (keep, assign)
        key_r, value_r = (_call(graph, reduce, (x, *args), meta) for x in (key0, value0))
        flat = [graph.call_method("flatten", (x,)) for x in (key_r, value_r)]
    old_flat = list(cat.args[0])
    cat.args = (flat, *cat.args[1:])
    replace_reduction(graph, own.kv, (key_r, value_r), own.bshd, meta)
    for rewrite, j in received:
        with graph.inserting_after(found.gathered):
            parts = _call(graph, collective_ops.split_exchanged, (found.gathered, found.ranks, j, key_r, value_r), meta)
        with graph.inserting_after(parts):
            k, v = (_call(graph, operator.getitem, (parts, i), meta) for i in (0, 1))
        replace_reduction(graph, rewrite.kv, (k, v), rewrite.bshd, meta)
    erase_dead(graph, old_flat + [x for _, r in records for x in r.kv.inputs])
    return ""


