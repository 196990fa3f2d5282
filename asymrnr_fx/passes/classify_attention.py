"""Analysis pass: what each attention call is, from shapes alone.

* self  : queries and keys are exactly the video tokens;
* joint : one sequence of video + text tokens (text first or last);
* cross : video queries attend to other (text) keys;
* other : anything else (pooling, text-only refiners, causal, unknown shapes).

Where text sits in a joint sequence is read off the graph: the ``cat`` that built the
sequence has one piece as long as the video. Only self and joint sites (and cross, if the
plan opts in) become rewrite candidates; the rest are reported with the reason.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from .find_attention import AttentionCall, node_shape, node_value
from .infer_grid import GridCandidate

_CAT_TARGETS = {torch.cat, torch.concat, torch.concatenate, torch.ops.aten.cat.default}


@dataclass
class SiteReport:
    """One row of the report: an attention call, its class, and whether/why it is rewritten."""

    node: str
    path: str
    module_type: str
    form: str
    kind: str = "other"
    q_len: int | None = None
    kv_len: int | None = None
    heads: int | None = None
    grid: tuple[int, int, int] | None = None
    text_len: int = 0
    text_position: str | None = None
    rewrite: bool = False
    features: tuple[str, ...] = ()
    ordinal: int | None = None
    occurrence: int = 0
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d["grid"] = list(self.grid) if self.grid else None
        d["features"] = list(self.features)
        return d


def _static(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _same(a: Any, b: Any) -> bool:
    """Sizes equal without guarding: symbolic sizes (e.g. Mochi's data-dependent prompt length) compare by expression."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    ea = a.node.expr if isinstance(a, torch.SymInt) else a
    eb = b.node.expr if isinstance(b, torch.SymInt) else b
    try:
        return bool(ea == eb)
    except Exception:  # noqa: BLE001 - an undecidable comparison is "not the same"
        return False


def text_position(q: fx.Node, num_video: int, length: Any, max_nodes: int = 400) -> str | None:
    """``"first"``/``"last"`` from the nearest upstream ``cat`` that joined text and video."""
    seen, todo = {q}, deque([q])
    while todo and len(seen) < max_nodes:
        node = todo.popleft()
        if node.op == "call_function" and node.target in _CAT_TARGETS and node.args:
            pieces = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            out = node_shape(node)
            if out is not None and isinstance(pieces, (list, tuple)) and len(pieces) == 2:
                dim = dim % len(out)
                sizes = [node_shape(p) for p in pieces]
                if all(s is not None for s in sizes) and _same(out[dim], length):
                    lens = [s[dim] for s in sizes]
                    if _same(lens[0], num_video) and _same(lens[1], length - num_video):
                        return "last"
                    if _same(lens[1], num_video) and _same(lens[0], length - num_video):
                        return "first"
        for parent in node.all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return None


def _classify_one(call: AttentionCall, cand: GridCandidate | None, text_pos: str, no_grid: str = "") -> SiteReport:
    rep = SiteReport(call.node.name, call.path, call.module_type, call.form)
    if call.form == "unsupported":
        rep.reason = f"unsupported attention op {call.node.target}; only scaled_dot_product_attention is rewritten"
        return rep
    a = call.args
    q_shape, k_shape, v_shape = (node_shape(a[n]) for n in ("query", "key", "value"))
    if not all(s is not None and len(s) == 4 for s in (q_shape, k_shape, v_shape)):
        rep.reason = "query/key/value are not [batch, heads, tokens, dim] tensors with recorded shapes"
        return rep
    static = _static(q_shape) and _static(k_shape)
    dynamic_reason = "dynamic sequence length; compile with dynamic=False (one graph per input shape)"
    if not static and not (_static(q_shape[:2]) and _same(q_shape[2], k_shape[2])):
        rep.reason = dynamic_reason
        return rep
    rep.q_len, rep.kv_len = (q_shape[2], k_shape[2]) if static else (None, None)
    rep.heads = q_shape[1]
    if a["is_causal"] is not False:
        rep.reason = "causal attention (is_causal) is not a video DiT attention"
        return rep
    if a["enable_gqa"] is not False and (a["attn_mask"] is not None or k_shape[1] != q_shape[1]):
        rep.reason = "grouped-query attention with a mask or fewer key heads is not supported"
        return rep
    mask = node_value(a["attn_mask"]) if isinstance(a["attn_mask"], fx.Node) else a["attn_mask"]
    if mask is not None and not isinstance(mask, torch.Tensor):
        rep.reason = f"attention mask of type {type(mask).__name__} is not supported"
        return rep
    if cand is None:
        rep.reason = no_grid
        return rep
    n = cand.num_tokens
    if not static:
        # Video tokens joined with a data-dependent number of text tokens (Mochi keeps only the
        # valid prompt tokens per sample); the runtime reads the text length off each call.
        pos = text_pos if text_pos != "auto" else text_position(call.query, n, q_shape[2])
        if pos is None:
            rep.reason = dynamic_reason
            return rep
        rep.kind, rep.text_position, rep.grid = "joint", pos, cand.grid
        rep.extra.update(grid_source=cand.source, q_len=str(q_shape[2]), kv_len=str(k_shape[2]))
        return rep
    lq, lkv = rep.q_len, rep.kv_len
    if lq == n and lkv == n:
        rep.kind = "self"
    elif lq == lkv and lq > n:
        rep.text_len = lq - n
        pos = text_pos if text_pos != "auto" else text_position(call.query, n, lq)
        if pos is None:
            rep.text_len = 0
            rep.reason = (
                f"{lq} tokens: no cat of {n} video and {lq - n} text tokens upstream; if this is joint "
                "attention set Plan(text_position='first' or 'last'), else check the grid"
            )
            return rep
        rep.kind, rep.text_position = "joint", pos
    elif lq == n:
        rep.kind = "cross"
    else:
        rep.reason = f"{lq} query / {lkv} key tokens match no video grid ({cand.grid} = {n} tokens)"
        return rep
    rep.grid = cand.grid
    rep.extra["grid_source"] = cand.source
    return rep


def classify_attention(
    calls: list[AttentionCall], candidates: list[GridCandidate], text_pos: str = "auto"
) -> tuple[list[SiteReport], GridCandidate | None]:
    """Classify every call under the grid candidate that explains the most video sites.

    A trusted candidate (given, or read from the model's config) that explains any site wins
    outright: a guessed grid can explain more sites by accident (HunyuanVideo's text-only
    refiner looks like self-attention when the text length equals a guessed grid's size).
    """
    best: tuple[int, list[SiteReport], GridCandidate] | None = None
    for cand in candidates:
        reports = [_classify_one(c, cand, text_pos) for c in calls]
        score = sum(r.kind in ("self", "joint") for r in reports)
        if cand.trusted and score > 0:
            return reports, cand
        if best is None or score > best[0]:
            best = (score, reports, cand)
    if best is not None and (best[0] > 0 or len(candidates) == 1):
        return best[1], best[2]
    if not candidates:
        no_grid = "no video grid given or inferable; pass grid=(frames, height, width) in tokens"
    else:
        tried = ", ".join(str(c.grid) for c in candidates[:6]) + (" ..." if len(candidates) > 6 else "")
        no_grid = f"no candidate video grid matches the attention lengths (tried {tried}); pass grid=(F, H, W)"
    return [_classify_one(c, None, text_pos, no_grid) for c in calls], None

