"""Tiny procedural text-to-video demo models (CogVideoX transformers on pixel videos): the
first on 8x24x24 clips (576 video tokens, ``weights/toy_t2v.safetensors``, the default), the
second on 16x32x32 clips (2048 video tokens, ``checkpoints/v2_final.safetensors``, not shipped:
it learned less than the first); see ``README.md`` in this folder.

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
