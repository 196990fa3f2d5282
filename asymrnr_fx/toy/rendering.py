"""Drawing one clip: its nuisance parameters (start, colour jitter, background, pan) and its pixels.

Why its own module: rendering is the numpy half of the dataset, apart from the words and spec
(:mod:`.spec`) that prompts and configs need; :mod:`.dataset` turns it into seeded clips.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from .spec import (
    COLOURS,
    DEFAULT_SPEC,
    DIRECTIONS,
    EDGE_MARGIN,
    HEIGHT,
    NUM_FRAMES,
    OBJECT_SIZE,
    OBJECT_SPEED,
    WIDTH,
    Attributes,
    VideoSpec,
    half_extent,
)

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


RING_HOLE = 0.5  # inner / outer radius of a ring


def _shape_coverage(shape: str, cx: float, cy: float, size: float, h: int, w: int, ss: int = _SUPERSAMPLE) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape, via ``ss`` x ``ss`` supersampling."""
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
    elif shape == "ring":  # hollow disc, hole RING_HOLE of the outer diameter
        outer = half_extent(shape, size)[0]
        d2 = u * u + v * v
        inside = (d2 <= outer * outer) & (d2 > (outer * RING_HOLE) ** 2)
    elif shape == "bar":  # horizontal
        hx, hy = half_extent(shape, size)
        inside = (np.abs(u) <= hx) & (np.abs(v) <= hy)
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


def sample_params(
    rng: np.random.Generator, combo: Attributes, frames: int = NUM_FRAMES, h: int = HEIGHT, w: int = WIDTH,
    spec: VideoSpec | None = None,
) -> ClipParams:
    """Draw start position, colour jitter, background and camera pan for one clip so that the
    object stays fully inside the frame for the whole clip. ``spec`` (if given) sets the
    geometry and object size/speed, overriding ``frames``/``h``/``w``."""
    colour, shape, direction = combo
    # Size and speed are fixed on purpose: with a ~30 CPU-minute training budget, removing these
    # nuisance factors is what lets the tiny model learn rigid, steadily moving shapes.
    size = OBJECT_SIZE if spec is None else float(spec.object_size)
    speed = OBJECT_SPEED if spec is None else float(spec.object_speed)
    if spec is not None:
        frames, h, w = spec.frames, spec.height, spec.width
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    half = half_extent(shape, size)

    def axis_start(dim: int, vel: int, half_side: float) -> float:
        margin = EDGE_MARGIN + half_side
        lo, hi = margin, dim - margin
        if vel > 0:
            hi -= travel
        elif vel < 0:
            lo += travel
        if lo > hi:  # the path does not fit (VideoSpec.fits): the object would leave the canvas
            raise ValueError(f"a {shape} moving {direction} for {frames} frames does not fit a {w}x{h} canvas; "
                             "use a larger canvas or shorter clips")
        return rng.uniform(lo, hi)

    start = (axis_start(w, dx, half[0]), axis_start(h, dy, half[1]))
    rgb = tuple(np.clip(np.array(COLOURS[colour]) + rng.uniform(-0.05, 0.05, 3), 0, 1).tolist())
    if rng.uniform() < 0.5:  # slight camera pan on half of the clips
        a = rng.uniform(0, 2 * np.pi)
        m = rng.uniform(0.2, 0.5)
        pan = (m * np.cos(a), m * np.sin(a))
    else:
        pan = (0.0, 0.0)
    return ClipParams(colour, shape, direction, size, speed, start, rgb, pan, int(rng.integers(2**31)))


def render(params: ClipParams, frames: int = NUM_FRAMES, h: int = HEIGHT, w: int = WIDTH, spec: VideoSpec | None = None) -> np.ndarray:
    """Render a clip as float32 ``[F, 3, H, W]`` in [-1, 1] (geometry from ``spec`` if given)."""
    if spec is not None:
        frames, h, w = spec.frames, spec.height, spec.width
    bg = _background(np.random.default_rng(params.bg_seed), frames, h, w, params.pan)
    dx, dy = DIRECTIONS[params.direction]
    rgb = np.array(params.rgb)
    for f in range(frames):
        cx = params.start[0] + dx * params.speed * f
        cy = params.start[1] + dy * params.speed * f
        cov = _shape_coverage(params.shape, cx, cy, params.size, h, w)[..., None]
        bg[f] = bg[f] * (1 - cov) + rgb[None, None] * cov
    return (bg.transpose(0, 3, 1, 2) * 2.0 - 1.0).astype(np.float32)


def shape_disagreement(params: ClipParams, frames: int = NUM_FRAMES, h: int = HEIGHT, w: int = WIDTH,
                       spec: VideoSpec | None = None) -> np.ndarray:
    """``[F, H, W]`` float32 in [0, 1]: where the shapes *disagree* at this clip's object
    position (max minus min coverage over all shapes of the same size and centre).

    These are the only pixels that say which shape was asked for: the corners a square fills
    and a circle leaves empty, the flanks of the triangle, and also the *background* pixels a
    circle or triangle must leave free. An object-mask loss weight covers only the pixels the
    object does occupy, so it never rewards leaving a circle's corners empty; weighting this map
    does (see ``train.loss_weights``)."""
    if spec is not None:
        frames, h, w = spec.frames, spec.height, spec.width
    shapes = (spec or DEFAULT_SPEC).shapes
    dx, dy = DIRECTIONS[params.direction]
    out = np.empty((frames, h, w), dtype=np.float32)
    for f in range(frames):
        cx = params.start[0] + dx * params.speed * f
        cy = params.start[1] + dy * params.speed * f
        cov = np.stack([_shape_coverage(s, cx, cy, params.size, h, w, ss=2) for s in shapes])
        out[f] = cov.max(0) - cov.min(0)
    return out
