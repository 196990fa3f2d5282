"""The small runtime a rewritten graph talks to: denoising-step tracking and the matching cache.

The compiled graph cannot hold Python state, so every rewritten site calls the
``asymrnr::select`` custom op (see :mod:`asymrnr_fx.custom_ops`) with its site key; the op
forwards to the :class:`Runtime` that owns the site. The runtime decides the step from the
timestep the model receives (a new step when it changes, a new generation when it goes
back up), looks the ratio up in the plan, and computes a matching only at the start of a
cache window, reusing its indices for the rest of the window.
"""
from __future__ import annotations

import itertools
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field

import torch

from . import ops
from .plan import Plan

_RUNTIMES: "weakref.WeakValueDictionary[int, Runtime]" = weakref.WeakValueDictionary()
_IDS = itertools.count(1)


@dataclass
class SiteSpec:
    """Everything the runtime needs to reduce one attention call."""

    key: str
    path: str
    ordinal: int
    occurrence: int
    kind: str
    grid: tuple[int, int, int]
    text_len: int
    text_first: bool

    @property
    def num_video(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def video(self, x: torch.Tensor) -> torch.Tensor:
        # Text length from the call itself: it may vary per call (Mochi drops padded prompt tokens).
        start = x.shape[2] - self.num_video if self.text_first else 0
        return x[:, :, start : start + self.num_video]


@dataclass
class CacheEntry:
    generation: int
    window: int
    shape: tuple[int, ...]
    matching: ops.Matching
    selections: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheEvent:
    """One call of a site: whether it computed a matching or reused the cached one."""

    generation: int
    step: int
    site: str
    feature: str
    kind: str  # "match" | "reuse" | "identity"


class Runtime:
    """Step tracking and the per-site, per-feature matching cache for one transformed model."""

    def __init__(self, plan: Plan, max_events: int = 100_000) -> None:
        self.plan = plan
        self.id = next(_IDS)
        _RUNTIMES[self.id] = self
        self.sites: dict[str, SiteSpec] = {}
        self.site_order: dict[str, int] = {}
        self.events: deque[CacheEvent] = deque(maxlen=max_events)
        self.counts: Counter[str] = Counter()
        self.reports: list = []  # one GraphReport per captured graph
        self.grid_hint: tuple[int, int, int] | None = None  # set by integrations before a call
        # Separate matching caches for the calls a pipeline makes within one step (diffusers'
        # ``cache_context("cond")`` / ``("uncond")``): features differ, so must the matching.
        self.context: str = ""
        # -1: timesteps fall during a generation; +1: they rise (Mochi's pipeline); None: learn
        # it from the first change. A move against the direction starts a new generation.
        self.timestep_direction: int | None = None
        self.reset()

    # ------------------------------------------------------------------ sites
    def ordinal(self, path: str) -> int:
        """Plan index of an attention module: the order in which rewritten sites were first seen."""
        if path not in self.site_order:
            self.site_order[path] = len(self.site_order)
        return self.site_order[path]

    def register(self, spec: SiteSpec) -> None:
        self.sites[spec.key] = spec

    @property
    def num_sites(self) -> int:
        return len(self.site_order)

    # ------------------------------------------------------------------ steps
    def reset(self) -> None:
        """Start a new generation: step 0, empty matching cache, automatic step tracking."""
        self.step = 0
        self.generation = getattr(self, "generation", -1) + 1
        self._last_timestep: float | None = None
        self._pinned = False
        self.cache: dict[tuple[str, str, str], CacheEntry] = {}

    def set_step(self, step: int) -> None:
        """Pin the denoising step (disables timestep tracking until :meth:`reset`)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.step = int(step)
        self._pinned = True

    def observe_timestep(self, timestep: torch.Tensor | None) -> None:
        """Advance the step when the timestep changes; a move back (a rise, for the usual falling
        schedule) means a new generation began."""
        if timestep is None or self._pinned:
            return
        value = float(timestep.detach().float().max()) if timestep.numel() else 0.0
        last = self._last_timestep
        if last is None:
            self._last_timestep = value
            return
        if value == last:
            return
        direction = 1 if value > last else -1
        if self.timestep_direction is None:
            self.timestep_direction = direction
        if direction != self.timestep_direction:
            self.reset()
        else:
            self.step += 1
        self._last_timestep = value

    # ------------------------------------------------------------------ selection
    def ratio(self, spec: SiteSpec, feature: str) -> float:
        return self.plan.ratio(spec.ordinal, self.step, feature)

    def select(
        self, x: torch.Tensor, timestep: torch.Tensor | None, key: str, feature: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduction and assignment indices for one site call (see :func:`asymrnr_fx.ops.select`)."""
        self.observe_timestep(timestep)
        spec = self.sites[key]
        ratio = self.ratio(spec, feature)
        n_keep = ops.kept_count(spec.num_video, ratio)
        bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
        if n_keep >= spec.num_video:
            if self._window_reduces(spec, feature):
                self._matching(x, spec, feature)  # so the rest of the window only gathers
            self._log(spec, feature, "identity")
            full = torch.arange(length, device=x.device).expand(bsz, heads, length)
            return full.clone(), full.clone()
        entry = self._matching(x, spec, feature)
        text_len = length - spec.num_video  # per call: Mochi's valid prompt length is data-dependent
        if (n_keep, text_len) not in entry.selections:
            entry.selections[n_keep, text_len] = ops.select(
                entry.matching, spec.num_video, ratio, text_len, spec.text_first
            )
        keep, assign = entry.selections[n_keep, text_len]
        return keep.clone(), assign.clone()

    def _window_reduces(self, spec: SiteSpec, feature: str) -> bool:
        """Whether any step of the current cache window reduces this feature at this site."""
        window = self.plan.cache_window
        start = self.step // window * window
        end = start + window if self.plan.num_steps is None else min(start + window, self.plan.num_steps)
        return any(self.plan.ratio(spec.ordinal, s, feature) > 0 for s in range(start, end))

    def _matching(self, x: torch.Tensor, spec: SiteSpec, feature: str) -> CacheEntry:
        window = self.step // self.plan.cache_window
        shape = tuple(x.shape[:2])
        entry = self.cache.get((self.context, spec.key, feature))
        if entry is not None and entry.window == window and entry.shape == shape and entry.generation == self.generation:
            self._log(spec, feature, "reuse")
            return entry
        seed = ops.derive_seed(self.plan.seed, spec.ordinal, spec.occurrence, feature, window)
        choices = ops.draw_tile_choices(spec.grid, self.plan.stride, seed)
        if self.plan.dst == "fixed":
            choices = torch.zeros_like(choices)
        dst, src = ops.partition(spec.grid, self.plan.stride, choices)
        matching = ops.match(spec.video(x), dst, src, self.plan.similarity, grid=spec.grid, seed=seed)
        entry = CacheEntry(self.generation, window, shape, matching)
        self.cache[(self.context, spec.key, feature)] = entry
        self._log(spec, feature, "match")
        return entry

    def _log(self, spec: SiteSpec, feature: str, kind: str) -> None:
        self.counts[kind] += 1
        self.events.append(CacheEvent(self.generation, self.step, spec.path, feature, kind))

    # ------------------------------------------------------------------ observability
    def matching_steps(self, generation: int | None = None) -> list[int]:
        """Steps at which any site computed a fresh matching (for the current generation by default)."""
        gen = self.generation if generation is None else generation
        return sorted({e.step for e in self.events if e.kind == "match" and e.generation == gen})


def get_runtime(runtime_id: int) -> Runtime:
    rt = _RUNTIMES.get(runtime_id)
    if rt is None:
        raise RuntimeError(
            f"asymrnr runtime {runtime_id} no longer exists: the transformed model it belonged to was "
            "garbage-collected; keep a reference to the model returned by asymrnr_fx.transform()"
        )
    return rt


_DEFAULT_RUNTIMES: "weakref.WeakKeyDictionary[Plan, Runtime]" = weakref.WeakKeyDictionary()


def default_runtime(plan: Plan) -> Runtime:
    """The runtime used by ``torch.compile(backend="asymrnr", options={"plan": plan})``: one per plan."""
    rt = _DEFAULT_RUNTIMES.get(plan)
    if rt is None:
        rt = _DEFAULT_RUNTIMES[plan] = Runtime(plan)
    return rt
