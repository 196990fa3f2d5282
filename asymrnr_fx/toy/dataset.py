"""Procedural text-to-video toy dataset: one coloured shape moving over a muted background.

Why procedural: the demo model must be trainable on one CPU thread in well under an hour,
ship without downloads, and its outputs must be checkable automatically (see ``scorer``).
Every clip is a pure function of ``(seed, index)`` so datasets and training runs are
reproducible bit for bit.

Conventions: videos are float32 tensors ``[frames, 3, H, W]`` in ``[-1, 1]``; image
coordinates have x to the right and y downwards, so "up" means decreasing y.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

NUM_FRAMES = 8
HEIGHT = 24
WIDTH = 24
MAX_TOKENS = 8
OBJECT_SIZE = 11.0  # bounding-box side in pixels
OBJECT_SPEED = 1.0  # pixels per frame

# Saturated, well separated colours; backgrounds are kept desaturated so the object stands out.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.12),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.90, 0.15, 0.85),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
# Unit screen-space velocity (dx, dy) per direction; y grows downwards.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
DIRECTION_NAMES: tuple[str, ...] = tuple(DIRECTIONS)

Attributes = tuple[str, str, str]  # (colour, shape, direction)

ALL_COMBOS: tuple[Attributes, ...] = tuple(
    (c, s, d) for c in COLOUR_NAMES for s in SHAPES for d in DIRECTION_NAMES
)


def _is_heldout(colour: str, shape: str, direction: str) -> bool:
    """Latin-square style split: every single attribute and every attribute *pair*
    still occurs in training, only the triple is new (tests compositional generalisation)."""
    c, s, d = COLOUR_NAMES.index(colour), SHAPES.index(shape), DIRECTION_NAMES.index(direction)
    return (c + s + d) % len(COLOUR_NAMES) == 0


HELDOUT_COMBOS: tuple[Attributes, ...] = tuple(a for a in ALL_COMBOS if _is_heldout(*a))
TRAIN_COMBOS: tuple[Attributes, ...] = tuple(a for a in ALL_COMBOS if not _is_heldout(*a))

# ---------------------------------------------------------------- captions & tokenizer
PAD, UNK = "<pad>", "<unk>"
VOCAB: tuple[str, ...] = (PAD, UNK, "a", "moving", *COLOUR_NAMES, *SHAPES, *DIRECTION_NAMES)
WORD_TO_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
PAD_ID = WORD_TO_ID[PAD]


def caption(colour: str, shape: str, direction: str) -> str:
    """The single caption template, e.g. ``"a red square moving left"``."""
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text: str) -> Attributes:
    """Inverse of :func:`caption` (used to score prompts given as text)."""
    words = text.lower().split()
    colour = next(w for w in words if w in COLOURS)
    shape = next(w for w in words if w in SHAPES)
    direction = next(w for w in words if w in DIRECTIONS)
    return colour, shape, direction


def tokenize(captions: str | Sequence[str], max_len: int = MAX_TOKENS) -> torch.Tensor:
    """Word-level ids ``[B, max_len]`` (int64), right-padded with ``PAD_ID``.

    Unknown words map to ``<unk>``; an empty string gives all padding, which is the
    unconditional ("null") prompt used for classifier-free guidance."""
    if isinstance(captions, str):
        captions = [captions]
    ids = torch.full((len(captions), max_len), PAD_ID, dtype=torch.long)
    for row, text in enumerate(captions):
        words = text.lower().split()
        if len(words) > max_len:
            raise ValueError(f"caption longer than {max_len} words: {text!r}")
        for col, word in enumerate(words):
            ids[row, col] = WORD_TO_ID.get(word, WORD_TO_ID[UNK])
    return ids


def detokenize(ids: torch.Tensor) -> list[str]:
    """Inverse of :func:`tokenize` (padding dropped)."""
    ids = ids.reshape(-1, ids.shape[-1])
    return [" ".join(VOCAB[i] for i in row.tolist() if i != PAD_ID) for row in ids]


# ---------------------------------------------------------------- rendering
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ClipParams:
    """Everything needed to render one clip (drawn from an rng by :func:`sample_params`)."""

    colour: str
    shape: str
    direction: str
    size: float  # bounding-box side in pixels
    speed: float  # pixels per frame
    start: tuple[float, float]  # object centre (x, y) at frame 0
    rgb: tuple[float, float, float]  # jittered object colour
    pan: tuple[float, float]  # background (camera) drift in pixels per frame
    bg_seed: int


def _shape_coverage(shape: str, cx: float, cy: float, size: float, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, via 4x4 supersampling."""
    ss = _SUPERSAMPLE
    ys = (np.arange(h * ss) + 0.5) / ss
    xs = (np.arange(w * ss) + 0.5) / ss
    u = xs[None, :] - cx
    v = ys[:, None] - cy
    r = size / 2.0
    if shape == "square":
        inside = (np.abs(u) <= r) & (np.abs(v) <= r)
    elif shape == "circle":
        inside = u * u + v * v <= r * r
    elif shape == "triangle":  # upright isosceles: apex at top centre, base at bottom
        depth = v + r  # distance below the apex
        inside = (depth >= 0) & (v <= r) & (np.abs(u) <= depth / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(h, ss, w, ss).mean(axis=(1, 3))


def _background(rng: np.random.Generator, frames: int, h: int, w: int, pan: tuple[float, float]) -> np.ndarray:
    """Muted gradient (+ optional low-contrast texture) evaluated on a drifting grid so a
    camera pan is a smooth sub-pixel translation. Returns ``[F, H, W, 3]`` in [0, 1]."""
    hue = rng.uniform()
    base = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.6)))
    other = np.array(
        colorsys.hsv_to_rgb((hue + rng.uniform(-0.15, 0.15)) % 1.0, rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.6))
    )
    angle = rng.uniform(0, 2 * np.pi)
    kind = rng.integers(3)  # 0 gradient, 1 gradient + waves, 2 gradient + stripes
    waves = []
    if kind == 1:
        for _ in range(3):
            a = rng.uniform(0, 2 * np.pi)
            waves.append((np.cos(a), np.sin(a), 2 * np.pi / rng.uniform(5, 14), rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.05)))
    elif kind == 2:
        a = rng.uniform(0, 2 * np.pi)
        waves.append((np.cos(a), np.sin(a), 2 * np.pi / rng.uniform(4, 8), rng.uniform(0, 2 * np.pi), rng.uniform(0.04, 0.08)))

    out = np.empty((frames, h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    for f in range(frames):
        x = xx + pan[0] * f
        y = yy + pan[1] * f
        g = (np.cos(angle) * (x - w / 2) + np.sin(angle) * (y - h / 2)) / max(h, w) + 0.5
        img = base[None, None] * (1 - g[..., None]) + other[None, None] * g[..., None]
        for ux, uy, k, ph, amp in waves:
            img = img + amp * np.sin(k * (ux * x + uy * y) + ph)[..., None]
        out[f] = img
    return np.clip(out, 0.0, 1.0)


def sample_params(rng: np.random.Generator, combo: Attributes, frames: int = NUM_FRAMES, h: int = HEIGHT, w: int = WIDTH) -> ClipParams:
    """Draw start position, colour jitter, background and camera pan for one clip so that the
    object stays fully inside the frame for the whole clip."""
    colour, shape, direction = combo
    # Size and speed are fixed on purpose: with a ~30 CPU-minute training budget, removing these
    # nuisance factors is what lets the tiny model learn rigid, steadily moving shapes.
    size = OBJECT_SIZE
    speed = OBJECT_SPEED
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    margin = 1.0 + size / 2.0

    def axis_start(dim: int, vel: int) -> float:
        lo, hi = margin, dim - margin
        if vel > 0:
            hi -= travel
        elif vel < 0:
            lo += travel
        return rng.uniform(lo, hi)

    start = (axis_start(w, dx), axis_start(h, dy))
    rgb = tuple(np.clip(np.array(COLOURS[colour]) + rng.uniform(-0.05, 0.05, 3), 0, 1).tolist())
    if rng.uniform() < 0.5:  # slight camera pan on half of the clips
        a = rng.uniform(0, 2 * np.pi)
        m = rng.uniform(0.2, 0.5)
        pan = (m * np.cos(a), m * np.sin(a))
    else:
        pan = (0.0, 0.0)
    return ClipParams(colour, shape, direction, size, speed, start, rgb, pan, int(rng.integers(2**31)))


def render(params: ClipParams, frames: int = NUM_FRAMES, h: int = HEIGHT, w: int = WIDTH) -> np.ndarray:
    """Render a clip as float32 ``[F, 3, H, W]`` in [-1, 1]."""
    bg = _background(np.random.default_rng(params.bg_seed), frames, h, w, params.pan)
    dx, dy = DIRECTIONS[params.direction]
    rgb = np.array(params.rgb)
    for f in range(frames):
        cx = params.start[0] + dx * params.speed * f
        cy = params.start[1] + dy * params.speed * f
        cov = _shape_coverage(params.shape, cx, cy, params.size, h, w)[..., None]
        bg[f] = bg[f] * (1 - cov) + rgb[None, None] * cov
    return (bg.transpose(0, 3, 1, 2) * 2.0 - 1.0).astype(np.float32)


def make_clip(seed: int, index: int, combos: Sequence[Attributes] = TRAIN_COMBOS) -> tuple[torch.Tensor, Attributes]:
    """Deterministic clip number ``index`` of the stream defined by ``seed``."""
    rng = np.random.default_rng([seed, index])
    combo = combos[int(rng.integers(len(combos)))]
    return torch.from_numpy(render(sample_params(rng, combo))), combo


def make_batch(seed: int, indices: Iterable[int], combos: Sequence[Attributes] = TRAIN_COMBOS) -> tuple[torch.Tensor, list[Attributes]]:
    """Stack several clips: videos ``[B, F, 3, H, W]`` and their attribute triples."""
    clips = [make_clip(seed, i, combos) for i in indices]
    return torch.stack([c[0] for c in clips]), [c[1] for c in clips]


class ToyVideoDataset(torch.utils.data.Dataset):
    """Map-style view of the clip stream; ``split`` is ``"train"``, ``"heldout"`` or ``"all"``."""

    def __init__(self, length: int, seed: int = 0, split: str = "train") -> None:
        self.length = length
        self.seed = seed
        self.combos = {"train": TRAIN_COMBOS, "heldout": HELDOUT_COMBOS, "all": ALL_COMBOS}[split]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        video, attrs = make_clip(self.seed, index, self.combos)
        text = caption(*attrs)
        return {"video": video, "caption": text, "input_ids": tokenize(text)[0], "attributes": attrs}
