"""Tiny procedural text-to-video demo models (CogVideoX transformers on pixel videos). The newest
file in ``weights/`` is the default everywhere; what each model learned, and which is shipped:
``README.md`` in this folder.

Import submodules directly (``asymrnr_fx.toy.model``, ``.dataset``, ``.scorer``); the
convenience names below are loaded lazily so that importing the dataset does not pull in
diffusers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["load_toy_model", "generate", "prompt_accuracy", "shipped_weights", "newest_weights", "weights_spec"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _version(path: Path) -> int:
    match = re.fullmatch(r"toy_t2v(?:_v(\d+))?", path.stem)
    return int(match.group(1) or 1) if match else 0


def shipped_weights() -> list[Path]:
    """The shipped toy weights files, oldest version first (``toy_t2v.safetensors`` is v1,
    ``toy_t2v_v3.safetensors`` v3; files with a second suffix, e.g. ``*.plan.safetensors``,
    are not weights). Here, not in ``model``, so that finding them does not import diffusers."""
    files = [p for p in WEIGHTS_DIR.glob("toy_t2v*.safetensors") if p.suffixes == [".safetensors"]]
    return sorted(files, key=_version)


def newest_weights() -> Path | None:
    """The highest-versioned shipped weights file (the default everywhere), or None."""
    files = shipped_weights()
    return files[-1] if files else None


def weights_metadata(path: str | Path) -> dict:
    """The configs a weights file carries (JSON metadata, decoded), without loading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def weights_spec(path: str | Path | None = None):
    """The clip geometry and shape words (``dataset.VideoSpec``) a weights file was trained on,
    read from its metadata without loading it (default: :func:`newest_weights`)."""
    from . import dataset

    path = path or newest_weights()
    if path is None:
        return dataset.DEFAULT_SPEC
    meta = weights_metadata(path)
    return dataset.VideoSpec.from_dict(meta["video_spec"]) if "video_spec" in meta else dataset.SPEC_V1


def __getattr__(name: str):
    if name in ("load_toy_model", "generate"):
        from . import model

        return getattr(model, name)
    if name == "prompt_accuracy":
        from . import scorer

        return scorer.prompt_accuracy
    raise AttributeError(name)
