"""Windowed matching (``Plan.window``): every src token scored only against the dst of nearby tiles.

Why: a global matching scores every src against every dst, a GEMM as large as a real share of
the attention it saves (on a CPU it is most of a matching step). Most src tokens find their
best dst nearby anyway, so a window of a few tiles keeps the fidelity and scores a fraction of
the pairs.

How: the cells are grouped in blocks, one frame of ``BLOCK[1:]`` tiles each. A block's rows are
all its cells (the dst cells too: a regular layout is cheaper than skipping an eighth of the
rows) and its columns the dst of the tiles of its box (its tiles grown by the window), so the
whole matching is one batched GEMM of small dense blocks (a window as large as the grid is
the global matching, computed more slowly). Pairs inside a box but outside a cell's own window get ``-inf``. All of
that (which cells, which tiles, the mask) depends only on the grid, stride and window, so it
is built once per shape; a call gathers rows, multiplies and reads the best of each column.
Exact: a src gets the best dst among the tiles within ``window`` of its own (a border cell
outside every full tile counts as in the nearest full tile), the first tile in raster tile
order on ties.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .scores import column_max, row_table, squared_norm, table_rows

#: A block of rows: one frame of (rows, columns) tiles, clamped to the tile grid (the first entry is
#: unused: a block is always one frame, so a border frame adds blocks rather than padding). At stride
#: (2, 2, 2) a block is 64 cells with 36 candidate tiles at window (0, 1, 1), 64 at (0, 2, 2).
BLOCK = (1, 4, 4)
#: Scores per batched GEMM (8 MiB of float32), as the global matching's tiles.
TILE_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class _Layout:
    """What a windowed matching needs that depends only on (grid, stride, window)."""

    tile_of_cell: torch.Tensor  # [N] tile id of every raster cell (border cells: the nearest full tile)
    cells: torch.Tensor  # [nb, n_cells] raster cells of each block (padding: cell 0, masked by ``bias``)
    cand: torch.Tensor  # [nb, n_cand] candidate tiles of each block, ascending, n_tiles = padding
    cand_row: torch.Tensor  # ``cand`` with tile 0 for padding: rows to read (a padding score is -inf by ``bias``)
    bias: torch.Tensor  # [nb, n_cand, n_cells] 0 within a cell's window, -inf elsewhere
    where: torch.Tensor  # [N] index of every raster cell in the flattened [nb * n_cells] layout
    n_tiles: int
    flat: dict = field(default_factory=dict, compare=False)  # row indices into 2-D tables, shard block spans

    def index(self, name: str, i: int, j: int, base: tuple[int, ...], step: int, piece: tuple[int, int] | None = None
              ) -> torch.Tensor:
        """Rows of blocks ``i:j`` of ``cells`` or ``cand_row`` in a 2-D table whose (batch, head) ``k`` starts at
        row ``base[k]``, a token every ``step`` rows. ``piece`` ``(lo, hi)``: the table holds raster cells
        ``lo:hi`` only (a shard); cells outside it read its nearest row (their scores are never read)."""
        def build() -> torch.Tensor:
            tokens = getattr(self, name)[i:j]
            if piece is not None:
                tokens = (tokens - piece[0]).clamp_(0, piece[1] - piece[0] - 1)
            return table_rows(base, tokens, step)

        return self._remember((name, i, j, base, step, piece), build)

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """The blocks ``[first, last)`` that hold raster cells ``lo:hi`` (a shard's)."""
        def build() -> tuple[int, int]:
            block = self.where[lo:hi] // self.cells.shape[1]
            return int(block.min()), int(block.max()) + 1

        return self._remember(("span", lo, hi), build)

    def _remember(self, key: tuple, build: Callable[[], Any]) -> Any:
        """``build()``, kept for the last few keys (a call's tables and pieces rarely change)."""
        value = self.flat.get(key)  # one lookup: another thread may clear the dict between two
        if value is None:
            value = build()
            if len(self.flat) >= 16:
                self.flat.clear()
            self.flat[key] = value
        return value


def window_match(
    x: torch.Tensor,
    dst: torch.Tensor,
    src: torch.Tensor,
    similarity: str,
    grid: Sequence[int],
    stride: Sequence[int],
    window: Sequence[int],
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score and nearest dst slot of every src token of ``x`` ``[B, H, N, d]`` within ``window`` tiles.

    ``dst`` holds one raster position per full tile of ``stride`` (a partition of ``grid``);
    scores are those of the global matching (``asymrnr_fx.matching.best_match``).

    ``x`` may hold a raster-contiguous piece of the grid, cells ``offset`` to ``offset + N`` (a
    shard under ring context parallelism, ``Plan.shards``): ``dst`` and ``src`` are then the
    piece's, relative to it, and a src sees only the piece's dst. A src whose window holds none
    of them (where a shard boundary cuts its tile and its neighbours') scores ``-inf``; the
    caller matches it against the whole piece.
    """
    bsz, heads, n, d = x.shape
    bh = bsz * heads
    grid, stride = tuple(int(g) for g in grid), tuple(int(s) for s in stride)
    # a window past the tile grid sees what one reaching its far side does: clamped, the layout stays that size
    window = tuple(min(int(w), max(g // s, 1) - 1) for w, g, s in zip(window, grid, stride))
    layout = _layout(grid, stride, window, str(x.device))
    nb, n_cells = layout.cells.shape
    n_cand = layout.cand.shape[1]
    piece = None if offset == 0 and n == layout.where.numel() else (offset, offset + n)
    first, last = (0, nb) if piece is None else layout.span(*piece)
    x = x.float()
    if similarity == "cosine":
        x = torch.nn.functional.normalize(x, dim=-1)
    table, base, step = row_table(x)
    # the dst slot and position of every tile (each full tile holds exactly one dst); the padding tile's
    # is slot 0: its scores are -inf, picked only where a NaN made every score NaN (as a NaN src gets in best_match)
    dst_tiles = layout.tile_of_cell.index_select(0, dst + offset if offset else dst)
    slot_of_tile = torch.zeros(layout.n_tiles + 1, dtype=torch.long, device=x.device)
    slot_of_tile.index_copy_(0, dst_tiles, torch.arange(dst.numel(), device=x.device))
    # dst rows in tile order: [BH * n_tiles, d] (a padding candidate reads tile 0's row; its bias is -inf)
    rhs = table.index_select(0, table_rows(base, dst.index_select(0, slot_of_tile[:-1]), step))
    euclidean = similarity == "euclidean"
    # the euclidean score is 2 (a.b - |b|^2 / 2) - |a|^2: -|b|^2 / 2 starts the accumulator with the mask
    half = squared_norm(rhs).mul_(-0.5) if euclidean else None
    if piece is not None:  # a tile whose dst another piece holds is no candidate here: -inf with the mask
        absent = torch.full((layout.n_tiles,), float("-inf"), device=x.device).index_fill_(0, dst_tiles, 0.0)
        half = absent.repeat(bh) if half is None else half.view(bh, -1).add_(absent).view(-1)
    rhs_base = tuple(k * layout.n_tiles for k in range(bh))
    chunk = max(1, TILE_ELEMENTS // max(bh * n_cand * n_cells, 1))
    bests, rows_of = [], []
    for i in range(first, last, chunk):  # every chunk of blocks gathered on its own, so its operands are contiguous
        j = min(i + chunk, last)
        a = table.index_select(0, layout.index("cells", i, j, base, step, piece)).view(-1, n_cells, d)
        index = layout.index("cand_row", i, j, rhs_base, 1)
        b = rhs.index_select(0, index).view(-1, n_cand, d)
        mask = layout.bias[i:j]
        if half is not None:
            scores = torch.add(mask, half.index_select(0, index).view(bh, j - i, n_cand, 1))
        else:
            scores = mask.expand(bh, *mask.shape).clone()
        scores = scores.view(-1, n_cand, n_cells).baddbmm_(b, a.transpose(1, 2))
        best, row = column_max(scores)
        if euclidean:
            best = best.mul_(2).sub_(squared_norm(a))
        bests.append(best.view(bh, -1))
        rows_of.append(row.view(bh, -1, n_cells))
    best = torch.cat(bests, 1) if len(bests) > 1 else bests[0]
    row = torch.cat(rows_of, 1) if len(rows_of) > 1 else rows_of[0]
    tile = layout.cand[first:last].unsqueeze(0).expand(bh, last - first, n_cand).gather(2, row).view(bh, -1)
    at = layout.where.index_select(0, src + offset if offset else src)  # src cells in the block layout
    if first:
        at = at - first * n_cells
    best = best.index_select(1, at)
    nearest = slot_of_tile.index_select(0, tile.index_select(1, at).view(-1)).view(bh, -1)
    return best.view(bsz, heads, -1), nearest.view(bsz, heads, -1)


@functools.lru_cache(maxsize=32)
def _layout(grid: tuple[int, int, int], stride: tuple[int, int, int], window: tuple[int, int, int],
            device: str) -> _Layout:
    tiles = torch.tensor([max(g // s, 1) for g, s in zip(grid, stride)])
    n = grid[0] * grid[1] * grid[2]
    cell = _unflat(torch.arange(n), torch.tensor(grid))  # (frame, row, column) of every raster cell
    tile = torch.minimum(cell // torch.tensor(stride), tiles - 1)  # border cells: the nearest full tile
    tile_id = _flat(tile, tiles)
    # blocks: one frame (so a border frame adds blocks, not padding) by BLOCK[1:] tiles
    span_rc = torch.minimum(torch.tensor(BLOCK[1:]), tiles[1:])
    extent = torch.cat([torch.tensor([grid[0]]), (tiles[1:] + span_rc - 1) // span_rc])
    cells = _group(_flat(torch.stack([cell[:, 0], tile[:, 1] // span_rc[0], tile[:, 2] // span_rc[1]], -1), extent),
                   int(extent.prod()), pad=n)
    nb, n_cells = cells.shape
    # candidate tiles of every block: its box (its frame's tile, its tiles, grown by the window), clipped,
    # in ascending tile order
    win = torch.tensor(window)
    where_b = _unflat(torch.arange(nb), extent)
    corner = torch.stack([torch.clamp(where_b[:, 0] // stride[0], max=int(tiles[0]) - 1),
                          where_b[:, 1] * span_rc[0], where_b[:, 2] * span_rc[1]], -1)
    span = torch.cat([torch.tensor([1]), span_rc]) + 2 * win
    offsets = _unflat(torch.arange(int(span.prod())), span)  # raster order inside the box
    cand = corner.unsqueeze(1) - win + offsets.unsqueeze(0)  # [nb, box, 3]
    inside = ((cand >= 0) & (cand < tiles)).all(-1)
    n_tiles = int(tiles.prod())
    cand_id = torch.where(inside, _flat(cand.clamp_min(0), tiles), n_tiles)
    cand_id = cand_id.sort(-1).values  # ascending tiles, padding last
    n_cand = int(inside.sum(-1).max())
    cand_id = cand_id[:, :n_cand]
    # each cell's own window among its block's candidates
    ctile = _unflat(cand_id.clamp_max(n_tiles - 1), tiles)  # [nb, n_cand, 3]
    own = tile[cells.clamp_max(n - 1)]  # [nb, n_cells, 3]
    near = (cand_id < n_tiles).unsqueeze(2) & (cells < n).unsqueeze(1)
    for axis in range(3):
        near &= (ctile[:, :, axis].unsqueeze(2) - own[:, :, axis].unsqueeze(1)).abs() <= window[axis]
    bias = torch.zeros(near.shape).masked_fill_(~near, float("-inf"))
    where = torch.empty(n, dtype=torch.long)
    real = cells < n
    where[cells[real]] = torch.arange(nb * n_cells).view(nb, n_cells)[real]
    cells = torch.where(real, cells, 0)
    return _Layout(*(t.to(device) for t in (tile_id, cells, cand_id, torch.where(cand_id < n_tiles, cand_id, 0), bias, where)),
                   n_tiles=n_tiles)


def _flat(coord: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    return (coord[..., 0] * extent[1] + coord[..., 1]) * extent[2] + coord[..., 2]


def _unflat(index: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    return torch.stack([index // (extent[1] * extent[2]), index // extent[2] % extent[1], index % extent[2]], -1)


def _group(keys: torch.Tensor, groups: int, pad: int) -> torch.Tensor:
    """``[groups, max count]`` table of the indices of ``keys`` grouped by key, ascending, padded with ``pad``."""
    order = torch.argsort(keys, stable=True)
    keys = keys[order]
    count = torch.bincount(keys, minlength=groups)
    start = count.cumsum(0) - count
    table = torch.full((groups, max(int(count.max()), 1)), pad, dtype=torch.long)
    table[keys, torch.arange(keys.numel()) - start[keys]] = order
    return table
