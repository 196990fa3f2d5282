"""asymrnr-fx: AsymRnR (asymmetric token reduction and restoration) for video DiTs, as an FX pass.

    import asymrnr_fx
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    model = asymrnr_fx.transform(model, plan)                                  # eager
    model = torch.compile(model, backend="asymrnr", options={"plan": plan})    # inductor
"""
from . import custom_ops as _custom_ops  # noqa: F401  (registers asymrnr::select)
from .api import AsymRnRModule, inspect, reset, runtime_of, set_step, transform, transform_graph
from .backend import asymrnr_backend, register, rewrite_graph
from .calibrate import Calibration, calibrate
from .integrations.diffusers import apply, remove
from .plan import Plan, default_plan
from .plot import plot_calibration, plot_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime
from .sensitivity import measure_sensitivity

register()

__version__ = "0.1.0"

__all__ = [
    "AsymRnRModule",
    "AsymRnRWarning",
    "Calibration",
    "Plan",
    "Report",
    "Runtime",
    "apply",
    "asymrnr_backend",
    "calibrate",
    "default_plan",
    "inspect",
    "measure_sensitivity",
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
