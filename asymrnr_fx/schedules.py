"""The paper's published schedules: tier tables shipped with the package, and their threshold maps.

A published schedule describes a model in two parts. The *tier tables* (``h``, ``q``,
``k``, ``v``; each ``[blocks, steps]`` of small integers, constant inside each cache
window) bin the measured redundancy of each block and denoising step; they live in
``asymrnr_fx/data/official/`` as safetensors files. A *threshold map* per feature
(``{tier: ratio}``) turns tiers into ratios with :func:`tiers_to_ratios`: a cell takes the
largest ratio whose threshold its tier reaches. The ``v`` tiers drive the K/V ratio
(K is pruned with V's matching). :data:`PUBLISHED` lists, per model, the tier file, the
stride and cache window it was published for, and its operating points (``"base"``,
``"fast"``), each a ``(q map, v map)`` pair.

:meth:`asymrnr_fx.plan.Plan.published` builds a plan from one of these;
:mod:`asymrnr_fx.calibration.budget` maps the threshold maps onto a calibrated model's
tiers. Imports torch and the standard library only (safetensors is loaded on use).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Mapping

import torch


@dataclass(frozen=True)
class PublishedSchedule:
    """One of the paper's tier tables, with the options it was published for."""

    file: str
    stride: tuple[int, int, int]
    cache_window: int
    maps: Mapping[str, tuple[Mapping[int, float], Mapping[int, float]]]  # point -> (q map, v map)


PUBLISHED: dict[str, PublishedSchedule] = {
    "cogvideox-2b": PublishedSchedule(
        "euclidean_cogvideox-2b_cache5.safetensors", (2, 2, 2), 5,
        {"base": ({6: 0.4, 7: 0.8}, {8: 0.3}), "fast": ({6: 0.6, 7: 0.8}, {7: 0.3, 9: 0.4})},
    ),
    "cogvideox-5b": PublishedSchedule("euclidean_cogvideox-5b_cache5.safetensors", (2, 2, 2), 5, {}),
    "mochi": PublishedSchedule(
        "euclidean_mochi_cache3.safetensors", (6, 2, 2), 3,
        {"base": ({10: 0.7}, {14: 0.3}), "fast": ({9: 0.6, 10: 0.7}, {14: 0.3})},
    ),
    "hunyuanvideo": PublishedSchedule(
        "euclidean_hyvideo_cache3.safetensors", (6, 2, 2), 3,
        {"base": ({7: 0.9}, {8: 0.3}), "fast": ({5: 0.3, 7: 0.9}, {8: 0.3})},
    ),
    "fastvideo-hunyuan": PublishedSchedule(
        "euclidean_fast-hyvideo_cache1.safetensors", (6, 2, 2), 1,
        {"base": ({7: 0.9}, {8: 0.3}), "fast": ({7: 0.9}, {8: 0.4})},
    ),
}


def published_schedule(model: str) -> PublishedSchedule:
    """The entry of :data:`PUBLISHED` for ``model``; an unknown model is an error listing the known ones."""
    sched = PUBLISHED.get(model)
    if sched is None:
        raise ValueError(f"no published schedule for {model!r}; known: {sorted(PUBLISHED)}")
    return sched


def published_tiers(model: str) -> dict[str, torch.Tensor]:
    """The tier tables (``h``, ``q``, ``k``, ``v``; each ``[blocks, steps]``) shipped for ``model``."""
    from safetensors.torch import load_file

    ref = resources.files("asymrnr_fx") / "data" / "official" / published_schedule(model).file
    with resources.as_file(ref) as path:
        return load_file(str(path))


def tiers_to_ratios(tiers: torch.Tensor, threshold_map: Mapping[int, float]) -> torch.Tensor:
    """The paper's rule: a cell takes the largest ratio whose threshold is <= its tier (else 0)."""
    out = torch.zeros(tiers.shape, dtype=torch.float64)
    for threshold, ratio in threshold_map.items():
        out = torch.where(tiers >= int(threshold), torch.clamp(out, min=float(ratio)), out)
    return out
