"""Transformation pass: wrap one attention node in AsymRnR.

Before::

    out = sdpa(q, k, v, mask, ...)

After (replace mode; mean mode swaps the gathers for :func:`~asymrnr_fx.ops.merge_tokens`)::

    q_keep, q_assign = asymrnr.select(q, w, site, "q")     # matching or cache lookup
    kv_keep, _       = asymrnr.select(v, w, site, "kv")    # K is pruned with V's matching
    out_r = sdpa(gather(q, q_keep), gather(k, kv_keep), gather(v, kv_keep),
                 reduce_mask(mask, q_keep, kv_keep), ...)  # scale, dropout, dtype untouched
    out   = gather(out_r, q_assign)                        # restoration

Only the feature(s) the plan ever reduces at this site get their ``select``. ``site`` is the
string from :func:`asymrnr_fx.sites.encode_site`: the graph carries no runtime id and no
step, so it can be shared and shipped. ``w`` is a parameter of the attention module (its
nearest upstream weight), handed to the op so the runtime can tell at run time which module
instance is running.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from .. import custom_ops, ops
from ..sites import GraphSite, encode_site
from .analysis import Analysis
from .find_attention import AttentionCall
from .graph import nearest_parameter


def _call(graph: fx.Graph, fn: Any, args: tuple, meta: dict) -> fx.Node:
    node = graph.call_function(fn, args)
    for key in ("nn_module_stack", "stack_trace", "source_fn_stack"):
        if key in meta:
            node.meta[key] = meta[key]
    return node


@dataclass
class Reduction:
    """How one feature of a rewritten call was reduced, for passes that move the reduction
    before an exchange (:mod:`.ring_exchange`, :mod:`.ulysses_exchange`)."""

    select: fx.Node  # asymrnr::select (on the queries, or on the values for "kv")
    keep: fx.Node
    assign: fx.Node
    inputs: tuple[fx.Node, ...]  # the call's query (or key, value) before reduction
    outputs: tuple[fx.Node, ...]  # and after: what the attention node now reads


@dataclass
class SiteRewrite:
    """What :func:`rewrite_attention` inserted around one attention node."""

    node: fx.Node
    q: Reduction | None
    kv: Reduction | None  # None also when the keys share the queries' matching (symmetric)
    restores: list[fx.Node]  # restore(output part, q assign) per restored output
    bshd: bool  # the form's layout is [B, S, H, D] (select saw the heads-first transpose)
    masked: bool  # the call has a mask (reduced with the kept tokens)


def rewrite_attention(
    gm: fx.GraphModule,
    call: AttentionCall,
    *,
    site: str,
    features: tuple[str, ...],
    mode: str,
    symmetric: bool = False,
    anchor: fx.Node | None = None,
) -> SiteRewrite:
    """Insert selection, reduction and restoration around ``call.node`` in place; return what was inserted."""
    graph, node, a = gm.graph, call.node, dict(call.args)
    meta = node.meta
    bshd = call.spec.layout == "bshd"  # [B, S, H, D] kernels: select sees [B, H, S, D], tokens move along dim 1
    reduce = (ops.gather_tokens_bshd if bshd else ops.gather_tokens) if mode == "replace" else None
    merge = ops.merge_tokens_bshd if bshd else ops.merge_tokens
    restore_tokens = ops.restore_tokens_bshd if bshd else ops.restore_tokens

    def heads_first(x: Any) -> Any:
        return _call(graph, torch.transpose, (x, 1, 2), meta) if bshd else x

    select = custom_ops.SELECT_OP
    q_keep = q_assign = kv_keep = q = None
    with graph.inserting_before(node):
        if "q" in features:
            matched_on = a["key"] if symmetric else a["query"]
            sel = _call(graph, select, (heads_first(matched_on), anchor, site, "q"), meta)
            q_keep = _call(graph, operator.getitem, (sel, 0), meta)
            q_assign = _call(graph, operator.getitem, (sel, 1), meta)
            if symmetric:  # one matching and one ratio for Q, K and V (the SymRnR / ToMe baseline)
                kv_keep = q_keep
                a["key"] = _reduce(graph, reduce, merge, a["key"], q_keep, q_assign, meta)
                a["value"] = _reduce(graph, reduce, merge, a["value"], q_keep, q_assign, meta)
            query = a["query"]
            a["query"] = _reduce(graph, reduce, merge, query, q_keep, q_assign, meta)
            q = Reduction(sel, q_keep, q_assign, (query,), (a["query"],))
        kv = None
        if "kv" in features:
            sel = _call(graph, select, (heads_first(a["value"]), anchor, site, "kv"), meta)
            kv_keep = _call(graph, operator.getitem, (sel, 0), meta)
            kv_assign = _call(graph, operator.getitem, (sel, 1), meta)
            key, value = a["key"], a["value"]
            a["key"] = _reduce(graph, reduce, merge, key, kv_keep, kv_assign, meta)
            a["value"] = _reduce(graph, reduce, merge, value, kv_keep, kv_assign, meta)
            kv = Reduction(sel, kv_keep, kv_assign, (key, value), (a["key"], a["value"]))
        masked = isinstance(a["attn_mask"], fx.Node)
        if isinstance(a["attn_mask"], fx.Node) and call.spec.reduces_mask:
            a["attn_mask"] = _call(graph, ops.reduce_mask, (a["attn_mask"], q_keep, kv_keep), meta)
        for arg, tensor in call.spec.lengths.items():  # a kernel's own token counts follow the reduced tensors
            a[arg] = _call(graph, torch.ops.aten.sym_size.int, (a[tensor], 1 if bshd else 2), meta)
    call.spec.write(node, a)  # the form rebuilds its call on the reduced tensors
    restores = _restore_outputs(graph, call, restore_tokens, q_assign, meta) if q_assign is not None else []
    return SiteRewrite(node, q, kv, restores, bshd, masked)


def _restore_outputs(graph: fx.Graph, call: AttentionCall, restore_tokens: Any, q_assign: fx.Node, meta: dict) -> list[fx.Node]:
    node = call.node
    if call.spec.outputs is None:
        return [_restore(graph, node, restore_tokens, q_assign, meta)]
    restores = {"tokens": restore_tokens, "lse": ops.restore_lse, "lse_bsh": ops.restore_lse_bsh}
    # a tuple output: each used part (classify_attention checked them) restored
    return [_restore(graph, user, restores[call.spec.outputs[user.args[1]]], q_assign, user.meta) for user in list(node.users)]


def _restore(graph: fx.Graph, out: fx.Node, restore: Any, assign: fx.Node, meta: dict) -> fx.Node:
    """Replace every use of ``out`` (a reduced-length result) by ``restore(out, assign)``."""
    with graph.inserting_after(out):
        restored = _call(graph, restore, (out, assign), meta)
    if "example_value" in meta:  # restored = the original output's shape; AOTAutograd's cache
        restored.meta["example_value"] = meta["example_value"]  # checks method calls on it by this
    out.replace_all_uses_with(restored, delete_user_cb=lambda user: user is not restored)
    return restored


def _reduce(graph: fx.Graph, gather: Any, merge: Any, x: Any, keep: fx.Node, assign: fx.Node, meta: dict) -> fx.Node:
    if gather is not None:
        return _call(graph, gather, (x, keep), meta)
    return _call(graph, merge, (x, keep, assign), meta)


def rewrite_attention_pass(a: Analysis) -> None:
    """Rewrite every site select_sites chose (classify_attention keeps the order of the calls)."""
    for call, rep in zip(a.calls, a.reports):
        if not rep.rewrite:
            continue
        stride = ops.site_stride(rep.grid, a.plan.stride)
        site = GraphSite(rep.path, rep.occurrence, rep.kind, rep.grid, rep.text_len, rep.text_position == "first", stride,
                         rep.shards, rep.shard_local)
        a.rewrites.append((rep, rewrite_attention(
            a.gm, call, site=encode_site(site), features=rep.features, mode=a.plan.mode, symmetric=a.plan.symmetric,
            anchor=nearest_parameter(call.query),
        )))
    a.gm.graph.lint()
    a.gm.recompile()
