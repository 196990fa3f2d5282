"""What a clip stream is: geometry (:class:`VideoSpec`), attribute words and split, captions, tokenizer.

Why its own module: model configs, prompt lists and the scorer need these without drawing a
pixel (that is :mod:`.rendering`); :mod:`.dataset` re-exports every name (``dataset.X``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

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


# ---------------------------------------------------------------- shape extents


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
