"""A small hand-written video DiT (no diffusers): patchify, timestep-modulated self-attention blocks.

It shows that asymrnr_fx works on any model that calls
``torch.nn.functional.scaled_dot_product_attention``. The tests, the ``tiny-dit`` built-in
model (:mod:`asymrnr_fx.evaluation.targets`) and ``examples/tiny_dit.py`` use it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over ``[B, H, S, D]`` tensors (tests swap in other attention ops here)."""
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        b, n, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = self.attend(q, k, v)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, n, d))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class TinyVideoDiT(nn.Module):
    """Video in ``[B, C, F, H, W]``, patch (1, p, p), learned positions, ``depth`` self-attention blocks."""

    def __init__(
        self,
        channels: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        patch: int = 2,
        frames: int = 4,
        height: int = 16,
        width: int = 16,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv3d(channels, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))
        self.pos = nn.Parameter(torch.randn(1, frames * (height // patch) * (width // patch), dim) * 0.5)
        self.t_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, channels * patch * patch)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = hidden_states.shape
        p = self.patch
        x = self.embed(hidden_states).flatten(2).transpose(1, 2) + self.pos
        cond = self.t_mlp(timestep_embedding(timestep, x.shape[-1]))
        for block in self.blocks:
            x = block(x, cond)
        x = self.out(self.norm(x))
        x = x.view(b, f, h // p, w // p, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, c, f, h, w)
