"""Matching and selection: which dst each src token resembles most, and which tokens a ratio keeps.

The runtime calls :func:`match` once per site, feature and cache window, and :func:`select`
once per ratio in that window; both are re-exported by :mod:`asymrnr_fx.ops` (``ops.match``,
``ops.select``, ...), the names the rest of the package and its users know. This is the only
data-dependent work of a matching step, so it is written as few whole-tensor ops as it can be:
a GEMM and a vectorised max (a max pool) per cache-sized tile of scores, and a selection that
partitions the src tokens by rank (one ``topk`` per row) instead of sorting them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .matching_window import window_match
from . import scores
from .scores import column_max, row_table, squared_norm, table_rows


class Matching:
    """What the matching cache keeps for one site and feature: indices, never activations.

    ``nearest[b, h, i]`` is the slot (in ``dst``) of the dst token closest to ``src[i]``;
    ``order[b, h]`` lists src slots from most to least similar to their nearest dst, so
    removing the first ``k`` removes the ``k`` most redundant src tokens.

    :func:`match` stores ``rank`` instead of ``order``: one int64 per src whose ascending order
    is that order (:func:`rank_key`), so a selection needs a ``topk``, not a sort; ``order``
    is then derived on first use (tests, calibration). A matching built with an ``order`` (the
    calibration recorder's) selects through it.
    """

    __slots__ = ("dst", "src", "nearest", "rank", "_order")

    def __init__(self, dst: torch.Tensor, src: torch.Tensor, nearest: torch.Tensor, order: torch.Tensor | None = None,
                 *, rank: torch.Tensor | None = None) -> None:
        if order is None and rank is None:
            raise ValueError("a Matching needs its order or its rank")
        self.dst = dst  # [n_dst] video positions
        self.src = src  # [n_src] video positions
        self.nearest = nearest  # [B, H, n_src] slot into dst
        self.rank = rank  # [B, H, n_src] int64, ascending = most similar first
        self._order = order  # [B, H, n_src] slot into src, most similar first

    @property
    def order(self) -> torch.Tensor:
        if self._order is None:
            bits = _slot_bits(self.rank.shape[-1])
            self._order = self.rank.sort(dim=-1).values & ((1 << bits) - 1)
        return self._order


#: Score-tile budget of :func:`best_match` on CPU, in float32 elements (8 MiB: 4 heads x 3,584 x 512 is cut
#: into 4 tiles of 896 rows). At least 64 rows a tile whatever the budget.
MATCH_TILE_ELEMENTS = 1 << 21


def best_match(
    x: torch.Tensor, dst: torch.Tensor, similarity: str, chunk: int | None = None, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score and nearest dst slot for the tokens ``rows`` of ``x`` ``[B, H, N, d]`` (all if None).

    This is the hot part of a matching step, so it is a few large ops: one GEMM and one
    max per tile of rows. For the squared euclidean distance ``|a|^2`` is constant per row,
    so the argmax needs only ``2 a.b - |b|^2``; the rows carry a column of ones and the dst
    side the ``-|b|^2`` column, so the GEMM produces the biased scores itself (no pass over
    the score matrix to subtract it); ``|a|^2`` is added back to the best score afterwards.
    The rows are gathered straight from ``x`` (strided or not, through a 2-D view of its rows,
    :func:`~asymrnr_fx.scores.row_table`): one copy of the src and dst tokens, not a copy of the
    whole video first.

    On CPU the scores are laid out dst-major (``[dst, src]``, the same products) and reduced by
    :func:`column_max`; elsewhere (and in tiles under 16 rows or dst, or when a score is NaN)
    ``[src, dst]`` and ``max(dim=-1)``.

    Why tiles of ``MATCH_TILE_ELEMENTS`` scores: the GEMM writes the scores and the max reads
    them back, and inside a model (whose own work has just filled the caches) a 29 MiB score
    matrix makes that round trip through memory, while tiles written to one reused buffer stay
    in cache. CogVideoX-shaped model (4 heads x 3,584 x 512 per site, 8 matchings a step), host
    time of a matching step inside ``asymrnr::select``, 8 MiB tiles against one tile,
    interleaved: quiet on 2 threads 66 vs 88 ms; 1 thread beside a busy process 110 vs 146 ms;
    2 threads with ``OMP_WAIT_POLICY=PASSIVE`` beside a busy process 119 vs 162 ms. Smaller
    tiles gain nothing more quiet (2 MiB: 64 ms) and cost more ops, each one parallel region
    whose barrier waits for every thread: with 2 threads on 2 cores beside a busy process at
    the default wait policy (oversubscribed, which ``docs/serving.md`` advises against) a
    descheduled thread stalls every barrier: 2 MiB tiles 1,221 ms, 8 MiB 627 ms, one tile 462 ms.
    ``chunk`` forces a row count (benchmarks). On an accelerator: one GEMM over all rows; for
    bfloat16 activations on CUDA in bfloat16 operands with float32 accumulation (tensor cores), which
    computes the same scores (:func:`~asymrnr_fx.scores.bf16_operands`).
    """
    bsz, heads, _, d = x.shape
    bf16 = scores.use_bf16(x.dtype, x.device)
    x = x.float()
    cpu = x.device.type == "cpu"
    euclidean = similarity == "euclidean"
    table, base, step = row_table(x)  # strided activations: rows gathered from a 2-D view of them, compactly
    xd = table.index_select(0, table_rows(base, dst, step)).view(bsz * heads, -1, d)
    if rows is None:
        rows = torch.arange(x.shape[2], device=x.device)
    if euclidean and cpu:  # the rows copied straight into the GEMM operand, beside its ones
        lhs = x.new_empty(bsz * heads * rows.numel(), d + 1)
        torch.index_select(table, 0, table_rows(base, rows, step), out=lhs[:, :d])
        lhs[:, d] = 1  # after the rows: their cache lines are hot
        lhs = lhs.view(bsz * heads, -1, d + 1)
        flat = lhs[..., :d]
    else:
        lhs, flat = None, table.index_select(0, table_rows(base, rows, step)).view(bsz * heads, -1, d)
    n = flat.shape[1]
    if similarity == "cosine":
        flat = torch.nn.functional.normalize(flat, dim=-1)
        xd = torch.nn.functional.normalize(xd, dim=-1)
    if euclidean and bf16:  # tensor cores, the same scores (scores.bf16_operands)
        scored = scores.bf16_scores(flat, xd)
        if scored is not None:
            best, nearest = scored.max(dim=-1)
            return (best - squared_norm(flat)).view(bsz, heads, n), nearest.view(bsz, heads, n)
    if euclidean:
        lhs = torch.cat([flat, flat.new_ones(bsz * heads, n, 1)], -1) if lhs is None else lhs
        rhs = torch.cat([2 * xd, -squared_norm(xd).unsqueeze(-1)], -1)
    else:
        lhs, rhs = flat, xd
    if chunk is None and cpu:
        tiles = -(-max(n, 1) // max(64, MATCH_TILE_ELEMENTS // max(1, bsz * heads * xd.shape[1])))
        chunk = -(-max(n, 1) // tiles)  # tiles of equal size (no short last tile)
    elif chunk is None:
        chunk = max(n, 1)
    best, nearest = _tiled_max(lhs, rhs, chunk, pool=cpu)
    if cpu and best.isnan().any():  # a host read on CPU only; the max pool keeps the last NaN, max the first
        best, nearest = _tiled_max(lhs, rhs, chunk, pool=False)
    if euclidean:
        best = best - squared_norm(flat)
    return best.view(bsz, heads, n), nearest.view(bsz, heads, n)


def _tiled_max(lhs: torch.Tensor, rhs: torch.Tensor, chunk: int, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score and dst slot of every row of ``lhs`` ``[R, n, k]`` against ``rhs`` ``[R, m, k]``, ``chunk`` rows at a time."""
    tiles, rhs_t, scores = [], None, None
    rows, m = rhs.shape[0], rhs.shape[1]
    for i in range(0, max(lhs.shape[1], 1), chunk):  # one (empty) tile when there are no rows
        tile = lhs[:, i : i + chunk]
        if pool and min(m, tile.shape[1]) >= 16:
            # [dst, src]: the GEMM reads the rows transposed in place. Same products, and on this project's
            # CPU (MKL) the same bits as [src, dst] at every shape tried with 11+ rows and columns; with
            # fewer some differ in the last bit, so such tiles (a short last one, few dst) stay [src, dst].
            # Every tile's scores go to one buffer, which stays in cache from one tile to the next.
            scores = lhs.new_empty(rows * m * chunk) if scores is None else scores
            out = scores[: rows * m * tile.shape[1]].view(rows, m, tile.shape[1])
            tiles.append(column_max(torch.bmm(rhs, tile.transpose(1, 2), out=out)))
        else:
            rhs_t = rhs.transpose(1, 2).contiguous() if rhs_t is None else rhs_t
            tiles.append(torch.bmm(tile, rhs_t).max(dim=-1))
    return tuple(torch.cat(t, -1) for t in zip(*tiles)) if len(tiles) > 1 else tuple(tiles[0])


def grid_coordinates(grid: Sequence[int], positions: torch.Tensor) -> torch.Tensor:
    """(frame, row, column) of raster positions, as float rows for distance computations."""
    _, h, w = grid
    return torch.stack([positions // (h * w), (positions // w) % h, positions % w], dim=-1).float()


def match(
    video: torch.Tensor,
    dst: torch.Tensor,
    src: torch.Tensor,
    similarity: str = "euclidean",
    *,
    grid: Sequence[int] | None = None,
    seed: int = 0,
    window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    offset: int = 0,
) -> Matching:
    """Match every src token to its most similar dst, per batch element and head.

    Scores are computed in float32 whatever the activation dtype: bfloat16 distances are
    too coarse to rank tokens and would turn most comparisons into ties. ``grid`` is needed
    by the "spatial" baseline and, with the partition's ``stride``, by ``window``
    (``Plan.window``: only the dst of the tiles within that many tiles of a src's own, see
    :mod:`asymrnr_fx.matching_window`); ``seed`` by the "random" baseline.

    ``offset``: ``video`` is a shard of the grid from that raster position (``dst`` and ``src``
    relative to it). A windowed matching then sees the shard's dst only, and a src whose window
    holds none of them (a shard boundary cut its tile and its neighbours') is matched against
    all of the shard's dst, as without a window, rather than left without one.
    """
    device = video.device
    dst, src = dst.to(device), src.to(device)
    bsz, heads = video.shape[0], video.shape[1]
    if similarity == "random":
        gen = torch.Generator().manual_seed(seed)
        best, nearest = torch.rand(bsz, heads, src.numel(), dst.numel(), generator=gen).to(device).max(dim=-1)
    elif similarity == "spatial":
        if grid is None:
            raise ValueError("the 'spatial' matching needs the token grid")
        a, b = grid_coordinates(grid, src.cpu()), grid_coordinates(grid, dst.cpu())
        # squared grid distances are integers: noise below 1 only breaks ties among equally
        # near src tokens at random, so a partial reduction is spread over the frame
        gen = torch.Generator().manual_seed(seed)
        noise = 0.5 * torch.rand(bsz, heads, src.numel(), 1, generator=gen)
        best, nearest = (noise - torch.cdist(a, b).square()).to(device).max(dim=-1)
    elif window is not None:
        if grid is None or stride is None:
            raise ValueError("a windowed matching needs the token grid and the partition's stride")
        best, nearest = window_match(video, dst, src, similarity, grid, stride, window, offset)
        if offset or video.shape[2] < math.prod(grid):
            best, nearest = _match_strays(video, dst, src, similarity, best, nearest)
    else:
        best, nearest = best_match(video, dst, similarity, rows=src)
    return Matching(dst, src, nearest, rank=rank_key(best))


def _match_strays(video: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, similarity: str, best: torch.Tensor,
                  nearest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A shard's windowed matching with its strays (src without a dst of the shard in their window, score
    ``-inf``) matched against every dst of the shard. One host read per matching; on the sharded path only."""
    stray = best.isneginf()
    cols = stray.any(0).any(0).nonzero().squeeze(1)
    if cols.numel() == 0:
        return best, nearest
    found, slot = best_match(video, dst, similarity, rows=src.index_select(0, cols))
    stray = stray.index_select(-1, cols)
    best = best.index_copy(-1, cols, torch.where(stray, found, best.index_select(-1, cols)))
    nearest = nearest.index_copy(-1, cols, torch.where(stray, slot, nearest.index_select(-1, cols)))
    return best, nearest


def rank_key(best: torch.Tensor) -> torch.Tensor:
    """Distinct int64 keys whose ascending order is ``torch.sort(best, -1, descending=True, stable=True)``'s.

    The high bits order the scores (the float32 bit pattern made monotone; -0.0 is 0.0 and every
    NaN ranks first, as in ``torch.sort``), the low bits are the src slot, which breaks ties
    the way a stable sort does. Distinct keys let :func:`select` cut the ranking with one
    ``topk`` per row where a full sort cost 5-10x as much.
    """
    n = best.shape[-1]
    value = best.float() + 0.0  # -0.0 + 0.0 == +0.0: equal scores, equal keys
    value = torch.where(value.isnan(), torch.full_like(value, float("nan")), value)  # one NaN pattern
    bits = value.view(torch.int32).long()
    ascending = torch.where(bits >= 0, bits + (1 << 31), -1 - bits)  # in [0, 2^32), monotone in the score
    slots = torch.arange(n, device=best.device)
    return (((1 << 32) - 1 - ascending) << _slot_bits(n)) | slots


def _slot_bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def kept_count(num_tokens: int, ratio: float) -> int:
    """``floor(N * (1 - r))`` evaluated exactly as the reference does (in float64)."""
    return int(num_tokens * (1 - ratio))


def select(
    m: Matching,
    num_video: int,
    ratio: float,
    text_len: int = 0,
    text_first: bool = True,
    n_keep: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices that reduce a (text + video) sequence at ``ratio`` and restore it afterwards.

    Returns ``keep`` ``[B, H, n_kept]``: full-sequence positions that stay, ascending; and
    ``assign`` ``[B, H, L]``: for every full-sequence position, the slot in the reduced
    sequence that represents it (its own slot if kept, its nearest dst's slot if removed).
    Text tokens are always kept. Restoration is ``reduced.gather(assign)``. ``n_keep`` overrides
    the video tokens kept (shard-local reduction keeps the same count in every shard).
    """
    bsz, heads, n_src = m.nearest.shape
    n_dst = m.dst.numel()
    device = m.nearest.device
    n_src_keep = max((kept_count(num_video, ratio) if n_keep is None else n_keep) - n_dst, 0)
    n_remove = n_src - min(n_src_keep, n_src)
    removed = _removed(m, n_remove)
    kept = torch.ones(bsz, heads, num_video, dtype=torch.bool, device=device)
    kept.index_copy_(-1, m.src, ~removed)  # dst tokens are always kept
    n_kept = n_dst + n_src - n_remove
    slot_of = kept.cumsum(-1).sub_(1)  # the slot of every kept position (kept tokens before it)
    # the kept positions, ascending per row: every kept position written to its slot, the rest to a spare
    # last slot (a scatter with a known output size needs no host sync, where ``nonzero`` reads its size back;
    # it is 2-6x cheaper than searching the counts)
    keep_video = torch.empty(bsz, heads, n_kept + 1, dtype=torch.long, device=device)
    positions = torch.arange(num_video, device=device).expand(bsz, heads, num_video)
    keep_video = keep_video.scatter_(-1, torch.where(kept, slot_of, n_kept), positions)[..., :n_kept]
    nearest_slot = slot_of.gather(-1, _lookup(m.dst, m.nearest))
    src_slot = slot_of.gather(-1, m.src.expand(bsz, heads, n_src))  # (index_select along the last dim is 10x slower)
    slot_of.index_copy_(-1, m.src, torch.where(removed, nearest_slot, src_slot))
    return with_text(keep_video, slot_of, text_len, text_first)


def _removed(m: Matching, n_remove: int) -> torch.Tensor:
    """``[B, H, n_src]`` bool: the ``n_remove`` src tokens ranked most similar to their dst."""
    shape, device = m.nearest.shape, m.nearest.device
    if n_remove == 0 or n_remove == shape[-1]:
        return torch.full(shape, n_remove > 0, dtype=torch.bool, device=device)
    if m.rank is None:
        return torch.zeros(shape, dtype=torch.bool, device=device).scatter_(-1, m.order[..., :n_remove], True)
    # the keys are distinct, so a threshold cuts exactly: the largest removed key or the smallest kept one,
    # from whichever side is shorter (a top-k of 307 of 3,584 keys costs half a kthvalue)
    if n_remove <= shape[-1] - n_remove:
        return m.rank <= m.rank.topk(n_remove, dim=-1, largest=False, sorted=False).values.amax(-1, keepdim=True)
    return m.rank < m.rank.topk(shape[-1] - n_remove, dim=-1, sorted=False).values.amin(-1, keepdim=True)


def with_text(keep_video: torch.Tensor, slot_of: torch.Tensor, text_len: int, text_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Video selection indices extended to a (text + video) sequence whose text tokens are all kept."""
    if text_len == 0:
        return keep_video.contiguous(), slot_of
    bsz, heads, n_kept = keep_video.shape
    num_video = slot_of.shape[-1]
    text = torch.arange(text_len, device=keep_video.device).expand(bsz, heads, text_len)
    if text_first:
        return torch.cat([text, keep_video + text_len], -1), torch.cat([text, slot_of + text_len], -1)
    return torch.cat([keep_video, text + num_video], -1), torch.cat([slot_of, text + n_kept], -1)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D table, through index_select (much cheaper than advanced indexing)."""
    return table.index_select(0, index.reshape(-1)).view(index.shape)
