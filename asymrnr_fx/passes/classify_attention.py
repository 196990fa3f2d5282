"""Analysis pass: what each attention call is, from shapes alone.

* self  : queries and keys are exactly the video tokens;
* joint : one sequence of video + text tokens (text first or last);
* cross : video queries attend to other (text) keys;
* other : anything else (pooling, text-only refiners, causal, unknown shapes).

Where text sits in a joint sequence is read off the graph: the ``cat`` that built the
sequence has one piece as long as the video. Only self and joint sites (and cross, if the
plan opts in) become rewrite candidates; the rest are reported with the reason.

Masks (analysed in :mod:`.attention_masks`): a site with an attention mask is a candidate only
when the mask is the same for every *video* query: for every query (a key-padding mask such as
``[B, 1, 1, L]``, an expanded one, an all-true one), or, at joint sites, for the video rows
only (HunyuanVideo 1.5's ``a & a.mT``, whose padded text rows differ; text queries are never
reduced). Reduced queries take the output of their dst query, which is only right when both
saw the same keys. Any other mask (causal, diagonal, a per-query bias) leaves the site intact,
with ``"mask varies per query: ..."`` as the reason.

An explicit grid (``source == "given"``) whose video token count is the prompt's length,
while the text part a joint attention would get is not, is an error: the pass would take
the prompt as the video and reduce it.
"""
from __future__ import annotations

import math
from collections import deque

from typing import Any

import torch
import torch.fx as fx

from ..report import SiteReport
from .analysis import Analysis
from .attention_masks import _same, mask_query_variation, video_rows_variation
from .find_attention import AttentionCall
from .factorized import FOLDS, fold
from .forms import left_intact_reason, supported
from .graph import node_shape
from .infer_grid import GridCandidate
from .site_inputs import check_given_grid, mark_by_inputs, mark_prompt_only

_CAT_TARGETS = {torch.cat, torch.concat, torch.concatenate, torch.ops.aten.cat.default}


def _static(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


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


def _text_side(call: AttentionCall, cand: GridCandidate, num_video: int, length: Any) -> str | None:
    """The side of the text: read off the graph's ``cat``, else what the integration's grid says
    (``text_position`` of a hint read from the model's own arguments, e.g. MiniMax-H3's index
    scatter, which leaves no ``cat`` to read)."""
    return text_position(call.query, num_video, length) or getattr(cand, "text_position", None)


def _classify_one(call: AttentionCall, cand: GridCandidate | None, text_pos: str, no_grid: str = "") -> SiteReport:
    rep = _classify_shapes(call, cand, text_pos, no_grid)
    if rep.kind != "other" and not rep.reason and call.args.get("attn_mask") is not None:
        varies = mask_query_variation(call.args["attn_mask"])
        span = _video_span(rep, cand)
        if varies and span is not None and not video_rows_variation(call.args["attn_mask"], *span):
            varies = ""  # only the video queries are reduced, and their rows are the same
            rep.extra["mask"] = f"video query rows {span[0]}..{span[1] - 1} equal (text rows differ)"
        if varies:
            rep.reason = (
                f"mask varies per query: {varies}; only masks that are the same for every query "
                "(key padding, e.g. [B, 1, 1, L], or all true) can be reduced"
            )
    return rep


def _video_span(rep: SiteReport, cand: GridCandidate | None) -> tuple[int, int] | None:
    """Rows ``[lo, hi)`` of the video queries in the query sequence, where they are plain ints."""
    if cand is None:
        return None
    n = math.prod(rep.grid) if rep.factorized else cand.num_tokens
    video_first = rep.kind == "joint" and (rep.text_position == "last" or rep.extra.get("queries"))  # queries: no text
    if rep.kind in ("self", "cross") or video_first:
        return 0, n
    if rep.kind == "joint" and rep.text_position == "first" and isinstance(rep.text_len, int) and rep.text_len:
        return rep.text_len, rep.text_len + n
    return None


def _classify_shapes(call: AttentionCall, cand: GridCandidate | None, text_pos: str, no_grid: str) -> SiteReport:
    rep = SiteReport(call.node.name, call.path, call.module_type, call.form)
    if call.spec is None:
        rep.reason = left_intact_reason(call.node.target) or (
            f"unsupported attention op {call.node.target}; the attention ops rewritten are {supported()}")
        return rep
    a = call.args
    q_shape, k_shape, v_shape = (call.spec.shape(a[n]) for n in ("query", "key", "value"))  # [B, H, L, D]
    if not all(s is not None and len(s) == 4 for s in (q_shape, k_shape, v_shape)):
        rep.reason = "query/key/value are not [batch, heads, tokens, dim] tensors with recorded shapes"
        return rep
    static = _static(q_shape[1:]) and _static(k_shape[1:])  # a dynamic batch is fine (export)
    dynamic_reason = "dynamic sequence length; compile with dynamic=False (one graph per input shape)"
    if not static and not (_static(q_shape[1:2]) and _same(q_shape[2], k_shape[2])):
        rep.reason = dynamic_reason
        return rep
    rep.q_len, rep.kv_len = (q_shape[2], k_shape[2]) if static else (None, None)
    rep.heads = q_shape[1]
    refused = call.spec.check(a, q_shape, k_shape) or call.spec.output_reason(call.node)  # what the op rules out
    if refused:
        rep.reason = refused
        return rep
    if cand is None:
        rep.reason = no_grid
        return rep
    n = cand.num_tokens
    if not static:
        # Video tokens joined with a data-dependent number of text tokens (Mochi keeps only the
        # valid prompt tokens per sample); the runtime reads the text length off each call.
        pos = text_pos if text_pos != "auto" else _text_side(call, cand, n, q_shape[2])
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
        pos = text_pos if text_pos != "auto" else _text_side(call, cand, n, lq)
        if pos is None:
            rep.text_len = 0
            rep.reason = (
                f"{lq} tokens: no cat of {n} video and {lq - n} text tokens upstream; if this is joint "
                "attention set Plan(text_position='first' or 'last'), else check the grid"
            )
            return rep
        rep.kind, rep.text_position = "joint", pos
    elif lq == n:
        # video queries over keys [text, video] joined by a cat (Cosmos3's generation pathway): the
        # keys' video part is reduced like a joint sequence's, the queries hold no text of their own
        pos = text_position(call.key, n, lkv) if lkv > n and isinstance(call.key, fx.Node) else None
        if pos is None:
            rep.kind = "cross"
        else:
            rep.kind, rep.text_len, rep.text_position = "joint", lkv - n, pos
            rep.extra["queries"] = f"video only; keys are [{'text, video' if pos == 'first' else 'video, text'}]"
    else:
        folded = fold(q_shape, k_shape, cand)
        if not isinstance(folded, tuple):
            rep.reason = folded or f"{lq} query / {lkv} key tokens match no video grid ({cand.grid} = {n} tokens)"
            if folded:
                rep.extra["factorized"] = "ambiguous"
            return rep
        rep.kind = "self" if lkv == lq else "cross"  # keys from the prompt: corrected by the input flow
        rep.factorized, rep.grid = folded
        rep.extra.update(grid_source=cand.source, factorized=FOLDS[rep.factorized])
        return rep
    rep.grid = cand.grid
    rep.extra["grid_source"] = cand.source
    return rep


def classify_attention(
    calls: list[AttentionCall], candidates: list[GridCandidate], text_pos: str = "auto"
) -> tuple[list[SiteReport], GridCandidate | None]:
    reports, chosen = _classify_attention(calls, candidates, text_pos)
    return mark_prompt_only(calls, mark_by_inputs(calls, reports)), chosen


def _classify_attention(
    calls: list[AttentionCall], candidates: list[GridCandidate], text_pos: str = "auto"
) -> tuple[list[SiteReport], GridCandidate | None]:
    """Classify every call under the grid candidate that explains the most video sites.

    A trusted candidate (given, or read from the model's config) that explains any site wins
    outright: a guessed grid can explain more sites by accident (HunyuanVideo's text-only
    refiner looks like self-attention when the text length equals a guessed grid's size).
    """
    best: tuple[tuple[int, int, int], list[SiteReport], GridCandidate] | None = None
    explaining: dict[tuple[int, int, int], str] = {}  # guessed grids that explain some site -> source
    folded_only: dict[tuple[int, int, int], str] = {}  # ... only factorized ones (counted after the others)
    cross_only: dict[tuple[int, int, int], str] = {}  # ... only cross-attention queries (a region of attn2 alone)
    for cand in candidates:
        reports = [_classify_one(c, cand, text_pos) for c in calls]
        full = sum(r.kind in ("self", "joint") and not r.factorized for r in reports)
        score = (full, sum(r.kind == "self" and bool(r.factorized) for r in reports), sum(r.kind == "cross" for r in reports))
        if cand.trusted and sum(score) > 0:
            check_given_grid(calls, reports, cand)
            return reports, cand
        if full:
            explaining.setdefault(cand.grid, cand.source)
        elif score[1]:
            folded_only.setdefault(cand.grid, cand.source)
        elif score[2]:
            cross_only.setdefault(cand.grid, cand.source)
        if best is None or score > best[0]:
            best = (score, reports, cand)
    explaining = explaining or folded_only or cross_only
    if len(explaining) > 1:
        # Two guessed grids fit different lengths (a prompt as long as one grid's size, a
        # layout read two ways): picking one by score would be a guess. Never guess.
        found = "; ".join(f"{g} from {src}" for g, src in explaining.items())
        reason = (f"ambiguous video grid: {found} each match attention lengths here; pass grid=(F, H, W) in "
                  "tokens, or use asymrnr_fx.transform(model, plan), which reads the patch size from the model")
        return [_classify_one(c, None, text_pos, reason) for c in calls], None
    if best is not None and (sum(best[0]) > 0 or len(candidates) == 1):
        check_given_grid(calls, best[1], best[2])
        return best[1], best[2]
    if not candidates:
        no_grid = "no video grid given or inferable; pass grid=(frames, height, width) in tokens"
    else:
        tried = ", ".join(str(c.grid) for c in candidates[:6]) + (" ..." if len(candidates) > 6 else "")
        no_grid = f"no candidate video grid matches the attention lengths (tried {tried}); pass grid=(F, H, W)"
    return [_classify_one(c, None, text_pos, no_grid) for c in calls], None


def classify_attention_pass(a: Analysis) -> None:
    a.reports, a.chosen = classify_attention(a.calls, a.candidates, a.plan.text_position)
    _check_explicit_grid(a.grid, a.reports, bool(a.calls))
    if a.chosen is not None:
        for rep in a.reports:
            if rep.grid is not None:
                _shard(rep, a.chosen.shards, a.plan.shards)
    if a.capture.ulysses > 1:
        _explain_ulysses(a)


def _explain_ulysses(a: Analysis) -> None:
    """Under Ulysses a joint sequence is the ranks' ``[video, prompt]`` pieces one after the other:
    say so, rather than that no grid matches."""
    hint = next((c for c in a.candidates if c.trusted and c.shards == 1), None)
    if hint is None:
        return
    for rep in a.reports:
        if (rep.kind == "other" and not rep.rewrite and isinstance(rep.q_len, int) and rep.q_len == rep.kv_len
                and rep.q_len > hint.num_tokens):
            rep.reason = (f"{rep.q_len} tokens under Ulysses over {a.capture.ulysses} ranks: the all-to-all "
                          "interleaves each rank's video and prompt pieces, a joint layout the reduction does not "
                          "read; ring attention (ContextParallelConfig(ring_degree=...)) reduces it")


def _shard(rep: SiteReport, ranks: int, planned: int) -> None:
    """Record how the site's video is sharded: over ring ranks (each call holds one piece) or by Plan.shards."""
    if rep.factorized and max(ranks, planned) > 1:  # its batch rows are frames or positions, not shard pieces
        rep.reason = rep.reason or (f"{rep.factorized} factorized attention is not reduced under sharding (ring ranks "
                                    f"{ranks}, Plan(shards={planned})); use shards=1 without context parallelism")
        return
    if ranks > 1:
        rep.shards, rep.shard_local = ranks, True
        if planned not in (1, ranks) and not rep.reason:
            rep.reason = (f"Plan(shards={planned}) under ring attention over {ranks} ranks, which computes "
                          f"shards={ranks}: set shards=1 or {ranks}")
    elif planned > 1:
        rep.shards = planned
        if math.prod(rep.grid) % planned and not rep.reason:
            rep.reason = f"Plan(shards={planned}) does not divide the {math.prod(rep.grid)} video tokens of grid {rep.grid}"


def _check_explicit_grid(explicit: tuple[int, int, int] | None, reports: list[SiteReport], any_calls: bool) -> None:
    """Raise when an explicit grid explains no attention call of this graph.

    Sites over the prompt alone (text refiners, tagged ``prompt_only`` above) do not count: a
    graph holding only those is a piece of the model call before a graph break (HunyuanVideo
    1.5, Framepack), and the video attention runs in another graph.
    """
    if explicit is None or not any_calls:
        return
    n = explicit[0] * explicit[1] * explicit[2]
    reports = [r for r in reports if not r.extra.get("prompt_only") and r.form != "unsupported"]  # kernels not read: no lengths
    if reports and not any(r.kind == "joint" or r.extra.get("factorized") or n in (r.q_len, r.kv_len) for r in reports):
        lengths = sorted({r.q_len for r in reports if r.q_len is not None})
        raise ValueError(
            f"grid {explicit} gives {n} video tokens, but the attention sites have sequence lengths {lengths}; "
            "give the grid in tokens after patching (frames / temporal patch, height / patch, width / patch)"
        )
