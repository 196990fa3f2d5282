"""Heatmaps (sites x steps) of plans, tier tables and calibrations, like the paper's figures.

Why pictures: a schedule is a [sites, steps] table per feature; whether Q is cut hard in a
few blocks and K/V mildly everywhere, or the other way round, is obvious in a heatmap and
invisible in a cost number. Uses matplotlib's Agg canvas directly (no pyplot, no global
backend change), so it works headless and inside other programs' plotting sessions.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .. import ops
from ..plan import Plan

_PANEL = (4.8, 3.2)  # inches per panel


def _figure(rows: int, cols: int) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is an optional dependency
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(_PANEL[0] * cols, _PANEL[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panel(fig: Any, ax: Any, table: torch.Tensor, title: str, *, vmin: float | None = None,
           vmax: float | None = None, cmap: str = "viridis", label: str = "", integer: bool = False) -> None:
    data = table.detach().double().cpu().numpy()
    im = ax.imshow(data, aspect="auto", origin="upper", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("denoising step")
    ax.set_ylabel("attention site (block)")
    sites, steps = data.shape
    ax.set_yticks(_ticks(sites))
    ax.set_xticks(_ticks(steps))
    bar = fig.colorbar(im, ax=ax, shrink=0.9)
    if label:
        bar.set_label(label)
    if integer:
        lo, hi = int(math.floor(data.min())), int(math.ceil(data.max()))
        bar.set_ticks(list(range(lo, hi + 1, max(1, (hi - lo) // 10 or 1))))


def _ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / 10))
    return list(range(0, n, step))


def _save(fig: Any, path: str | Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=110)
    return path


def plot_plan(
    plan: Plan, path: str | Path, *, num_sites: int | None = None, num_steps: int | None = None, title: str | None = None
) -> Path:
    """Q and K/V ratio heatmaps of ``plan`` (a uniform plan is drawn at ``num_sites x num_steps``)."""
    top = ops.max_ratio(plan.stride)
    fig = _figure(1, 2)
    axes = fig.subplots(1, 2)
    for ax, feature, label in zip(axes, ("q", "kv"), ("Q", "K/V")):
        t = plan.table(feature, num_sites, num_steps)
        on = float((t > 0).double().mean()) * 100
        _panel(fig, ax, t, f"{label} ratio ({on:.0f}% of cells reduced)", vmin=0.0, vmax=top, cmap="magma",
               label="fraction of video tokens removed")
    cost = plan.attention_cost(num_sites, num_steps)
    name = plan.name or "plan"
    return _save(fig, path, title or f"{name}: mean video-video attention cost {cost:.3f}, "
                                    f"stride {plan.stride}, cache window {plan.cache_window}")


def plot_tiers(tables: Mapping[str, torch.Tensor], path: str | Path, *, title: str = "") -> Path:
    """Tier tables (e.g. the published ``q`` and ``v``) as integer heatmaps."""
    names = [k for k in ("q", "v", "kv") if k in tables] or list(tables)
    fig = _figure(1, len(names))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    hi = max(int(tables[k].max()) for k in names)
    for ax, k in zip(axes, names):
        _panel(fig, ax, tables[k], f"{k} redundancy tier", vmin=0, vmax=hi, cmap="viridis", label="tier", integer=True)
    return _save(fig, path, title)


def plot_calibration(
    cal: Any, path: str | Path, *, plan: Plan | None = None, statistic: str = "cos_mean", title: str | None = None
) -> Path:
    """Redundancy heatmaps (Q, K/V) of a calibration; with ``plan``, its ratios below; with
    measured sensitivity, the probe errors (log10) too."""
    rows = [("redundancy", None)]
    if plan is not None:
        cal.check_plan(plan)
        rows.append(("plan", plan))
    if cal.sensitivity is not None:
        rows.append(("sensitivity", None))
    fig = _figure(len(rows), 2)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    red = {f: cal.redundancy(f, statistic) for f in ("q", "kv")}
    finite = torch.cat([t[torch.isfinite(t)] for t in red.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    top = ops.max_ratio(cal.stride)
    sens = {}
    if cal.sensitivity is not None:  # one colour scale for Q and K/V: comparing them is the point
        sens = {f: cal.sensitivity.table(f).clamp_min(1e-30).log10() for f in ("q", "kv")}
        s_lo, s_hi = min(float(t.min()) for t in sens.values()), max(float(t.max()) for t in sens.values())
    for r, (kind, p) in enumerate(rows):
        for c, (feature, label) in enumerate((("q", "Q"), ("kv", "K/V"))):
            ax = axes[r][c]
            if kind == "redundancy":
                where = " (measured on V)" if feature == "kv" else ""
                _panel(fig, ax, red[feature], f"{label}{where}: {statistic}", vmin=lo, vmax=hi, cmap="viridis",
                       label="best-match similarity")
            elif kind == "plan":
                _panel(fig, ax, p.table(feature, cal.num_sites, cal.num_steps), f"{label} ratio ({p.name or 'plan'})",
                       vmin=0.0, vmax=top, cmap="magma", label="fraction removed")
            else:
                _panel(fig, ax, sens[feature], f"{label}: output error of a probe at ratio {cal.sensitivity.probe_ratio:g}",
                       vmin=s_lo, vmax=s_hi, cmap="inferno", label="log10 relative sq. error")
    info = cal.info
    default = (f"{info.get('model', 'model')}: {cal.num_sites} sites x {cal.num_steps} steps, "
               f"{info.get('generations', '?')} generations, stride {cal.stride}, window {cal.cache_window}")
    if plan is not None:
        default += f"; plan cost {plan.attention_cost():.3f}"
    return _save(fig, path, title or default)


def plot_plans(plans: Sequence[Plan], path: str | Path, *, num_sites: int | None = None,
               num_steps: int | None = None, title: str = "") -> Path:
    """Several plans, one row each (Q and K/V), on a shared scale — e.g. uniform vs calibrated at one budget."""
    fig = _figure(len(plans), 2)
    axes = fig.subplots(len(plans), 2, squeeze=False)
    for row, plan in zip(axes, plans):
        top = ops.max_ratio(plan.stride)
        for ax, feature, label in zip(row, ("q", "kv"), ("Q", "K/V")):
            t = plan.table(feature, num_sites, num_steps)
            _panel(fig, ax, t, f"{plan.name or 'plan'} - {label} (cost {plan.attention_cost(num_sites, num_steps):.3f})",
                   vmin=0.0, vmax=top, cmap="magma")
    return _save(fig, path, title)
