"""Calibration: measure a model's redundancy and output sensitivity, and build plans from them.

The layer above the core (it may import :mod:`asymrnr_fx.api`, :mod:`~asymrnr_fx.plan`,
:mod:`~asymrnr_fx.runtime` ...; the core never imports it). Modules, lowest first:

* :mod:`.common`      shared helpers: targets, output tensors, cache keys, metadata, progress bars
* :mod:`.sampling`    :func:`euler` (the package's one stand-in sampler), :class:`Sampler`, :func:`installed`
* :mod:`.recording`   what is recorded: :class:`RecordingRuntime`, :class:`SwitchableRuntime`
* :mod:`.sensitivity` :class:`Sensitivity`, the measured output error per probe
* :mod:`.result`      :class:`Calibration` and its file format
* :mod:`.measure`     :func:`calibrate`
* :mod:`.probes`      :func:`measure_sensitivity`
* :mod:`.budget`      plans from a calibration: tiers + threshold maps, or least error for a budget
* :mod:`.plot`        heatmaps of plans, tier tables and calibrations (matplotlib, loaded on use)
"""
from __future__ import annotations

from .budget import expected_error, plan_for_budget, plan_for_speedup, plan_from_tiers, plan_like_published
from .common import default_cache_dir
from .measure import calibrate
from .plot import plot_calibration, plot_plan, plot_plans, plot_tiers
from .probes import measure_sensitivity
from .recording import RecordingRuntime, SwitchableRuntime
from .result import Calibration
from .sampling import euler
from .sensitivity import Sensitivity

__all__ = [
    "Calibration",
    "RecordingRuntime",
    "Sensitivity",
    "SwitchableRuntime",
    "calibrate",
    "default_cache_dir",
    "euler",
    "expected_error",
    "measure_sensitivity",
    "plan_for_budget",
    "plan_for_speedup",
    "plan_from_tiers",
    "plan_like_published",
    "plot_calibration",
    "plot_plan",
    "plot_plans",
    "plot_tiers",
]
