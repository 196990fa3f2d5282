"""asymrnr-fx: AsymRnR (asymmetric token reduction and restoration) for video DiTs, as an FX pass.

    import asymrnr_fx
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    model = asymrnr_fx.transform(model, plan)                                  # eager
    model = torch.compile(model, backend="asymrnr", options={"plan": plan})    # inductor

The user API is imported here; deployment lives in :mod:`asymrnr_fx.deploy` and calibration in
:mod:`asymrnr_fx.calibration` (never imported by the core, so ``import asymrnr_fx`` needs only
torch and sympy; see tests/test_layers.py).
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any

from . import custom_ops as _custom_ops  # noqa: F401  (registers asymrnr::select)
from . import deploy  # noqa: F401  (asymrnr_fx.deploy.export / package / load)
from .api import AsymRnRModule, generation, inspect, reset, runtime_of, set_step, transform, transform_graph
from .backend import register
from .errors import AsymRnRWarning
from .pipelines import apply, remove
from .plan import Plan, default_plan
from .errors import PlanError
from .report import Report
from .state import Generation

register()

#: Names that moved to their own namespace: ``asymrnr_fx.<old>`` still works, with a DeprecationWarning.
_MOVED = {
    "export": "deploy", "package": "deploy", "load": "deploy",
    "Calibration": "calibration", "calibrate": "calibration", "measure_sensitivity": "calibration",
    "plan_for_budget": "calibration", "plan_for_speedup": "calibration", "plot_calibration": "calibration",
    "plot_plan": "calibration",
    "Runtime": "runtime", "rewrite_graph": "passes", "asymrnr_backend": "backend",
}


def __getattr__(name: str) -> Any:
    """Serve a moved name from its module (loaded on first use: the core never imports calibration)."""
    if name == "calibration":  # asymrnr_fx.calibration.<name> without an import of its own
        return importlib.import_module(".calibration", __name__)
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'asymrnr_fx' has no attribute {name!r}")
    warnings.warn(f"asymrnr_fx.{name} moved to asymrnr_fx.{home}.{name}; import it from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f".{home}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))


__version__ = "0.1.0"

#: The user API (at most 16 names). Deployment is :mod:`asymrnr_fx.deploy`, plans from
#: measurements are :mod:`asymrnr_fx.calibration`, the pass itself :mod:`asymrnr_fx.passes`.
__all__ = [
    "AsymRnRModule",
    "AsymRnRWarning",
    "Generation",
    "Plan",
    "PlanError",
    "Report",
    "apply",
    "default_plan",
    "generation",
    "inspect",
    "remove",
    "reset",
    "runtime_of",
    "set_step",
    "transform",
    "transform_graph",
]
