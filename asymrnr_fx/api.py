"""The user-facing entry points: transform, inspect, generation, and the step/cache controls."""
from __future__ import annotations

import contextlib
import functools
import inspect as _inspect
import itertools
import types
import warnings
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from . import integrations
from .backend import analysis_backend, asymrnr_backend
from .passes import TIMESTEP_NAMES
from .plan import Plan, coerce_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime, default_runtime, runtimes_for
from .state import Call, Generation, calling, current_call

GridFn = integrations.GridFn
_ENTRY_IDS = itertools.count()

#: Input shapes a transformed model keeps compiled graphs for (least recently used dropped first).
MAX_SHAPES = 16


def _fresh_entry(bypass_hooks: bool = False) -> Callable[..., Any]:
    """A call trampoline with its own code object.

    Dynamo keeps compiled graphs on the code object it traces and caps them at 8 per code
    object across *all* backends; compiling each (model, input shape) through a fresh
    trampoline means neither other transforms of the same class nor other resolutions
    ever push a call past that limit into the unreduced model. ``bypass_hooks`` calls the
    class's ``forward`` directly (regional blocks: their hooks already ran, eagerly).
    """
    if bypass_hooks:  # the class's forward is passed in: Dynamo cannot trace ``type(module).forward``
        def entry(module: nn.Module, args: tuple, kwargs: dict, forward: Callable[..., Any]) -> Any:  # type: ignore[misc]
            return forward(module, *args, **kwargs)
    else:
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


def _timestep(kwargs: dict) -> Any:
    for name in TIMESTEP_NAMES:
        value = kwargs.get(name)
        if isinstance(value, (torch.Tensor, int, float)) and not isinstance(value, bool):
            return value
    return None


def _shape_key(value: Any) -> Any:
    """What Dynamo specializes a graph on, roughly: tensor shapes and dtypes, and plain scalars."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (tuple, list)):
        return tuple(_shape_key(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _shape_key(v)) for k, v in value.items())
    if isinstance(value, (int, bool, str)) or value is None:
        return value
    return type(value).__name__


class _ShapeCache:
    """One compiled trampoline per input shape, at most :data:`MAX_SHAPES`, least recently used dropped."""

    def __init__(self, make: Callable[[], Callable[..., Any]], what: str) -> None:
        self.make, self.what = make, what
        self.fns: OrderedDict[Any, Callable[..., Any]] = OrderedDict()
        self.evicted = 0

    def get(self, key: Any) -> Callable[..., Any]:
        fn = self.fns.get(key)
        if fn is not None:
            self.fns.move_to_end(key)
            return fn
        if len(self.fns) >= MAX_SHAPES:
            self.fns.popitem(last=False)
            self.evicted += 1
            if self.evicted == 1:
                warnings.warn(
                    f"asymrnr_fx: {self.what} has been called with more than {MAX_SHAPES} input shapes; the least "
                    "recently used shape's graph was dropped and is recompiled (still reduced) if it comes back. "
                    "Raise asymrnr_fx.api.MAX_SHAPES if your server alternates between more shapes.",
                    AsymRnRWarning, stacklevel=4,
                )
        fn = self.fns[key] = self.make()
        return fn


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
        compile: bool | str = False,
        fullgraph: bool = False,
        inductor: Mapping[str, Any] | None = None,
        grid_fn: GridFn | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__()
        if compile not in (False, True, "regional"):
            raise ValueError(f"compile must be False, True or 'regional', got {compile!r}")
        self.model = model
        self.plan = plan
        self.runtime = runtime if runtime is not None else Runtime(plan)
        self.grid_fn = grid_fn if grid_fn is not None else integrations.grid_fn_for(model)
        self.compiled = compile
        self._warned_fallback = False
        options = {
            "runtime": weakref.ref(self.runtime), "grid": grid, "compile": bool(compile), "inductor": dict(inductor or {}),
        }
        tracing = integrations.dynamo_config_for(model)

        def make(region: bool = False) -> Callable[[], Callable[..., Any]]:
            def build() -> Callable[..., Any]:
                opts = {**options, "region": region}
                backend = functools.partial(asymrnr_backend, options=opts)
                fn = torch.compile(_fresh_entry(bypass_hooks=region), backend=backend, dynamic=False, fullgraph=fullgraph)
                return torch._dynamo.config.patch(**tracing)(fn) if tracing else fn
            return build

        self.__dict__["_shapes"] = None
        self.__dict__["_regions"] = []
        if compile == "regional":
            self.__dict__["_regions"] = _compile_regions(model, make(region=True))
        else:
            self.__dict__["_shapes"] = _ShapeCache(make(), f"transformed {type(model).__name__}")
        self._checked = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.grid_fn is not None:
            self.runtime.grid_hint = self.grid_fn(self.model, args, kwargs)
        args, kwargs = _named_call(self.model, args, kwargs)
        runtime = self.runtime
        selects = runtime.counts["select"]
        with runtime.call(_timestep(kwargs)):
            if self._shapes is None:  # regional: the model runs eagerly, its blocks compiled
                out = self.model(*args, **kwargs)
            else:
                out = self._shapes.get(_shape_key((args, kwargs)))(self.model, args, kwargs)
        if not self._checked:
            self._checked = True
            runtime.check_site_count()
        if runtime.counts["select"] == selects:
            self._check_fallback()
        return out

    def _check_fallback(self) -> None:
        """A call that reached no rewritten site, although sites were rewritten: say so, once."""
        if self._warned_fallback or not any(r.rewritten for r in self.runtime.reports):
            return
        self._warned_fallback = True
        warnings.warn(
            "asymrnr_fx: this call ran no AsymRnR site although the model has rewritten sites: Dynamo ran the "
            "unreduced model (its recompile limit, a guard that changes every call such as a hook's int "
            "argument, or a graph break at the attention). Reduction is off for such calls; see "
            "TORCH_LOGS=recompiles for the cause.",
            AsymRnRWarning, stacklevel=3,
        )

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

    def cache_context(self, name: str, **kwargs: Any) -> contextlib.AbstractContextManager:
        """diffusers' ``cache_context`` that also keeps a separate matching per context ("cond"/"uncond").

        Pipelines that run the conditional and unconditional batch as separate calls see the
        same timestep twice with different features, so each keeps its own matching.
        """
        return _cache_context(self, name, kwargs)

    def untransform(self) -> nn.Module:
        """Undo in-place changes (regional compilation patches block forwards) and return the original model."""
        for block, previous in self._regions:
            block.__dict__.pop("forward", None)
            if previous is not None:
                block.forward = previous
        self.__dict__["_regions"] = []
        return self.model


@contextlib.contextmanager
def _cache_context(module: AsymRnRModule, name: str, kwargs: dict) -> Iterator[None]:
    state = module.runtime.current_state()
    previous, state.context = state.context, str(name)
    try:
        inner = getattr(module.model, "cache_context", None)
        with inner(name, **kwargs) if inner is not None else contextlib.nullcontext():
            yield
    finally:
        state.context = previous


def _compile_regions(model: nn.Module, make: Callable[[], Callable[..., Any]]) -> list[tuple[nn.Module, Any]]:
    """Compile the repeated blocks of ``model``: one compiled graph per block class and input shape.

    Each block's ``forward`` is replaced (in place, undone by ``untransform``) by a wrapper that
    opens the block's region of the current call (its module path, so the graph's sites are
    told apart at run time) and runs the class's compiled graph.
    """
    blocks = integrations.repeated_blocks(model)
    if not blocks:
        raise ValueError(
            f"compile='regional' found no repeated blocks in {type(model).__name__} (no _repeated_blocks and no "
            "ModuleList of two or more modules of one class); use compile=True to compile the whole model"
        )
    caches: dict[type, _ShapeCache] = {}
    patched = []
    for path, block in blocks:
        cls = type(block)
        cache = caches.get(cls)
        if cache is None:
            cache = caches[cls] = _ShapeCache(make, f"regional {cls.__name__}")
        patched.append((block, block.__dict__.get("forward")))
        block.forward = _region_forward(block, path, cache)
    return patched


def _region_forward(block: nn.Module, path: str, cache: _ShapeCache) -> Callable[..., Any]:
    ref = weakref.ref(block)
    prefix = path + "."
    forward_fn = type(block).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        call = current_call()
        if call is None:
            raise RuntimeError(
                f"{path} is compiled for AsymRnR (compile='regional'): call the model returned by "
                "asymrnr_fx.transform() (it tracks the step), not the original model"
            )
        # the first block often gets a strided slice, the rest a fresh tensor: one layout, one graph
        args = tuple(_dense(a) for a in args)
        kwargs = {k: _dense(v) for k, v in kwargs.items()}
        with calling(Call(call.runtime, call.state, prefix)):
            return cache.get(_shape_key((args, kwargs)))(ref(), args, kwargs, forward_fn)

    return forward


def _dense(x: Any) -> Any:
    """``x`` with row-major strides (``contiguous()`` keeps odd strides of size-1 dims, which Dynamo guards on)."""
    if not isinstance(x, torch.Tensor):
        return x
    expected, acc = [], 1
    for size in reversed(x.shape):
        expected.append(acc)
        acc *= size
    return x if tuple(reversed(expected)) == x.stride() else x.clone(memory_format=torch.contiguous_format)


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


def transform(
    model: nn.Module,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    grid: tuple[int, int, int] | None = None,
    compile: bool | str = False,
    fullgraph: bool = False,
    inductor: Mapping[str, Any] | None = None,
    grid_fn: GridFn | None = None,
    runtime: Runtime | None = None,
) -> AsymRnRModule:
    """Rewrite the attention of ``model`` with AsymRnR.

    Args:
        model: any ``nn.Module`` whose attention calls ``F.scaled_dot_product_attention``.
        plan: the ratios and options (:class:`Plan`, a dict of ``Plan.uniform`` arguments, or a saved
            plan's path). Default ``Plan.uniform(q=0.5, kv=0.3)``.
        grid: video tokens ``(frames, height, width)`` after patching. Default: read from the model's
            config and inputs (diffusers models) or guessed from a 5-D input; give it for anything else.
        compile: ``False`` runs the rewritten graph eagerly (for debugging and tests); ``True`` compiles
            the whole model with inductor (one graph per input shape, recommended for a single model);
            ``"regional"`` compiles only the repeated blocks, one graph per block class and shape, shared
            by every block (recommended for serving: 5x+ faster cold start, same outputs). Regional
            compilation patches the blocks' ``forward`` in place; :meth:`AsymRnRModule.untransform` undoes it.
        fullgraph: pass ``True`` to make any graph break an error (as for ``torch.compile``).
        inductor: inductor config patches, e.g. ``{"max_autotune": True}``.
        grid_fn: ``(model, args, kwargs) -> (F, H, W)`` to compute the grid per call (overrides the default).
        runtime: a :class:`~asymrnr_fx.runtime.Runtime` (or subclass, e.g. calibration's recording
            runtime) instead of a fresh one; its plan is used when ``plan`` is None.

    The model is captured by Dynamo on its first call and again for each new input shape
    (each shape through its own trampoline, so no recompile limit applies). The original
    model is not modified (except the block forwards with ``compile="regional"``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"transform() needs an nn.Module, got {type(model).__name__}")
    if isinstance(model, AsymRnRModule):
        model = model.untransform()
    else:
        _undo_previous_regions(model)
    return AsymRnRModule(
        model,
        runtime.plan if plan is None and runtime is not None else coerce_plan(plan),
        grid=grid, compile=compile, fullgraph=fullgraph, inductor=inductor, grid_fn=grid_fn, runtime=runtime,
    )


def _undo_previous_regions(model: nn.Module) -> None:
    for block in model.modules():
        fwd = block.__dict__.get("forward")
        if getattr(fwd, "__qualname__", "").startswith("_region_forward"):
            del block.__dict__["forward"]


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
    from .passes import find_timestep, rewrite_graph
    from .passes.graph import user_inputs

    plan = coerce_plan(plan)
    runtime = Runtime(plan)
    runtime.reports.append(rewrite_graph(gm, plan, runtime, grid=grid))
    timestep = find_timestep(gm)
    position = list(user_inputs(gm)).index(timestep) if timestep is not None else None
    forward = gm.forward

    def run(*args: Any, **kwargs: Any) -> Any:
        t = args[position] if position is not None and position < len(args) else _timestep(kwargs)
        with runtime.call(t):
            out = forward(*args, **kwargs)
        runtime.check_site_count()
        return out

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
