"""Coverage: does AsymRnR work, unchanged, on every video DiT class in the installed diffusers?

For every ``*Transformer3DModel`` class diffusers exports (plus the video DiTs named
otherwise, see :data:`EXTRA_CLASSES`), :func:`check` builds the real class from a tiny
config written here (:data:`CASES`: 1-2 layers, 1-2 heads of 8-16 dims, a few frames of a
few tokens; nothing is downloaded), builds the inputs its pipeline would pass, and:

1. runs it plain (eager), so a bad config or input is never blamed on the pass;
2. ``asymrnr_fx.inspect`` lists every attention site, its kind, and why it is left alone;
3. ``asymrnr_fx.transform(model, Plan.uniform(q=0.5, kv=0.3))`` runs two timesteps: any site
   rewritten, outputs finite and different from the plain model, exceptions, ``AsymRnRWarning``;
4. checks the grid of every rewritten site against the token grid the model's own patch
   geometry gives (latent sizes divided by ``patch_size`` / ``patch_size_t`` from the config),
   and probes the token layout: single video tokens are perturbed in the latents and must
   move the sequence row the site assumes (:func:`geometry_problem`). A site reduced on other
   tokens partitions the wrong neighbours: the outputs stay finite and plausible, only wrong,
   so it is flagged "silently wrong";
5. optionally (``inductor=True``) ``transform(..., compile=True)`` against eager within 1e-4.

Each class gets one status (:data:`STATUSES`): ``works out of the box``, ``works with grid=``
(the default fails or rewrites nothing; an explicit ``grid=``, if need be with
``Plan(text_position=...)``, works and passes the geometry check), ``not applicable`` (no SDPA
call, or no site the method applies to as the library stands), ``fails`` (an error),
``silently wrong`` (a rewritten site's grid or token layout is not the model's).
:data:`ROOT_CAUSES` records, per class that is not out of the box, what was found and which
library change would fix it; :func:`markdown_report` writes both to ``docs/coverage.md``.

    python benchmarks/coverage.py [--inductor] [--only Wan,Mochi] [--configs ours|diffusers|both] [--out docs/coverage.md]

Modules, lowest first (each imports only the ones above it):

* :mod:`.case`       constants (:data:`TIMESTEPS`, :data:`STATUSES`, ...), :class:`Case`, helpers for writing cases
* :mod:`.configs`    the table of tiny configs and inputs, one :class:`Case` per class
* :mod:`.test_configs` the same from diffusers' own model tests (second config set, ``configs="diffusers"``)
* :mod:`.registry`   :func:`cases`, discovery (:func:`video_dit_classes`), building, the expected grid
* :mod:`.probe`      the geometry check and token-layout probe (:func:`geometry_problem`)
* :mod:`.checking`   :func:`check`: one class, run plain, inspected, reduced, judged (:class:`Result`)
* :mod:`.report`     :func:`sweep`, :func:`rotating_subset`, the markdown report, :data:`ROOT_CAUSES`
"""
from __future__ import annotations

from .case import CONFIG_SETS, EXTRA_CLASSES, README_FAMILIES, STATUSES, TIME_CAP, TIMESTEPS, Case, Grid
from .checking import CaseTimeout, Reduced, Result, check, reduced_run, time_cap
from .probe import geometry_problem, probe_layout, probe_tokens
from .registry import CASES, build_model, cases, config_patch, expected_grid, model_class, video_dit_classes
from .report import (ROOT_CAUSES, markdown_report, markdown_table, reduce_count, rotating_subset, summary, sweep,
                     versions)
from .test_configs import NO_TEST_CONFIG, SOURCES

__all__ = [
    "CASES",
    "CONFIG_SETS",
    "EXTRA_CLASSES",
    "README_FAMILIES",
    "ROOT_CAUSES",
    "STATUSES",
    "TIMESTEPS",
    "TIME_CAP",
    "Case",
    "CaseTimeout",
    "Grid",
    "Reduced",
    "Result",
    "build_model",
    "cases",
    "check",
    "config_patch",
    "expected_grid",
    "geometry_problem",
    "markdown_report",
    "markdown_table",
    "NO_TEST_CONFIG",
    "reduce_count",
    "model_class",
    "probe_layout",
    "probe_tokens",
    "reduced_run",
    "rotating_subset",
    "SOURCES",
    "summary",
    "sweep",
    "time_cap",
    "versions",
    "video_dit_classes",
]
