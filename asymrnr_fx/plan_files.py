"""The plan file format, read and written by :meth:`Plan.load <asymrnr_fx.plan.Plan.load>` / :meth:`~asymrnr_fx.plan.Plan.save`.

A plan file is a safetensors file with two float64 tensors, ``q`` and ``kv`` (0-d for a
uniform plan, ``[sites, steps]`` for a table), and the plan's options (every non-ratio
field, :data:`asymrnr_fx.plan.OPTIONS`) as a JSON object in the metadata entry
:data:`META_KEY`. Reading checks the container (a readable safetensors file, metadata
present and a flat JSON object, both tensors present, tables of a sane size) and hands back
the raw field values; the fields themselves are checked by the :class:`~asymrnr_fx.plan.Plan`
built from them, so a bad value in a file is reported like a bad argument, naming the file.
Plan files are shared between users, so no file, however hostile, gets past
:func:`read_plan` with anything but a :class:`~asymrnr_fx.plan_fields.PlanError` naming it
(or the ``ValueError`` of a file that is no plan at all).

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
#: Longest integer literal read from the metadata: every integer field fits in 19 digits, and
#: converting thousands of digits is slow and refused by Python (``sys.get_int_max_str_digits``).
MAX_INT_DIGITS = 100
#: Deepest nesting of an option value read from a file (stride and grid are lists: depth 1).
MAX_OPTION_DEPTH = 8
_RESAVE = "re-save the plan with Plan.save"


class _LongInt:
    """An integer literal too long to convert: kept unconverted so the error can name its field."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"<{self.digits}-digit integer>"


def write_plan(path: str | Path, tables: Mapping[str, torch.Tensor], options: Mapping[str, Any]) -> Path:
    """Write ratio tensors and JSON-ready options as a plan file."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: t.contiguous() for k, t in tables.items()}, str(path), metadata={META_KEY: json.dumps(options)})
    return path


def read_plan(path: str | Path) -> dict[str, Any]:
    """The field values stored in a plan file (options plus ``q`` and ``kv`` tensors), unvalidated.

    Errors about the container name the file: a file without :data:`META_KEY` is not a plan
    (``ValueError``); a file safetensors cannot read, a missing tensor, an oversized table, or
    metadata that is not a JSON object (or holds repeated keys, integers too long to convert or
    deep nesting) raise :class:`~asymrnr_fx.plan_fields.PlanError`.
    """
    where = str(path)
    meta, tables = _read_container(where)
    opts = _parse_options(meta, where)
    for k in FEATURES:
        if k in opts:
            raise PlanError(k, "ratios belong in the file's tensors, not in its options", where)
    return {**opts, **tables}


def _read_container(where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The metadata entry and the ratio tensors; a file safetensors cannot read is a PlanError, not its own error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(where, framework="pt") as f:
            meta = (f.metadata() or {}).get(META_KEY)
            if meta is None:
                raise ValueError(
                    f"{where} is not an asymrnr_fx plan (no {META_KEY!r} metadata); "
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
    except SafetensorError as e:  # bad header, invalid UTF-8, overflowing shapes, truncated data, unknown dtypes
        raise PlanError("file", f"is not a readable safetensors file ({e}); {_RESAVE}", where) from None
    return meta, tables


def _parse_options(meta: str, where: str) -> dict[str, Any]:
    """The options object of the metadata; anything JSON can hold but no options object can is a PlanError."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of repeated keys, another reader the first: the file would be two plans
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise PlanError(key[:80], f"appears more than once in the metadata; {_RESAVE}", where)
            seen.add(key)
        return dict(pairs)

    def integer(text: str) -> int | _LongInt:
        return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else _LongInt(text)

    try:
        opts = json.loads(meta, object_pairs_hook=unique, parse_int=integer)
    except json.JSONDecodeError as e:
        raise PlanError("options", f"metadata is not valid JSON ({e}); {_RESAVE}", where) from None
    except RecursionError:  # the parser recurses per nesting level; a plan's options are nested once
        raise PlanError("options", f"metadata is malformed (JSON nested too deeply to read); {_RESAVE}", where) from None
    if not isinstance(opts, dict):
        raise PlanTypeError("options", f"metadata must be a JSON object, got {type(opts).__name__}", where)
    for key, value in opts.items():
        problem = _unreadable(value)
        if problem:
            raise PlanError(key[:80], problem, where)
    return opts


def _unreadable(value: Any) -> str | None:
    """Why a parsed option value cannot even be checked (a long integer, deep nesting), or None.

    Walks without recursion, so the field checks and their error messages never meet
    either (printing a deep list recurses too).
    """
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, _LongInt):
            return f"must be an integer in its allowed range, got a {v.digits}-digit integer"
        if isinstance(v, (list, dict)):
            if depth == MAX_OPTION_DEPTH:
                return f"is nested more than {MAX_OPTION_DEPTH} levels deep (options are numbers, strings or lists); {_RESAVE}"
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return None
