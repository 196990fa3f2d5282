"""AsymRnR as pure tensor functions: partition, matching, selection, reduction, restoration.

Everything here works on tensors shaped ``[batch, heads, tokens, dim]`` (the layout
scaled-dot-product attention uses) and holds no state.  The graph pass inserts calls to
:func:`gather_tokens`, :func:`merge_tokens`, :func:`reduce_mask` and :func:`restore_tokens`
around an attention node; :mod:`asymrnr_fx.runtime` calls :func:`partition`,
:func:`match` and :func:`select` behind a custom op, because which tokens survive is
data-dependent and must stay opaque to the compiler.

The method, step by step and mapped to these functions, is described in ``docs/method.md``;
``tests/reference.py`` is an independent, slow implementation the tests compare against.
"""
from __future__ import annotations

import functools
import math
import zlib
from typing import Literal, Sequence

import torch

from .matching import (  # noqa: F401  (the matching step lives in matching.py; these names are the package's)
    MATCH_TILE_ELEMENTS, Matching, best_match, column_max, grid_coordinates, kept_count, match, rank_key, select, with_text,
)

Similarity = Literal["euclidean", "cosine", "dot"]
Grid = tuple[int, int, int]
Stride = tuple[int, int, int]

SIMILARITIES: tuple[str, ...] = ("euclidean", "cosine", "dot")
# Baselines for comparisons, not part of the method: "random" pairs src and dst at random
# (same counts), "spatial" matches each src to the dst nearest on the token grid (with fixed
# dst and mean mode this is ToDo-style average pooling).
MATCHINGS: tuple[str, ...] = SIMILARITIES + ("random", "spatial")
MODES: tuple[str, ...] = ("replace", "mean")


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed from the plan seed and a site/feature/window path.

    ``hash()`` is salted per process, so a CRC of the text keeps partitions reproducible
    across runs and machines.
    """
    text = "/".join(str(p) for p in (seed, *parts))
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def draw_tile_choices(grid: Sequence[int], stride: Sequence[int], seed: int) -> torch.Tensor:
    """The random draw behind a partition: for every full tile, which cell is the dst.

    Kept separate from :func:`partition` so that an independent implementation (the test
    oracle) can consume the very same random numbers.
    """
    tiles = [g // s for g, s in zip(grid, stride)]
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, math.prod(stride), tiles, generator=gen)


def site_stride(grid: Sequence[int], stride: Sequence[int]) -> tuple[int, int, int]:
    """The plan's stride clamped to the grid on every axis where the grid is shorter.

    Why: a video model run on a single frame (an image; several diffusers model tests do this)
    has a (1, H, W) grid, and a (2, 2, 2) tile would hold no full tile at all. A (1, 2, 2) tile is
    the same partition restricted to the axes that exist; the ratio it allows is smaller
    (``max_ratio`` of the clamped stride), and a plan ratio above it removes every src token.
    """
    f, h, w = (min(int(g), int(s)) for g, s in zip(grid, stride))
    return f, h, w


def max_ratio(stride: Sequence[int]) -> float:
    """Largest ratio that still removes tokens: every dst token is always kept."""
    return 1.0 - 1.0 / math.prod(stride)


def partition(grid: Sequence[int], stride: Sequence[int], choices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the raster-ordered video tokens of ``grid`` into (dst, src) positions.

    One dst per full ``stride`` tile (the cell picked by ``choices``); everything else,
    including the border left over by a grid that is not a multiple of the stride, is src.
    Both outputs are sorted ascending.
    """
    f, h, w = grid
    origins, offsets = _tile_layout(tuple(grid), tuple(stride), tuple(choices.shape))
    is_dst = torch.zeros(f * h * w, dtype=torch.bool)
    is_dst[origins + offsets.index_select(0, choices.reshape(-1))] = True
    return torch.nonzero(is_dst).view(-1), torch.nonzero(~is_dst).view(-1)


@functools.lru_cache(maxsize=64)
def _tile_layout(grid: tuple[int, ...], stride: tuple[int, ...], tiles: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raster position of every tile's first cell (tile order) and raster offset of every cell of a tile
    (choice order): a partition is their sum. Cached per shape (read only); the draw is all that varies."""
    _, h, w = grid
    sf, sh, sw = stride
    origin = (torch.arange(tiles[0]).view(-1, 1, 1) * sf * h * w + torch.arange(tiles[1]).view(1, -1, 1) * sh * w
              + torch.arange(tiles[2]).view(1, 1, -1) * sw)
    cell = torch.arange(sf * sh * sw)
    return origin.reshape(-1), (cell // (sh * sw)) * h * w + (cell // sw) % sh * w + cell % sw


def shard_partition(dst: torch.Tensor, src: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (dst, src) of the whole grid's partition that lie in raster positions ``[lo, hi)``, relative to ``lo``.

    Why the whole grid's: every shard then sees the tiles (and random dst cells) it would see in
    one process, whichever rank holds it; a tile cut by the boundary is src on the side without its dst.
    """
    def part(p: torch.Tensor) -> torch.Tensor:
        return p[(p >= lo) & (p < hi)] - lo

    return part(dst), part(src)


def keep_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-everything indices for a ``[B, H, L, ...]`` call (fresh tensors: the graph may reuse its buffers)."""
    bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
    full = torch.arange(length, device=x.device).expand(bsz, heads, length)
    return full.clone(), full.clone()


def join_shards(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One selection from per-shard ones over consecutive ``size``-token pieces: positions shifted by
    the piece's start, slots by the tokens kept before it."""
    keeps, assigns, kept = [], [], 0
    for i, (keep, assign) in enumerate(parts):
        keeps.append(keep + i * size)
        assigns.append(assign + kept)
        kept += keep.shape[-1]
    return torch.cat(keeps, -1), torch.cat(assigns, -1)


def _expand_index(index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(-1).expand(*index.shape, x.shape[-1])


def gather_tokens(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Reduction by pruning ("replace" mode): the kept tokens of ``x`` along dim -2."""
    return torch.gather(x, -2, _expand_index(keep, x))


def merge_tokens(x: torch.Tensor, keep: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Reduction by averaging ("mean" mode): each slot is the mean of the tokens assigned to it."""
    out = x.new_zeros(*x.shape[:-2], keep.shape[-1], x.shape[-1])
    return out.scatter_reduce(-2, _expand_index(assign, x), x, reduce="mean", include_self=False)


def restore_tokens(out: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Full-length output from the reduced one: one gather, never a scatter."""
    return torch.gather(out, -2, _expand_index(assign, out))


def _bshd_index(index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``[B, H, n]`` token indices as a ``[B, n, H, D]`` gather index for ``[B, S, H, D]`` tensors."""
    return index.transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, x.shape[-1])


def gather_tokens_bshd(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """:func:`gather_tokens` for ``[B, S, H, D]`` kernels (flash-attn): tokens along dim 1, a contiguous result
    (the kernels, and inductor's stride checks of their calls, expect the layout they were traced with)."""
    return torch.gather(x, 1, _bshd_index(keep, x))


def merge_tokens_bshd(x: torch.Tensor, keep: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """:func:`merge_tokens` for ``[B, S, H, D]`` kernels."""
    return merge_tokens(x.transpose(1, 2), keep, assign).transpose(1, 2).contiguous()


def restore_tokens_bshd(out: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """:func:`restore_tokens` for ``[B, S, H, D]`` kernels."""
    return torch.gather(out, 1, _bshd_index(assign, out))


def restore_lse(lse: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Full-length log-sum-exp ``[B, H, L]`` from the reduced one: each query takes its dst's, as its output does."""
    return torch.gather(lse, -1, assign)


def restore_lse_bsh(lse: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """:func:`restore_lse` for a ``[B, L, H]`` log-sum-exp (diffusers' FA3 wrapper permutes it so)."""
    return torch.gather(lse, 1, assign.transpose(1, 2))


def reduce_mask(mask: torch.Tensor, q_keep: torch.Tensor | None, kv_keep: torch.Tensor | None) -> torch.Tensor:
    """Cut an attention mask down to the kept query rows and key columns.

    Dimensions the mask broadcasts (size 1) stay broadcast; batch/head dims are expanded
    only when per-head indices require it.

    Under ``torch.compile`` the reduced lengths are the unbacked kept counts of
    ``asymrnr::select``. A broadcast query or key dim (HunyuanVideo's key-padding mask is
    ``[B, 1, 1, L]``) would make SDPA's ``check_attn_mask_shape`` evaluate
    ``mask.size(-2) != q_len`` as ``1 != u0``, which cannot be decided for a count that may
    be 1 (``GuardOnDataDependentSymNode: Eq(1, u0)``). Where the fake of ``asymrnr::select``
    bounds the count below by more than 1 (``1 + text length`` at joint sites), the mask
    stays broadcast. Otherwise (a masked site without text), while tracing the dim is
    expanded to the reduced length, so its size is the very symbol of the reduced q/k;
    this compiles, at the cost of SDPA materialising the additive mask at ``[.., n_q, n_kv]``. Eager calls (plain int lengths) never expand: bitwise unchanged.
    """
    idx = q_keep if q_keep is not None else kv_keep
    bsz, heads = idx.shape[0], idx.shape[1]
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    # decided on the incoming (static) sizes: after a gather they are unbacked symbols
    q_broadcast, kv_broadcast = mask.shape[-2] == 1, mask.shape[-1] == 1
    if q_keep is not None and not q_broadcast:
        mask = mask.expand(bsz, heads, *mask.shape[-2:])
        mask = torch.gather(mask, -2, q_keep.unsqueeze(-1).expand(bsz, heads, q_keep.shape[-1], mask.shape[-1]))
    if kv_keep is not None and not kv_broadcast:
        mask = mask.expand(bsz, heads, *mask.shape[-2:])
        mask = torch.gather(mask, -1, kv_keep.unsqueeze(-2).expand(bsz, heads, mask.shape[-2], kv_keep.shape[-1]))
    # expanded last, after the gathers, so no gather ever runs over an expanded [.., n_q, n_kv] mask
    if q_keep is not None and q_broadcast and _may_be_one(q_keep.shape[-1]):
        mask = mask.expand(*mask.shape[:-2], q_keep.shape[-1], mask.shape[-1])
    if kv_keep is not None and kv_broadcast and _may_be_one(kv_keep.shape[-1]):
        mask = mask.expand(*mask.shape[:-1], kv_keep.shape[-1])
    return mask


def _may_be_one(n: int | torch.SymInt) -> bool:
    """Whether a traced length might be 1. Always False in eager (plain ints), so eager never expands.

    Under AOT/inductor tracing the length is a ``SymInt``; under Dynamo it is not (Dynamo
    answers ``isinstance(n, SymInt)`` with False), hence the ``is_compiling`` test.
    """
    if not (isinstance(n, torch.SymInt) or torch.compiler.is_compiling()):
        return False
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return not statically_known_true(n != 1)


# The functions the rewrite pass inserts into graphs as ``call_function`` nodes.
GRAPH_FUNCTIONS = (gather_tokens, merge_tokens, restore_tokens, restore_lse, reduce_mask, gather_tokens_bshd,
                   merge_tokens_bshd, restore_tokens_bshd, restore_lse_bsh)


def graph_function_cache_keys() -> dict[str, str]:
    """``{"asymrnr_fx.ops.gather_tokens": <hash>, ...}`` for inductor's ``unsafe_marked_cacheable_functions``.

    Why: AOTAutograd's cache bypasses any graph that calls a function it does not know, so a
    warm restart of a rewritten model re-traced and re-lowered the whole graph (a 6-block
    model: 7.4 s warm against plain inductor's 4.4 s). Marking our graph functions cacheable
    brings the warm start back to a cache hit; the key is a hash of this module's and the
    custom op's source, so a changed implementation can never be served from a stale entry.
    """
    from . import collective_ops

    functions = GRAPH_FUNCTIONS + collective_ops.GRAPH_FUNCTIONS
    return {f"{fn.__module__}.{fn.__name__}": _source_hash() for fn in functions}


def _source_hash() -> str:
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        import hashlib
        from pathlib import Path

        here = Path(__file__).resolve().parent
        digest = hashlib.sha256()
        for name in ("ops.py", "custom_ops.py", "collective_ops.py"):
            digest.update((here / name).read_bytes())
        _SOURCE_HASH = digest.hexdigest()[:16]
    return _SOURCE_HASH


_SOURCE_HASH: str | None = None
