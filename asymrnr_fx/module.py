"""The transformed model: :class:`AsymRnRModule`, its options, and regional compilation."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass, fields
import warnings
import weakref
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from . import integrations
from .integrations import hooks
from .backend import BackendConfig, asymrnr_backend
from .calls import ShapeCache, call_timestep, fresh_entry, named_call, shape_key, timestep_argument, video_inputs
from .passes.infer_grid import conv_patch, one_patch
from .plan import Plan
from .report import AsymRnRWarning, Report, warn_nothing_rewritten
from .state import cache_context as state_cache_context
from .regions import Regions, has_regions, plain_copy
from .runtime import Runtime, fixed_plan

GridFn = integrations.GridFn
_COMPILE_MODES = (False, True, "regional")


@dataclass(frozen=True)
class Options:
    """How a model is captured and compiled: the keyword arguments of :func:`asymrnr_fx.transform`
    and :func:`asymrnr_fx.apply` (one declaration, validated once).

    Args:
        grid: video tokens ``(frames, height, width)`` after patching, three ints >= 1. Default
            None: read from the model's config and inputs (diffusers models) or guessed from a 5-D
            input and checked against the attention lengths. Give it for anything else.
        compile: ``False`` runs the rewritten graph eagerly (debugging, tests); ``True`` compiles the
            whole model with inductor, one graph per input shape (recommended for one model, one
            process); ``"regional"`` compiles only the repeated blocks, one graph per block class and
            shape shared by every block (recommended for serving: much faster cold start, same
            outputs; patches the blocks' ``forward`` in place, ``untransform()`` undoes it).
        fullgraph: ``True`` makes any graph break an error, as for ``torch.compile``. Default False.
        inductor: inductor config patches, e.g. ``{"max_autotune": True}``. Default none.
        grid_fn: ``(model, args, kwargs) -> (F, H, W)`` computing the grid per call; overrides the
            built-in diffusers grid functions. Default None.
    """

    grid: tuple[int, int, int] | None = None
    compile: bool | str = False
    fullgraph: bool = False
    inductor: Mapping[str, Any] | None = None
    grid_fn: GridFn | None = None

    def __post_init__(self) -> None:
        if not any(self.compile is m or (isinstance(m, str) and self.compile == m) for m in _COMPILE_MODES):
            raise ValueError(f"compile must be False, True or 'regional', got {self.compile!r}")
        if self.grid is not None:
            grid = tuple(self.grid)
            if len(grid) != 3 or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid):
                raise ValueError(f"grid must be three ints >= 1 (frames, height, width in tokens), got {self.grid!r}")
            object.__setattr__(self, "grid", grid)
        if not isinstance(self.fullgraph, bool):
            raise TypeError(f"fullgraph must be a bool, got {self.fullgraph!r}")
        if self.inductor is not None and not isinstance(self.inductor, Mapping):
            raise TypeError(f"inductor must be a mapping of inductor config patches, got {type(self.inductor).__name__}")
        if self.grid_fn is not None and not callable(self.grid_fn):
            raise TypeError("grid_fn must be callable as grid_fn(model, args, kwargs) -> (F, H, W)")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> "Options":
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**options)


class AsymRnRModule(nn.Module):
    """A model whose attention runs through AsymRnR; behaves like the model it wraps.

    Attribute lookups that the wrapper does not answer go to the wrapped model, so code
    that reads ``model.config`` or ``model.dtype`` keeps working.
    """

    def __init__(
        self,
        model: nn.Module,
        plan: Plan,
        options: Options = Options(),
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__()
        if runtime is not None and runtime.plan is not plan:
            raise ValueError("the runtime given to transform() runs its own plan: pass plan=None, or no runtime")
        self.model = model
        self.options = options
        self.runtime = runtime if runtime is not None else Runtime(plan)
        self.runtime.bind(model)
        if self.runtime.direction.value is None:
            self.runtime.direction.value = integrations.timestep_direction(model)
        self.grid_fn = options.grid_fn if options.grid_fn is not None else integrations.grid_fn_for(model)
        self._patch = _embedding_patch(model)  # for graphs that start after the embedding (regional blocks)
        self.compiled = options.compile
        self._warned_fallback = False
        self._warned_no_graph = self._warned_dispatch_mode = False
        compile, fullgraph = options.compile, options.fullgraph
        config = BackendConfig(plan, options.grid, bool(compile), dict(options.inductor or {}), weakref.ref(self.runtime))
        tracing = integrations.dynamo_config_for(model)

        def make(region: bool = False) -> Callable[[], Callable[..., Any]]:
            def build() -> Callable[..., Any]:
                backend = functools.partial(asymrnr_backend, config=dataclasses.replace(config, region=region))
                fn = torch.compile(fresh_entry(bypass_hooks=region), backend=backend, dynamic=False, fullgraph=fullgraph)
                return torch._dynamo.config.patch(**tracing)(fn) if tracing else fn
            return build

        # regions: the repeated blocks (regional) and the modules below diffusers' cache hooks
        self.__dict__["_regions"] = Regions(model, make(region=True), self.runtime, compile == "regional")
        self.__dict__["_shapes"] = None if compile == "regional" else ShapeCache(make(), f"transformed {type(model).__name__}")
        self._checked = False
        self._clock: str | None = None  # the name of the timestep argument the calls pass (for the report)

    plan = property(lambda self: self.runtime.plan, fixed_plan, doc="The plan this model runs (fixed: see runtime.fixed_plan).")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        hooks.check_call(self.model)  # a hook or backend changed after transform(): refuse or report first
        under_mode = _in_dispatch_mode()
        if under_mode:
            self._warn_dispatch_mode()
        hint = self.grid_fn(self.model, args, kwargs) if self.grid_fn is not None else None
        args, kwargs = named_call(self.model, args, kwargs)
        runtime = self.runtime
        capture = runtime.capture(hint, video_inputs(args, kwargs), self._patch,  # for graphs captured during this call
                                  *integrations.parallel_layout(self.model))
        graphs = runtime.counts["graph_call"]
        gave_up = _dynamo_gave_up()
        captured, warned = len(runtime.reports), runtime.counts["warned"]
        cached = integrations.cache_dit.cached(self, self.model)
        if cached:  # cache-dit swaps the block lists inside its call: name the parameters before it
            runtime.table.index_parameters()
        eager = self._regions.sync(cached)  # hooks added or removed since the last call get their regions now
        if eager:  # regional, below cache hooks, or cache-dit: the model runs eagerly, its regions compiled
            run = functools.partial(self.model, *args, **kwargs)
        else:
            run = functools.partial(self._shapes.get(shape_key((args, kwargs))), self.model, args, kwargs)
        if under_mode:  # run it eagerly ourselves: Dynamo would mark the compiled frames to skip from now on
            run = torch.compiler.set_stance("force_eager")(run)
        with _pass_errors(), integrations.cache_dit.swapped(self, self.model) if cached else contextlib.nullcontext():
            self._clock = timestep_argument(kwargs) or self._clock
            out = runtime.run(run, call_timestep(kwargs), capture)
        new = runtime.reports[captured:]
        if not self._checked:
            self._checked = True
            if runtime.reports and not any(r.rewritten for r in runtime.reports) and not runtime.warned:
                warn_nothing_rewritten(runtime.reports[-1], hooks=integrations.hooks_of(self.model))
        elif new and runtime.counts["warned"] == warned and not any(r.rewritten for r in new) and _video_sites(new):
            # a new input shape at which nothing can be reduced (e.g. a grid of one token per tile)
            runtime.counts["warned"] += 1
            warn_nothing_rewritten(_video_sites(new)[-1], new_shape=True)
        if under_mode:
            pass  # said above: nothing compiled runs under a dispatch mode
        elif not runtime.reports:
            self._check_no_graph()  # Dynamo handed no graph of this model to the pass: nothing can be reduced
        elif runtime.counts["graph_call"] == graphs and not eager:
            self._check_fallback()  # no compiled graph ran: Dynamo ran the model itself
        elif _dynamo_gave_up() > gave_up:
            self._check_fallback(partial=True)  # some frames of this call now run eagerly
        return out

    def _warn_dispatch_mode(self) -> None:
        """A call under a ``TorchDispatchMode`` (``FlopCounterMode``, a tracer, a byte counter): Dynamo
        runs no compiled code inside one (and would skip the frame for good), so the call runs
        eagerly, unreduced. Say so, once."""
        if self._warned_dispatch_mode:
            return
        self._warned_dispatch_mode = True
        warnings.warn(
            "asymrnr_fx: this call runs under a TorchDispatchMode (e.g. torch.utils.flop_counter.FlopCounterMode): "
            "Dynamo runs no compiled graph inside one, so the model runs eagerly and nothing is reduced. To count "
            "FLOPs or bytes of the reduced model, profile it instead: torch.profiler.profile(record_shapes=True, "
            "with_flops=True).",
            AsymRnRWarning, stacklevel=3,
        )

    def _check_no_graph(self) -> None:
        """A call after which the pass has still seen no graph of the model: it ran eagerly, unreduced. Say so, once.

        Why it happens: Dynamo skips a frame with a graph break inside a loop, and runs a code object
        eagerly once it has been compiled past its recompile limit (8) in this process, e.g. a block's
        ``forward`` compiled for other models, shapes or transforms before. No graph means no site
        and no report, so none of the other checks would notice."""
        if self._warned_no_graph:
            return
        self._warned_no_graph = True
        warnings.warn(
            "asymrnr_fx: this call ran the model eagerly: Dynamo captured no graph of it, so nothing was reduced "
            "(a graph break inside a loop skips the whole frame, and code compiled past Dynamo's recompile limit in "
            "this process runs eagerly; see TORCH_LOGS=graph_breaks,recompiles). Use compile='regional' (blocks "
            "compiled on their own, below any hooks), or call torch._dynamo.reset() before transform() when this "
            "process compiled the same model class many times.",
            AsymRnRWarning, stacklevel=3,
        )

    def _check_fallback(self, partial: bool = False) -> None:
        """A call that reached no rewritten site (or in which Dynamo gave up on part of the model),
        although sites were rewritten: say so, once."""
        if self._warned_fallback or not any(r.rewritten for r in self.runtime.reports):
            return
        self._warned_fallback = True
        if partial:
            warnings.warn(
                "asymrnr_fx: during this call Dynamo hit its recompile limit on part of the model: from now on "
                "that part runs eagerly, and any attention in it is no longer reduced, while the rest stays "
                "reduced. Usually a hook reading per-call state inside the model; see TORCH_LOGS=recompiles.",
                AsymRnRWarning, stacklevel=3,
            )
            return
        warnings.warn(
            "asymrnr_fx: this call ran none of the compiled graphs although the model has rewritten sites: "
            "Dynamo ran the unreduced model (its recompile limit, hit by a guard that changes every call such "
            "as a hook's int argument or changing LoRA scales). Reduction is off for such calls; see "
            "TORCH_LOGS=recompiles for the cause.",
            AsymRnRWarning, stacklevel=3,
        )

    @property
    def report(self) -> Report:
        """What the pass found in every graph captured so far (empty before the first call)."""
        clock = f"the {self._clock!r} argument of each model call" if self._clock else ""
        return Report(list(self.runtime.reports), plan=repr(self.runtime.plan), clock=clock)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self._modules.get("model")
            if model is None:
                raise
            return getattr(model, name)

    def __dir__(self) -> list[str]:
        """The wrapper's names and the model's: tools that look blocks up by name (cache-dit) find them."""
        return sorted(set(super().__dir__()) | set(dir(self.model)))

    def cache_context(self, name: str, **kwargs: Any) -> contextlib.AbstractContextManager:
        """diffusers' ``cache_context`` that also keeps a separate matching per context ("cond"/"uncond").

        Pipelines that run the conditional and unconditional batch as separate calls see the
        same timestep twice with different features, so each keeps its own matching.
        """
        return _cache_context(self, name, kwargs)

    def __deepcopy__(self, memo: dict) -> "AsymRnRModule":
        """A new transform of a copy of the model: same plan and options, fresh state and graphs."""
        return _rebuild(plain_copy(self.model, memo), self.plan, self.options)

    def __reduce_ex__(self, protocol: int) -> tuple:
        """Pickle (``torch.save``) as the model, plan and options; loading transforms again, with fresh state."""
        return (_rebuild, (plain_copy(self.model) if has_regions(self.model) else self.model, self.plan, self.options))

    def untransform(self) -> nn.Module:
        """Undo in-place changes (the region dispatchers on blocks and below hooks) and return the original model."""
        self._regions.remove()
        return self.model


@contextlib.contextmanager
def _cache_context(module: AsymRnRModule, name: str, kwargs: dict) -> Iterator[None]:
    inner = getattr(module.model, "cache_context", None)
    with state_cache_context(module.runtime, name), inner(name, **kwargs) if inner is not None else contextlib.nullcontext():
        yield


def _rebuild(model: nn.Module, plan: Plan, options: Options) -> AsymRnRModule:
    return AsymRnRModule(model, plan, options)


@contextlib.contextmanager
def _pass_errors() -> Iterator[None]:
    """Errors the pass raises inside Dynamo's compile callback reach the user as themselves.

    Dynamo wraps them in ``BackendCompilerFailed`` behind a long repr of the backend; a plan that
    does not fit the model is the user's to fix, so they should read the plan's message first.
    """
    try:
        yield
    except torch._dynamo.exc.BackendCompilerFailed as e:
        inner = getattr(e, "inner_exception", None)
        if isinstance(inner, (ValueError, TypeError)):
            raise inner from None
        raise


def _embedding_patch(model: nn.Module) -> tuple[int, int, int] | None:
    """The (t, h, w) patch of ``model``'s patch embedding: its one kind of convolution whose stride
    equals its kernel (Conv3d, or Conv2d over frames), as the pass reads it from a graph; None if
    there is none or several."""
    return one_patch(conv_patch(tuple(m.kernel_size), tuple(m.stride))
                     for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


def _video_sites(reports: list) -> list:
    """The graphs among ``reports`` that hold video attention the plan would reduce (not only prompt refiners,
    nor only cross-attention the plan leaves alone, as it was asked to)."""
    def asked(s: Any) -> bool:
        return not s.extra.get("prompt_only") and s.kind != "other" and not s.extra.get("left_alone") and not s.extra.get("zero_plan")
    return [r for r in reports if any(asked(s) for s in r.sites)]


_GAVE_UP = ("recompile limit exceeded",)  # a frame skipped for a graph break in a loop is not: its callees still compile


def _dynamo_gave_up() -> int:
    """How often Dynamo has hit its recompile limit on a frame in this process.

    Why: a frame Dynamo gives up on runs eagerly from then on, so the attention inside it is no
    longer reduced, while other frames of the same call still run compiled graphs; only its
    own counters show the moment it happens."""
    from torch._dynamo.utils import counters

    return sum(n for msg, n in counters["unimplemented"].items() if any(k in msg for k in _GAVE_UP))


def _in_dispatch_mode() -> bool:
    """Whether a user ``TorchDispatchMode`` is active, under which Dynamo runs nothing compiled (its own test)."""
    if torch.compiler.is_compiling():
        return False
    from torch.utils import _python_dispatch

    check = getattr(_python_dispatch, "is_in_any_mode_without_ignore_compile_internals", None)
    return bool(check()) if check is not None else _python_dispatch._is_in_non_infra_torch_dispatch_mode()
