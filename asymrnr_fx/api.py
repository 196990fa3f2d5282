"""The user-facing entry points: transform, inspect, and the step/cache controls."""
from __future__ import annotations

import functools
import inspect as _inspect
import itertools
import types
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import integrations
from .backend import analysis_backend, asymrnr_backend, rewrite_graph
from .plan import Plan, coerce_plan
from .report import Report
from .runtime import Runtime, default_runtime

GridFn = Callable[[nn.Module, tuple, dict], "tuple[int, int, int] | None"]
_ENTRY_IDS = itertools.count()


def _fresh_entry() -> Callable[..., Any]:
    """A call trampoline with its own code object.

    Dynamo keeps compiled graphs on the code object it traces and caps them at 8 per code
    object across *all* backends; compiling each transformed model through a fresh
    trampoline keeps separate transforms of the same model class from evicting each other.
    """

    def entry(module: nn.Module, args: tuple, kwargs: dict) -> Any:
        return module(*args, **kwargs)

    code = entry.__code__.replace(co_name=f"asymrnr_entry_{next(_ENTRY_IDS)}")
    return types.FunctionType(code, entry.__globals__, code.co_name)


def _named_call(model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Pass arguments by name so graph inputs keep their names (``timestep`` drives step tracking)."""
    if not args:
        return args, kwargs
    try:
        sig = _inspect.signature(model.forward)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return args, kwargs
    kinds = {p.name: p.kind for p in sig.parameters.values()}
    if any(kinds[n] in (_inspect.Parameter.VAR_POSITIONAL, _inspect.Parameter.POSITIONAL_ONLY) for n in bound.arguments):
        return args, kwargs
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if kinds[name] == _inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return (), named


class AsymRnRModule(nn.Module):
    """A model whose attention runs through AsymRnR; behaves like the model it wraps.

    Attribute lookups that the wrapper does not answer go to the wrapped model, so code
    that reads ``model.config`` or ``model.dtype`` keeps working.
    """

    def __init__(
        self,
        model: nn.Module,
        plan: Plan,
        *,
        grid: tuple[int, int, int] | None = None,
        compile: bool = False,
        fullgraph: bool = False,
        inductor: Mapping[str, Any] | None = None,
        grid_fn: GridFn | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.plan = plan
        self.runtime = runtime if runtime is not None else Runtime(plan)
        self.grid_fn = grid_fn
        self.compiled = compile
        options = {"plan": plan, "runtime": self.runtime, "grid": grid, "compile": compile, "inductor": dict(inductor or {})}
        backend = functools.partial(asymrnr_backend, options=options)
        self.__dict__["_fn"] = torch.compile(_fresh_entry(), backend=backend, dynamic=False, fullgraph=fullgraph)
        self._checked = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.grid_fn is not None:
            self.runtime.grid_hint = self.grid_fn(self.model, args, kwargs)
        args, kwargs = _named_call(self.model, args, kwargs)
        out = self._fn(self.model, args, kwargs)
        if not self._checked:
            self._checked = True
            _check_site_count(self.plan, self.runtime)
        return out

    @property
    def report(self) -> Report:
        """What the pass found in every graph captured so far (empty before the first call)."""
        return Report(list(self.runtime.reports))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self._modules.get("model")
            if model is None:
                raise
            return getattr(model, name)


def baseline(model: nn.Module, *, compile: bool = True, inductor: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """The unreduced model, compiled by inductor through its own trampoline (for fair comparisons).

    Uses a fresh code object like :func:`transform`, so comparing many variants of one model
    never runs into Dynamo's per-code-object recompile limit.
    """
    if not compile:
        return model
    fn = torch.compile(_fresh_entry(), backend="inductor", dynamic=False, options=dict(inductor or {}) or None)

    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _named_call(model, args, kwargs)
        return fn(model, args, kwargs)

    return call


def _check_site_count(plan: Plan, runtime: Runtime) -> None:
    if plan.num_sites is not None and runtime.num_sites not in (0, plan.num_sites):
        raise ValueError(
            f"plan {plan.name or ''} has ratios for {plan.num_sites} attention sites but the model has "
            f"{runtime.num_sites} rewritable sites ({', '.join(list(runtime.site_order)[:3])}, ...); "
            "build the plan for this model's number of attention blocks"
        )


def transform(
    model: nn.Module,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
    compile: bool = False,
    fullgraph: bool = False,
    inductor: Mapping[str, Any] | None = None,
    grid_fn: GridFn | None = None,
    runtime: Runtime | None = None,
) -> AsymRnRModule:
    """Rewrite the attention of ``model`` with AsymRnR.

    The model is captured by Dynamo on its first call (and again for each new input
    shape); the captured graph is rewritten and run as is, or compiled by inductor when
    ``compile=True`` (the same as ``torch.compile(model, backend="asymrnr")`` but with a
    runtime of its own). The original model is not modified.

    ``runtime`` injects a :class:`~asymrnr_fx.runtime.Runtime` (or subclass, e.g. the
    recording runtime of :mod:`asymrnr_fx.calibrate`) instead of a fresh one; its plan is
    used when ``plan`` is None.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"transform() needs an nn.Module, got {type(model).__name__}")
    return integrations.configure(  # library defaults: grid from the model's config, tracing settings
        AsymRnRModule(
            model,
            runtime.plan if plan is None and runtime is not None else coerce_plan(plan),
            grid=grid, compile=compile, fullgraph=fullgraph, inductor=inductor, grid_fn=grid_fn, runtime=runtime,
        )
    )


def transform_graph(
    gm: torch.fx.GraphModule,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
) -> torch.fx.GraphModule:
    """Rewrite an already captured graph in place, e.g. ``torch.export.export(model, args).module()``.

    Works on Dynamo-level graphs and on exported (aten-level) graphs alike; the returned
    module runs eagerly and carries its runtime (see :func:`runtime_of`).
    """
    plan = coerce_plan(plan)
    runtime = Runtime(plan)
    runtime.reports.append(rewrite_graph(gm, plan, runtime, grid=grid))
    _check_site_count(plan, runtime)
    gm._asymrnr_runtime = runtime
    return gm


def inspect(
    model: nn.Module,
    *args: Any,
    plan: Plan | None = None,
    grid: tuple[int, int, int] | None = None,
    grid_fn: GridFn | None = None,
    **kwargs: Any,
) -> Report:
    """Run ``model`` once (no grad) and report every attention site: its class and whether it would be rewritten.

    For a transformed model the report is that of its own rewrite (the call runs it).
    """
    if isinstance(model, AsymRnRModule):
        if args or kwargs:
            with torch.no_grad():
                model(*args, **kwargs)
        return model.report
    plan = coerce_plan(plan)
    runtime = Runtime(plan)
    grid_fn = grid_fn if grid_fn is not None else integrations.grid_fn_for(model)
    if grid_fn is not None:
        runtime.grid_hint = grid_fn(model, args, kwargs)
    fn = torch.compile(_fresh_entry(), backend=analysis_backend(plan, runtime, grid), dynamic=False)
    call_args, call_kwargs = _named_call(model, args, kwargs)
    with torch.no_grad(), integrations.tracing(model):
        fn(model, call_args, call_kwargs)
    return Report(list(runtime.reports))


def runtime_of(obj: Any) -> Runtime:
    """The runtime behind a transformed model, a plan used with ``backend="asymrnr"``, or a runtime."""
    if isinstance(obj, Runtime):
        return obj
    if isinstance(obj, AsymRnRModule):
        return obj.runtime
    rt = getattr(obj, "_asymrnr_runtime", None)
    if isinstance(rt, Runtime):
        return rt
    if isinstance(obj, Plan):
        return default_runtime(obj)
    raise TypeError(
        f"{type(obj).__name__} carries no AsymRnR runtime; pass the model returned by asymrnr_fx.transform(), "
        "or the Plan you gave torch.compile(backend='asymrnr', options={'plan': plan})"
    )


def set_step(obj: Any, step: int) -> None:
    """Pin the denoising step (turns off timestep-based tracking until :func:`reset`)."""
    runtime_of(obj).set_step(step)


def reset(obj: Any) -> None:
    """Start a new generation: step 0, empty matching cache, timestep tracking on."""
    runtime_of(obj).reset()
