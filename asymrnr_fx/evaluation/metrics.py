"""Fidelity and resource metrics for comparing a reduced model with the unreduced one.

PSNR and SSIM come from scikit-image (an optional dependency, installed with the
``demo``/``test`` extras) rather than being re-implemented here.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import torch


def _frames(video: torch.Tensor) -> np.ndarray:
    """``[..., C, H, W]`` -> float64 array ``[n, H, W, C]`` of 2-D frames with channels last."""
    v = video.detach().float().cpu()
    return v.reshape(-1, *v.shape[-3:]).permute(0, 2, 3, 1).numpy().astype(np.float64)


def psnr(reference: torch.Tensor, other: torch.Tensor, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of ``other`` against ``reference`` (inf if identical)."""
    from skimage.metrics import peak_signal_noise_ratio

    ref, oth = _frames(reference), _frames(other)
    rng = float(ref.max() - ref.min()) if data_range is None else data_range
    if np.array_equal(ref, oth):
        return float("inf")
    return float(peak_signal_noise_ratio(ref, oth, data_range=rng))


def ssim(reference: torch.Tensor, other: torch.Tensor, data_range: float | None = None) -> float:
    """Mean structural similarity over the 2-D frames (channels handled by scikit-image)."""
    from skimage.metrics import structural_similarity

    ref, oth = _frames(reference), _frames(other)
    rng = float(ref.max() - ref.min()) if data_range is None else data_range
    win = min(7, ref.shape[1], ref.shape[2])
    win -= 1 - win % 2  # odd
    return float(np.mean([
        structural_similarity(a, b, data_range=rng, channel_axis=-1, win_size=win) for a, b in zip(ref, oth)
    ]))


class PeakMemory:
    """Peak memory while a block runs: CUDA allocator peak, or sampled resident set size on CPU.

    ``with PeakMemory(device) as pm: ...`` then ``pm.peak_mb`` is the increase over the
    level at entry (CPU: sampled every few ms from /proc, so an approximation).
    """

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = float("nan")

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = self._peak = self._rss()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mb = (self._peak - self._start) / 2**20
