"""Calibration: measure, on the unreduced model, the redundancy that AsymRnR exploits.

Why: the paper's schedules come from profiling how similar each token is to its nearest
neighbour, per block, denoising step and feature, but the profiling code was not released
and the published tables only fit the models they were measured on. :func:`calibrate`
runs a few sample generations of *any* model through the FX pass with a recording runtime
(:class:`RecordingRuntime`): at every rewritten attention call it draws the same dst/src
partition the real runtime would, matches src to dst with the plan's similarity, records
statistics of the best-match scores, and then keeps every token, so the model's outputs
are unchanged. The result is a :class:`Calibration` — per (site, step, feature) statistics
— from which :mod:`asymrnr_fx.budget` builds plans and :mod:`asymrnr_fx.plot` draws
heatmaps.

What is recorded per (site, step, feature in {q, kv}); K/V statistics are measured on V,
since V's matching prunes K:

* ``score_mean`` / ``score_quantiles``: the best-match score in the plan's similarity
  (for ``euclidean`` the negative squared distance, so it depends on activation scale);
* ``cos_mean`` / ``cos_quantiles`` / ``frac_above``: the cosine similarity of each src
  token to the dst it matched, and the fraction of src tokens above each of
  :data:`COSINE_THRESHOLDS` — scale-free, so comparable across sites, steps and models;
* ``distortion``: for each ratio in ``curve_ratios``, the energy of what reducing at that
  ratio throws away — the summed squared distance of the removed tokens to the dst
  they are merged into, relative to the mean squared token norm, divided by the number of
  video tokens. It uses the matching cached at the start of the cache window, exactly as
  the runtime would reuse it, so it also accounts for stale matchings. This curve is the
  error proxy the budgeted plans minimise.

Statistics are means over the sampled batch elements and heads (``heads=`` / ``batch=``
sample a subset to make calibration cheaper), over repeated calls of a site within a
step (CFG halves, per-sample loops) and over generations.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect as _inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import ops
from .plan import FEATURES, Plan
from .runtime import Runtime

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
COSINE_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
_META_KEY = "asymrnr_fx.calibration"
_FORMAT_VERSION = 1
#: Plan options a calibration is measured under (and that plans built from it inherit).
PLAN_OPTIONS: tuple[str, ...] = ("stride", "cache_window", "similarity", "seed", "grid", "text_position", "dst")


def curve_ratios(stride: Sequence[int]) -> tuple[float, ...]:
    """Ratios at which the distortion curve is sampled: 0.1, 0.2, ... and the stride's maximum."""
    top = ops.max_ratio(stride)
    steps = [round(0.1 * i, 10) for i in range(1, 10) if 0.1 * i < top - 1e-9]
    return tuple(steps + [top])


# =========================================================================== statistics
def match_statistics(
    video: torch.Tensor,
    dst: torch.Tensor,
    src: torch.Tensor,
    similarity: str,
    cached: ops.Matching | None,
    ratios: Sequence[float],
) -> dict[str, torch.Tensor]:
    """Redundancy statistics of one attention call's video tokens ``[B, H, N, d]``, averaged over (B, H).

    The fresh matching (nearest dst by ``similarity``) gives the score and cosine
    statistics; the distortion curve follows ``cached`` (the window-start matching the
    runtime would reuse), or the fresh one when None.
    """
    x = video.float()
    n = x.shape[-2]
    xs, xd = x[:, :, src], x[:, :, dst]
    # Baseline matchings ("random", "spatial") have no feature similarity: describe the
    # features with the Euclidean one; the distortion still follows their own matching.
    feature_similarity = similarity if similarity in ops.SIMILARITIES else "euclidean"
    best_all, nearest_all = ops.best_match(x, dst, feature_similarity)  # one batched GEMM over all tokens
    best, nearest = best_all[..., src], nearest_all[..., src]
    qs = torch.tensor(QUANTILES, dtype=torch.float32)
    matched = xd.gather(-2, nearest.unsqueeze(-1).expand_as(xs))
    cos = torch.nn.functional.cosine_similarity(xs, matched, dim=-1)
    thresholds = torch.tensor(COSINE_THRESHOLDS, dtype=torch.float32)
    m = cached if cached is not None else ops.Matching(dst, src, nearest, best.argsort(-1, descending=True, stable=True))
    merged = xd.gather(-2, m.nearest.unsqueeze(-1).expand_as(xs))
    scale = x.square().sum(-1).mean(-1, keepdim=True).clamp_min(1e-12)  # mean squared token norm per (B, H)
    lost = (xs - merged).square().sum(-1) / scale  # [B, H, n_src]
    cum = torch.cat([lost.new_zeros(*lost.shape[:-1], 1), lost.gather(-1, m.order).cumsum(-1)], -1)
    n_src, n_dst = src.numel(), dst.numel()
    removed = [n_src - min(max(ops.kept_count(n, r) - n_dst, 0), n_src) for r in ratios]
    curve = cum[..., removed] / n
    flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731  ([B*H, ...])
    return {
        "score_mean": best.mean(),
        "score_quantiles": torch.quantile(flat(best), qs, dim=-1).mean(-1),
        "cos_mean": cos.mean(),
        "cos_quantiles": torch.quantile(flat(cos), qs, dim=-1).mean(-1),
        "frac_above": (cos.unsqueeze(-1) > thresholds).float().mean(dim=(0, 1, 2)),
        "distortion": flat(curve).mean(0),
    }


class Recorder:
    """Running sums of :func:`match_statistics` per (site, step, feature)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[int, int, int], dict[str, torch.Tensor]] = {}
        self.counts: dict[tuple[int, int, int], int] = {}
        self.steps_per_generation: dict[int, int] = {}

    def add(self, site: int, step: int, feature: str, generation: int, stats: Mapping[str, torch.Tensor]) -> None:
        key = (site, step, FEATURES.index(feature))
        acc = self.sums.setdefault(key, {})
        for name, value in stats.items():
            value = value.detach().double()
            acc[name] = acc[name] + value if name in acc else value.clone()
        self.counts[key] = self.counts.get(key, 0) + 1
        self.steps_per_generation[generation] = max(self.steps_per_generation.get(generation, 0), step + 1)

    def tables(self, num_sites: int) -> dict[str, torch.Tensor]:
        """``[sites, steps, 2, ...]`` means (NaN where a cell was never seen) plus ``count``."""
        if not self.sums:
            raise RuntimeError(
                "the calibration recorded nothing: no attention site was rewritten or no generation ran; "
                "check asymrnr_fx.inspect(model, ...) and that the run callable calls the model it is given"
            )
        steps = sorted(set(self.steps_per_generation.values()))
        if len(steps) > 1:
            raise ValueError(
                f"calibration generations ran different numbers of denoising steps {steps}; "
                "calibrate with one sampler schedule (plans are per step)"
            )
        num_steps = steps[0]
        example = next(iter(self.sums.values()))
        out = {
            name: torch.full((num_sites, num_steps, len(FEATURES), *v.shape), float("nan"), dtype=torch.float64)
            for name, v in example.items()
        }
        out["count"] = torch.zeros(num_sites, num_steps, len(FEATURES), dtype=torch.float64)
        for (site, step, f), acc in self.sums.items():
            c = self.counts[site, step, f]
            out["count"][site, step, f] = c
            for name, value in acc.items():
                out[name][site, step, f] = value / c
        return out


def _subset(size: int, choose: int | Sequence[int] | None, seed: int) -> torch.Tensor | None:
    """Indices to sample along a dim of ``size``: all (None), a seeded random ``choose`` of them, or the given ones."""
    if choose is None:
        return None
    if isinstance(choose, int):
        if choose >= size:
            return None
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(size, generator=gen)[:choose].sort().values
    idx = torch.as_tensor(list(choose), dtype=torch.long)
    if idx.numel() == 0 or int(idx.max()) >= size or int(idx.min()) < 0:
        raise ValueError(f"sampled indices {idx.tolist()} are out of range for a dimension of size {size}")
    return idx


class RecordingRuntime(Runtime):
    """A runtime that measures redundancy and keeps every token (identity indices).

    Partitions, cache windows and the window-start matching are the base runtime's, so
    the recorded statistics describe exactly what a plan with the same options would see.
    ``heads``/``batch`` sample a subset (an int: that many, drawn per site, feature and
    cache window from the plan seed; a sequence: those indices) to cut the matching cost.
    """

    def __init__(
        self,
        plan: Plan,
        recorder: Recorder | None = None,
        *,
        heads: int | Sequence[int] | None = None,
        batch: int | Sequence[int] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(plan)
        self.recorder = recorder if recorder is not None else Recorder()
        self.head_choice = heads
        self.batch_choice = batch
        self.on_step = on_step
        self.ratios = curve_ratios(plan.stride)
        self._seen: tuple[int, int] | None = None

    def select(
        self, x: torch.Tensor, timestep: torch.Tensor | None, key: str, feature: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.observe_timestep(timestep)
        if self.on_step is not None and (self.generation, self.step) != self._seen:
            self._seen = (self.generation, self.step)
            self.on_step(self.step)
        spec = self.sites[key]
        window = self.step // self.plan.cache_window
        seed = ops.derive_seed(self.plan.seed, "sample", spec.ordinal, spec.occurrence, feature, window)
        sub = x
        b_idx = _subset(x.shape[0], self.batch_choice, seed)
        if b_idx is not None:
            sub = sub[b_idx.to(x.device)]
        h_idx = _subset(x.shape[1], self.head_choice, seed + 1)
        if h_idx is not None:
            sub = sub[:, h_idx.to(x.device)]
        entry = self._matching(sub, spec, feature)
        m = entry.matching
        stats = match_statistics(spec.video(sub), m.dst, m.src, self.plan.similarity, m, self.ratios)
        self.recorder.add(spec.ordinal, self.step, feature, self.generation, stats)
        bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
        full = torch.arange(length, device=x.device).expand(bsz, heads, length)
        return full.clone(), full.clone()


class SwitchableRuntime(Runtime):
    """A runtime whose plan can be swapped between generations without recapturing the model.

    The graph is rewritten once with ``plan`` (which should reduce both features at every
    site, so every site gets its ``select`` calls; the backend reads ``self.plan`` at
    capture time); :meth:`use` then makes another plan with the same partition options
    the one ``select`` follows. Used to probe sensitivity and to compare plans cheaply.
    """

    def __init__(self, plan: Plan, max_events: int = 100_000) -> None:
        super().__init__(plan, max_events)
        self.active = plan

    def use(self, plan: Plan) -> None:
        for name in ("stride", "cache_window", "similarity", "seed", "mode", "dst", "symmetric"):
            if getattr(plan, name, None) != getattr(self.plan, name, None):
                raise ValueError(
                    f"plan option {name}={getattr(plan, name)!r} differs from the captured one "
                    f"({getattr(self.plan, name)!r}); build the plan with the same options"
                )
        self.active = plan
        self.reset()

    def select(
        self, x: torch.Tensor, timestep: torch.Tensor | None, key: str, feature: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        captured, self.plan = self.plan, self.active
        try:
            return super().select(x, timestep, key, feature)
        finally:
            self.plan = captured


# =========================================================================== generations
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


@dataclass
class Sampler:
    """How to run one calibration generation (see :func:`calibrate` for the two forms)."""

    run: Callable[..., Any] | None = None
    inputs: list[Mapping[str, Any]] | None = None
    timesteps: torch.Tensor | None = None
    generations: int = 1

    def __post_init__(self) -> None:
        if (self.run is None) == (self.inputs is None):
            raise ValueError("give either run=callable(model[, index]) or inputs=[dict, ...] with timesteps=...")
        if self.inputs is not None:
            if self.timesteps is None:
                raise ValueError("inputs= needs a timesteps= schedule (e.g. torch.linspace(999, 1, 10))")
            self.inputs = list(self.inputs)
            self.timesteps = torch.as_tensor(self.timesteps, dtype=torch.float32).flatten()
            self.generations = len(self.inputs)
        if self.generations < 1:
            raise ValueError(f"generations must be >= 1, got {self.generations}")

    @property
    def num_steps(self) -> int | None:
        return None if self.timesteps is None else int(self.timesteps.numel())

    def __call__(self, target: Any, index: int, runtime: Runtime | None = None) -> torch.Tensor:
        if self.run is not None:
            return first_tensor(self.run(target, index) if _takes_index(self.run) else self.run(target))
        return self._denoise(target, dict(self.inputs[index]), runtime)

    def _denoise(self, model: Any, inputs: dict[str, Any], runtime: Runtime | None) -> torch.Tensor:
        """A stand-in sampler: the model at each timestep, ``hidden_states`` moved by an Euler step on t/1000."""
        x = inputs.get("hidden_states")
        ts = self.timesteps
        out = None
        for i, t in enumerate(ts):
            if runtime is not None:
                runtime.set_step(i)
            batch = x.shape[0] if isinstance(x, torch.Tensor) else 1
            out = first_tensor(model(**{**inputs, **({"hidden_states": x} if x is not None else {})}, timestep=t.expand(batch)))
            if isinstance(x, torch.Tensor) and out.shape == x.shape:
                t_next = ts[i + 1] if i + 1 < len(ts) else torch.zeros(())
                x = x + (t_next - t) / 1000.0 * out.to(x.dtype)
        return x if isinstance(x, torch.Tensor) else out

    def fingerprint(self) -> str:
        return fingerprint({"run": self.run, "inputs": self.inputs, "timesteps": self.timesteps, "n": self.generations})


def _takes_index(fn: Callable[..., Any]) -> bool:
    try:
        params = [
            p for p in _inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


@contextlib.contextmanager
def installed(target: Any, runtime: Runtime, component: str = "transformer") -> Iterator[Any]:
    """``target`` with its attention running through ``runtime``: a transformed model, or the
    pipeline with its ``component`` swapped for a transformed one (restored on exit)."""
    from .api import AsymRnRModule, transform

    if not is_pipeline(target):
        if not isinstance(target, nn.Module):
            raise TypeError(f"calibrate() needs an nn.Module or a diffusers pipeline, got {type(target).__name__}")
        yield transform(target.model if isinstance(target, AsymRnRModule) else target, runtime=runtime)
        return
    original = getattr(target, component)
    base = original.model if isinstance(original, AsymRnRModule) else original
    object.__setattr__(target, component, transform(base, runtime=runtime))
    try:
        yield target
    finally:
        object.__setattr__(target, component, original)


def _base_model(target: Any, component: str = "transformer") -> nn.Module:
    from .api import AsymRnRModule

    model = getattr(target, component) if is_pipeline(target) else target
    return model.model if isinstance(model, AsymRnRModule) else model


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


# =========================================================================== Calibration
@dataclass(eq=False)
class Calibration:
    """Redundancy statistics of one model under one set of plan options.

    ``stats`` maps a statistic name to a ``[sites, steps, 2, ...]`` tensor (feature axis:
    ``q``, ``kv``); ``sites`` are the rewritten attention modules in plan order;
    ``options`` are the plan options measured under (stride, cache window, similarity,
    seed, grid, text position), which plans built from this calibration inherit.
    """

    stats: dict[str, torch.Tensor]
    sites: list[str]
    options: dict[str, Any]
    curve_ratios: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)
    sensitivity: Any = None  # asymrnr_fx.sensitivity.Sensitivity | None

    # ------------------------------------------------------------------ shape
    @property
    def num_sites(self) -> int:
        return int(self.stats["count"].shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.stats["count"].shape[1])

    @property
    def stride(self) -> tuple[int, int, int]:
        return tuple(self.options["stride"])  # type: ignore[return-value]

    @property
    def cache_window(self) -> int:
        return int(self.options["cache_window"])

    @property
    def key(self) -> str:
        return str(self.info.get("key", ""))

    def windows(self) -> list[tuple[int, int]]:
        """``[start, end)`` step ranges of the cache windows (the last may be short)."""
        w = self.cache_window
        return [(s, min(s + w, self.num_steps)) for s in range(0, self.num_steps, w)]

    # ------------------------------------------------------------------ statistics
    def statistic(self, name: str, feature: str) -> torch.Tensor:
        """A recorded statistic for one feature, ``[sites, steps, ...]``."""
        if name not in self.stats:
            raise KeyError(f"no statistic {name!r}; recorded: {sorted(self.stats)}")
        return self.stats[name][:, :, _feature_index(feature)].clone()

    def redundancy(self, feature: str, statistic: str = "cos_mean") -> torch.Tensor:
        """One number per (site, step): how alike src tokens are to their nearest dst (larger = more redundant).

        ``cos_mean`` (default) is scale-free; ``frac_above:0.9`` gives the fraction of src
        tokens above a cosine threshold; ``score_mean`` the raw best-match score.
        """
        if statistic.startswith("frac_above:"):
            thr = float(statistic.split(":", 1)[1])
            thresholds = list(self.info.get("cosine_thresholds", COSINE_THRESHOLDS))
            if thr not in thresholds:
                raise ValueError(f"threshold {thr} was not recorded; available: {thresholds}")
            return self.statistic("frac_above", feature)[..., thresholds.index(thr)]
        return self.statistic(statistic, feature)

    def distortion(self, feature: str, ratio: float | torch.Tensor) -> torch.Tensor:
        """Error proxy of reducing ``feature`` at ``ratio`` (a number or a ``[sites, steps]`` table), per cell.

        Linear interpolation of the recorded curve, 0 at ratio 0; NaN where nothing was recorded.
        """
        curve = self.statistic("distortion", feature)  # [S, T, K]
        xs = torch.tensor((0.0, *self.curve_ratios), dtype=torch.float64)
        ys = torch.cat([torch.zeros(*curve.shape[:2], 1, dtype=curve.dtype), curve], -1)
        r = torch.as_tensor(ratio, dtype=torch.float64).expand(curve.shape[:2]).clamp(0, float(xs[-1]))
        hi = torch.searchsorted(xs, r.contiguous().unsqueeze(-1), right=False).clamp(1, len(xs) - 1).squeeze(-1)
        x0, x1 = xs[hi - 1], xs[hi]
        y0 = ys.gather(-1, (hi - 1).unsqueeze(-1)).squeeze(-1)
        y1 = ys.gather(-1, hi.unsqueeze(-1)).squeeze(-1)
        return y0 + (y1 - y0) * (r - x0) / (x1 - x0)

    def valid(self) -> torch.Tensor:
        """``[sites, steps, 2]`` bool: cells that were measured (a site the pass skipped never is)."""
        return self.stats["count"] > 0

    # ------------------------------------------------------------------ plans
    def plan_options(self) -> dict[str, Any]:
        """Options for :class:`~asymrnr_fx.plan.Plan` that reproduce the measured partitions and windows."""
        opts = {k: self.options[k] for k in PLAN_OPTIONS if k in self.options}
        opts["stride"] = tuple(opts["stride"])
        if opts.get("grid") is not None:
            opts["grid"] = tuple(opts["grid"])
        return opts

    def check_plan(self, plan: Plan) -> None:
        """Raise if ``plan`` cannot describe the calibrated model (sites, steps or partition options differ)."""
        if plan.is_table and (plan.num_sites, plan.num_steps) != (self.num_sites, self.num_steps):
            raise ValueError(
                f"plan {plan.name or ''} covers {plan.num_sites} sites x {plan.num_steps} steps but the calibration "
                f"({self.info.get('model', 'model')}) has {self.num_sites} sites x {self.num_steps} steps; "
                "build the plan from this calibration or calibrate the model the plan is for"
            )
        if tuple(plan.stride) != self.stride:
            raise ValueError(f"plan stride {plan.stride} differs from the calibration's {self.stride}")

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        meta = {
            "version": _FORMAT_VERSION,
            "sites": list(self.sites),
            "options": _jsonable(self.options),
            "curve_ratios": list(self.curve_ratios),
            "info": _jsonable(self.info),
        }
        if self.sensitivity is not None:
            meta["sensitivity"] = self.sensitivity.metadata()
        return meta

    def save(self, path: str | Path) -> Path:
        """safetensors (statistics, and sensitivity errors if measured) + JSON metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"stats.{k}": v.contiguous() for k, v in self.stats.items()}
        if self.sensitivity is not None:
            tensors.update({f"sensitivity.{k}": v.contiguous() for k, v in self.sensitivity.tensors().items()})
        save_file(tensors, str(path), metadata={_META_KEY: json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
            if raw is None:
                raise ValueError(f"{path} is not an asymrnr_fx calibration (no {_META_KEY!r} metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(raw)
        stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}
        cal = cls(
            stats=stats,
            sites=list(meta["sites"]),
            options=dict(meta["options"]),
            curve_ratios=tuple(meta["curve_ratios"]),
            info=dict(meta.get("info", {})),
        )
        if "sensitivity" in meta:
            from .sensitivity import Sensitivity

            sens = {k[12:]: v for k, v in tensors.items() if k.startswith("sensitivity.")}
            cal.sensitivity = Sensitivity.from_saved(meta["sensitivity"], sens)
        return cal

    @staticmethod
    def is_calibration_file(path: str | Path) -> bool:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return _META_KEY in (f.metadata() or {})
        except Exception:  # noqa: BLE001 - not a safetensors file at all
            return False

    def with_sensitivity(self, sensitivity: Any) -> "Calibration":
        return dataclasses.replace(self, sensitivity=sensitivity)

    def __repr__(self) -> str:
        q = float(self.redundancy("q").nanmean())
        kv = float(self.redundancy("kv").nanmean())
        sens = ", with sensitivity" if self.sensitivity is not None else ""
        return (
            f"Calibration({self.info.get('model', '')!r}, {self.num_sites} sites x {self.num_steps} steps, "
            f"stride={self.stride}, cache_window={self.cache_window}, mean matched cosine q={q:.3f} kv={kv:.3f}, "
            f"{self.info.get('generations', '?')} generations in {self.info.get('seconds', float('nan')):.1f} s{sens})"
        )


def _feature_index(feature: str) -> int:
    if feature == "v":
        feature = "kv"
    if feature not in FEATURES:
        raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
    return FEATURES.index(feature)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return repr(obj)


# =========================================================================== calibrate()
def calibrate(
    model: Any,
    run: Callable[..., Any] | None = None,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    generations: int = 1,
    plan: Plan | None = None,
    heads: int | Sequence[int] | None = None,
    batch: int | Sequence[int] | None = None,
    component: str = "transformer",
    cache_dir: str | Path | None = None,
    key: str | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Calibration:
    """Run the unreduced model over sample generations and record redundancy per site, step and feature.

    Two ways to say what a generation is:

    * ``run``: a callable that runs one generation on what it is given — the transformed
      model, or (for a diffusers pipeline ``model``) the pipeline with its transformer
      swapped — and returns the output. It is called ``generations`` times, as
      ``run(target, index)`` if it takes two arguments, else ``run(target)``. Steps are
      read from the timestep the model receives.
    * ``inputs`` (a list of keyword-argument dicts, one per generation) and ``timesteps``
      (the schedule): the model is called at every timestep, ``hidden_states`` updated by
      an Euler step on ``t / 1000``.

    ``plan`` supplies the options the plans will use (stride, cache window, similarity,
    seed, grid, text position); its ratios are ignored. ``heads``/``batch`` sample that
    many heads/batch elements per call (or the given indices) to make it cheaper.
    With ``cache_dir`` the result is stored under a key from the model (config and
    weights), the generations and the options, and reloaded on the next identical call;
    ``key`` adds your own text to it (e.g. when ``run`` depends on state not visible in its closure).
    """
    t0 = time.perf_counter()
    sampler = Sampler(run=run, inputs=inputs, timesteps=timesteps, generations=generations)
    opts = (plan or Plan()).options()
    options = {k: opts[k] for k in PLAN_OPTIONS if k in opts}
    base = _base_model(model, component)
    cache_key = fingerprint(
        {"model": base, "sampler": sampler.fingerprint(), "options": options, "heads": heads, "batch": batch,
         "user": key, "version": _FORMAT_VERSION}
    )[:24]
    path = Path(cache_dir) / f"calibration-{cache_key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        return Calibration.load(path)

    capture = Plan.uniform(0.5, 0.5, **{k: v for k, v in options.items() if v is not None})
    bar = _progress(progress, sampler.generations * sampler.num_steps if sampler.num_steps else None, "calibrate")
    runtime = RecordingRuntime(capture, heads=heads, batch=batch, on_step=(lambda _s: bar.update(1)) if bar is not None else None)
    with torch.no_grad(), installed(model, runtime, component) as target:
        for i in range(sampler.generations):
            runtime.reset()
            sampler(target, i, runtime)
            if bar is not None and bar.total is None:  # steps known after the first generation
                bar.total = sampler.generations * (runtime.step + 1)
                bar.refresh()
    if bar is not None:
        bar.close()
    stats = runtime.recorder.tables(runtime.num_sites)
    cal = Calibration(
        stats=stats,
        sites=list(runtime.site_order),
        options=options,
        curve_ratios=runtime.ratios,
        info={
            "model": name or type(base).__name__,
            "generations": sampler.generations,
            "heads": heads if not isinstance(heads, Sequence) else list(heads),
            "batch": batch if not isinstance(batch, Sequence) else list(batch),
            "seconds": time.perf_counter() - t0,
            "key": cache_key,
            "quantiles": list(QUANTILES),
            "cosine_thresholds": list(COSINE_THRESHOLDS),
            "torch": torch.__version__,
        },
    )
    if path is not None:
        cal.save(path)
    return cal


def _progress(enabled: bool, total: int | None, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step")
