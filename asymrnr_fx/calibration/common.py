"""Helpers every calibration module shares: what a generation target is, what it produced,
cache keys, JSON-safe metadata, progress bars.

The lowest module of :mod:`asymrnr_fx.calibration`: it imports only the core, so the
modules above it (sampling, recording, result, measure, sensitivity, probes) can all use
it without importing each other.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..plan import Plan


def is_pipeline(obj: Any) -> bool:
    """A diffusers-style pipeline: not a module itself, but holds a ``transformer`` module."""
    return not isinstance(obj, nn.Module) and isinstance(getattr(obj, "transformer", None), nn.Module)


def first_tensor(result: Any) -> torch.Tensor:
    """The tensor a generation produced: a tensor, the first tensor of a tuple/list/dict, or a pipeline output."""
    if isinstance(result, torch.Tensor):
        return result
    for attr in ("frames", "videos", "images", "sample"):
        value = getattr(result, attr, None)
        if value is not None and not callable(value):
            return first_tensor(value)
    if isinstance(result, Mapping):
        result = list(result.values())
    if isinstance(result, (list, tuple)):
        for item in result:
            with contextlib.suppress(TypeError):
                return first_tensor(item)
    if hasattr(result, "__array__"):
        return torch.as_tensor(result)
    raise TypeError(
        f"cannot find the output tensor in a {type(result).__name__}; make the generation callable return a tensor"
    )


# =========================================================================== cache keys
def fingerprint(obj: Any, _depth: int = 0) -> str:
    """A stable digest of models, tensors, inputs and callables, for cache keys.

    Modules hash their class, config and cheap per-parameter moments (sum, sum of squares,
    a strided sample); callables hash their code, constants, defaults and closure values.
    """
    h = hashlib.sha256()

    def put(x: Any) -> None:
        h.update(repr(x).encode())

    if _depth > 6:
        put(type(obj).__name__)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        put((tuple(t.shape), str(t.dtype)))
        if t.numel():
            flat = t.reshape(-1)
            if t.is_floating_point() or t.is_complex():
                flat = flat.double() if not t.is_complex() else torch.view_as_real(flat).double().reshape(-1)
            else:
                flat = flat.long()
            sample = flat[:: max(1, flat.numel() // 4096)]
            put((float(flat.double().sum()), float(flat.double().square().sum()), sample.tolist()))
    elif isinstance(obj, nn.Module):
        config = getattr(obj, "config", None)
        put((type(obj).__qualname__, dict(config) if isinstance(config, Mapping) else repr(config)))
        for name, p in obj.state_dict().items():
            put(name)
            put(fingerprint(p, _depth + 1))
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=repr):
            put((repr(k), fingerprint(obj[k], _depth + 1)))
    elif isinstance(obj, (list, tuple)):
        put(type(obj).__name__)
        for item in obj:
            put(fingerprint(item, _depth + 1))
    elif isinstance(obj, Plan):
        put((obj.options(), fingerprint(obj.table("q"), _depth + 1), fingerprint(obj.table("kv"), _depth + 1)))
    elif callable(obj) and hasattr(obj, "__code__"):
        code = obj.__code__
        put((getattr(obj, "__qualname__", ""), code.co_code, repr(code.co_consts), code.co_names))
        for value in (obj.__defaults__ or ()) + tuple(c.cell_contents for c in (obj.__closure__ or ()) if _cell_ok(c)):
            put(fingerprint(value, _depth + 1))
    elif is_pipeline(obj):
        for name in ("transformer", "scheduler"):
            put(fingerprint(getattr(obj, name, None), _depth + 1))
    else:
        put((type(obj).__qualname__, obj if isinstance(obj, (int, float, str, bool, type(None))) else repr(obj)[:200]))
    return h.hexdigest()


def _cell_ok(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def default_cache_dir() -> Path:
    """``$ASYMRNR_FX_CACHE`` or ``~/.cache/asymrnr_fx``."""
    return Path(os.environ.get("ASYMRNR_FX_CACHE") or Path.home() / ".cache" / "asymrnr_fx")


# =========================================================================== metadata, progress
def jsonable(obj: Any) -> Any:
    """``obj`` with mappings and sequences kept and anything else not JSON-native as its repr."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return repr(obj)


def progress_bar(enabled: bool, total: int | None, desc: str) -> Any:
    """A tqdm bar counting steps, or None when ``enabled`` is false (tqdm is imported only then)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")
