"""What a calibration records: redundancy statistics of each rewritten attention call.

:class:`RecordingRuntime` runs inside the unreduced model: at every rewritten attention call
it draws the same dst/src partition the real runtime would, matches src to dst with the
plan's similarity, adds :func:`match_statistics` to a :class:`Recorder`, and then keeps
every token, so the model's outputs are unchanged. :class:`SwitchableRuntime` swaps plans
between generations without recapturing the model (sensitivity probes, plan comparisons).

What is recorded per (site, step, feature in {q, kv}); K/V statistics are measured on V,
since V's matching prunes K:

* ``score_mean`` / ``score_quantiles``: the best-match score in the plan's similarity
  (for ``euclidean`` the negative squared distance, so it depends on activation scale);
* ``cos_mean`` / ``cos_quantiles`` / ``frac_above``: the cosine similarity of each src
  token to the dst it matched (with ``Plan.window``, among the dst of nearby tiles), and the fraction of src tokens above each of
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

from typing import Callable, Mapping, Sequence

import torch

from .. import ops
from ..matching_window import window_match
from ..plan import FEATURES, Plan
from ..runtime import Runtime, SiteSpec
from ..state import GenerationState

QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
COSINE_THRESHOLDS: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


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
    window: tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Redundancy statistics of one attention call's video tokens ``[B, H, N, d]``, averaged over (B, H).

    The fresh matching (nearest dst by ``similarity``; with ``window`` = (grid, stride,
    ``Plan.window``) among the dst of nearby tiles, as the plan matches) gives the score and
    cosine statistics; the distortion curve follows ``cached`` (the window-start matching
    the runtime would reuse), or the fresh one when None.
    """
    x = video.float()
    n = x.shape[-2]
    xs, xd = x[:, :, src], x[:, :, dst]
    # Baseline matchings ("random", "spatial") have no feature similarity: describe the
    # features with the Euclidean one; the distortion still follows their own matching.
    feature_similarity = similarity if similarity in ops.SIMILARITIES else "euclidean"
    if window is not None and similarity in ops.SIMILARITIES:
        best, nearest = window_match(x, dst, src, similarity, *window)
    else:
        best_all, nearest_all = ops.best_match(x, dst, feature_similarity)  # one batched GEMM over all tokens
        best, nearest = best_all[..., src], nearest_all[..., src]
    qs = torch.tensor(QUANTILES, dtype=torch.float32)
    matched = xd.gather(-2, nearest.unsqueeze(-1).expand_as(xs))
    cos = torch.nn.functional.cosine_similarity(xs, matched, dim=-1)
    thresholds = torch.tensor(COSINE_THRESHOLDS, dtype=torch.float32)
    m = cached if cached is not None else ops.Matching(dst, src, nearest, best.argsort(dim=-1, descending=True, stable=True))
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

    def select_site(
        self, x: torch.Tensor, spec: SiteSpec, state: GenerationState, feature: str,
        sharding: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.on_step is not None and (state.generation, state.step) != self._seen:
            self._seen = (state.generation, state.step)
            self.on_step(state.step)
        window = state.step // self.plan.cache_window
        seed = ops.derive_seed(self.plan.seed, "sample", spec.ordinal, spec.occurrence, feature, window)
        sub = x
        b_idx = _subset(x.shape[0], self.batch_choice, seed)
        if b_idx is not None:
            sub = sub[b_idx.to(x.device)]
        h_idx = _subset(x.shape[1], self.head_choice, seed + 1)
        if h_idx is not None:
            sub = sub[:, h_idx.to(x.device)]
        m = self._matching(spec.video(sub), spec, feature, state).matching
        window = None if self.plan.window is None else (spec.grid, ops.site_stride(spec.grid, self.plan.stride), self.plan.window)
        stats = match_statistics(spec.video(sub), m.dst, m.src, self.plan.similarity, m, self.ratios, window)
        self.recorder.add(spec.ordinal, state.step, feature, state.generation, stats)
        bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
        full = torch.arange(length, device=x.device).expand(bsz, heads, length)
        return full.clone(), full.clone()


class SwitchableRuntime(Runtime):
    """A runtime whose plan can be swapped between generations without recapturing the model.

    The graph is rewritten once with ``plan`` (which should reduce both features at every
    site, so every site gets its ``select`` calls; the backend reads ``self.plan`` at
    capture time); :meth:`use` then makes another plan with the same options the one
    :meth:`select_site` follows. Used to probe sensitivity and to compare plans cheaply.
    """

    def __init__(self, plan: Plan, max_events: int = 100_000) -> None:
        super().__init__(plan, max_events)
        self.active = plan

    def use(self, plan: Plan) -> None:
        """Make ``plan`` the one :meth:`select_site` follows from the next generation on.

        Only the ratios (and the name) may differ from the captured plan: the capture
        options are baked into the graph, the cache window and seed into the partitions.
        And only where the captured plan reduced: a feature whose ratio was 0 at every step
        of a site has no selection in the graph, so a plan reducing it there is refused
        rather than followed without it.
        """
        differing = plan.differing_options(self.plan, labels=False)
        if differing:
            name, (new, captured) = next(iter(differing.items()))
            raise ValueError(
                f"plan option {name}={new!r} differs from the captured one ({captured!r}); "
                "build the plan with the same options"
            )
        for site in range(max(plan.num_sites or 1, self.plan.num_sites or 1)):
            missing = set(plan.features_used(site)) - set(self.plan.features_used(site))
            if missing:
                raise ValueError(
                    f"plan reduces {'+'.join(sorted(missing, reverse=True))} at site {site}, which the captured plan "
                    f"never reduced there, so the graph has no selection for it; capture with a plan that reduces "
                    "every feature at every site (e.g. Plan.uniform(0.5, 0.5))"
                )
        self.active = plan
        self.reset()

    def select_site(
        self, x: torch.Tensor, spec: SiteSpec, state: GenerationState, feature: str,
        sharding: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        captured, self._plan = self._plan, self.active  # the ratios of the active plan, on the captured graphs
        try:
            return super().select_site(x, spec, state, feature, sharding)
        finally:
            self._plan = captured
