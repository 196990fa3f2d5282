"""Analysis pass: candidate video token grids (frames, height, width) for a graph.

The grid decides the partition, so it must be right; but users should not have to type it
for common models. Candidates come, in order of trust, from an explicit grid (plan or
``transform(grid=...)``), a hint computed by an integration from the model's config and
call arguments, and finally the shape of every 5-D video-like graph input under the usual
layouts and patch sizes. :mod:`.classify_attention` keeps the candidate that explains the
most attention sequence lengths.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx

from .analysis import Analysis
from .graph import node_value, user_inputs

# Temporal-major order: spatial patching is far more common than temporal, so an
# ambiguous token count resolves to the smaller temporal patch.
_TEMPORAL_PATCHES = (1, 2, 4)
_SPATIAL_PATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class GridCandidate:
    grid: tuple[int, int, int]
    source: str
    trusted: bool = False  # given by the user or read from the model's config: not second-guessed
    text_position: str | None = None  # set by a hint that knows where the prompt sits (no cat shows it)
    patch: tuple[int, int, int] | None = None  # (t, h, w) patch a guessed candidate assumes
    shards: int = 1  # a ring rank's calls hold one of this many equal, contiguous pieces of the grid

    @property
    def num_tokens(self) -> int:
        """The video tokens one attention call holds under this candidate."""
        return math.prod(self.grid) // self.shards


def _video_inputs(gm: fx.GraphModule) -> list[tuple[str, tuple[int, ...]]]:
    found = []
    for node in user_inputs(gm):
        name = str(node.target)
        val = node_value(node)
        if isinstance(val, torch.Tensor) and val.dim() == 5 and val.is_floating_point():
            if all(isinstance(d, int) for d in val.shape):
                found.append((name, tuple(val.shape)))
    return found


def infer_grids(
    gm: fx.GraphModule,
    explicit: tuple[int, int, int] | None = None,
    hint: tuple[int, int, int] | None = None,
    call_inputs: list[tuple[str, tuple[int, ...]]] = (),
    patch: tuple[int, int, int] | None = None,
) -> list[GridCandidate]:
    """Grid candidates, most trusted first.

    ``call_inputs`` are the 5-D tensors of the model call in progress (name, shape): a graph
    captured after a graph break no longer sees the video input among its own inputs.
    """
    if explicit is not None:
        return [GridCandidate(tuple(explicit), "given", trusted=True)]
    out = []
    if hint is not None:
        out.append(GridCandidate(tuple(hint), "model config and inputs", trusted=True,
                                 text_position=getattr(hint, "text_position", None)))
    own = _video_inputs(gm)
    for name, shape in own + [c for c in call_inputs if c not in own]:
        layouts = {"[B, C, F, H, W]": shape[2:], "[B, F, C, H, W]": (shape[1], shape[3], shape[4])}
        for layout, (f, h, w) in layouts.items():
            for pt in _TEMPORAL_PATCHES:
                for p in _SPATIAL_PATCHES:
                    if h % p or w % p or pt > f:
                        continue
                    grid = (math.ceil(f / pt), h // p, w // p)
                    source = f"input {name} {list(shape)} as {layout}, patch ({pt}, {p}, {p})"
                    out.append(GridCandidate(grid, source, patch=(pt, p, p)))
    patch = embedding_patch(gm) or patch  # the graph's own, else the model's (a block graph starts after it)
    if patch is not None:  # the patch embedding is known: only grids of that patch are possible
        out = [c for c in out if c.patch is None or c.patch == patch]
    return out


_CONVS = ("conv3d", "conv2d", "convolution")


def conv_patch(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The (t, h, w) patch of a convolution that is a patch embedding (stride equals kernel, a Conv3d
    or a Conv2d over frames folded into the batch), else None. Read from graphs and from modules alike."""
    if len(stride) != len(kernel) or tuple(stride) != tuple(kernel) or (len(kernel) == 2 and max(kernel) == 1):
        return None
    return tuple(kernel) if len(kernel) == 3 else (1, *kernel)


def one_patch(patches: Iterable[tuple[int, int, int] | None]) -> tuple[int, int, int] | None:
    """The patch if every patch embedding found agrees (None entries ignored), else None."""
    found = {p for p in patches if p is not None}
    return found.pop() if len(found) == 1 else None


def embedding_patch(gm: fx.GraphModule) -> tuple[int, int, int] | None:
    """The (t, h, w) patch of the graph's patch embedding, if it shows one unambiguously.

    Why: a video input's shape under different patch sizes and layouts can give several grids of
    the *same* token count ((4, 4, 4) with patch (1, 2, 2), (1, 8, 8) with (4, 1, 1) for a
    [1, 16, 4, 8, 8] latent), and the attention lengths cannot tell them apart. A convolution
    whose stride equals its kernel (Conv3d, or Conv2d over frames folded into the batch) is a
    patch embedding, and its kernel is the patch. Several different ones: no answer.
    """
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or not any(c in str(getattr(node.target, "__name__", node.target)) for c in _CONVS):
            continue
        if len(node.args) < 4:
            continue
        weight = node_value(node.args[1]) if isinstance(node.args[1], fx.Node) else None
        stride = node.args[3]
        if not isinstance(weight, torch.Tensor) or weight.dim() not in (4, 5):
            continue
        kernel = tuple(int(k) for k in weight.shape[2:])
        stride = tuple(stride) if isinstance(stride, (list, tuple)) else (stride,) * len(kernel)
        found.append(conv_patch(kernel, tuple(int(s) for s in stride)))
    return one_patch(found)


def infer_grid_pass(a: Analysis) -> None:
    a.grid = a.grid if a.grid is not None else a.plan.grid
    a.candidates = infer_grids(a.gm, explicit=a.grid, hint=a.capture.grid_hint, call_inputs=list(a.capture.call_inputs),
                               patch=a.capture.patch)
    if a.capture.sharding is not None:  # ring context parallelism: a rank's calls see one shard of each grid
        ranks = a.capture.sharding[1]
        sharded = [dataclasses.replace(c, shards=ranks, source=f"{c.source}, one of {ranks} ring shards")
                   for c in a.candidates if math.prod(c.grid) % ranks == 0]
        a.candidates = sharded + a.candidates
