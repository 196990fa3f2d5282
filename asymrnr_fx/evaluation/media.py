"""Videos people can look at: GIFs of baseline, AsymRnR and their difference.

:func:`labelled_grid_gif` is what ``asymrnr-fx demo`` writes: one row per variant (each
row the videos of all prompts side by side), every row under a label strip that names it
(e.g. its speedup and PSNR), optional column captions on top, frames upscaled (nearest) so
the pixels stay pixels and the text stays readable. Text is drawn with PIL's default font.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

BACKGROUND = (24, 24, 24)  # label strips and gaps
TEXT = (235, 235, 235)


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
    return _save_gif(frames, path, fps)


def difference(a: torch.Tensor, b: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """|a - b| amplified and mapped to [-1, 1] so it can sit in the same GIF row (black = identical)."""
    return ((a - b).abs() * gain).clamp(0, 2) - 1


# =========================================================================== labelled grid
def default_font(size: int = 11):
    """PIL's default font (the bundled scalable one at ``size`` px where Pillow has it, else the bitmap one)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap of each line of ``text`` to ``width`` pixels (a single long word stays whole)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def text_strip(text: str, width: int, font=None, pad: int = 3, align: str = "left") -> np.ndarray:
    """``[h, width, 3]`` uint8: ``text`` (wrapped to fit) in light grey on a dark strip."""
    from PIL import Image, ImageDraw

    font = font or default_font()
    lines = _wrap(text, font, width - 2 * pad)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font.getbbox("Ag")[3], 0)
    line_h = ascent + descent + 1
    img = Image.new("RGB", (width, pad * 2 + line_h * len(lines)), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        x = pad if align == "left" else max(pad, (width - int(font.getlength(line))) // 2)
        draw.text((x, pad + i * line_h), line, fill=TEXT, font=font)
    return np.asarray(img)


def labelled_grid_gif(
    rows: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    columns: Sequence[str] | None = None,
    scale: int = 4,
    fps: int = 6,
    gap: int = 2,
    font_size: int = 11,
) -> Path:
    """An animated GIF with one labelled row per ``(label, videos)``.

    ``videos`` are ``[B, F, 3, H, W]`` in [-1, 1] (the same B, F, H, W in every row), shown
    side by side, each frame upscaled ``scale`` x by nearest neighbour; ``label`` is drawn on
    a strip above its row, ``columns`` (one caption per video) on a strip at the top. Text
    is drawn at the output resolution, so it is never blurred by the upscaling.
    """
    from PIL import Image

    if not rows:
        raise ValueError("labelled_grid_gif needs at least one row")
    arrays = [np.stack([to_uint8(video) for video in videos]) for _, videos in rows]  # each [B, F, H, W, 3]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"every row needs videos of the same shape [B, F, 3, H, W], got {sorted(shapes)}")
    b, f, h, w, _ = arrays[0].shape
    cell_w, cell_h = w * scale, h * scale
    width = b * cell_w + (b + 1) * gap
    font = default_font(font_size)

    parts: list[np.ndarray | int] = []  # static strips, or the index of a video row
    if columns is not None:
        if len(columns) != b:
            raise ValueError(f"{len(columns)} column captions for {b} videos per row")
        cells = [text_strip(c, cell_w, font, pad=2, align="center") for c in columns]
        tallest = max(c.shape[0] for c in cells)
        spacer = np.full((tallest, gap, 3), BACKGROUND, np.uint8)
        row = [spacer]
        for c in cells:
            row += [np.concatenate([c, np.full((tallest - c.shape[0], cell_w, 3), BACKGROUND, np.uint8)]), spacer]
        parts.append(np.concatenate(row, axis=1))
    for i, (label, _) in enumerate(rows):
        parts.append(text_strip(label, width, font))
        parts.append(i)
    parts.append(np.full((gap, width, 3), BACKGROUND, np.uint8))

    frames = []
    for t in range(f):
        blocks = []
        for part in parts:
            if isinstance(part, int):
                block = np.full((cell_h, width, 3), BACKGROUND, np.uint8)
                for j in range(b):
                    x = gap + j * (cell_w + gap)
                    block[:, x : x + cell_w] = arrays[part][j, t].repeat(scale, 0).repeat(scale, 1)
                blocks.append(block)
            else:
                blocks.append(part)
        frames.append(Image.fromarray(np.concatenate(blocks, axis=0)))
    return _save_gif(frames, path, fps)


def _save_gif(frames: list, path: str | Path, fps: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return path
