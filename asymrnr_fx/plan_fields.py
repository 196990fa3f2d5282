"""The vocabulary of a :class:`~asymrnr_fx.plan.Plan`: its errors, limits and per-field checks.

Every plan field is declared with :func:`option`: a default, a *check*, a *stage* and
whether calibrations are measured under it. A check takes ``(field name, value)`` and
returns the canonical value (tuples instead of lists, ``float`` instead of tensors, nested
tuples for a ratio table) or raises :class:`PlanError` naming the field, so a bad value
is reported the same way whether it came from a constructor, :func:`dataclasses.replace`
or a plan file. Checks that involve several fields (ratio range against the stride, table
shapes, ``symmetric``) need the whole plan and live in :mod:`asymrnr_fx.plan`.

This module knows nothing about the method itself; it imports torch and the standard
library only.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import field
from typing import Any, Callable, Sequence, Union

import torch

from .errors import PlanError, PlanTypeError  # noqa: F401  (defined in the leaf errors.py; imported from here too)

#: The two reduced features: queries, and keys/values (K pruned with V's matching).
FEATURES: tuple[str, ...] = ("q", "kv")
TEXT_POSITIONS: tuple[str, ...] = ("auto", "first", "last")
DSTS: tuple[str, ...] = ("random", "fixed")
#: Field groups: fixed at capture, read on every call, or a label only.
STAGES: tuple[str, ...] = ("capture", "schedule", "label")
#: Longest plan name accepted (a name is a label for reports and file listings).
MAX_NAME_CHARS = 200
#: Most cells a ratio table may have (sites x steps); a million is far beyond any real model.
MAX_TABLE_CELLS = 1 << 20
#: Largest stride or grid extent along one axis, in tokens: far beyond any real video, and small
#: enough that a whole grid (three axes) still counts its tokens in int64.
MAX_EXTENT = 1 << 20
#: Integer fields that are counters or seeds stay below this, so they fit an int64 everywhere.
MAX_INT64 = 2**63

#: A ratio field after validation: one number, or a [sites, steps] table as nested tuples.
Ratios = Union[float, tuple[tuple[float, ...], ...]]
#: What a ratio field accepts: a number, or a [sites, steps] tensor, array or nested sequence.
RatiosLike = Union[float, torch.Tensor, Sequence[Sequence[float]]]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def option(default: Any, check: Callable[[str, Any], Any], stage: str, *, calibrated: bool = False) -> Any:
    """Declare a plan field: its default, its check, its stage, and whether a calibration is measured under it."""
    assert stage in STAGES
    return field(default=default, metadata={"check": check, "stage": stage, "calibrated": calibrated})


def describe(value: Any) -> str:
    """A value's type and a short repr, for error messages; never fails, so a hostile value still gets its error."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's int/str digit limit, alone or inside a container
        text = f"<{value.bit_length()}-bit integer>" if isinstance(value, int) else "<holds an integer too long to print>"
    except RecursionError:
        text = "<nested too deeply to print>"
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def check_feature(feature: str) -> str:
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    return feature


# =========================================================================== field checks
# Each check takes (field name, value) and returns the canonical value or raises PlanError.
def _integer(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PlanTypeError(name, f"must be {what}, got {describe(value)}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PlanTypeError(name, f"must be True or False, got {describe(value)}")
    return value


def choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    """A check accepting one of ``choices``."""

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise PlanTypeError(name, f"must be one of {choices}, got {describe(value)}")
        if value not in choices:
            raise PlanError(name, f"unknown {name} {value!r}; use one of {choices}")
        return value

    return check


def _triple(name: str, value: Any, what: str, low: int = 1) -> tuple[int, int, int]:
    kind = "positive integers" if low == 1 else f"integers >= {low}"
    what = f"{what}, each at most {MAX_EXTENT}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, torch.Size)):
        raise PlanTypeError(name, f"must be three {kind} {what}, got {describe(value)}")
    if len(value) != 3:
        raise PlanError(name, f"must be three {kind} {what}, got {len(value)} values {tuple(value)}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise PlanTypeError(name, f"must be three {kind} {what}; element {i} is {describe(v)}")
        out.append(int(v))
    out = tuple(out)
    if any(not low <= v <= MAX_EXTENT for v in out):  # a huge extent overflows the tile arithmetic
        raise PlanError(name, f"must be three {kind} {what}, got {describe(out)}")
    return out  # type: ignore[return-value]


def check_stride(name: str, value: Any) -> tuple[int, int, int]:
    return _triple(name, value, "(frames, height, width): the tile size in tokens")


def check_grid(name: str, value: Any) -> tuple[int, int, int] | None:
    return None if value is None else _triple(name, value, "(frames, height, width): the video size in tokens, or None")


def check_window(name: str, value: Any) -> tuple[int, int, int] | None:
    """A search radius in tiles per axis (0: the src token's own tile), or None (the whole video)."""
    what = "(frames, rows, columns): how many tiles from a src token's own its dst may lie, or None"
    return None if value is None else _triple(name, value, what, low=0)


def check_cache_window(name: str, value: Any) -> int:
    window = _integer(name, value, "a whole number of denoising steps >= 1")
    if not 1 <= window < MAX_INT64:
        raise PlanError(name, f"must be in [1, 2**63) (1 = match at every step), got {describe(window)}")
    return window


def check_shards(name: str, value: Any) -> int:
    shards = _integer(name, value, "a whole number of sequence shards >= 1")
    if not 1 <= shards <= 4096:
        raise PlanError(name, f"must be in [1, 4096] (1 = the whole video), got {describe(shards)}")
    return shards


def check_seed(name: str, value: Any) -> int:
    seed = _integer(name, value, "an integer in [0, 2**63)")
    if not 0 <= seed < MAX_INT64:
        raise PlanError(name, f"must be in [0, 2**63), got {describe(seed)}")
    return seed


def check_name(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PlanTypeError(name, f"must be a string, got {describe(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise PlanError(name, f"is {len(value)} characters long; at most {MAX_NAME_CHARS} are allowed")
    try:  # a lone surrogate (e.g. "\\ud800" in a file's JSON) cannot be written to a report or listing
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PlanError(name, f"is not valid Unicode text ({e.reason} at character {e.start})") from None
    return value


def check_ratios(name: str, value: Any) -> Ratios:
    """A number, or a [sites, steps] table (tensor, array or nested sequence); range is checked with the stride."""
    what = "a ratio in [0, 1) or a [sites, steps] table of ratios"
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise PlanTypeError(name, f"must be {what}, got {describe(value)}")
    if isinstance(value, numbers.Real):
        try:
            ratio = float(value)
        except OverflowError:  # an int beyond float range is no ratio either
            ratio = math.inf
        if not math.isfinite(ratio):
            raise PlanError(name, f"ratios must be finite numbers; got {ratio}")
        return ratio
    try:
        t = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PlanTypeError(name, f"must be {what}, got {describe(value)} ({e})") from None
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise PlanTypeError(name, f"must be {what}; got a table of {t.dtype}")
    try:  # packed and exotic float dtypes (e.g. float4_e2m1fn_x2, from a file) have no conversion
        t = t.to(torch.float64)
    except (RuntimeError, NotImplementedError) as e:
        raise PlanTypeError(name, f"must be {what}; a table of {t.dtype} cannot be read as ratios ({e})") from None
    if t.dim() == 0:
        return check_ratios(name, float(t))
    if t.numel() == 0:
        raise PlanError(name, f"table is empty (shape {tuple(t.shape)}); it needs at least one site and one step")
    if t.dim() != 2:
        raise PlanError(name, f"must be {what}; got shape {tuple(t.shape)}")
    if t.numel() > MAX_TABLE_CELLS:
        raise PlanError(name, f"table of shape {tuple(t.shape)} has more than {MAX_TABLE_CELLS} cells")
    if not bool(torch.isfinite(t).all()):
        raise PlanError(name, "ratios must be finite numbers; found NaN or inf")
    return tuple(tuple(row) for row in t.tolist())
