"""The plan file format, read and written by :meth:`Plan.load <asymrnr_fx.plan.Plan.load>` / :meth:`~asymrnr_fx.plan.Plan.save`.

A plan file is a safetensors file with two float64 tensors, ``q`` and ``kv`` (0-d for a
uniform plan, ``[sites, steps]`` for a table), and the plan's options (every non-ratio
field, :data:`asymrnr_fx.plan.OPTIONS`) as a JSON object in the metadata entry
:data:`META_KEY`. Reading checks the container (metadata present and a JSON object, both
tensors present, tables of a sane size) and hands back the raw field values; the fields
themselves are checked by the :class:`~asymrnr_fx.plan.Plan` built from them, so a bad
value in a file is reported like a bad argument, naming the file.

Imports torch and the standard library only (safetensors is loaded on use).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from .plan_fields import FEATURES, MAX_TABLE_CELLS, PlanError, PlanTypeError

#: The safetensors metadata entry that holds a plan's options (and marks a file as a plan).
META_KEY = "asymrnr_fx.plan"


def write_plan(path: str | Path, tables: Mapping[str, torch.Tensor], options: Mapping[str, Any]) -> Path:
    """Write ratio tensors and JSON-ready options as a plan file."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: t.contiguous() for k, t in tables.items()}, str(path), metadata={META_KEY: json.dumps(options)})
    return path


def read_plan(path: str | Path) -> dict[str, Any]:
    """The field values stored in a plan file (options plus ``q`` and ``kv`` tensors), unvalidated.

    Errors about the container name the file: a file without :data:`META_KEY` is not a plan
    (``ValueError``); a missing tensor, an oversized table or metadata that is not a JSON
    object raise :class:`~asymrnr_fx.plan_fields.PlanError`.
    """
    from safetensors import safe_open

    where = str(path)
    with safe_open(where, framework="pt") as f:
        meta = (f.metadata() or {}).get(META_KEY)
        if meta is None:
            raise ValueError(
                f"{path} is not an asymrnr_fx plan (no {META_KEY!r} metadata); "
                "for the paper's tier tables use Plan.from_tiers(path, q_map, kv_map)"
            )
        tables = {}
        for k in FEATURES:
            if k not in f.keys():
                raise PlanError(k, "tensor missing from the plan file", where)
            shape = f.get_slice(k).get_shape()
            if math.prod(shape) > MAX_TABLE_CELLS:
                raise PlanError(k, f"table of shape {tuple(shape)} has more than {MAX_TABLE_CELLS} cells", where)
            tables[k] = f.get_tensor(k)
    try:
        opts = json.loads(meta)
    except json.JSONDecodeError as e:
        raise PlanError("options", f"metadata is not valid JSON ({e})", where) from None
    if not isinstance(opts, dict):
        raise PlanTypeError("options", f"metadata must be a JSON object, got {type(opts).__name__}", where)
    for k in FEATURES:
        if k in opts:
            raise PlanError(k, "ratios belong in the file's tensors, not in its options", where)
    return {**opts, **tables}
