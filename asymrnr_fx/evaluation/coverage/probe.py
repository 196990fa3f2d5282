"""The geometry check: rewritten sites must sit on the model's own video tokens (grid and token layout)."""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .case import TIMESTEPS, Case, Grid
from .registry import config_patch


# =========================================================================== geometry check
def geometry_problem(model: nn.Module, case: Case, report: Any, expected: Grid) -> str | None:
    """Why the rewritten sites of ``report`` do not sit on the model's own video tokens, or None.

    Two checks: every rewritten site's grid equals ``expected`` (the config's patch geometry),
    and a probe: the latents of a few video tokens (corners, centre) are perturbed one at a
    time, and the first attention call of each rewritten site's length tells which sequence
    row moved. That row must be where the site assumes token (f, h, w): ``offset + (f * H +
    h) * W + w``, the offset being the text length when the text comes first. A wrong grid,
    another token order, or a video block at another offset (history or reference tokens
    packed next to it) fail the probe while the outputs stay finite and plausible.
    """
    wrong = [s for s in report.rewritten if s.grid != row_grid(expected, s)]
    if wrong:
        return f"grid {wrong[0].grid} instead of {row_grid(expected, wrong[0])} at {wrong[0].path}"
    return probe_layout(model, case, report.rewritten, expected)


def row_grid(grid: Grid, site: Any) -> Grid:
    """The part of ``grid`` one batch row of the site's calls holds: all of it, or, for factorized
    attention, one frame (spatial: ``(1, H, W)``) or one position over time (temporal: ``(F, 1, 1)``)."""
    fold = getattr(site, "factorized", "")
    return {"spatial": (1, grid[1], grid[2]), "temporal": (grid[0], 1, 1)}.get(fold, grid)


def _row_of(token: Grid, grid: Grid, site: Any) -> int:
    """The sequence row (before any text offset) where ``site`` assumes video token ``token``."""
    _, rh, rw = row_grid(grid, site)
    f, h, w = token
    fold = getattr(site, "factorized", "")
    if fold == "spatial":
        return h * rw + w
    if fold == "temporal":
        return f
    return (f * rh + h) * rw + w


def _record_queries(model: nn.Module, inputs: dict[str, Any]) -> list[tuple[int, int, torch.Tensor]]:
    """(query length, key length, query) of every ``F.scaled_dot_product_attention`` call, in order."""
    import torch.nn.functional as F

    calls: list[tuple[int, int, torch.Tensor]] = []
    original = F.scaled_dot_product_attention

    def record(*args: Any, **kwargs: Any) -> torch.Tensor:
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        calls.append((q.shape[-2], k.shape[-2], q.detach().clone()))
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = record
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        F.scaled_dot_product_attention = original
    return calls


def _perturb(case: Case, model: nn.Module, inputs: dict[str, Any], token: Grid, grid: Grid) -> None:
    """Add noise, in place, to the latents of one video token (f, h, w)."""
    x = inputs[case.key]
    if isinstance(x, (list, tuple)):
        x = x[0]
    f, h, w = token
    if case.layout == "tokens":
        region = x[:, (f * grid[1] + h) * grid[2] + w]
    else:
        pt, ph, pw = config_patch(getattr(model, "config", case.config) or case.config)
        ft, hs, ws = slice(f * pt, (f + 1) * pt), slice(h * ph, (h + 1) * ph), slice(w * pw, (w + 1) * pw)
        region = {
            "BCFHW": lambda: x[:, :, ft, hs, ws], "BFCHW": lambda: x[:, ft, :, hs, ws],
            "BFHWC": lambda: x[:, ft, hs, ws, :], "CFHW": lambda: x[:, ft, hs, ws],
        }[case.layout]()
    g = torch.Generator().manual_seed(7)
    region.add_(torch.randn(region.shape, generator=g).to(region.dtype) * 3 + 3)


def probe_tokens(grid: Grid) -> list[Grid]:
    """Corners and centre of the grid: enough to tell a transposed, shifted or mis-sized grid."""
    f, h, w = grid
    pts = [(0, 0, 0), (f - 1, h - 1, w - 1), (f // 2, h // 2, w // 2), (f - 1, 0, w - 1), (0, h - 1, 0)]
    return list(dict.fromkeys(pts))


def probe_layout(model: nn.Module, case: Case, sites: Iterable[Any], grid: Grid) -> str | None:
    """The probe of :func:`geometry_problem`; None when every rewritten site passes (or cannot be probed)."""
    n_video = math.prod(grid)
    t0 = TIMESTEPS[0]
    base = _record_queries(model, case.inputs(t0))
    todo: dict[tuple, Any] = {}  # one probe per (lengths, kind, text side): such sites share a layout
    per_key: dict[tuple, int] = {}
    for s in sites:
        if s.kind in ("self", "joint", "cross"):
            key = (s.q_len, s.kv_len if s.kind != "cross" else None, s.kind, s.text_position)
            todo.setdefault(key, s)
            per_key[key] = per_key.get(key, 0) + 1
    # where every call of a site's lengths is a rewritten site, each such call must see the latents
    # (a prompt as long as the video would otherwise pass: its call never moves, "no verdict")
    must_move = {i for key, s in todo.items() if s.q_len is not None
                 for calls in [[i for i, (lq, lk, _) in enumerate(base)
                                if lq == s.q_len and (s.kind == "cross" or lk == s.kv_len)]]
                 if len(calls) <= per_key[key] for i in calls}
    moved_once: set[int] = set()
    found: dict[tuple, int] = {}
    for key, s in todo.items():
        for i, (lq, lk, _) in enumerate(base):
            if s.q_len is not None and (lq != s.q_len or (s.kind != "cross" and lk != s.kv_len)):
                continue
            if s.q_len is None and (lq < n_video or lq != lk):  # symbolic length (Mochi): first long self call
                continue
            found[key] = i
            break
    if not found:
        return None
    for token in probe_tokens(grid):
        inputs = case.inputs(t0)
        _perturb(case, model, inputs, token, grid)
        moved = _record_queries(model, inputs)
        if len(moved) != len(base):
            return None  # the call sequence depends on the values: no verdict
        moved_once |= {i for i in must_move if moved[i][2].shape == base[i][2].shape
                       and not torch.equal(moved[i][2], base[i][2])}
        for key, i in found.items():
            s = todo[key]
            want = _row_of(token, grid, s)
            lq, _, q0 = base[i]
            if moved[i][2].shape != q0.shape:
                continue
            d = (moved[i][2] - q0).abs().movedim(-2, 0).reshape(lq, -1).amax(1)
            if not d.max() > 0:
                continue  # this call does not see the latents: no verdict
            row = int(d.argmax())
            offset = lq - math.prod(row_grid(grid, s)) if (s.kind == "joint" and s.text_position == "first") else 0
            if row != offset + want:
                return (f"token layout: video token {token} is row {row} of the {lq}-token sequence at {s.path}, "
                        f"the site assumes row {offset + want}")
    still = sorted(must_move - moved_once)
    if still:
        lq, lk, _ = base[still[0]]
        return (f"token layout: attention call {still[0]} ({lq} x {lk} tokens) is a rewritten site's but never "
                "sees the video latents (a prompt as long as the video?)")
    return None


_LINEAR = re.compile(r"linear_?attn|linear_?attention", re.IGNORECASE)


def linear_attention(model: nn.Module) -> str:
    """The linear-attention processors of ``model`` (class names, e.g. Sana's ``SanaLinearAttnProcessor3_0``),
    or ''. Why: a class whose video attention is linear (a kernel feature map, no softmax) is not
    applicable to AsymRnR at all, which is worth saying instead of "no SDPA call over the video"."""
    names = Counter(type(p).__name__ for m in model.modules()
                    for p in [getattr(m, "processor", None)] if p is not None and _LINEAR.search(type(p).__name__))
    return ", ".join(f"{n} ({k} module{'s' if k > 1 else ''})" for n, k in names.items())
