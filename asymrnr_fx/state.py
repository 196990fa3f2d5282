"""State that belongs to one generation, and which state a model call uses.

Why this is separate from the runtime: one transformed (or compiled, or loaded) model
serves many requests. Its step clock and its matching cache describe *one* denoising
trajectory, so they must not be shared between two requests that interleave, run on two
threads, or start at an unexpected timestep. A :class:`GenerationState` is that
per-trajectory state; a :class:`~asymrnr_fx.runtime.Runtime` (one per transformed model)
only holds what is true for every request: the plan, the site table, reports and counters.

Which state a call uses:

* inside ``with asymrnr_fx.generation(model):`` (a :class:`Generation` handle, kept in a
  context variable, so threads and asyncio tasks are separate): the handle's state;
* otherwise the runtime's implicit state for the current thread: one stream of calls per
  thread, with generation boundaries guessed from the timestep (see :class:`Clock`).

A diffusers cache context ("cond"/"uncond", :func:`cache_context`) is kept the same way, in a
context variable, apart from the state: it names the matching a call uses within whichever
state the call uses, whether the context or the generation handle was entered first.

The call itself (:class:`asymrnr_fx.context.Call`) is set in a context variable by
:meth:`asymrnr_fx.runtime.Runtime.run`, so the ``asymrnr::select`` op inside the compiled
graph finds its runtime, state and site prefix without any id baked into the graph.
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import warnings
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol

import torch

from . import ops
from .errors import AsymRnRWarning

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan


class Runtime(Protocol):
    """What a :class:`Generation` needs of a runtime (kept structural: the runtime imports this module)."""

    plan: Any

_STATE_IDS = itertools.count()


@dataclass
class CacheEntry:
    """One site's cached matching for one feature, and the selections derived from it."""

    window: int
    shape: tuple[int, ...]
    matching: ops.Matching | None  # None: a shard without dst tokens (nothing to match to)
    shard_dst: tuple[int, ...] = ()  # shard-local: the dst tokens of every shard of the whole grid's partition
    selections: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class GenerationState:
    """Step clock and matching cache of one generation (one request's denoising trajectory).

    ``generation`` counts the generations this state has seen (0 for the first); a reset
    starts the next one with step 0 and an empty cache, so memory never grows with the
    number of steps or generations: the cache holds one entry per (context, site, feature).
    """

    def __init__(self) -> None:
        self.uid = next(_STATE_IDS)
        self.generation = -1
        self.reset()

    def reset(self) -> None:
        """Start a new generation: step 0, empty matching cache, timestep tracking on."""
        self.step = 0
        self.generation += 1
        self.last_timestep: float | None = None
        self.direction: int | None = None  # this generation's: learned from its first change
        self.pinned = False
        self.untimed = 0  # calls with no timestep to read: the clock cannot advance (Runtime.call warns)
        self.stepped = 0  # scheduler steps since the last call (apply()'s pipelines mark them): the next step(s)
        self.repeats = 0  # calls in a row at the current timestep, beyond the first
        self.first_repeats: int | None = None  # ... at step 0, once it is over: how many calls a step makes
        self.cache: dict[tuple[str, str, str], CacheEntry] = {}

    def set_step(self, step: int) -> None:
        """Pin the denoising step (timestep tracking stays off until :meth:`reset`)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        self.step = step
        self.pinned = True

    def observe(self, value: float | None, prior: "Direction") -> None:
        """Advance the clock from this call's timestep value.

        A new value is a new step; a value that moves against this generation's direction
        starts a new generation. The direction (falling, the usual; rising, Mochi) is this
        generation's own, learned from its first change, unless ``prior`` knows it (declared
        for the model, or seen in an earlier generation that moved the same way twice): then a
        first change against it means the previous generation was a single call (a warm-up, a
        probe) and this value starts a new one. What this cannot see: a generation that starts
        at the timestep the previous one stopped at, or one that continues the previous one's
        direction (img2img below an aborted run). Open a :func:`asymrnr_fx.generation` per
        request, or use :func:`asymrnr_fx.apply` (one per pipeline call), to make boundaries explicit.
        """
        if value is None or self.pinned:
            return
        last = self.last_timestep
        self.last_timestep = value
        stepped, self.stepped = self.stepped, 0
        if stepped and last is not None:  # the scheduler stepped: the next step, whatever the timestep says
            self._next(self.step + stepped)
            return
        if last is None:
            return
        if value == last:
            self._repeat(value)
            return
        moved = 1 if value > last else -1
        if self.direction is None:
            if prior.value is not None and moved != prior.value and not prior.contradicted(moved, last, value):
                self._restart(value)  # the previous generation was one call long
                return
            self.direction = moved
            self._next(self.step + 1)
            return
        if moved == self.direction:
            self._next(self.step + 1)
            prior.confirm(moved, self.step)
            return
        if self.step == 1 and prior.value is None:
            prior.ambiguous(last, value)  # a 2-call generation that reversed: which call began it is a guess
        self._restart(value)

    def _next(self, step: int) -> None:
        if self.first_repeats is None:
            self.first_repeats = self.repeats
        self.step, self.repeats = step, 0

    def _repeat(self, value: float) -> None:
        """One more call at the same timestep: a step's next call (CFG as two calls), unless a step makes
        more calls than step 0 did, which is how two steps whose timesteps are equal in the model's dtype
        look (bfloat16 rounds HunyuanVideo's 997.1 and 994.1 to 996). Said once per generation."""
        self.repeats += 1
        if self.first_repeats is not None and self.repeats == self.first_repeats + 1:
            warnings.warn(
                f"asymrnr_fx: timestep {value:g} came in {self.repeats + 1} calls in a row at step {self.step}, more than "
                f"the {self.first_repeats + 1} of step 0: two steps whose timesteps are equal in the model's dtype "
                "(bfloat16 rounds neighbouring timesteps together) count as one, and every later step runs one plan "
                "step early. Pass the timestep in float32, or pin each step with asymrnr_fx.set_step(model, i) "
                "(asymrnr_fx.apply(pipe) counts the scheduler's steps)", AsymRnRWarning, stacklevel=5,
            )

    def _restart(self, value: float) -> None:
        self.reset()
        self.last_timestep = value


class Direction:
    """What a model's timesteps do within a generation, when known: fall (-1) or rise (+1).

    Known from the model (``declared``, e.g. by the diffusers integration) or from a
    generation that moved the same way twice in a row; never from a single change, so one
    stray call (a warm-up at t=0) cannot teach the wrong direction to later generations.
    """

    def __init__(self, declared: int | None = None) -> None:
        self.value: int | None = declared
        self.warned = False
        self._against = 0  # one-call generations in a row whose first change went against ``value``

    def confirm(self, direction: int, steps: int) -> None:
        if direction == self.value:
            self._against = 0
        elif self.value is None and steps >= 2:
            self.value = direction

    def contradicted(self, moved: int, last: float, value: float) -> bool:
        """A first change against the known direction; the second in a row means the direction is wrong
        (a model called with the other convention): take ``moved`` from now on, and say so."""
        self._against += 1
        if self._against < 2:
            return False
        self.value, self._against = moved, 0
        warnings.warn(
            f"asymrnr_fx: this model's timesteps were expected to {'rise' if moved < 0 else 'fall'} within a "
            f"generation, but they keep moving the other way (... -> {last:g} -> {value:g}); from now on they are "
            "read that way. The calls just before were each counted as a generation of its own. Open "
            "asymrnr_fx.generation(model) per request to make generations explicit",
            AsymRnRWarning, stacklevel=6,
        )
        return True

    def ambiguous(self, last: float, value: float) -> None:
        """Two calls then a reversal, with no known direction: say so once (the call at ``last`` may be misfiled)."""
        if self.warned:
            return
        self.warned = True
        warnings.warn(
            f"asymrnr_fx: the timestep moved one way and then back (... -> {last:g} -> {value:g}) before the "
            "model's timestep direction was known, so the call at "
            f"{last:g} may have been counted as the second step of the previous call's generation. Open "
            "asymrnr_fx.generation(model) per request, or call asymrnr_fx.reset(model) after a warm-up call",
            AsymRnRWarning, stacklevel=6,
        )


_GENERATIONS: contextvars.ContextVar[tuple["Generation", ...]] = contextvars.ContextVar("asymrnr_generations", default=())


class Generation:
    """A handle on one request's AsymRnR state; use it as a (re-enterable) context manager.

    Every call of the target made inside ``with g:`` uses ``g``'s step clock and matching
    cache, so two requests interleaved on one model (A0, B0, A1, B1, ...) or run on two
    threads each get exactly the output they get alone. The handle is held in a context
    variable: entering it in one thread or asyncio task does not affect another.

    ``target`` is what the state applies to: a transformed or loaded model (its runtime),
    a pipeline patched by :func:`asymrnr_fx.apply` (its transformers), or a :class:`Plan`
    used with ``torch.compile(backend="asymrnr")`` (every model compiled with that plan
    object). Build one with :func:`asymrnr_fx.generation`.
    """

    def __init__(self, runtimes: "list[Runtime]" = (), plan: "Plan | None" = None) -> None:
        self._runtimes = weakref.WeakSet(runtimes)
        self._plan_ref = weakref.ref(plan) if plan is not None else None
        self._states: "weakref.WeakKeyDictionary[Runtime, GenerationState]" = weakref.WeakKeyDictionary()

    def targets(self, runtime: "Runtime") -> bool:
        if runtime in self._runtimes:
            return True
        plan = self._plan_ref() if self._plan_ref is not None else None
        return plan is not None and runtime.plan is plan

    def state_for(self, runtime: "Runtime") -> GenerationState:
        state = self._states.get(runtime)
        if state is None:
            state = self._states[runtime] = GenerationState()
        return state

    def states(self) -> Iterator[GenerationState]:
        return iter(list(self._states.values()))

    @property
    def step(self) -> int | None:
        """The step of this generation (of its first model; None before the first call)."""
        return next((s.step for s in self.states()), None)

    def mark_step(self) -> None:
        """The pipeline's scheduler stepped: every model's next call is the next step, whatever its timestep."""
        for state in self.states():
            state.stepped += 1

    def reset(self) -> None:
        """Start over: step 0 and empty caches for every model this handle covers."""
        for state in self.states():
            state.reset()

    def set_step(self, step: int) -> None:
        """Pin the step for every model this handle covers (state is created if needed)."""
        for runtime in list(self._runtimes):
            self.state_for(runtime)  # create the states of covered models not called yet
        for state in self.states():
            state.set_step(step)

    def __enter__(self) -> "Generation":
        _GENERATIONS.set(_GENERATIONS.get() + (self,))
        return self

    def __exit__(self, *exc: Any) -> None:
        # drop this handle's innermost entry (not a token reset: entries may nest in any order)
        stack = _GENERATIONS.get()
        if self in stack:
            i = len(stack) - 1 - stack[::-1].index(self)
            _GENERATIONS.set(stack[:i] + stack[i + 1 :])


def explicit_state(runtime: "Runtime") -> GenerationState | None:
    """The state of the innermost active :class:`Generation` that covers ``runtime``, if any."""
    for handle in reversed(_GENERATIONS.get()):
        if handle.targets(runtime):
            return handle.state_for(runtime)
    return None


_CACHE_CONTEXTS: contextvars.ContextVar[tuple[tuple[int, str], ...]] = contextvars.ContextVar(
    "asymrnr_cache_contexts", default=()
)


@contextlib.contextmanager
def cache_context(runtime: Any, name: str) -> Iterator[None]:
    """Calls of ``runtime`` made inside keep their matchings under ``name`` (diffusers' "cond"/"uncond").

    Why a context variable and not the state: a pipeline may enter the context before or after
    a :func:`~asymrnr_fx.generation` handle, and the handle's state is only chosen at the call.
    """
    token = _CACHE_CONTEXTS.set((*_CACHE_CONTEXTS.get(), (runtime.id, str(name))))
    try:
        yield
    finally:
        _CACHE_CONTEXTS.reset(token)


def cache_context_name(runtime: Any) -> str:
    """The innermost :func:`cache_context` name entered for ``runtime`` ("" outside any)."""
    return next((name for rid, name in reversed(_CACHE_CONTEXTS.get()) if rid == runtime.id), "")
