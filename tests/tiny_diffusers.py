"""Shared helpers for the diffusers tests: tiny models/pipelines (from the package) and reference plumbing.

The builders live in :mod:`asymrnr_fx.testing.pipelines` so the examples can use them
without importing from tests; this module re-exports them and adds what only tests need.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from asymrnr_fx import Plan
from asymrnr_fx.testing.pipelines import FAMILIES, TinyPipeline, tiny_pipeline, tiny_transformer, transformer_inputs

__all__ = [
    "FAMILIES",
    "capture",
    "GRID",
    "EXPECTED_SITES",
    "TEXT_POSITION",
    "TinyPipeline",
    "VideoOnlyReference",
    "changing_plan",
    "num_sites",
    "step_inputs",
    "tiny_pipeline",
    "tiny_transformer",
    "transformer_inputs",
]

GRID = (4, 4, 4)  # tokens, for every family's transformer_inputs

#: Per family (1 layer; Mochi has 2): every attention site as (module path, kind, rewritten by default).
EXPECTED_SITES: dict[str, list[tuple[str, str, bool]]] = {
    "cogvideox": [("transformer_blocks.0.attn1", "joint", True)],
    "hunyuanvideo": [
        ("context_embedder.token_refiner.refiner_blocks.0.attn", "other", False),
        ("transformer_blocks.0.attn", "joint", True),
        ("single_transformer_blocks.0.attn", "joint", True),
    ],
    "wan": [("blocks.0.attn1", "self", True), ("blocks.0.attn2", "cross", False)],
    "mochi": [("time_embed.pooler", "other", False)]
    + [(f"transformer_blocks.{i}.attn1", "joint", True) for i in (0, 1)],  # per sample: listed once per batch element
    "ltx": [("transformer_blocks.0.attn1", "self", True), ("transformer_blocks.0.attn2", "cross", False)],
}

#: Text position of each family's joint attention.
TEXT_POSITION = {"cogvideox": "first", "hunyuanvideo": "last", "mochi": "last"}


def num_sites(family: str) -> int:
    """Rewritten attention modules (plan rows) of :func:`tiny_transformer` with default arguments."""
    return len({p for p, _, rw in EXPECTED_SITES[family] if rw})


def changing_plan(sites: int, steps: int = 4, window: int = 2, **options: Any) -> Plan:
    """Ratios that change at every step (and inside cache windows), nonzero at every window start."""
    q = torch.tensor([0.5, 0.3, 0.7, 0.0, 0.6, 0.8])[:steps]
    kv = torch.tensor([0.3, 0.0, 0.5, 0.2, 0.4, 0.1])[:steps]
    qt = torch.stack([q if i % 2 == 0 else q.flip(0) for i in range(sites)])
    kvt = torch.stack([kv if i % 2 == 0 else kv.flip(0) for i in range(sites)])
    return Plan.from_table(q=qt, kv=kvt, cache_window=window, **options)


def step_inputs(inputs: dict[str, Any], t: float, step: int) -> dict[str, Any]:
    """The inputs of one sampler step: new timestep, slightly moved latents (as a sampler would)."""
    out = dict(inputs)
    out["timestep"] = torch.full_like(inputs["timestep"], t)
    x = inputs["hidden_states"]
    out["hidden_states"] = x - 0.05 * step * torch.tanh(x)
    return out


class VideoOnlyReference:
    """Routes only video attention calls (self/joint over the grid) to tests/reference.py's
    :class:`~reference.ReferenceAsymRnR`; text-only refiners, pooling and cross-attention run
    the original SDPA, as the library leaves them alone."""

    def __init__(self, reference: Any, num_video: int, original: Callable[..., torch.Tensor] | None = None) -> None:
        self.reference = reference
        self.num_video = num_video
        self.original = original or F.scaled_dot_product_attention

    def start_forward(self, step: int) -> None:
        self.reference.start_forward(step)

    def __call__(self, **kw: Any) -> torch.Tensor:
        lq, lk = kw["query"].shape[2], kw["key"].shape[2]
        if lq == lk and lq >= self.num_video and not kw.get("is_causal"):
            return self.reference(**kw)
        return self.original(**kw)


def capture(fn: Callable[..., Any], *args: Any) -> torch.fx.GraphModule:
    """The graph Dynamo captures for ``fn(*args)`` (example values are fake tensors)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, dynamic=False, fullgraph=True)(*args)
    assert len(graphs) == 1
    return graphs[0]
