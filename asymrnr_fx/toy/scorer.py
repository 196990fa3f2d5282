"""Automatic "prompt accuracy" for toy videos: recover (colour, shape, direction) by plain
image analysis, so that generation quality (e.g. after token reduction) can be measured
without a learned judge.

Why it works: objects are saturated palette colours, backgrounds are desaturated, so
chroma (max - min channel) separates the foreground without background modelling, which
also makes it immune to the camera pan. Shape comes from template matching: per frame, the
(speckle-cleaned) mask is compared (IoU) with an ideal square, circle and upright triangle of
the same area placed at the mask's centroid; the best mean IoU over frames wins. Direction
comes from a least-squares fit of the per-frame centroid track.

Why template matching (it replaced a bounding-box rule: fill ratio > 0.9 = square, top/bottom
mass ratio < 0.65 = triangle): both are exact on clean ground-truth clips, but one stray pixel
widens a bounding box, so on blurred + noisy ground truth (Gaussian blur 1 px + noise 0.1) the
old rule called ~half of the squares circles (shape accuracy 0.73-0.76) while IoU against
area-matched templates stays at 1.00 (16x32x32 clips, even at blur 1.5 px + noise 0.2). A
shapeless blob is still scored as a circle, as before.

Geometry: the object size (for the stray-pixel radius) comes from a ``dataset.VideoSpec``;
when none is given it is looked up from the video's shape (``dataset.spec_for_geometry``), so
videos of the first (8x24x24) and second (16x32x32) toy model are both scored correctly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import dataset, rendering

CHROMA_THRESHOLD = 0.3  # background chroma stays below ~0.2, object colours are above ~0.7
MAX_COLOUR_DISTANCE = 0.45  # RGB distance to the chosen palette colour for a pixel to count
OBJECT_RADIUS = 9.0  # objects are 11 px wide; drop stray pixels farther than this from the median
# (scaled with the object size of other specs: a 14 px square's corners are 9.9 px from its centre)
MIN_PIXELS = 4  # frames with fewer object pixels are ignored

_PALETTE = np.array([dataset.COLOURS[c] for c in dataset.COLOUR_NAMES])


def _to_rgb(video: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[F, 3, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` in [0, 1] (float64 numpy)."""
    if isinstance(video, torch.Tensor):
        video = video.detach().float().cpu().numpy()
    return np.clip((np.asarray(video, dtype=np.float64).transpose(0, 2, 3, 1) + 1.0) / 2.0, 0.0, 1.0)


def _spec_of(video: torch.Tensor | np.ndarray, spec: dataset.VideoSpec | None) -> dataset.VideoSpec:
    if spec is not None:
        return spec
    frames, _, h, w = video.shape
    return dataset.spec_for_geometry(frames, h, w)


def object_radius(spec: dataset.VideoSpec) -> float:
    """Stray-pixel radius for ``spec``'s object size (exactly ``OBJECT_RADIUS`` for 11 px objects)."""
    return OBJECT_RADIUS * spec.object_size / dataset.OBJECT_SIZE


def object_masks(video: torch.Tensor | np.ndarray, spec: dataset.VideoSpec | None = None) -> tuple[str, np.ndarray]:
    """Dominant object colour name and boolean object masks ``[F, H, W]``."""
    radius = object_radius(_spec_of(video, spec))
    rgb = _to_rgb(video)
    chroma = rgb.max(-1) - rgb.min(-1)
    dist = np.linalg.norm(rgb[..., None, :] - _PALETTE, axis=-1)  # [F, H, W, K]
    nearest = dist.argmin(-1)
    candidate = chroma > CHROMA_THRESHOLD
    if not candidate.any():
        return "none", np.zeros(chroma.shape, dtype=bool)
    votes = np.bincount(nearest[candidate], weights=chroma[candidate], minlength=len(_PALETTE))
    k = int(votes.argmax())
    masks = candidate & (nearest == k) & (dist[..., k] < MAX_COLOUR_DISTANCE)
    # Keep only pixels near each frame's median position (removes speckle elsewhere).
    for f in range(masks.shape[0]):
        ys, xs = np.nonzero(masks[f])
        if len(ys) == 0:
            continue
        keep = (ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2 <= radius**2
        masks[f] = False
        masks[f, ys[keep], xs[keep]] = True
    return dataset.COLOUR_NAMES[k], masks


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Drop isolated pixels (< 2 of 8 neighbours set) and fill pinholes (>= 6 of 8 set).
    Corners survive: a square's corner pixel has 3 set neighbours."""
    h, w = mask.shape
    p = np.pad(mask, 1).astype(np.int32)
    neighbours = sum(p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)
    return (mask & (neighbours >= 2)) | (~mask & (neighbours >= 6))


# Size parameter of each shape per sqrt(area): square s^2, circle pi s^2 / 4, triangle s^2 / 2;
# ring and bar from their drawn extents at size 1 (``dataset.half_extent``), so the templates
# follow the dataset if those change.
_RING_R = dataset.half_extent("ring", 1.0)[0]
_BAR_HX, _BAR_HY = dataset.half_extent("bar", 1.0)
_SIDE_PER_SQRT_AREA = {
    "square": 1.0,
    "circle": 2.0 / np.sqrt(np.pi),
    "triangle": np.sqrt(2.0),
    "ring": 1.0 / np.sqrt(np.pi * _RING_R**2 * (1 - dataset.RING_HOLE**2)),
    "bar": 1.0 / np.sqrt(4 * _BAR_HX * _BAR_HY),
}


def shape_ious(mask: np.ndarray, shapes: Sequence[str] = dataset.SHAPES) -> np.ndarray | None:
    """IoU of one (cleaned) frame mask with each of ``shapes`` drawn with the mask's area
    and centroid (the upright triangle's centroid lies side/6 below its box centre);
    ``None`` if the mask has fewer than ``MIN_PIXELS`` pixels."""
    mask = clean_mask(mask)
    ys, xs = np.nonzero(mask)
    if len(ys) < MIN_PIXELS:
        return None
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5  # pixel centres
    ious = []
    for shape in shapes:
        side = _SIDE_PER_SQRT_AREA[shape] * np.sqrt(len(ys))
        centre_y = cy - side / 6.0 if shape == "triangle" else cy
        cov = rendering._shape_coverage(shape, cx, centre_y, side, *mask.shape)
        ious.append(np.minimum(mask, cov).sum() / np.maximum(mask, cov).sum())
    return np.array(ious)


def classify_shape(masks: np.ndarray, shapes: Sequence[str] = dataset.SHAPES) -> str:
    """Shape (of ``shapes``, the model's) whose area-matched template has the best IoU with the
    masks, averaged over frames."""
    ious = [x for x in (shape_ious(m, shapes) for m in masks) if x is not None]
    if not ious:
        return "none"
    return shapes[int(np.mean(ious, axis=0).argmax())]


def _shape_features(mask: np.ndarray) -> tuple[float, float]:
    """(fill ratio of the bounding box, top-half / bottom-half pixel ratio) of one mask."""
    ys, xs = np.nonzero(mask)
    h = ys.max() - ys.min() + 1
    w = xs.max() - xs.min() + 1
    fill = len(ys) / float(h * w)
    mid = (ys.min() + ys.max()) / 2.0
    top = np.sum(ys < mid) + 0.5 * np.sum(ys == mid)
    bottom = len(ys) - top
    return fill, top / max(bottom, 1e-6)


def classify_shape_bbox(masks: np.ndarray) -> str:
    """The first scorer's bounding-box rule (kept for comparison; see the module docstring).
    Upright triangle: about 1/3 as many pixels in the top half as in the bottom half.
    Square vs circle: a square fills its bounding box, a circle fills about pi/4 of it."""
    feats = [_shape_features(m) for m in masks if m.sum() >= MIN_PIXELS]
    if not feats:
        return "none"
    fill, asym = np.median(np.array(feats), axis=0)
    if asym < 0.65:
        return "triangle"
    return "square" if fill > 0.9 else "circle"


def classify_direction(masks: np.ndarray) -> str:
    """Sign of the dominant axis of the least-squares centroid velocity."""
    frames, cx, cy = [], [], []
    for f, m in enumerate(masks):
        if m.sum() >= MIN_PIXELS:
            ys, xs = np.nonzero(m)
            frames.append(f)
            cx.append(xs.mean())
            cy.append(ys.mean())
    if len(frames) < 2:
        return "none"
    vx = np.polyfit(frames, cx, 1)[0]
    vy = np.polyfit(frames, cy, 1)[0]
    if abs(vx) >= abs(vy):
        return "right" if vx > 0 else "left"
    return "down" if vy > 0 else "up"


def predict_attributes(video: torch.Tensor | np.ndarray, spec: dataset.VideoSpec | None = None) -> tuple[str, str, str]:
    """(colour, shape, direction) of one video ``[F, 3, H, W]`` in [-1, 1]; ``"none"`` if unsure."""
    spec = _spec_of(video, spec)
    colour, masks = object_masks(video, spec)
    if colour == "none":
        return "none", "none", "none"
    return colour, classify_shape(masks, spec.shapes), classify_direction(masks)


def chance_levels() -> dict[str, float]:
    """Accuracy of uniform guessing, for reference."""
    c, s, d = len(dataset.COLOUR_NAMES), len(dataset.SHAPES), len(dataset.DIRECTION_NAMES)
    return {"colour": 1 / c, "shape": 1 / s, "direction": 1 / d, "all": 1 / (c * s * d), "colour_direction": 1 / (c * d)}


def prompt_accuracy(
    videos: torch.Tensor | Sequence[torch.Tensor], attributes: Sequence[tuple[str, str, str] | str],
    spec: dataset.VideoSpec | None = None,
) -> dict:
    """Per-attribute, all-three and colour-and-direction accuracies of ``videos``
    ``[B, F, 3, H, W]`` against the requested attributes (triples or captions).
    Also returns ``n`` and the predicted triples."""
    targets = [dataset.parse_caption(a) if isinstance(a, str) else tuple(a) for a in attributes]
    if len(videos) != len(targets):
        raise ValueError("need one attribute triple per video")
    preds = [predict_attributes(v, spec) for v in videos]
    hits = np.array([[p[i] == t[i] for i in range(3)] for p, t in zip(preds, targets)], dtype=float)
    return {
        "colour": float(hits[:, 0].mean()),
        "shape": float(hits[:, 1].mean()),
        "direction": float(hits[:, 2].mean()),
        "all": float(hits.all(axis=1).mean()),
        # colour and direction together: the attributes the shipped weights actually follow
        "colour_direction": float((hits[:, 0] * hits[:, 2]).mean()),
        "n": len(targets),
        "predictions": preds,
    }
