"""The ``asymrnr`` torch.compile backend: Dynamo glue around the pass driver.

``torch.compile(model, backend="asymrnr", options={"plan": plan})`` resolves by name
through the ``torch_dynamo_backends`` entry point; Dynamo hands us each captured graph, the
passes (:mod:`asymrnr_fx.passes.manager`) rewrite its attention, inductor compiles it, and
we return a thin wrapper that runs outside the compiled code on every call.

Why the wrapper: the compiled graph holds no state. When the graph is run by
:func:`asymrnr_fx.transform` (or a regional block wrapper, or a loaded package), the
caller has already opened the call (runtime, generation state, region prefix). When it is
run by a bare ``torch.compile``, the wrapper opens it: it tells models apart by the storage
of one of their parameters (two models of one class share Dynamo's graph) and reads the
timestep input once, on the host, before the graph runs.

Options: ``plan`` (Plan, dict, or saved-plan path; default :func:`~asymrnr_fx.plan.default_plan`),
``grid`` ((F, H, W) video tokens), ``compile`` (False runs the rewritten graph eagerly),
``inductor`` (inductor config patches), parsed once into a :class:`BackendConfig`.
:func:`asymrnr_fx.transform` hands the backend a ready config with its private settings
(the model's runtime, whether the graph is a regional block); :mod:`.specialize` marks the
static copies of a graph captured with symbolic lengths. None of these is a user option.

This module also owns the runtimes of bare ``torch.compile`` models, kept on their plan.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx

from .passes import find_attention, rewrite_graph
from .passes.graph import parameter_inputs
from .plan import Plan, coerce_plan
from .report import warn_nothing_rewritten
from .runtime import Runtime
from .specialize import PerShape, has_symbolic_inputs
from .context import current_call

_IDS = itertools.count(1)
#: What users may pass as ``torch.compile(..., backend="asymrnr", options={...})``.
USER_OPTIONS = ("plan", "grid", "compile", "inductor")


@dataclass(frozen=True)
class BackendConfig:
    """The backend's settings, parsed once. User options first; the rest is set by
    :func:`asymrnr_fx.transform` (``runtime``, ``region``) or by :mod:`.specialize`
    (``specialized``) and is not a user option.
    """

    plan: Plan | None = None  # None: the default plan (bare torch.compile only)
    grid: tuple[int, int, int] | None = None
    compile: bool = True
    inductor: Mapping[str, Any] = field(default_factory=dict)
    runtime: "weakref.ref[Runtime] | None" = None  # the transformed model's runtime
    region: bool = False  # a regional block graph, shared by every block of its class
    specialized: bool = False  # a static copy of a symbolic graph

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "BackendConfig":
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(USER_OPTIONS))
        if unknown:
            raise ValueError(f"unknown asymrnr backend options {unknown}; known: {list(USER_OPTIONS)}")
        return cls(plan=coerce_plan(opts.get("plan")), grid=opts.get("grid"), compile=bool(opts.get("compile", True)),
                   inductor=dict(opts.get("inductor") or {}))


def asymrnr_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    options: Mapping[str, Any] | None = None,
    mode: str | None = None,
    *,
    config: BackendConfig | None = None,
    **_: Any,
) -> Callable[..., Any]:
    """The ``asymrnr`` Dynamo backend: rewrite attention, then compile with inductor.

    ``options`` are the user's (see :data:`USER_OPTIONS`); :func:`asymrnr_fx.transform` passes a
    ready ``config`` instead.
    """
    cfg = config if config is not None else BackendConfig.from_options(options)
    if has_symbolic_inputs(example_inputs) and find_attention(gm):
        # symbolic lengths cannot be placed on a grid: rewrite a static copy per concrete shape
        static = dataclasses.replace(cfg, specialized=True)
        return PerShape(gm, lambda graph, args: asymrnr_backend(graph, args, mode=mode, config=static)).entry()
    bound = _deref(cfg.runtime)
    call = current_call()
    params = parameter_inputs(gm)
    runtime = bound or (call.runtime if call is not None else None)
    if runtime is None:
        runtime = runtime_for(coerce_plan(cfg.plan), _anchor(example_inputs, params))  # None: the default plan
    own = call is not None and call.runtime is runtime
    prefix = call.prefix if own else ""
    capture = call.capture if own and call.capture is not None else runtime.capture()  # per call, never on the runtime
    report = rewrite_graph(gm, runtime.plan, capture, grid=cfg.grid, prefix=prefix, shared=cfg.region)
    runtime.register_rows(report.rows)
    if not prefix and not cfg.region:  # the model's own names in reports (not a wrapper's path)
        for site in report.sites:
            site.path = runtime.canonical(site.path)
    runtime.reports.append(report)
    video_sites = [s for s in report.sites if not s.extra.get("prompt_only")]
    if not report.rewritten and (video_sites or bound is None):
        # a graph without video attention (a piece before a graph break, a text refiner) is judged
        # with the whole call, after it ran (AsymRnRModule); one with video attention that was not
        # rewritten is said now
        dynamic = bool(report.sites) and has_symbolic_inputs(example_inputs)
        unreduced_video = bound is None and any(s.kind in ("self", "joint") and not s.extra.get("zero_plan") for s in video_sites)
        if dynamic or cfg.specialized or unreduced_video or not any(r.rewritten for r in runtime.reports):
            runtime.warned = True
            runtime.counts["warned"] += 1
            warn_nothing_rewritten(report, dynamic=dynamic)
    compiled = gm.forward if not cfg.compile else _inductor(gm, example_inputs, report, cfg.inductor, mode)
    if not report.rewritten:
        if bound is None:
            return compiled

        def counted(*args: Any) -> Any:  # so a call that ran no graph at all can be told apart
            bound.counts["graph_call"] += 1
            return compiled(*args)

        return counted
    return _GraphRunner(
        compiled, weakref.ref(runtime) if bound is not None else None, runtime.plan, report.timestep_index,
        params[0] if params else None,
    ).entry()


# --------------------------------------------------------------------------- runtimes of bare torch.compile
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
        rt.last_used = next(_IDS)  # for default_runtime
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


class _GraphRunner:
    """Runs one rewritten graph: inside an open call as is, else opens one (bare ``torch.compile``)."""

    def __init__(self, compiled: Callable, bound: "weakref.ref[Runtime] | None", plan: Any, ts: int | None, anchor: int | None) -> None:
        self.compiled, self.bound, self.plan, self.ts, self.anchor = compiled, bound, plan, ts, anchor

    def entry(self) -> Callable[..., Any]:
        def run(*args: Any) -> Any:  # Dynamo calls a backend's result with the graph inputs, unboxed
            return self.run(args)
        return run

    def _invoke(self, args: tuple) -> Any:
        return self.compiled(*args)

    def run(self, args: tuple) -> Any:
        call = current_call()
        if call is not None:
            call.runtime.counts["graph_call"] += 1
            return self._invoke(args)
        runtime = self.bound() if self.bound is not None else None
        if runtime is None:
            anchor = args[self.anchor].data_ptr() if self.anchor is not None else 0
            runtime = runtime_for(self.plan, anchor)
        state = runtime.current_state()
        if self.ts is None and not state.pinned:
            raise RuntimeError(
                "this graph compiled with backend='asymrnr' has no timestep input, so the denoising step "
                "cannot be tracked. Either the timestep was a Python number, which Dynamo bakes into the graph "
                "as a constant (pass it as a tensor, e.g. timestep=torch.tensor([t]), or use "
                "asymrnr_fx.transform(model, plan), which reads numbers too), or only blocks were compiled "
                "(compile_repeated_blocks(), block.compile()): use asymrnr_fx.transform(model, plan, "
                "compile='regional') or asymrnr_fx.apply(pipe, plan, compile='regional'). Or pin the step with "
                "asymrnr_fx.set_step(plan, i)"
            )
        return runtime.run(lambda: self._invoke(args), args[self.ts] if self.ts is not None else None)


def _inductor(gm: fx.GraphModule, example_inputs: Sequence[Any], report: Any, inductor: Mapping[str, Any], mode: str | None) -> Callable:
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    if report.rewritten:
        example_inputs = _allow_data_dependent_sizes(example_inputs)
    from torch._inductor import config as inductor_config

    from . import ops

    patches = dict(list_mode_options(mode)) if mode else {}
    patches.update(inductor or {})
    if report.rewritten:  # so AOTAutograd's cache does not bypass the rewritten graph (warm starts)
        marked = dict(patches.get("unsafe_marked_cacheable_functions") or inductor_config.unsafe_marked_cacheable_functions)
        patches["unsafe_marked_cacheable_functions"] = {**marked, **ops.graph_function_cache_keys()}
    return compile_fx(gm, example_inputs, config_patches=patches)


def _deref(runtime: Any) -> Runtime | None:
    if isinstance(runtime, weakref.ref):
        runtime = runtime()
        if runtime is None:
            raise RuntimeError("the transformed model this graph belongs to was garbage-collected")
    return runtime


def _anchor(example_inputs: Sequence[Any], params: list[int]) -> int:
    if not params:
        return 0
    value = example_inputs[params[0]]
    return value.data_ptr() if hasattr(value, "data_ptr") else 0


def _allow_data_dependent_sizes(example_inputs: Sequence[Any]) -> list[Any]:
    """Let inductor trace ``asymrnr::select``'s data-dependent kept count; returns the example inputs to compile with.

    Dynamo only allows ops with data-dependent output sizes when ``fullgraph=True`` (or
    ``capture_dynamic_output_shape_ops`` is set globally). The rewritten graph is ours and
    the op's fake implementation bounds the size, so we switch the setting on for this
    graph's shape environment alone instead of for every compile in the process. A graph
    specialized from a symbolic one (:mod:`.specialize`) comes with real inputs: they are
    made fake here, in a shape environment of our own with the setting on.
    """
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    fake_mode = detect_fake_mode(example_inputs)
    if fake_mode is None:
        fake_mode = FakeTensorMode(shape_env=ShapeEnv(allow_dynamic_output_shape_ops=True))
        return [fake_mode.from_tensor(x, static_shapes=True) if isinstance(x, torch.Tensor) else x for x in example_inputs]
    env = fake_mode.shape_env
    if env is not None and not env.allow_dynamic_output_shape_ops:
        env.settings = dataclasses.replace(env.settings, allow_dynamic_output_shape_ops=True)
    return list(example_inputs)


def analysis_backend(plan: Any, runtime: Runtime, grid: tuple[int, int, int] | None, capture: Any = None) -> Callable[..., Any]:
    """A backend that only classifies (for :func:`asymrnr_fx.inspect`) and runs the graph as captured."""

    def backend(gm: fx.GraphModule, example_inputs: Sequence[Any], **_: Any) -> Callable[..., Any]:
        runtime.reports.append(rewrite_graph(gm, plan, capture, grid=grid, dry_run=True))
        return gm.forward

    return backend


def register() -> None:
    """Register the backend by name for environments where the entry point is not installed."""
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    if "asymrnr" not in _BACKENDS:
        register_backend(asymrnr_backend, name="asymrnr")
