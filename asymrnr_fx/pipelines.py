"""AsymRnR in a diffusers pipeline: :func:`apply` and :func:`remove`.

Why a layer above the API: a pipeline is a bundle of a denoiser (or two, Wan 2.2) plus the
loop that calls it. ``apply`` swaps each denoiser for its :func:`~asymrnr_fx.transform`-ed
version and makes every pipeline call one explicit generation, so the step clock and the
matching cache start fresh per request even when two requests run at once, and no
timestep heuristic has to guess where a generation begins.
"""
from __future__ import annotations

import contextvars
import functools
import warnings
from typing import Any, Mapping

from . import integrations
from .api import AsymRnRModule, generation, transform
from .errors import AsymRnRWarning
from .integrations import TRANSFORMER_COMPONENTS
from .plan import Plan


def apply(
    pipe: Any,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    components: tuple[str, ...] = TRANSFORMER_COMPONENTS,
    **options: Any,
) -> Any:
    """Put AsymRnR into a diffusers pipeline: its transformer(s) are replaced by transformed ones.

    Args:
        pipe: a diffusers pipeline (CogVideoX, HunyuanVideo, Wan, Mochi, LTX-Video, ...).
        plan: as for :func:`asymrnr_fx.transform`; e.g. ``Plan.published("cogvideox-2b")``.
        components: pipeline attributes holding a denoiser; the default covers every family.
        **options: as for :func:`asymrnr_fx.transform` (:class:`~asymrnr_fx.module.Options`), e.g.
            ``compile="regional"`` (only the repeated blocks; recommended for servers) or ``compile=True``.

    The replacement answers ``config``, ``dtype``, ``device`` and ``cache_context`` like the
    original, so the pipeline runs unchanged; the pipeline's own config (and so
    ``save_pretrained``) still names the original class. Every call of the pipeline runs in
    a fresh :func:`asymrnr_fx.generation`. Applying twice replaces the earlier transform.
    Returns ``pipe``.
    """
    found = False
    for name in components:
        model = getattr(pipe, name, None)
        if model is None:
            continue
        if isinstance(model, AsymRnRModule):
            model = model.untransform()
        fast = transform(model, plan, **options)
        object.__setattr__(pipe, name, fast)  # bypass DiffusionPipeline.__setattr__: keep its config
        found = True
    if not found:
        raise ValueError(
            f"{type(pipe).__name__} has none of {list(components)}; pass components=(...) naming its denoiser"
        )
    object.__setattr__(pipe, "_asymrnr_components", tuple(components))
    _generation_per_call(pipe)
    return pipe


def remove(pipe: Any, components: tuple[str, ...] = TRANSFORMER_COMPONENTS) -> Any:
    """Undo :func:`apply`: the pipeline gets its original transformer(s) and class back. Returns ``pipe``."""
    for name in components:
        model = getattr(pipe, name, None)
        if isinstance(model, AsymRnRModule):
            if integrations.cache_dit.cached(model):  # enabled after apply(): it patched the transformed module
                warnings.warn(
                    f"asymrnr_fx: cache-dit was enabled on the transformed {name} (after asymrnr_fx.apply), so "
                    "removing AsymRnR removes cache-dit's cache too; call cache_dit.enable_cache(pipe, ...) again "
                    "to keep it", AsymRnRWarning, stacklevel=2,
                )
            object.__setattr__(pipe, name, model.untransform())
    original = getattr(type(pipe), "_asymrnr_original_class", None)
    if original is not None:
        pipe.__class__ = original
    scheduler = getattr(pipe, "scheduler", None)
    if getattr(getattr(scheduler, "step", None), "_asymrnr_counts", False):
        del scheduler.step  # the instance's counting wrapper: the class's own step again
    return pipe


def runtimes(pipe: Any, components: tuple[str, ...] = TRANSFORMER_COMPONENTS) -> dict[str, Any]:
    """The runtime of every transformed component of ``pipe``, by attribute name."""
    out = {}
    for name in components:
        model = getattr(pipe, name, None)
        if isinstance(model, AsymRnRModule):
            out[name] = model.runtime
    return out


def _generation_per_call(pipe: Any) -> None:
    """Make ``pipe(...)`` open a fresh generation: a subclass whose ``__call__`` wraps the original.

    ``__call__`` is looked up on the type, so the instance's class is swapped (and restored
    by :func:`remove`); the pipeline object, its components and its config are untouched.
    """
    cls = type(pipe)
    if getattr(cls, "_asymrnr_original_class", None) is not None:
        return
    original_call = cls.__call__

    @functools.wraps(original_call)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        components = self.__dict__.get("_asymrnr_components", TRANSFORMER_COMPONENTS)
        if not runtimes(self, components):
            raise ValueError(
                f"{type(self).__name__} was given to asymrnr_fx.apply(), but none of its {list(components)} "
                "is a transformed model any more (replaced by hand?). Call asymrnr_fx.remove(pipe) to run it "
                "unreduced, or asymrnr_fx.apply(pipe, plan) again to reduce the new one"
            )
        with generation(self) as handle:
            token = _STEPPING.set(handle)
            try:
                _count_scheduler_steps(self)
                return original_call(self, *args, **kwargs)
            finally:
                _STEPPING.reset(token)

    pipe.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "_asymrnr_original_class": cls, "__module__": cls.__module__})


_STEPPING: contextvars.ContextVar[Any] = contextvars.ContextVar("asymrnr_pipeline_generation", default=None)


def _count_scheduler_steps(pipe: Any) -> None:
    """Make the pipeline's scheduler mark each of its steps on the running call's generation.

    Why: the step clock otherwise advances when the timestep changes, and neighbouring
    timesteps can be equal in the model's dtype (HunyuanVideo's 50 steps in bfloat16: 997.1 and
    994.1 are both 996), which would merge two steps. Checked at every call, so a scheduler
    swapped in after :func:`apply` is counted too; the wrapper reads the running call from a
    context variable, so concurrent calls of one pipeline mark their own generations.
    """
    scheduler = getattr(pipe, "scheduler", None)
    step = getattr(scheduler, "step", None)
    if step is None or getattr(step, "_asymrnr_counts", False):
        return

    @functools.wraps(step)
    def counted(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        handle = _STEPPING.get()
        if handle is not None:
            handle.mark_step()
        return out

    counted._asymrnr_counts = True  # type: ignore[attr-defined]
    scheduler.step = counted
