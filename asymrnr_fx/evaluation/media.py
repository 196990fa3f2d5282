"""Videos people can look at: side-by-side GIFs of baseline, AsymRnR and their difference."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``[F, 3, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8."""
    v = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(0, 2, 3, 1).numpy()


def side_by_side_gif(
    panels: Sequence[torch.Tensor], path: str | Path, scale: int = 4, fps: int = 6, gap: int = 2
) -> Path:
    """Write the videos (each ``[F, 3, H, W]`` in [-1, 1]) next to each other as an animated GIF."""
    from PIL import Image

    arrays = [to_uint8(p) for p in panels]
    frames = []
    for i in range(arrays[0].shape[0]):
        row = []
        for a in arrays:
            row.append(a[i])
            row.append(np.full((a.shape[1], gap, 3), 255, np.uint8))
        img = Image.fromarray(np.concatenate(row[:-1], axis=1))
        frames.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path


def difference(a: torch.Tensor, b: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """|a - b| amplified and mapped to [-1, 1] so it can sit in the same GIF row."""
    return ((a - b).abs() * gain).clamp(0, 2) - 1
