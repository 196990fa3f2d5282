"""Site strings: what the graph tells the runtime about each rewritten attention call.

Why a string: it is the ``site`` argument of ``asymrnr::select``, so it must be stable and
content-derived (no process-local id) to survive export, AOTInductor packages and other
processes, and it must describe the call completely enough that the runtime needs no table
filled at capture time: module path relative to the compiled region, occurrence, kind, video
grid, text length and side, the plan's stride (which bounds the kept count from below) and,
for shard-local reduction, the shard count and whether the call holds one shard or all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GraphSite:
    """What the pass learned about one attention call, as carried by the graph (see :func:`encode_site`)."""

    path: str  # module path relative to the compiled region
    occurrence: int  # how many earlier calls of the same module the region made (Mochi's per-sample loop)
    kind: str
    grid: tuple[int, int, int]
    text_len: int
    text_first: bool
    stride: tuple[int, int, int] = (1, 1, 1)  # the plan's; bounds the kept count from below
    shards: int = 1  # partition and matching restricted to this many equal, contiguous pieces of the video
    local: bool = False  # the call holds one of the shards (a ring rank), not all of them

    @property
    def min_kept_video(self) -> int:
        """Video tokens always kept: one dst per full stride tile (of the call's shards)."""
        per_shard = shard_min_dst(self.grid, self.stride, self.shards)
        return min(per_shard) if self.local else sum(per_shard)

    def min_kept_of(self, length: int) -> int:
        """Tokens always kept of a ``length``-token tensor of this site: its text (whatever the video
        does not fill: a joint site's queries may hold none, its keys all of it) and the video's dst tokens."""
        video = math.prod(self.grid) // (self.shards if self.local else 1)
        return max(length - video, 0) + self.min_kept_video


def shard_ranges(num_video: int, shards: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` raster positions of each of ``shards`` equal, contiguous pieces of the video tokens."""
    size = num_video // shards
    return [(s * size, (s + 1) * size) for s in range(shards)]


def shard_min_dst(grid: tuple[int, int, int], stride: tuple[int, int, int], shards: int) -> list[int]:
    """Per shard, the dst tokens it holds whatever the random draw: those of the full tiles whose
    frames lie wholly inside it (a tile cut by a shard boundary may have its dst on the other side)."""
    f, h, w = grid
    sf, sh, sw = stride
    if shards == 1:
        return [math.prod(g // s for g, s in zip(grid, stride))]
    slab = sf * h * w  # the tokens of one row of tiles along time
    per_slab = (h // sh) * (w // sw)
    out = []
    for lo, hi in shard_ranges(f * h * w, shards):
        first = -(-lo // slab)  # first slab starting at or after lo
        last = min(hi // slab, f // sf)  # slabs ending at or before hi (only full ones hold tiles)
        out.append(max(last - first, 0) * per_slab)
    return out


def encode_site(site: GraphSite) -> str:
    """A stable, content-derived string for the op's ``site`` argument (survives export and other processes)."""
    side = "first" if site.text_first else "last"
    grid, stride = ("x".join(map(str, t)) for t in (site.grid, site.stride))
    text = f"{site.path}#{site.occurrence};{site.kind};{grid};{site.text_len};{side};{stride}"
    if site.shards > 1:  # only sharded sites carry the field: older site strings stay valid
        text += f";shards={site.shards}{'/local' if site.local else ''}"
    return text


def decode_site(text: str) -> GraphSite:
    try:
        shards, local = 1, False
        head, sep, tail = text.rpartition(";shards=")
        if sep:
            text_, (count, _, where) = head, tail.partition("/")
            shards, local = int(count), where == "local"
            if shards < 2 or where not in ("", "local"):
                raise ValueError(tail)
        else:
            text_ = text
        head, kind, grid, text_len, side, stride = text_.rsplit(";", 5)
        path, occurrence = head.rsplit("#", 1)
        f, h, w = (int(v) for v in grid.split("x"))
        sf, sh, sw = (int(v) for v in stride.split("x"))
        if side not in ("first", "last"):
            raise ValueError(side)
        return GraphSite(path, int(occurrence), kind, (f, h, w), int(text_len), side == "first", (sf, sh, sw),
                         shards, local)
    except ValueError as e:
        raise ValueError(f"malformed asymrnr site string {text!r}") from e


@dataclass(frozen=True)
class SiteSpec:
    """A site as the runtime uses it: the graph's description plus its place in the plan."""

    key: str  # full module path + occurrence: the cache key
    path: str  # full module path
    ordinal: int  # plan row: the order in which the model first ran this module
    occurrence: int
    kind: str
    grid: tuple[int, int, int]
    text_len: int
    text_first: bool
    shards: int = 1  # see GraphSite
    local: bool = False

    @property
    def num_video(self) -> int:
        """The video tokens one call holds: the whole grid, or one shard of it."""
        total = self.grid[0] * self.grid[1] * self.grid[2]
        return total // self.shards if self.local else total

    def video(self, x: torch.Tensor) -> torch.Tensor:
        # Text length from the call itself: it may vary per call (Mochi drops padded prompt tokens).
        start = x.shape[2] - self.num_video if self.text_first else 0
        return x[:, :, start : start + self.num_video]
