"""Speed measurement helpers shared by ``benchmarks/`` and the ``asymrnr-fx bench`` command.

Timings on a shared CPU drift by tens of percent between runs, so every figure here is a
ratio of medians measured interleaved in one process (baseline and candidates take turns).
"""
from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..calibration.budget import speedup_for_cost
from ..calibration.sampling import euler
from ..ops import kept_count


def cogvideox_shaped(
    layers: int = 4, heads: int = 4, head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226,
    text_dim: int = 256, seed: int = 0, dtype: torch.dtype = torch.float32, channels: int = 16, time_dim: int = 128,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A random-weight diffusers CogVideoX transformer and inputs of the shape the issue specifies.

    Default: 4 heads x 64, 4 layers, latent 4x64x64 (patch 2 -> 4x32x32 = 4096 video tokens) + 226 text tokens.
    The weights depend only on the arguments and ``seed``.
    """
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=channels, out_channels=channels,
        num_layers=layers, text_embed_dim=text_dim, time_embed_dim=time_dim, sample_frames=(frames - 1) * 4 + 1,
        sample_height=size, sample_width=size, patch_size=2, max_text_seq_length=text,
        use_rotary_positional_embeddings=True,
    ).eval()
    if dtype != torch.float32:  # diffusers warns on every .to(dtype), even a no-op one
        model = model.to(dtype)
    return model, cogvideox_shaped_inputs(head_dim, frames, size, text, text_dim, seed + 1, dtype, channels)


def cogvideox_shaped_inputs(
    head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226, text_dim: int = 256, seed: int = 1,
    dtype: torch.dtype = torch.float32, channels: int = 16,
) -> dict[str, Any]:
    """Latents, text embeddings and RoPE for :func:`cogvideox_shaped` (other seeds: other noise, same weights)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    grid = (frames, size // 2, size // 2)
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, frames, channels, size, size, generator=g).to(dtype),
        "encoder_hidden_states": torch.randn(1, text, text_dim, generator=g).to(dtype),
        "image_rotary_emb": get_3d_rotary_pos_embed(head_dim, ((0, 0), grid[1:]), grid[1:], frames),
    }


@dataclass
class StepTimes:
    """Per-step wall times of repeated generations, by step index."""

    by_step: dict[int, list[float]] = field(default_factory=dict)

    def add(self, step: int, seconds: float) -> None:
        self.by_step.setdefault(step, []).append(seconds)

    def median(self, steps: Sequence[int] | None = None) -> float:
        keys = self.by_step if steps is None else steps
        return statistics.median(t for s in keys for t in self.by_step[s])


def run_generation(
    fn: Callable[..., Any], inputs: dict[str, Any], steps: int, times: StepTimes | None = None
) -> torch.Tensor:
    """One sampling run of ``fn`` from ``inputs`` (the package's Euler sampler), each call timed into ``times``."""
    return euler(fn if times is None else _timed(fn, times), {**inputs, "return_dict": False}, steps)


def _timed(fn: Callable[..., Any], times: StepTimes) -> Callable[..., Any]:
    """``fn``, adding the wall time of its n-th call to ``times`` as step n."""
    step = itertools.count()

    def call(**kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(**kwargs)
        times.add(next(step), time.perf_counter() - start)
        return out

    return call


def attention_share(fn: Callable[..., Any], inputs: dict[str, Any], repeats: int = 2) -> float:
    """Fraction of a (compiled) forward's time spent inside attention kernels, from the profiler.

    Measured on the very graph being benchmarked, so it includes whatever kernel the
    compiler picked; on CUDA it uses device time, on the CPU self CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() and any(
        isinstance(v, torch.Tensor) and v.is_cuda for v in inputs.values()
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad(), profile(activities=activities) as prof:
        for _ in range(repeats):
            fn(**inputs, timestep=torch.tensor([500], device=inputs["hidden_states"].device), return_dict=False)
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events)
    attn = sum(getattr(e, attr) for e in events if "scaled_dot_product" in e.key or "attention" in e.key.lower())
    return attn / total if total else float("nan")


def ideal_speedup(attention_share: float, attention_cost_kept: float) -> float:
    """``1 / (1 - f (1 - c))``: the speedup if only attention got cheaper and nothing else cost anything."""
    return speedup_for_cost(attention_cost_kept, attention_share)


def joint_attention_cost(num_video: int, text: int, q: float, kv: float) -> float:
    """Attention FLOPs kept, (N_q + T)(N_kv + T) / (N + T)^2, with the method's kept counts."""
    nq = kept_count(num_video, q) + text
    nkv = kept_count(num_video, kv) + text
    return nq * nkv / (num_video + text) ** 2
