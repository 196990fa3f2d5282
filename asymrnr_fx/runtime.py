"""The runtime a rewritten graph talks to: site table, plan lookups and the matching cache.

The compiled graph cannot hold Python state, so every rewritten site calls the
``asymrnr::select`` custom op (see :mod:`asymrnr_fx.custom_ops`) with a *site string*: the
module path of the attention call relative to the compiled region, plus what the pass
learned about it (kind, grid, text length and side). Nothing process-local is baked in.
At run time the op finds the active :class:`~asymrnr_fx.state.Call` (set outside the graph
by whoever runs the model), and with it the :class:`Runtime` of the model, the
:class:`~asymrnr_fx.state.GenerationState` of the request, and the prefix of the region
being run. So one compiled block graph can serve every block of its class, and two
requests on one model never share a clock or a cache.

The step is read once per model call, outside the graph (:meth:`Runtime.call`); inside the
graph a matching is computed only at the start of a cache window and its indices reused
for the rest of the window.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
import types
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from . import custom_ops as _custom_ops
from . import ops, shard_select
from .plan import Plan
from .site_table import SiteTable
from .sites import GraphSite, SiteSpec, decode_site, encode_site  # noqa: F401  (re-exported)
from .context import Call, Capture, calling, current_call
from .errors import AsymRnRWarning
from .passes.find_timestep import TIMESTEP_NAMES
from .state import CacheEntry, Direction, GenerationState, cache_context_name, explicit_state

_IDS = itertools.count(1)
T = TypeVar("T")


@dataclass(frozen=True)
class CacheEvent:
    """One call of a site: whether it computed a matching or reused the cached one."""

    generation: int
    step: int
    site: str
    feature: str
    kind: str  # "match" | "reuse" | "identity"
    state: int = 0  # uid of the GenerationState


def fixed_plan(owner: object, value: object) -> None:
    """The setter of every ``plan`` attribute: a plan is fixed when a model is transformed (or exported).

    Why refuse rather than store it: the graphs, the site table and a package's site strings were
    built for the old plan, so a new one stored here would be shown while the old one keeps running.
    """
    raise AttributeError(
        f"{type(owner).__name__}.plan is fixed when the model is transformed: to run another plan, call "
        "asymrnr_fx.transform(model, plan) again (a transformed model may be passed; it keeps its own plan), or "
        "export a new package with it. A plan whose ratios change per step is one plan (Plan.from_table)"
    )


UNTIMED = (
    "a second call with no timestep to read (no tensor or number argument named " + ", ".join(TIMESTEP_NAMES) +
    " or with one of them as a part of its name, as vision_timesteps): the denoising "
    "step cannot advance, so every call runs as step 0 with step 0's ratios and matching. Pass the timestep under "
    "one of those names, or pin each step with asymrnr_fx.set_step(model, i) before the call"
)


# --------------------------------------------------------------------------- runtime
class Runtime:
    """One transformed model: its plan, its :class:`~asymrnr_fx.site_table.SiteTable`, the matching
    and selection per call, observability, and the default per-thread state."""

    def __init__(self, plan: Plan, max_events: int = 20_000) -> None:
        self._plan = plan
        self.id = next(_IDS)
        self.table = SiteTable(plan)  # which module each site string is, and its plan row
        self.events: deque[CacheEvent] = deque(maxlen=max_events)
        self.counts: Counter[str] = Counter()
        self.reports: list = []  # one GraphReport per captured graph
        self.warned = False  # an AsymRnRWarning about unrewritten sites was given
        self.weak_shards_warned: set[tuple[str, str]] = set()  # sites whose shards keep more than the plan asks
        self.direction = Direction()  # what the model's timesteps do, once known (declared or seen)
        self._local = threading.local()
        self.count_host_reads = False  # debugging aid: count host reads inside select (see tests)
        self.timings: Counter | None = None  # benchmarks set a Counter: seconds inside select per step
        self.last_state: GenerationState | None = None  # observability only (step/generation/cache/matching_steps)

    # ------------------------------------------------------------------ states
    def default_state(self) -> GenerationState:
        """The implicit state of the calling thread: one stream of calls, boundaries from the timestep."""
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = GenerationState()
        return state

    def current_state(self) -> GenerationState:
        """The state a call made now would use: an active :func:`asymrnr_fx.generation` or the thread's default."""
        return explicit_state(self) or self.default_state()

    def observed_state(self) -> GenerationState:
        """The state to report on: an active generation's, else the one the last call used
        (e.g. the generation a pipeline call opened), else the thread's default."""
        return explicit_state(self) or self.last_state or self.default_state()

    @property
    def step(self) -> int:
        return self.observed_state().step

    @property
    def generation(self) -> int:
        return self.observed_state().generation

    @property
    def cache(self) -> dict:
        return self.observed_state().cache

    def reset(self) -> None:
        """Start a new generation for the current state (step 0, empty cache, timestep tracking on)."""
        self.current_state().reset()

    def set_step(self, step: int) -> None:
        """Pin the step of the current state (disables timestep tracking until :meth:`reset`)."""
        self.current_state().set_step(step)

    def observe_timestep(self, timestep: Any, state: GenerationState | None = None) -> None:
        """Advance ``state``'s clock from a timestep (tensor or number): one host read."""
        if timestep is None:
            return
        state = state or self.current_state()
        if state.pinned:
            return
        if isinstance(timestep, torch.Tensor):
            self.counts["host_read"] += 1
            value = float(timestep.detach().float().max()) if timestep.numel() else 0.0
        else:
            value = float(timestep)
        state.observe(value, self.direction)

    def capture(
        self, grid_hint: tuple[int, int, int] | None = None, call_inputs: Iterable[tuple[str, tuple[int, ...]]] = (),
        patch: tuple[int, int, int] | None = None, sharding: tuple[int, int] | None = None, ulysses: int = 1,
        ulysses_rank: int = 0,
    ) -> Capture:
        """The capture context of a call: what graphs captured during it may learn (rows: a live read-only view)."""
        return Capture(grid_hint, tuple(call_inputs), types.MappingProxyType(self.site_order), patch, sharding, ulysses,
                       ulysses_rank)

    def call(self, timestep: Any = None, prefix: str = "", capture: Capture | None = None) -> calling:
        """Context manager for one model call: reads the timestep once, then makes the call active."""
        state = self.current_state()
        self.observe_timestep(timestep, state)
        if timestep is None and not state.pinned:
            state.untimed += 1
            if state.untimed == 2 and not self._plan.is_zero():  # the first call is step 0 either way
                warnings.warn(UNTIMED, AsymRnRWarning, stacklevel=4)
        self.last_state = state
        return calling(Call(self, state, prefix, capture))

    def run(self, fn: Callable[[], T], timestep: Any = None, capture: Capture | None = None) -> T:
        """The one way a model call runs: read the timestep, open the call, run ``fn``, check the site count.

        Used by the transformed module, :func:`asymrnr_fx.transform_graph`, the backend's graph
        runner (bare ``torch.compile``) and loaded packages alike.
        """
        with self.call(timestep, capture=capture):
            out = fn()
        self.check_site_count()
        return out

    plan = property(lambda self: self._plan, fixed_plan, doc="The plan it serves (fixed: its site table and graphs were built for it).")

    # ------------------------------------------------------------------ sites (the table's)
    @property
    def site_order(self) -> dict[str, int]:
        return self.table.site_order

    @property
    def sites(self) -> dict[str, SiteSpec]:
        return self.table.sites

    @property
    def num_sites(self) -> int:
        return self.table.num_sites

    def bind(self, model: Any) -> None:
        self.table.bind(model)

    def register_rows(self, paths: "tuple[str, ...] | list[str]") -> None:
        self.table.register_rows(paths)

    def canonical(self, path: str) -> str:
        return self.table.canonical(path)

    def resolve(self, site: str, prefix: str = "", anchor: torch.Tensor | None = None) -> SiteSpec:
        return self.table.resolve(site, prefix, anchor)

    def check_site_count(self) -> None:
        self.table.check_site_count()

    # ------------------------------------------------------------------ selection
    def ratio(self, spec: SiteSpec, feature: str, state: GenerationState) -> float:
        return self.plan.ratio(spec.ordinal, state.step, feature)

    def select_site(
        self, x: torch.Tensor, spec: SiteSpec, state: GenerationState, feature: str,
        sharding: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduction and assignment indices for one site call (see :func:`asymrnr_fx.ops.select`).

        ``sharding`` is the call's ``(rank, ranks)`` under ring context parallelism (from its capture).
        """
        if spec.shards > 1:
            return self._select_shards(x, spec, state, feature, sharding)
        ratio = self.ratio(spec, feature, state)
        n_keep = ops.kept_count(spec.num_video, ratio)
        length = x.shape[2]
        if n_keep >= spec.num_video:
            if self._window_reduces(spec, feature, state):
                self._matching(spec.video(x), spec, feature, state)  # so the rest of the window only gathers
            self._log(spec, feature, "identity", state)
            return ops.keep_all(x)
        entry = self._matching(spec.video(x), spec, feature, state)
        text_len = length - spec.num_video  # per call: Mochi's valid prompt length is data-dependent
        if (n_keep, text_len) not in entry.selections:
            entry.selections[n_keep, text_len] = ops.select(
                entry.matching, spec.num_video, ratio, text_len, spec.text_first
            )
        keep, assign = entry.selections[n_keep, text_len]
        return keep.clone(), assign.clone()

    def _select_shards(
        self, x: torch.Tensor, spec: SiteSpec, state: GenerationState, feature: str, sharding: tuple[int, int] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shard-local AsymRnR: each shard of the video is partitioned, matched and cut on its own
        (:mod:`asymrnr_fx.shard_select`: which shards the call holds, the count they share)."""
        held = shard_select.held_shards(spec, feature, sharding)
        size = math.prod(spec.grid) // spec.shards
        ratio = self.ratio(spec, feature, state)
        n_keep = ops.kept_count(size, ratio)
        video = spec.video(x)
        reduces = n_keep < size
        if not reduces and not self._window_reduces(spec, feature, state):
            self._log(spec, feature, "identity", state)
            return ops.keep_all(x)
        entries = [self._matching(video[:, :, i * size:(i + 1) * size], spec, feature, state, shard=shard)
                   for i, shard in enumerate(held)]
        if not reduces:  # the matchings above serve the rest of the window
            self._log(spec, feature, "identity", state)
            return ops.keep_all(x)
        shard_dst = entries[0].shard_dst
        weak = shard_select.weak_shards(spec, feature, shard_dst, size, n_keep, ratio)
        if weak and (spec.path, feature) not in self.weak_shards_warned:  # once per site and feature
            self.weak_shards_warned.add((spec.path, feature))
            warnings.warn(weak, AsymRnRWarning, stacklevel=2)
        keep, assign = shard_select.join(entries, shard_select.shared_count(n_keep, shard_dst), size, ratio, video)
        return ops.with_text(keep, assign, x.shape[2] - spec.num_video, spec.text_first)

    def _window_reduces(self, spec: SiteSpec, feature: str, state: GenerationState) -> bool:
        """Whether any step of the current cache window reduces this feature at this site."""
        window = self.plan.cache_window
        start = state.step // window * window
        end = start + window if self.plan.num_steps is None else min(start + window, self.plan.num_steps)
        return any(self.plan.ratio(spec.ordinal, s, feature) > 0 for s in range(start, end))

    def _matching(
        self, video: torch.Tensor, spec: SiteSpec, feature: str, state: GenerationState, shard: int | None = None,
    ) -> CacheEntry:
        """The matching of ``video`` (the call's video tokens, or shard ``shard`` of the grid) for this window.

        A ring rank's shard entry is keyed by the shard and the round, not the call: the ring
        calls of one round of a module share its queries' matching, and its partition is the
        whole grid's, seeded with the round (not the call) so that every rank draws the same,
        restricted to the shard. On one process (``Plan.shards``) every call of a module holds
        its own tokens (Mochi's per-sample loop, a block run twice): its entry and seed keep the
        occurrence, which is a ring round's number when the loop runs under ring attention.
        """
        window = state.step // self.plan.cache_window
        shape = (*video.shape[:2], *spec.grid, shard)  # a new batch, head count or resolution needs its own matching
        ring = shard is not None and spec.local
        run = shard_select.ring_round(spec)[0] if ring else spec.occurrence
        cache_key = (cache_context_name(self), spec.key if shard is None else f"{spec.path}#{run}@shard{shard}", feature)
        entry = state.cache.get(cache_key)
        if entry is not None and entry.window == window and entry.shape == shape:
            self._log(spec, feature, "reuse", state)
            return entry
        seed = ops.derive_seed(self.plan.seed, spec.ordinal, run, feature, window)
        stride = ops.site_stride(spec.grid, self.plan.stride)  # (1, 2, 2) on a one-frame grid
        choices = ops.draw_tile_choices(spec.grid, stride, seed)
        if self.plan.dst == "fixed":
            choices = torch.zeros_like(choices)
        dst, src = ops.partition(spec.grid, stride, choices)
        shard_dst: tuple[int, ...] = ()
        if shard is not None:
            size = video.shape[2]
            shard_dst = tuple(torch.bincount(dst // size, minlength=spec.shards).tolist())
            dst, src = ops.shard_partition(dst, src, shard * size, (shard + 1) * size)
        matching = ops.match(video, dst, src, self.plan.similarity, grid=spec.grid, seed=seed, window=self.plan.window,
                             stride=stride, offset=0 if shard is None else shard * video.shape[2]) if dst.numel() else None
        entry = state.cache[cache_key] = CacheEntry(window, shape, matching, shard_dst=shard_dst)
        self._log(spec, feature, "match", state)
        return entry

    def _log(self, spec: SiteSpec, feature: str, kind: str, state: GenerationState) -> None:
        self.counts[kind] += 1
        self.events.append(CacheEvent(state.generation, state.step, spec.path, feature, kind, state.uid))

    # ------------------------------------------------------------------ observability
    def matching_steps(self, generation: int | None = None, state: GenerationState | None = None) -> list[int]:
        """Steps at which any site computed a fresh matching, for one generation of one state
        (default: the current generation of the current state)."""
        state = state or self.observed_state()
        gen = state.generation if generation is None else generation
        return sorted({e.step for e in self.events if e.kind == "match" and e.generation == gen and e.state == state.uid})


def select_active(
    x: torch.Tensor, anchor: torch.Tensor | None, site: str, feature: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``asymrnr::select`` does: resolve the active call, then :meth:`Runtime.select_site`."""
    call = current_call()
    if call is None:
        raise RuntimeError(
            "asymrnr::select ran outside a call of a transformed model. Call the module returned by "
            "asymrnr_fx.transform() / asymrnr_fx.deploy.load() (not the original model or a bare AOTInductor runner), or use "
            "torch.compile(model, backend='asymrnr')"
        )
    runtime = call.runtime
    runtime.counts["select"] += 1
    spec = runtime.resolve(site, call.prefix, anchor)
    if runtime.count_host_reads:
        with _HostReadCounter(runtime.counts):
            return runtime.select_site(x, spec, call.state, feature, _sharding(call))
    if runtime.timings is not None:  # benchmarks: host time inside select, by step
        start = time.perf_counter()
        out = runtime.select_site(x, spec, call.state, feature, _sharding(call))
        runtime.timings[call.state.step] += time.perf_counter() - start
        return out
    return runtime.select_site(x, spec, call.state, feature, _sharding(call))


def _sharding(call: Call) -> tuple[int, int] | None:
    """The call's ``(rank, ranks)`` for sites holding one shard: its ring rank, else its Ulysses rank
    (a site reduced before Ulysses' all-to-all holds the rank's own shard)."""
    capture = call.capture
    if capture is None:
        return None
    if capture.sharding is not None or capture.ulysses <= 1:
        return capture.sharding
    return capture.ulysses_rank, capture.ulysses


def _select_kernel(
    x: torch.Tensor, anchor: torch.Tensor | None, site: str, feature: str
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return select_active(x, anchor, site, feature)


_custom_ops.select.register_kernel(None, _select_kernel)  # every device: the work is Python over torch ops


class _HostReadCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten calls that read device data on the host (``item``, ``nonzero``, ...) into ``counts["select_host_read"]``."""

    _SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::is_nonzero", "aten::masked_select"}

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self._counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func._schema.name in self._SYNCING:
            self._counts["select_host_read"] += 1
        return func(*args, **(kwargs or {}))
