"""Tiny procedural text-to-video demo model (CogVideoX transformer on 8x24x24 pixel videos).

Import submodules directly (``asymrnr_fx.toy.model``, ``.dataset``, ``.scorer``); the
convenience names below are loaded lazily so that importing the dataset does not pull in
diffusers.
"""

from __future__ import annotations

__all__ = ["load_toy_model", "generate", "prompt_accuracy"]


def __getattr__(name: str):
    if name in ("load_toy_model", "generate"):
        from . import model

        return getattr(model, name)
    if name == "prompt_accuracy":
        from . import scorer

        return scorer.prompt_accuracy
    raise AttributeError(name)
