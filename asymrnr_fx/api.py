"""The user-facing entry points: transform, inspect, generation, and the step/cache controls."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import integrations
from .integrations import hooks
from .backend import analysis_backend, default_runtime, runtimes_for
from .calls import call_timestep, fresh_entry, named_call
from .module import AsymRnRModule, GridFn, Options
from .plan import Plan, coerce_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime
from .state import Generation

__all__ = [
    "AsymRnRModule", "Options", "baseline", "generation", "inspect", "reset", "runtime_of", "runtimes_of", "set_step",
    "transform", "transform_graph",
]


def baseline(model: nn.Module, *, compile: bool = True, inductor: Mapping[str, Any] | None = None) -> Callable[..., Any]:
    """The unreduced model, compiled by inductor through its own trampoline (for fair comparisons).

    Uses a fresh code object like :func:`transform`, so comparing many variants of one model
    never runs into Dynamo's per-code-object recompile limit.
    """
    if not compile:
        return model
    fn = torch.compile(fresh_entry(), backend="inductor", dynamic=False, options=dict(inductor or {}) or None)

    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = named_call(model, args, kwargs)
        return fn(model, args, kwargs)

    return call


def transform(
    model: nn.Module,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    runtime: Runtime | None = None,
    **options: Any,
) -> AsymRnRModule:
    """Rewrite the attention of ``model`` with AsymRnR.

    Args:
        model: any ``nn.Module`` whose attention calls ``F.scaled_dot_product_attention``.
        plan: the ratios and options (:class:`Plan`, a dict of ``Plan.uniform`` arguments, or a saved
            plan's path). Default ``Plan.uniform(q=0.5, kv=0.3)``; for real models prefer a published or
            calibrated plan (``Plan.published(...)``, ``asymrnr_fx.calibration.plan_for_budget(...)``).
        runtime: a :class:`~asymrnr_fx.runtime.Runtime` (or subclass, e.g. calibration's recording
            runtime) instead of a fresh one; give ``plan=None`` with it (its plan is used).
        **options: ``grid``, ``compile`` (False / True / ``"regional"``), ``fullgraph``, ``inductor``,
            ``grid_fn``: see :class:`~asymrnr_fx.module.Options` for ranges and recommendations.

    The model is captured by Dynamo on its first call and again for each new input shape
    (each shape through its own trampoline, so no recompile limit applies). The original
    model is not modified (except the block forwards with ``compile="regional"``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"transform() needs an nn.Module, got {type(model).__name__}")
    opts = Options.of(options)
    if isinstance(model, AsymRnRModule):
        model = model.model  # a new transform beside it: the given one keeps reducing (untransform() drops it)
    elif getattr(model, "_asymrnr_runtime", None) is not None:  # a loaded package, or transform_graph's result
        raise TypeError(
            f"this {type(model).__name__} already runs AsymRnR with its own plan, compiled in: transform (or export) "
            "the original model with the new plan instead"
        )
    hooks.check(model)  # refuse hooks that would silently turn the reduction off
    hooks.warn_unknown(model)
    hooks.warn_backends(model)
    if plan is None and runtime is not None:
        return AsymRnRModule(model, runtime.plan, opts, runtime)
    return AsymRnRModule(model, coerce_plan(plan), opts, runtime)


def transform_graph(
    gm: torch.fx.GraphModule,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
) -> torch.fx.GraphModule:
    """Rewrite an already captured graph in place, e.g. ``torch.export.export(model, args).module()``.

    Works on Dynamo-level graphs and on exported (aten-level) graphs alike; the returned
    module runs eagerly, reads its timestep input once per call, and carries its runtime
    (see :func:`runtime_of`).
    """
    from .passes import rewrite_graph

    plan = coerce_plan(plan)
    runtime = Runtime(plan)
    runtime.bind(gm)
    report = rewrite_graph(gm, plan, runtime.capture(), grid=grid)
    runtime.register_rows(report.rows)
    runtime.reports.append(report)
    position = report.timestep_index  # graph inputs are placeholders in order
    forward = gm.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        t = args[position] if position is not None and position < len(args) else call_timestep(kwargs)
        return runtime.run(lambda: forward(*args, **kwargs), t)

    gm.forward = run
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

    For a transformed model (or :func:`transform_graph`'s result) the report is that of its own
    rewrite (the call runs it), with its own plan: a different ``plan`` raises (transform the
    original model with it instead); the call runs as a request of its own, so the model's next
    request starts afresh. A loaded package keeps no report: inspecting it raises,
    naming the fix, rather than analysing its already rewritten graph as a model. A table plan
    built for another number of sites is reported in the header (``Report.problem``) and warned
    about: :func:`transform` would raise at the first call.
    """
    own = model.runtime if isinstance(model, AsymRnRModule) else getattr(model, "_asymrnr_runtime", None)
    if isinstance(own, Runtime):
        if plan is not None and not coerce_plan(plan).runs_like(own.plan):
            raise ValueError(
                "inspect() of a transformed model reports the plan it was transformed with, not plan=...: "
                "inspect the original model with this plan, or transform it with this plan first"
            )
        if not own.reports and not isinstance(model, AsymRnRModule):
            raise TypeError(
                f"this {type(model).__name__} runs AsymRnR compiled in (a loaded package) and keeps no site report: "
                "inspect the original model with the package's plan, asymrnr_fx.inspect(model, *inputs, "
                "plan=loaded.plan)"
            )
        if args or kwargs:  # in a request of its own: the model's next request does not continue this call
            with torch.no_grad(), generation(model):
                model(*args, **kwargs)
            if isinstance(model, AsymRnRModule):
                integrations.diffusers.reset_hook_state(model.model)  # nor do its cache hooks
        return model.report if isinstance(model, AsymRnRModule) else Report(list(own.reports), plan=repr(own.plan))
    plan = coerce_plan(plan)
    if hooks.below_hooked(model):  # cache hooks split the model into regions: report what transform() will run
        return _inspect_regions(model, plan, grid, grid_fn, args, kwargs)
    hooks.warn_backends(model)  # sites a non-SDPA attention backend keeps intact never reach the graph
    runtime = Runtime(plan)
    grid_fn = grid_fn if grid_fn is not None else integrations.grid_fn_for(model)
    call_args, call_kwargs = named_call(model, args, kwargs)
    capture = runtime.capture(grid_fn(model, args, kwargs) if grid_fn is not None else None)
    fn = torch.compile(fresh_entry(), backend=analysis_backend(plan, runtime, grid, capture), dynamic=False)
    with torch.no_grad(), integrations.tracing(model):
        fn(model, call_args, call_kwargs)
    integrations.diffusers.reset_hook_state(model)  # the hooks ran: the next generation starts as if they had not
    report = Report(list(runtime.reports), plan=repr(plan))
    try:  # the rows a run would number (analysis numbers none): too few raise here, too many in the pass
        runtime.register_rows([path for g in report.graphs for path in g.rows])
        runtime.check_site_count()
    except ValueError as e:
        report.problem = str(e)
        warnings.warn(f"asymrnr_fx.inspect: {e}", AsymRnRWarning, stacklevel=2)
    return report


def _inspect_regions(model: nn.Module, plan: Plan, grid: Any, grid_fn: Any, args: tuple, kwargs: dict) -> Report:
    """inspect() of a model with cache hooks: its attention runs in regions below the hooks, which a whole-model
    capture does not see (it reported no site), so the call runs as transform() would run it, then is undone."""
    fast = transform(model, plan, grid=grid, grid_fn=grid_fn)
    problem = ""
    try:
        with torch.no_grad(), generation(fast):
            fast(*args, **kwargs)
    except ValueError as e:  # a table plan for another number of sites: said in the report, as below
        problem = str(e)
    finally:
        fast.untransform()
        integrations.diffusers.reset_hook_state(model)
    report = fast.report
    if problem:
        report.problem = problem
        warnings.warn(f"asymrnr_fx.inspect: {problem}", AsymRnRWarning, stacklevel=3)
    return report


def runtimes_of(obj: Any) -> list[Runtime]:
    """Every runtime behind ``obj``: a transformed model, a pipeline patched by ``apply``, a plan, ..."""
    if isinstance(obj, Runtime):
        return [obj]
    if isinstance(obj, AsymRnRModule):
        return [obj.runtime]
    rt = getattr(obj, "_asymrnr_runtime", None)
    if isinstance(rt, Runtime):
        return [rt]
    if isinstance(obj, Plan):
        return runtimes_for(obj) or [default_runtime(obj)]
    found = [m.runtime for m in (getattr(obj, c, None) for c in integrations.TRANSFORMER_COMPONENTS) if isinstance(m, AsymRnRModule)]
    if found:
        return found
    raise TypeError(
        f"{type(obj).__name__} carries no AsymRnR runtime; pass the model returned by asymrnr_fx.transform(), "
        "a pipeline given to asymrnr_fx.apply(), or the Plan you gave torch.compile(backend='asymrnr', "
        "options={'plan': plan})"
    )


def runtime_of(obj: Any) -> Runtime:
    """The runtime behind a transformed model, a plan used with ``backend="asymrnr"`` (its most recently
    used model), a pipeline patched by ``apply`` (its first transformer), or a runtime."""
    return runtimes_of(obj)[0]


def generation(target: Any) -> Generation:
    """A new request's state: ``with asymrnr_fx.generation(model): ...`` runs every call inside with its own
    step clock and matching cache.

    ``target``: a transformed or loaded model, a pipeline patched by :func:`apply` (all its
    transformers), or the :class:`Plan` given to ``torch.compile(backend="asymrnr")``. The handle
    can be entered again for the next step of the same request (e.g. a server interleaving
    requests step by step); threads and asyncio tasks each see only what they entered.
    """
    if isinstance(target, Plan):
        return Generation(plan=target)
    return Generation(runtimes_of(target))


def set_step(obj: Any, step: int) -> None:
    """Pin the denoising step of the current generation (turns off timestep tracking until :func:`reset`)."""
    for runtime in runtimes_of(obj):
        runtime.set_step(step)


def reset(obj: Any) -> None:
    """Start a new generation: step 0, empty matching cache, timestep tracking on."""
    for runtime in runtimes_of(obj):
        runtime.reset()
