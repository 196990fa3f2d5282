"""Site strings: what the graph tells the runtime about each rewritten attention call.

Why a string: it is the ``site`` argument of ``asymrnr::select``, so it must be stable and
content-derived (no process-local id) to survive export, AOTInductor packages and other
processes, and it must describe the call completely enough that the runtime needs no table
filled at capture time: module path relative to the compiled region, occurrence, kind, video
grid, text length and side, and the plan's stride (which bounds the kept count from below).
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

    @property
    def min_kept(self) -> int:
        """Tokens always kept: every text token and one dst per full stride tile."""
        return self.text_len + math.prod(g // s for g, s in zip(self.grid, self.stride))


def encode_site(site: GraphSite) -> str:
    """A stable, content-derived string for the op's ``site`` argument (survives export and other processes)."""
    side = "first" if site.text_first else "last"
    grid, stride = ("x".join(map(str, t)) for t in (site.grid, site.stride))
    return f"{site.path}#{site.occurrence};{site.kind};{grid};{site.text_len};{side};{stride}"


def decode_site(text: str) -> GraphSite:
    try:
        head, kind, grid, text_len, side, stride = text.rsplit(";", 5)
        path, occurrence = head.rsplit("#", 1)
        f, h, w = (int(v) for v in grid.split("x"))
        sf, sh, sw = (int(v) for v in stride.split("x"))
        if side not in ("first", "last"):
            raise ValueError(side)
        return GraphSite(path, int(occurrence), kind, (f, h, w), int(text_len), side == "first", (sf, sh, sw))
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

    @property
    def num_video(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def video(self, x: torch.Tensor) -> torch.Tensor:
        # Text length from the call itself: it may vary per call (Mochi drops padded prompt tokens).
        start = x.shape[2] - self.num_video if self.text_first else 0
        return x[:, :, start : start + self.num_video]
