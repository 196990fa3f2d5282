"""asymrnr-fx: AsymRnR (asymmetric token reduction and restoration) for video DiTs, as an FX pass.

    import asymrnr_fx
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    model = asymrnr_fx.transform(model, plan)                                  # eager
    model = torch.compile(model, backend="asymrnr", options={"plan": plan})    # inductor

The core is imported here; the calibration names below (``calibrate``, ``Calibration``,
``plan_for_budget``, ``plot_plan`` ...) load :mod:`asymrnr_fx.calibration` on first use, so
``import asymrnr_fx`` needs only torch and sympy (see tests/test_layers.py).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import custom_ops as _custom_ops  # noqa: F401  (registers asymrnr::select)
from .api import AsymRnRModule, generation, inspect, reset, runtime_of, set_step, transform, transform_graph
from .backend import asymrnr_backend, register
from .passes import rewrite_graph
from .deploy import export, load, package
from .pipelines import apply, remove
from .plan import Plan, default_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime
from .state import Generation

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time see __getattr__
    from .calibration import (
        Calibration,
        calibrate,
        measure_sensitivity,
        plan_for_budget,
        plan_for_speedup,
        plot_calibration,
        plot_plan,
    )

register()

#: Names served lazily from the calibration layer (the core never imports it).
_LAZY = ("Calibration", "calibrate", "measure_sensitivity", "plan_for_budget", "plan_for_speedup",
         "plot_calibration", "plot_plan")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'asymrnr_fx' has no attribute {name!r}")
    value = getattr(importlib.import_module(".calibration", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AsymRnRModule",
    "AsymRnRWarning",
    "Calibration",
    "Generation",
    "Plan",
    "Report",
    "Runtime",
    "apply",
    "export",
    "load",
    "package",
    "asymrnr_backend",
    "calibrate",
    "default_plan",
    "generation",
    "inspect",
    "measure_sensitivity",
    "plan_for_budget",
    "plan_for_speedup",
    "plot_calibration",
    "plot_plan",
    "remove",
    "reset",
    "rewrite_graph",
    "runtime_of",
    "set_step",
    "transform",
    "transform_graph",
]
