"""asymrnr-fx: AsymRnR (asymmetric token reduction and restoration) for video DiTs, as an FX pass.

    import asymrnr_fx
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)
    model = asymrnr_fx.transform(model, plan)                                  # eager
    model = torch.compile(model, backend="asymrnr", options={"plan": plan})    # inductor
"""
from . import custom_ops as _custom_ops  # noqa: F401  (registers asymrnr::select)
from .api import AsymRnRModule, inspect, reset, runtime_of, set_step, transform, transform_graph
from .backend import asymrnr_backend, register, rewrite_graph
from .plan import Plan, default_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime

register()

__version__ = "0.1.0"

__all__ = [
    "AsymRnRModule",
    "AsymRnRWarning",
    "Plan",
    "Report",
    "Runtime",
    "asymrnr_backend",
    "default_plan",
    "inspect",
    "reset",
    "rewrite_graph",
    "runtime_of",
    "set_step",
    "transform",
    "transform_graph",
]
