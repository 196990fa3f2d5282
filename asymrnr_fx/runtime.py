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
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import torch

from . import ops
from .plan import Plan
from .sites import GraphSite, SiteSpec, decode_site, encode_site  # noqa: F401  (re-exported)
from .state import Call, CacheEntry, Direction, GenerationState, calling, current_call, explicit_state

_IDS = itertools.count(1)


@dataclass(frozen=True)
class CacheEvent:
    """One call of a site: whether it computed a matching or reused the cached one."""

    generation: int
    step: int
    site: str
    feature: str
    kind: str  # "match" | "reuse" | "identity"
    state: int = 0  # uid of the GenerationState


# --------------------------------------------------------------------------- runtime
class Runtime:
    """One transformed model's plan, site table, observability, and the default per-thread state."""

    def __init__(self, plan: Plan, max_events: int = 20_000) -> None:
        self.plan = plan
        self.id = next(_IDS)
        self.site_order: dict[str, int] = {}  # full module path -> plan row
        self.sites: dict[str, SiteSpec] = {}  # full key -> spec
        self._specs: dict[tuple[str, str, int | None], SiteSpec] = {}  # (site string, prefix, anchor) -> spec
        self._model: "weakref.ref | None" = None
        self._param_names: dict[int, str] = {}
        self._unknown: set[int] = set()
        self._canonical: dict[str, str] = {}  # graph module path -> the model's own name
        self.events: deque[CacheEvent] = deque(maxlen=max_events)
        self.counts: Counter[str] = Counter()
        self.reports: list = []  # one GraphReport per captured graph
        # What the model call in progress says about the grid, for graphs captured during it: the
        # integration's grid (model config + arguments) and the call's 5-D float inputs.
        self.grid_hint: tuple[int, int, int] | None = None
        self.call_inputs: list[tuple[str, tuple[int, ...]]] = []
        self.warned = False  # an AsymRnRWarning about unrewritten sites was given
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

    def call(self, timestep: Any = None, prefix: str = "") -> calling:
        """Context manager for one model call: reads the timestep once, then makes the call active."""
        state = self.current_state()
        self.observe_timestep(timestep, state)
        self.last_state = state
        return calling(Call(self, state, prefix))

    # ------------------------------------------------------------------ sites
    def ordinal(self, path: str) -> int:
        """Plan row of an attention module: its place among the model's video sites.

        Rows come from :meth:`register_rows` (a graph of the whole model lists every video site,
        rewritten or not) or, for graphs that serve several modules (regional blocks, frames after
        a graph break, where every video site is rewritten), from the order the sites first run.
        """
        if path not in self.site_order:
            n = self.plan.num_sites
            if n is not None and len(self.site_order) >= n:
                raise ValueError(
                    f"plan {self.plan.name or ''} has ratios for {n} attention sites, but the model has more "
                    f"(site {len(self.site_order) + 1} is {path}); build the plan for this model's number of "
                    "attention blocks"
                )
            self.site_order[path] = len(self.site_order)
        return self.site_order[path]

    def register_rows(self, paths: "tuple[str, ...] | list[str]") -> None:
        """Give each video site of a captured top-level graph its row, in graph order.

        Why at capture: a site whose plan ratios are all zero is left intact, so it never runs
        ``asymrnr::select``; numbering only the sites that run would shift every later row.
        """
        for path in paths:
            self.ordinal(self.canonical(path))

    def canonical(self, path: str) -> str:
        """The model's own name for the module a graph path reaches (``path`` itself if none).

        Why: Dynamo names a module by how the code reached it, so a block reached through a
        wrapper (a hook's closure, a patched bound ``forward``) gets a path such as
        ``blocks.0.forward.__self__.attn1``; plan rows and cache keys must not depend on that.
        """
        found = self._canonical.get(path)
        if found is not None:
            return found
        model = self._model() if self._model is not None else None
        found = path
        if model is not None and path:
            obj: Any = model
            try:
                for part in path.split("."):
                    obj = obj[int(part)] if part.isdigit() and isinstance(obj, (tuple, list)) else getattr(obj, part)
            except (AttributeError, IndexError, TypeError, KeyError):
                obj = None
            if isinstance(obj, torch.nn.Module):
                names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
                found = names.get(id(obj), path)
        if len(self._canonical) < 100_000:
            self._canonical[path] = found
        return found

    @property
    def num_sites(self) -> int:
        return len(self.site_order)

    def bind(self, model: Any) -> None:
        """Remember the model whose parameters identify its attention modules at run time."""
        self._model = weakref.ref(model)
        self._param_names = {}
        self._canonical = {}

    def _anchored_path(self, relative: str, ptr: int) -> str | None:
        """The full path of the attention module whose parameter lives at ``ptr``, or None.

        The graph's own path may be relative (a block graph, a frame resumed after a hook's
        graph break); the parameter says which module instance actually ran.
        """
        name = self._param_names.get(ptr)
        if name is None and ptr not in self._unknown:
            model = self._model() if self._model is not None else None
            if model is not None:  # built lazily, rebuilt when weights moved (``.to()``, offloading)
                self._param_names = {p.data_ptr(): n for n, p in model.named_parameters()}
                name = self._param_names.get(ptr)
            if name is None:
                self._unknown.add(ptr)
        if name is None:
            return None
        owner = name.split(".")[:-1]  # the module holding the parameter, e.g. blocks.3.attn1.to_q
        leaf = relative.rsplit(".", 1)[-1]
        if leaf in owner:  # the graph's (relative) module name, placed in the full path
            return ".".join(owner[: len(owner) - owner[::-1].index(leaf)])
        # no usable name (a frame resumed inside the attention module): the projection's parent
        return ".".join(owner[:-1]) or None

    def resolve(self, site: str, prefix: str = "", anchor: torch.Tensor | None = None) -> SiteSpec:
        """The spec of a site string run under ``prefix`` with parameter ``anchor`` (cached)."""
        ptr = anchor.data_ptr() if anchor is not None and self._model is not None else None
        spec = self._specs.get((site, prefix, ptr))
        if spec is None:
            g = decode_site(site)
            path = (self._anchored_path(g.path, ptr) if ptr is not None else None) or self.canonical(prefix + g.path)
            spec = SiteSpec(
                key=f"{path}#{g.occurrence}", path=path, ordinal=self.ordinal(path), occurrence=g.occurrence,
                kind=g.kind, grid=g.grid, text_len=g.text_len, text_first=g.text_first,
            )
            if len(self._specs) > 100_000:  # weights that move every call (offloading): stay bounded
                self._specs.clear()
                self._unknown.clear()
            self._specs[site, prefix, ptr] = spec
            self.sites[spec.key] = spec
        return spec

    def check_site_count(self) -> None:
        """After a full call: a table plan must have exactly as many rows as the model has sites."""
        n = self.plan.num_sites
        if n is not None and self.num_sites not in (0, n):
            raise ValueError(
                f"plan {self.plan.name or ''} has ratios for {n} attention sites but the model has "
                f"{self.num_sites} video attention sites ({', '.join(list(self.site_order)[:3])}, ...); "
                "build the plan for this model's number of attention blocks"
            )

    # ------------------------------------------------------------------ selection
    def ratio(self, spec: SiteSpec, feature: str, state: GenerationState) -> float:
        return self.plan.ratio(spec.ordinal, state.step, feature)

    def select_site(
        self, x: torch.Tensor, spec: SiteSpec, state: GenerationState, feature: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduction and assignment indices for one site call (see :func:`asymrnr_fx.ops.select`)."""
        ratio = self.ratio(spec, feature, state)
        n_keep = ops.kept_count(spec.num_video, ratio)
        bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
        if n_keep >= spec.num_video:
            if self._window_reduces(spec, feature, state):
                self._matching(x, spec, feature, state)  # so the rest of the window only gathers
            self._log(spec, feature, "identity", state)
            full = torch.arange(length, device=x.device).expand(bsz, heads, length)
            return full.clone(), full.clone()
        entry = self._matching(x, spec, feature, state)
        text_len = length - spec.num_video  # per call: Mochi's valid prompt length is data-dependent
        if (n_keep, text_len) not in entry.selections:
            entry.selections[n_keep, text_len] = ops.select(
                entry.matching, spec.num_video, ratio, text_len, spec.text_first
            )
        keep, assign = entry.selections[n_keep, text_len]
        return keep.clone(), assign.clone()

    def _window_reduces(self, spec: SiteSpec, feature: str, state: GenerationState) -> bool:
        """Whether any step of the current cache window reduces this feature at this site."""
        window = self.plan.cache_window
        start = state.step // window * window
        end = start + window if self.plan.num_steps is None else min(start + window, self.plan.num_steps)
        return any(self.plan.ratio(spec.ordinal, s, feature) > 0 for s in range(start, end))

    def _matching(self, x: torch.Tensor, spec: SiteSpec, feature: str, state: GenerationState) -> CacheEntry:
        window = state.step // self.plan.cache_window
        shape = (*x.shape[:2], *spec.grid)  # a new batch, head count or resolution needs its own matching
        cache_key = (state.context, spec.key, feature)
        entry = state.cache.get(cache_key)
        if entry is not None and entry.window == window and entry.shape == shape:
            self._log(spec, feature, "reuse", state)
            return entry
        seed = ops.derive_seed(self.plan.seed, spec.ordinal, spec.occurrence, feature, window)
        choices = ops.draw_tile_choices(spec.grid, self.plan.stride, seed)
        if self.plan.dst == "fixed":
            choices = torch.zeros_like(choices)
        dst, src = ops.partition(spec.grid, self.plan.stride, choices)
        matching = ops.match(spec.video(x), dst, src, self.plan.similarity, grid=spec.grid, seed=seed)
        entry = state.cache[cache_key] = CacheEntry(window, shape, matching)
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
            "asymrnr_fx.transform() / asymrnr_fx.load() (not the original model or a bare AOTInductor runner), or use "
            "torch.compile(model, backend='asymrnr')"
        )
    runtime = call.runtime
    runtime.counts["select"] += 1
    spec = runtime.resolve(site, call.prefix, anchor)
    if runtime.count_host_reads:
        with _HostReadCounter(runtime.counts):
            return runtime.select_site(x, spec, call.state, feature)
    if runtime.timings is not None:  # benchmarks: host time inside select, by step
        start = time.perf_counter()
        out = runtime.select_site(x, spec, call.state, feature)
        runtime.timings[call.state.step] += time.perf_counter() - start
        return out
    return runtime.select_site(x, spec, call.state, feature)


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


# --------------------------------------------------------------------------- backend-path runtimes
_PLANS: "weakref.WeakSet[Plan]" = weakref.WeakSet()  # plans with backend-path runtimes (for all_runtimes)
_PLAN_LOCK = threading.Lock()
_RUNTIMES_ATTR = "_asymrnr_runtimes"


def _plan_runtimes(plan: Plan) -> dict[int | None, Runtime]:
    """The backend-path runtimes of ``plan``, kept on the plan itself.

    Why there and not in a process-wide table: a runtime holds its plan, so any table holding
    runtimes would keep every plan ever used alive (``reset(Plan.uniform(...))`` in a loop grew
    one by one); owned by the plan, they go when the plan goes.
    """
    runtimes = plan.__dict__.get(_RUNTIMES_ATTR)
    if runtimes is None:
        runtimes = {}
        object.__setattr__(plan, _RUNTIMES_ATTR, runtimes)  # Plan is frozen; this is bookkeeping, not a field
        _PLANS.add(plan)
    return runtimes


def runtime_for(plan: Plan, anchor: int | None = None) -> Runtime:
    """The runtime of one model compiled with ``torch.compile(backend="asymrnr", options={"plan": plan})``.

    Models are told apart by ``anchor`` (the storage address of one of their parameters, read
    by the graph wrapper at run time), so two models of one class compiled with the same plan
    object share Dynamo's graph but never a clock or a matching. ``anchor=None`` (asked for
    before any model ran, e.g. ``runtime_of(plan)``) gives a runtime the first model adopts.
    """
    with _PLAN_LOCK:
        runtimes = _plan_runtimes(plan)
        rt = runtimes.get(anchor)
        if rt is None and anchor is not None and None in runtimes:
            rt = runtimes[anchor] = runtimes.pop(None)  # the first model adopts the runtime asked for early
        if rt is None:
            rt = runtimes[anchor] = Runtime(plan)
            rt.reports = next(iter(runtimes.values())).reports  # same graphs: share what the pass found
        rt.last_used = next(_IDS)
        return rt


def runtimes_for(plan: Plan) -> list[Runtime]:
    return list(plan.__dict__.get(_RUNTIMES_ATTR, {}).values())


def all_runtimes() -> list[Runtime]:
    """Every backend-path runtime of this process (for debugging: which plans ran, on how many models)."""
    return [rt for plan in list(_PLANS) for rt in runtimes_for(plan)]


def default_runtime(plan: Plan) -> Runtime:
    """The most recently used backend-path runtime of ``plan`` (one is made if there is none)."""
    found = runtimes_for(plan)
    if not found:
        return runtime_for(plan)
    return max(found, key=lambda r: getattr(r, "last_used", 0))

