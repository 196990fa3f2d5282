"""Speed measurement helpers shared by ``benchmarks/`` and the ``asymrnr-fx bench`` command.

Timings on a shared CPU drift by tens of percent between runs, so every figure here is a
ratio of medians measured interleaved in one process (baseline and candidates take turns).
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

from ..calibration.budget import speedup_for_cost
from ..calibration.sampling import euler
from ..ops import kept_count


def cogvideox_shaped(
    layers: int = 4, heads: int = 4, head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226,
    text_dim: int = 256, seed: int = 0, dtype: torch.dtype = torch.float32, channels: int = 16, time_dim: int = 128,
    width: int | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A random-weight diffusers CogVideoX transformer and inputs of the shape the issue specifies.

    Default: 4 heads x 64, 4 layers, latent 4x64x64 (patch 2 -> 4x32x32 = 4096 video tokens) + 226 text tokens.
    ``width`` (default ``size``) makes the latent ``size`` x ``width``: CogVideoX-2B's 49 frames at 480x720
    are ``frames=13, size=60, width=90`` (13 x 30 x 45 = 17,550 video tokens).
    The weights depend only on the arguments and ``seed``.
    """
    width = size if width is None else width
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=channels, out_channels=channels,
        num_layers=layers, text_embed_dim=text_dim, time_embed_dim=time_dim, sample_frames=(frames - 1) * 4 + 1,
        sample_height=size, sample_width=width, patch_size=2, max_text_seq_length=text,
        use_rotary_positional_embeddings=True,
    ).eval()
    if dtype != torch.float32:  # diffusers warns on every .to(dtype), even a no-op one
        model = model.to(dtype)
    return model, cogvideox_shaped_inputs(head_dim, frames, size, text, text_dim, seed + 1, dtype, channels, width)


def cogvideox_shaped_inputs(
    head_dim: int = 64, frames: int = 4, size: int = 64, text: int = 226, text_dim: int = 256, seed: int = 1,
    dtype: torch.dtype = torch.float32, channels: int = 16, width: int | None = None,
) -> dict[str, Any]:
    """Latents, text embeddings and RoPE for :func:`cogvideox_shaped` (other seeds: other noise, same weights)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    width = size if width is None else width
    grid = (frames, size // 2, width // 2)
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, frames, channels, size, width, generator=g).to(dtype),
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


def attention_seconds(model: torch.nn.Module, inputs: dict[str, Any], repeats: int = 5) -> float:
    """Seconds one forward of ``model`` spends in attention kernels, from its own SDPA calls.

    Why not the profiler: inductor's generated code is one opaque region to it, so the share
    it reported (0.07-0.11 on the CogVideoX-shaped model) could not explain a measured 2.4x.
    Instead, one eager forward records every ``scaled_dot_product_attention`` call (shapes,
    dtype, mask, flags); each is then replayed alone on fresh tensors and timed (median of
    ``repeats``). The compiled graph calls the same aten kernel, so the sum divided by a
    compiled step time is the attention share of that step.
    """
    from torch.overrides import TorchFunctionMode

    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls: list[tuple[tuple, dict]] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is sdpa:
                calls.append((tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args),
                              {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}))
            return func(*args, **kwargs)

    with torch.no_grad():
        with Record():
            model(**inputs, return_dict=False)
        total = 0.0
        for args, kwargs in calls:
            sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
            sdpa(*args, **kwargs)  # warm-up
            times = []
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                sdpa(*args, **kwargs)
                sync()
                times.append(time.perf_counter() - start)
            total += statistics.median(times)
    return total


def ideal_speedup(attention_share: float, attention_cost_kept: float) -> float:
    """``1 / (1 - f (1 - c))``: the speedup if only attention got cheaper and nothing else cost anything."""
    return speedup_for_cost(attention_cost_kept, attention_share)


def joint_attention_cost(num_video: int, text: int, q: float, kv: float) -> float:
    """Attention FLOPs kept, (N_q + T)(N_kv + T) / (N + T)^2, with the method's kept counts."""
    nq = kept_count(num_video, q) + text
    nkv = kept_count(num_video, kv) + text
    return nq * nkv / (num_video + text) ** 2


def _busy(stop: Any) -> None:
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = (a @ a).tanh_()


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` processes each keeping one core busy while the block runs: what a server's VAE,
    text encoder or data loading does to the transformer beside them. They stop on exit."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    workers = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(n)]
    for w in workers:
        w.start()
    try:
        if workers:
            time.sleep(2.0)  # spawned interpreters import torch before they load the cores
        yield
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.terminate()
