"""AsymRnR against other token reducers at matched attention cost, through the same pass.

Every method is a :class:`~asymrnr_fx.plan.Plan` (no second implementation of the rewrite):

* ``asymrnr``  : Q and K/V reduced independently, ``(1-q) = c^(2/3)``, ``(1-kv) = c^(1/3)``
  (queries harder than keys/values, as in the paper's plans);
* ``symrnr``   : one matching (on K) and one ratio for Q, K and V, ``(1-r)^2 = c`` (ToMe style);
* ``todo``     : keys/values only, merged into a fixed dst per 1x2x2 tile by grid distance
  and averaged (ToDo-style spatial downsampling), ``1 - kv = c``;
* ``random``   : the asymrnr counts with random src/dst pairs (a floor).

``c`` is the fraction of full video-to-video attention cost kept.
"""
from __future__ import annotations

import csv
import functools
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from .. import api
from ..plan import Plan
from . import metrics
from .targets import Target

METHODS: tuple[str, ...] = ("asymrnr", "symrnr", "todo", "random")


def method_plan(method: str, cost: float, *, cache_window: int = 5, seed: int = 0) -> Plan:
    """The plan of ``method`` that keeps ``cost`` of the video-to-video attention."""
    if not 0 < cost <= 1:
        raise ValueError(f"attention cost kept must be in (0, 1], got {cost}")
    common = {"cache_window": cache_window, "seed": seed, "name": f"{method}@{cost:g}"}
    if method in ("asymrnr", "random"):
        q, kv = 1 - cost ** (2 / 3), 1 - cost ** (1 / 3)
        sim = "random" if method == "random" else "euclidean"
        return Plan.uniform(q=q, kv=kv, similarity=sim, **common)
    if method == "symrnr":
        return Plan.uniform(q=1 - cost**0.5, kv=0.0, symmetric=True, **common)
    if method == "todo":
        return Plan.uniform(q=0.0, kv=1 - cost, stride=(1, 2, 2), dst="fixed", similarity="spatial", mode="mean", **common)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


@dataclass
class Row:
    target: str
    method: str
    cost_target: float
    attention_cost: float
    speedup: float
    psnr: float
    ssim: float
    accuracy: float | None
    peak_mb: float
    first_call_s: float
    median_s: float
    extra: dict = field(default_factory=dict)


def compare(
    target: Target,
    costs: Sequence[float] = (0.6, 0.35),
    methods: Sequence[str] = METHODS,
    *,
    compile: bool = True,
    repeats: int = 3,
    cache_window: int = 5,
    extra_plans: dict[str, Callable[[float], Plan]] | None = None,
    extra_costs: dict[str, Sequence[float]] | None = None,
    progress: bool = True,
    seed: int = 0,
) -> list[Row]:
    """Interleaved timings and fidelity of every method at every cost, against the unreduced model.

    Every variant runs ``target.run(fn, seed)``. ``extra_plans`` maps a method name to a
    function building its plan for a cost (for instance
    ``lambda c: plan_for_budget(calibration, attention_cost=c)``). ``extra_costs`` runs a method
    (of ``methods`` or ``extra_plans``) at more costs than ``costs``: points around another
    method's, for :func:`equal_speed`.
    """
    from tqdm import tqdm

    base_fn = api.baseline(target.model, compile=compile)
    variants: dict[tuple[str, float], tuple[Plan | None, Callable]] = {("baseline", 1.0): (None, base_fn)}
    makers = {m: functools.partial(method_plan, m, cache_window=cache_window) for m in methods}
    makers.update(extra_plans or {})  # e.g. a calibrated plan for this budget
    unknown = set(extra_costs or ()) - set(makers)
    if unknown:
        raise ValueError(f"extra_costs names {sorted(unknown)}, which this comparison does not run: "
                         f"add them to methods (now {list(methods)}) or extra_plans")
    runs = [(name, cost) for name in makers for cost in {*costs, *(extra_costs or {}).get(name, ())}]
    for name, cost in sorted(runs, key=lambda run: -run[1]):  # by cost, then in the methods' order
        plan = makers[name](cost)
        variants[(name, cost)] = (plan, api.transform(target.model, plan, compile=compile))

    first, outputs, peaks, times = {}, {}, {}, {k: [] for k in variants}
    bar = tqdm(total=len(variants) * (repeats + 1), desc=f"bench {target.name}", disable=not progress)
    with torch.no_grad():
        for key, (plan, fn) in variants.items():
            start = time.perf_counter()
            with metrics.PeakMemory(target.device) as pm:
                outputs[key] = target.run(fn, seed)
            first[key], peaks[key] = time.perf_counter() - start, pm.peak_mb
            bar.update()
        for _ in range(repeats):
            for key, (plan, fn) in variants.items():
                if plan is not None:
                    api.reset(fn)
                start = time.perf_counter()
                target.run(fn, seed)
                times[key].append(time.perf_counter() - start)
                bar.update()
    bar.close()
    ref = outputs[("baseline", 1.0)]
    base_t = statistics.median(times[("baseline", 1.0)])
    rows = []
    for key, (plan, _) in variants.items():
        out = outputs[key]
        med = statistics.median(times[key])
        rows.append(Row(
            target=target.name, method=key[0], cost_target=key[1],
            attention_cost=plan.attention_cost() if plan is not None else 1.0,
            speedup=base_t / med, psnr=metrics.psnr(ref, out, target.data_range), ssim=metrics.ssim(ref, out, target.data_range),
            accuracy=target.score(out) if target.score else None, peak_mb=peaks[key], first_call_s=first[key], median_s=med,
        ))
    return rows


def write_outputs(rows: Sequence[Row], out_dir: str | Path, stem: str = "bench") -> dict[str, Path]:
    """CSV, markdown table and a speedup-vs-PSNR plot."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    fields = [f for f in asdict(rows[0]) if f != "extra"]
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: v for k, v in asdict(r).items() if k != "extra"})
    paths["md"].write_text(markdown_table(rows) + "\n")
    plot(rows, paths["png"])
    return paths


def markdown_table(rows: Sequence[Row]) -> str:
    head = "| target | method | cost target | attention cost kept | speedup | PSNR dB | SSIM | prompt acc. | peak mem MB | first call s |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.2f}"
        lines.append(
            f"| {r.target} | {r.method} | {r.cost_target:g} | {r.attention_cost:.3f} | {r.speedup:.2f}x | "
            f"{r.psnr:.2f} | {r.ssim:.3f} | {acc} | {r.peak_mb:.0f} | {r.first_call_s:.1f} |"
        )
    return "\n".join(lines)


@dataclass
class EqualSpeed:
    """``method``'s fidelity at the speed ``against`` measured at one cost (see :func:`equal_speed`)."""

    target: str
    method: str
    against: str
    cost: float  # ``against``'s cost target
    speedup: float  # ``against``'s measured speedup there
    against_psnr: float
    psnr: float | None  # ``method``'s, interpolated at ``speedup``; None with a ``reason`` where it cannot be read
    between: tuple[float, float] | None  # the costs of ``method`` whose points were interpolated, highest first
    reason: str = ""


def equal_speed(rows: Sequence[Row], method: str = "asymrnr", against: str = "symrnr") -> list[EqualSpeed]:
    """``method``'s PSNR at each speed ``against`` reached: linear between the two of ``method``'s points
    (speedup, PSNR) at neighbouring costs whose speedups bracket it.

    Why: at the same attention cost two methods can differ in speed (AsymRnR matches queries and
    keys apart, a symmetric reduction once), so "better at equal cost" is not "better at equal speed".
    Reading one method's speed-fidelity curve at the other's measured speed compares them at equal
    wall time, whatever the spread of single timings. Never guessed: ``psnr`` is None, with the
    ``reason``, for a speed outside ``method``'s measured range (not extrapolated), for speedups that
    are not in cost order (timing noise: a lower cost measured slower; no curve to read), and for
    points that reduced nothing (infinite PSNR).
    """
    out = []
    for ref in (r for r in rows if r.method == against):
        # the curve in cost order, highest first; a point that reduced nothing has no place on it
        pts = sorted(((r.cost_target, r.speedup, r.psnr) for r in rows
                      if r.method == method and r.target == ref.target and math.isfinite(r.psnr)), reverse=True)
        psnr, between, reason = None, None, ""
        if not math.isfinite(ref.psnr):
            reason = f"{against} reduced nothing here"
        elif any(s1 < s0 for (_, s0, _), (_, s1, _) in zip(pts, pts[1:])):
            reason = f"{method}'s speedups are not in cost order (timing noise: rerun with nothing else running)"
        else:
            for (c0, s0, p0), (c1, s1, p1) in zip(pts, pts[1:]):
                if s0 <= ref.speedup <= s1:
                    w = 0.0 if s1 == s0 else (ref.speedup - s0) / (s1 - s0)
                    psnr, between = p0 + w * (p1 - p0), (c0, c1)
                    break
            else:
                reason = f"{method} was not measured at this speed (run it at more costs)"
        out.append(EqualSpeed(ref.target, method, against, ref.cost_target, ref.speedup, ref.psnr, psnr, between, reason))
    return out


def equal_speed_table(pairs: Sequence[EqualSpeed]) -> str:
    head = ("| target | method | cost target | speedup | PSNR dB | at that speed: | PSNR dB | between its costs "
            "| PSNR gain dB |")
    lines = [head, "|" + "---|" * 9]
    for e in pairs:
        ahead = (f"{e.reason} | - | - |" if e.psnr is None
                 else f"{e.psnr:.2f} | {e.between[0]:g} - {e.between[1]:g} | {e.psnr - e.against_psnr:+.2f} |")
        lines.append(f"| {e.target} | {e.against} | {e.cost:g} | {e.speedup:.2f}x | {e.against_psnr:.2f} | "
                     f"{e.method} | {ahead}")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    targets = list(dict.fromkeys(r.target for r in rows))
    for target, method in dict.fromkeys((r.target, r.method) for r in rows if r.method != "baseline"):
        pts = [(r.speedup, min(r.psnr, 99.0), r.cost_target) for r in rows if (r.target, r.method) == (target, method)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method if len(targets) == 1 else f"{target}: {method}")
        for s, p, c in pts:
            ax.annotate(f"{c:g}", (s, p), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("speedup over unreduced (median, interleaved)")
    ax.set_ylabel("PSNR vs unreduced (dB)")
    ax.set_title(f"{', '.join(targets)}: fidelity vs speed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
