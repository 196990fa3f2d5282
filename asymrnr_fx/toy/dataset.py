"""Procedural text-to-video toy dataset: one coloured shape moving over a muted background.

Why procedural: the demo model must be trainable on one CPU thread in well under an hour,
ship without downloads, and its outputs must be checkable automatically (see ``scorer``).
Every clip is a pure function of ``(seed, index)`` so datasets and training runs are
reproducible bit for bit.

Conventions: videos are float32 tensors ``[frames, 3, H, W]`` in ``[-1, 1]``; image
coordinates have x to the right and y downwards, so "up" means decreasing y.

Clip geometry (frames, height, width), object physics (size, speed) and the shape words are a
:class:`VideoSpec`. The module constants below (``NUM_FRAMES``, ``HEIGHT``, ``WIDTH``,
``OBJECT_SIZE``, ``OBJECT_SPEED``, ``SHAPES`` and the combos) are the first toy model's
(:data:`SPEC_V1`, the default of every function, so v1 clips are unchanged); :data:`SPEC_V2` and
:data:`SPEC_V3` are the 16-frame 32x32 clips (2048 video tokens) of the second and third models,
v3 with other shapes (circle, ring, bar). A model's spec is stored in its weights file metadata
(``video_spec``); use ``dataset.combos(spec, split)`` for its prompts.
"""

from __future__ import annotations

import colorsys
import dataclasses
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
EDGE_MARGIN = 1.0  # pixels an object keeps from the canvas edge for its whole path


@dataclass(frozen=True)
class VideoSpec:
    """Geometry of a clip stream: ``frames`` x ``height`` x ``width`` pixels, one object of side
    ``object_size`` pixels moving ``object_speed`` pixels per frame."""

    frames: int = NUM_FRAMES
    height: int = HEIGHT
    width: int = WIDTH
    object_size: float = OBJECT_SIZE
    object_speed: float = OBJECT_SPEED
    shapes: tuple[str, ...] = ("square", "circle", "triangle")  # the shape words of this clip stream

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """``(frames, 3, height, width)`` of one clip."""
        return (self.frames, 3, self.height, self.width)

    def token_grid(self, patch_size: int = 2, patch_size_t: int = 2) -> tuple[int, int, int]:
        """``(frames, height, width)`` in patches of a CogVideoX-1.5-layout transformer (the last
        partial temporal patch counts, as the transformer pads it)."""
        return (-(-self.frames // patch_size_t), self.height // patch_size, self.width // patch_size)

    def tokens(self, patch_size: int = 2, patch_size_t: int = 2) -> int:
        """Number of video tokens of a CogVideoX-1.5-layout transformer on this geometry."""
        t, h, w = self.token_grid(patch_size, patch_size_t)
        return t * h * w

    def fits(self) -> bool:
        """Whether every shape, moving in any direction for the whole clip, stays inside the
        canvas with the :data:`EDGE_MARGIN` that :func:`sample_params` keeps (which refuses a clip
        that does not; a smaller training canvas must)."""
        travel = self.object_speed * (self.frames - 1)
        return all(2 * (EDGE_MARGIN + half) + travel <= side
                   for shape in self.shapes
                   for half, side in zip(half_extent(shape, self.object_size), (self.width, self.height)))

    def replace(self, **changes) -> "VideoSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoSpec":
        kwargs = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        if "shapes" in kwargs:  # JSON metadata stores lists
            kwargs["shapes"] = tuple(kwargs["shapes"])
        return cls(**kwargs)


# First toy model (8 x 24 x 24 pixels, 4 x 12 x 12 = 576 video tokens, 11 px objects).
SPEC_V1 = VideoSpec()
# Second toy model (16 x 32 x 32 pixels, 8 x 16 x 16 = 2048 video tokens). Objects are 14 px
# (7 x 7 patches instead of 5.5 x 5.5) so the pixels that tell a square from a circle or a
# triangle span whole patches; speed 0.8 px/frame keeps the 12 px travel of 16 frames inside.
SPEC_V2 = VideoSpec(frames=16, height=32, width=32, object_size=14.0, object_speed=0.8)
# Third toy model: v2's geometry, but shapes that differ at the scale of the object (filled
# disc, hollow ring, elongated bar: a patch decides which by its distance and direction from the
# object's centre in whole patches) instead of in corners a patch wide (square vs circle), which
# neither v1 nor v2 learnt; slower objects (10.5 px travel over 16 frames) leave room to place
# the wider ring and bar.
SPEC_V3 = VideoSpec(frames=16, height=32, width=32, object_size=14.0, object_speed=0.7,
                    shapes=("circle", "ring", "bar"))
DEFAULT_SPEC = SPEC_V1
# Looked up by canvas (first match wins): v3 before v2, which shares its 32x32 canvas.
KNOWN_SPECS: tuple[VideoSpec, ...] = (SPEC_V1, SPEC_V3, SPEC_V2)


def spec_for_geometry(frames: int, height: int, width: int) -> VideoSpec:
    """The known spec whose canvas is ``height`` x ``width`` (any frame count, e.g. a short
    training stage), else the default object physics on that geometry."""
    for spec in KNOWN_SPECS:
        if (spec.height, spec.width) == (height, width):
            return spec if spec.frames == frames else spec.replace(frames=frames)
    return DEFAULT_SPEC.replace(frames=frames, height=height, width=width)

# Saturated, well separated colours; backgrounds are kept desaturated so the object stands out.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.12),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "magenta": (0.90, 0.15, 0.85),
}
SHAPES: tuple[str, ...] = VideoSpec.shapes  # the first two models' shapes
SHAPE_WORDS: tuple[str, ...] = (*SHAPES, "ring", "bar")  # every model's (the v3 words appended)
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


def _is_heldout(colour: str, shape: str, direction: str, shapes: Sequence[str] = SHAPES) -> bool:
    """Latin-square style split: every single attribute and every attribute *pair*
    still occurs in training, only the triple is new (tests compositional generalisation)."""
    c, s, d = COLOUR_NAMES.index(colour), shapes.index(shape), DIRECTION_NAMES.index(direction)
    return (c + s + d) % len(COLOUR_NAMES) == 0


HELDOUT_COMBOS: tuple[Attributes, ...] = tuple(a for a in ALL_COMBOS if _is_heldout(*a))
TRAIN_COMBOS: tuple[Attributes, ...] = tuple(a for a in ALL_COMBOS if not _is_heldout(*a))


def combos(spec: VideoSpec | None = None, split: str = "all") -> tuple[Attributes, ...]:
    """The ``"train"``, ``"heldout"`` or ``"all"`` attribute triples of ``spec``'s shapes (same
    split rule for every model: 12 of 60 triples held out). ``spec=None``: the first model's."""
    shapes = (spec or DEFAULT_SPEC).shapes
    every = tuple((c, s, d) for c in COLOUR_NAMES for s in shapes for d in DIRECTION_NAMES)
    if split == "all":
        return every
    held = split == "heldout"
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    return tuple(a for a in every if _is_heldout(*a, shapes=shapes) == held)

# ---------------------------------------------------------------- captions & tokenizer
PAD, UNK = "<pad>", "<unk>"
VOCAB: tuple[str, ...] = (PAD, UNK, "a", "moving", *COLOUR_NAMES, *SHAPES, *DIRECTION_NAMES, *SHAPE_WORDS[len(SHAPES):])
WORD_TO_ID: dict[str, int] = {w: i for i, w in enumerate(VOCAB)}
PAD_ID = WORD_TO_ID[PAD]


def caption(colour: str, shape: str, direction: str) -> str:
    """The single caption template, e.g. ``"a red square moving left"``."""
    return f"a {colour} {shape} moving {direction}"


def parse_caption(text: str) -> Attributes:
    """Inverse of :func:`caption` (used to score prompts given as text)."""
    words = text.lower().split()
    colour = next(w for w in words if w in COLOURS)
    shape = next(w for w in words if w in SHAPE_WORDS)
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


RING_HOLE = 0.5  # inner / outer radius of a ring


def half_extent(shape: str, size: float) -> tuple[float, float]:
    """Half width and half height in pixels of ``shape`` drawn at ``size``: ``size / 2`` for
    the first models' shapes; a ring's outer diameter is 1.1 ``size`` and a bar is 1.14 x 0.6
    ``size``, so that disc, ring and bar cover about the same area (154, 140 and 134 px at 14 px)
    and area alone does not tell them apart."""
    if shape == "ring":
        return 0.55 * size, 0.55 * size
    if shape == "bar":
        return 0.57 * size, 0.3 * size
    return size / 2.0, size / 2.0


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


def make_clip(
    seed: int, index: int, combos: Sequence[Attributes] = TRAIN_COMBOS, spec: VideoSpec | None = None,
    with_shape_map: bool = False,
) -> tuple[torch.Tensor, Attributes] | tuple[torch.Tensor, Attributes, torch.Tensor]:
    """Deterministic clip number ``index`` of the stream defined by ``seed`` (geometry ``spec``,
    default :data:`SPEC_V1`); with ``with_shape_map`` also its :func:`shape_disagreement` map."""
    rng = np.random.default_rng([seed, index])
    combo = combos[int(rng.integers(len(combos)))]
    params = sample_params(rng, combo, spec=spec)
    video = torch.from_numpy(render(params, spec=spec))
    if with_shape_map:
        return video, combo, torch.from_numpy(shape_disagreement(params, spec=spec))
    return video, combo


def make_batch(
    seed: int, indices: Iterable[int], combos: Sequence[Attributes] = TRAIN_COMBOS, spec: VideoSpec | None = None
) -> tuple[torch.Tensor, list[Attributes]]:
    """Stack several clips: videos ``[B, F, 3, H, W]`` and their attribute triples."""
    clips = [make_clip(seed, i, combos, spec) for i in indices]
    return torch.stack([c[0] for c in clips]), [c[1] for c in clips]


def make_training_batch(
    seed: int, indices: Iterable[int], combos: Sequence[Attributes] = TRAIN_COMBOS, spec: VideoSpec | None = None
) -> tuple[torch.Tensor, list[Attributes], torch.Tensor]:
    """Like :func:`make_batch` (same clips) plus the shape-disagreement maps ``[B, F, H, W]``."""
    clips = [make_clip(seed, i, combos, spec, with_shape_map=True) for i in indices]
    return torch.stack([c[0] for c in clips]), [c[1] for c in clips], torch.stack([c[2] for c in clips])


class ToyVideoDataset(torch.utils.data.Dataset):
    """Map-style view of the clip stream; ``split`` is ``"train"``, ``"heldout"`` or ``"all"``."""

    def __init__(self, length: int, seed: int = 0, split: str = "train", spec: VideoSpec | None = None) -> None:
        self.length = length
        self.seed = seed
        self.spec = spec
        self.combos = combos(spec, split)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        video, attrs = make_clip(self.seed, index, self.combos, self.spec)
        text = caption(*attrs)
        return {"video": video, "caption": text, "input_ids": tokenize(text)[0], "attributes": attrs}
