"""Prompt accuracy of a toy model: sample prompts, read the attributes back with :mod:`.scorer`.

Why its own module: training, ``--eval-only`` and the shipped-weights test all score the same
way, and none of them should need the training loop to do it.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import dataset, scorer
from .model import DEFAULT_GUIDANCE, ToyModel, generate


def evaluate(
    model: ToyModel, n: int = 48, num_steps: int = 20, guidance_scale: float = DEFAULT_GUIDANCE, seed: int = 1234,
    batch: int = 8, spec: dataset.VideoSpec | None = None, splits: tuple[str, ...] = ("heldout", "train"),
    transformer: Callable | None = None,
) -> dict[str, dict]:
    """Prompt accuracy of generated videos on held-out and training prompts (cycled so every
    combination is used about equally), scored by :mod:`.scorer`. ``spec`` overrides the
    model's geometry (e.g. the short clips of an early training stage); ``transformer`` (e.g.
    an AsymRnR-transformed copy) replaces ``model.transformer`` with the same prompts and noise."""
    results = {}
    for split in splits:
        combos = dataset.combos(spec or model.spec, split)
        order = torch.randperm(len(combos), generator=torch.Generator().manual_seed(seed)).tolist()
        attrs = [combos[order[i % len(combos)]] for i in range(n)]
        videos = []
        for start in range(0, n, batch):
            chunk = attrs[start : start + batch]
            videos.append(
                generate([dataset.caption(*a) for a in chunk], num_steps=num_steps, seed=seed + start,
                         guidance_scale=guidance_scale, model=model, spec=spec, transformer=transformer)
            )
        acc = scorer.prompt_accuracy(torch.cat(videos), attrs, spec=spec or model.spec)
        acc.pop("predictions")
        results[split] = acc
    results["chance"] = scorer.chance_levels()
    return results
