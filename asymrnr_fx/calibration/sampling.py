"""Running generations: the one Euler sampler, the calibration :class:`Sampler`, and
:func:`installed` (a model or pipeline with its attention routed through a runtime).

:func:`euler` is the only stand-in sampling loop in the package: calibration's
``inputs=``/``timesteps=`` form, the built-in random-weight models of
:mod:`asymrnr_fx.evaluation.targets` and the speed benchmark all run it.
"""
from __future__ import annotations

import contextlib
import inspect as _inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..api import AsymRnRModule, transform
from ..runtime import Runtime
from .common import fingerprint, first_tensor, is_pipeline


def euler(
    model: Callable[..., Any],
    inputs: Mapping[str, Any],
    timesteps: int | Sequence[float] | torch.Tensor,
    *,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """A flow-matching style Euler sampler: the sampler shape of a video DiT, for models without their own.

    ``model(**inputs, hidden_states=x, timestep=t)`` is called at every timestep (``t``
    expanded to the batch) and ``x`` moves by ``(t_next - t) / 1000 * output`` (``t_next``
    is 0 after the last step). ``timesteps`` is a schedule, or a number of steps for
    ``linspace(999, 1, n)``. ``on_step(i)`` runs before step ``i``. Returns the final
    ``hidden_states``; without them (or when the output has another shape) the model is
    just called at every timestep and its last output is returned.
    """
    if isinstance(timesteps, int):
        ts = torch.linspace(999, 1, timesteps)
    else:
        ts = torch.as_tensor(timesteps, dtype=torch.float32).flatten()
    inputs = dict(inputs)
    x = inputs.pop("hidden_states", None)
    out = None
    for i, t in enumerate(ts):
        if on_step is not None:
            on_step(i)
        batch = x.shape[0] if isinstance(x, torch.Tensor) else 1
        out = first_tensor(model(**inputs, **({"hidden_states": x} if x is not None else {}), timestep=t.expand(batch)))
        if isinstance(x, torch.Tensor) and out.shape == x.shape:
            t_next = ts[i + 1] if i + 1 < len(ts) else torch.zeros(())
            x = x + (t_next - t) / 1000.0 * out.to(x.dtype)
    return x if isinstance(x, torch.Tensor) else out


@dataclass
class Sampler:
    """How to run one calibration generation (the two forms: :func:`~asymrnr_fx.calibration.measure.calibrate`)."""

    run: Callable[..., Any] | None = None
    inputs: list[Mapping[str, Any]] | None = None
    timesteps: torch.Tensor | None = None
    generations: int = 1

    def __post_init__(self) -> None:
        if (self.run is None) == (self.inputs is None):
            raise ValueError("give either run=callable(model[, index]) or inputs=[dict, ...] with timesteps=...")
        if self.inputs is not None:
            if self.timesteps is None:
                raise ValueError("inputs= needs a timesteps= schedule (e.g. torch.linspace(999, 1, 10))")
            self.inputs = list(self.inputs)
            self.timesteps = torch.as_tensor(self.timesteps, dtype=torch.float32).flatten()
            self.generations = len(self.inputs)
        if self.generations < 1:
            raise ValueError(f"generations must be >= 1, got {self.generations}")

    @property
    def num_steps(self) -> int | None:
        return None if self.timesteps is None else int(self.timesteps.numel())

    def __call__(self, target: Any, index: int, runtime: Runtime | None = None) -> torch.Tensor:
        if self.run is not None:
            return first_tensor(self.run(target, index) if _takes_index(self.run) else self.run(target))
        on_step = runtime.set_step if runtime is not None else None
        return euler(target, self.inputs[index], self.timesteps, on_step=on_step)

    def fingerprint(self) -> str:
        return fingerprint({"run": self.run, "inputs": self.inputs, "timesteps": self.timesteps, "n": self.generations})


def _takes_index(fn: Callable[..., Any]) -> bool:
    try:
        params = [
            p for p in _inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


@contextlib.contextmanager
def installed(target: Any, runtime: Runtime, component: str = "transformer") -> Iterator[Any]:
    """``target`` with its attention running through ``runtime``: a transformed model, or the
    pipeline with its ``component`` swapped for a transformed one (restored on exit)."""
    if not is_pipeline(target):
        if not isinstance(target, nn.Module):
            raise TypeError(f"calibrate() needs an nn.Module or a diffusers pipeline, got {type(target).__name__}")
        yield transform(target.model if isinstance(target, AsymRnRModule) else target, runtime=runtime)
        return
    original = getattr(target, component)
    base = original.model if isinstance(original, AsymRnRModule) else original
    object.__setattr__(target, component, transform(base, runtime=runtime))
    try:
        yield target
    finally:
        object.__setattr__(target, component, original)


def base_model(target: Any, component: str = "transformer") -> nn.Module:
    """The unreduced model behind ``target`` (a model, a transformed model or a pipeline's ``component``)."""
    model = getattr(target, component) if is_pipeline(target) else target
    return model.model if isinstance(model, AsymRnRModule) else model
