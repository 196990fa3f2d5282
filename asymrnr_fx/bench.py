"""Speed measurement helpers shared by ``benchmarks/`` and the ``asymrnr-fx bench`` command.

Timings on a shared CPU drift by tens of percent between runs, so every figure here is a
ratio of medians measured interleaved in one process (baseline and candidates take turns).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


def cogvideox_shaped(
    layers: int = 4, heads: int = 4, head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226,
    text_dim: int = 256, seed: int = 0, dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A random-weight diffusers CogVideoX transformer and inputs of the shape the issue specifies.

    Default: 4 heads x 64, 4 layers, latent 4x64x64 (patch 2 -> 4x32x32 = 4096 video tokens) + 226 text tokens.
    """
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=16, out_channels=16, num_layers=layers,
        text_embed_dim=text_dim, time_embed_dim=128, sample_frames=(frames - 1) * 4 + 1, sample_height=size,
        sample_width=size, patch_size=2, max_text_seq_length=text, use_rotary_positional_embeddings=True,
    ).to(dtype).eval()
    return model, cogvideox_shaped_inputs(head_dim, frames, size, text, text_dim, seed + 1, dtype)


def cogvideox_shaped_inputs(
    head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226, text_dim: int = 256, seed: int = 1,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Latents, text embeddings and RoPE for :func:`cogvideox_shaped` (other seeds: other noise, same weights)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    grid = (frames, size // 2, size // 2)
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, frames, 16, size, size, generator=g).to(dtype),
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


def run_generation(fn: Callable[..., Any], inputs: dict[str, Any], steps: int, times: StepTimes | None = None) -> torch.Tensor:
    """A denoising-shaped loop: decreasing timesteps, the output fed back, each step timed."""
    x = inputs["hidden_states"]
    for i, t in enumerate(torch.linspace(999, 1, steps).long()):
        start = time.perf_counter()
        out = fn(**{**inputs, "hidden_states": x}, timestep=t.view(1), return_dict=False)[0]
        if times is not None:
            times.add(i, time.perf_counter() - start)
        x = x - 0.05 * out
    return x


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
    return 1.0 / (1.0 - attention_share * (1.0 - attention_cost_kept))


def joint_attention_cost(num_video: int, text: int, q: float, kv: float) -> float:
    """Attention FLOPs kept, (N_q + T)(N_kv + T) / (N + T)^2, with the method's kept counts."""
    from .ops import kept_count

    nq = kept_count(num_video, q) + text
    nkv = kept_count(num_video, kv) + text
    return nq * nkv / (num_video + text) ** 2
