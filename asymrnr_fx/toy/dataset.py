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

Layout (imports point downward): :mod:`.spec` holds the spec, words, split and tokenizer;
:mod:`.rendering` draws a clip from its parameters; this module makes the seeded clips and
batches, and re-exports both, so every name below is importable as ``dataset.X``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from .rendering import (
    RING_HOLE,
    ClipParams,
    render,
    sample_params,
    shape_disagreement,
)
from .spec import (
    ALL_COMBOS,
    COLOUR_NAMES,
    COLOURS,
    DEFAULT_SPEC,
    DIRECTION_NAMES,
    DIRECTIONS,
    EDGE_MARGIN,
    HEIGHT,
    HELDOUT_COMBOS,
    KNOWN_SPECS,
    MAX_TOKENS,
    NUM_FRAMES,
    OBJECT_SIZE,
    OBJECT_SPEED,
    PAD,
    PAD_ID,
    SHAPE_WORDS,
    SHAPES,
    SPEC_V1,
    SPEC_V2,
    SPEC_V3,
    TRAIN_COMBOS,
    UNK,
    VOCAB,
    WIDTH,
    WORD_TO_ID,
    Attributes,
    VideoSpec,
    caption,
    combos,
    detokenize,
    half_extent,
    parse_caption,
    spec_for_geometry,
    tokenize,
)

__all__ = [
    # spec.py
    "ALL_COMBOS", "COLOUR_NAMES", "COLOURS", "DEFAULT_SPEC", "DIRECTION_NAMES", "DIRECTIONS", "EDGE_MARGIN",
    "HEIGHT", "HELDOUT_COMBOS", "KNOWN_SPECS", "MAX_TOKENS", "NUM_FRAMES", "OBJECT_SIZE", "OBJECT_SPEED", "PAD",
    "PAD_ID", "SHAPE_WORDS", "SHAPES", "SPEC_V1", "SPEC_V2", "SPEC_V3", "TRAIN_COMBOS", "UNK", "VOCAB", "WIDTH",
    "WORD_TO_ID", "Attributes", "VideoSpec", "caption", "combos", "detokenize", "half_extent", "parse_caption",
    "spec_for_geometry", "tokenize",
    # rendering.py
    "RING_HOLE", "ClipParams", "render", "sample_params", "shape_disagreement",
    # here
    "make_clip", "make_batch", "make_training_batch", "ToyVideoDataset",
]


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
