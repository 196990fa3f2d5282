"""Analysis pass: candidate video token grids (frames, height, width) for a graph.

The grid decides the partition, so it must be right; but users should not have to type it
for common models. Candidates come, in order of trust, from an explicit grid (plan or
``transform(grid=...)``), a hint computed by an integration from the model's config and
call arguments, and finally the shape of every 5-D video-like graph input under the usual
layouts and patch sizes. :mod:`.classify_attention` keeps the candidate that explains the
most attention sequence lengths.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from .find_attention import node_value
from .graph import user_inputs

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

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)


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
                    out.append(GridCandidate(grid, source))
    return out
