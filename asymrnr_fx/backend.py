"""The ``asymrnr`` torch.compile backend, and the driver that runs the passes on one graph.

``torch.compile(model, backend="asymrnr", options={"plan": plan})`` resolves by name
through the ``torch_dynamo_backends`` entry point; Dynamo hands us each captured graph,
we rewrite its attention and give the result to inductor (``compile_fx``).

Options: ``plan`` (Plan, dict, or saved-plan path; default :func:`~asymrnr_fx.plan.default_plan`),
``grid`` ((F, H, W) video tokens), ``runtime`` (a :class:`~asymrnr_fx.runtime.Runtime`; default
one per plan), ``compile`` (False runs the rewritten graph eagerly), ``inductor`` (inductor
config patches).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx

from .passes import classify_attention, find_attention, find_timestep, infer_grids, rewrite_attention
from .plan import Plan, coerce_plan
from .report import GraphReport, warn_nothing_rewritten
from .runtime import Runtime, SiteSpec, default_runtime

log = logging.getLogger("asymrnr_fx")

_VIDEO_KINDS = ("self", "joint")
_OPTION_NAMES = ("plan", "grid", "runtime", "compile", "inductor")


def rewrite_graph(
    gm: fx.GraphModule,
    plan: Plan,
    runtime: Runtime,
    *,
    grid: tuple[int, int, int] | None = None,
    dry_run: bool = False,
) -> GraphReport:
    """Find, classify and (unless ``dry_run``) rewrite every attention site of ``gm`` in place."""
    calls = find_attention(gm)
    timestep = find_timestep(gm)
    explicit = tuple(grid) if grid is not None else plan.grid
    candidates = infer_grids(gm, explicit=explicit, hint=runtime.grid_hint)
    reports, chosen = classify_attention(calls, candidates, plan.text_position)
    n = explicit[0] * explicit[1] * explicit[2] if explicit is not None else 0
    if explicit is not None and not any(r.kind == "joint" or n in (r.q_len, r.kv_len) for r in reports) and calls:
        lengths = sorted({r.q_len for r in reports if r.q_len is not None})
        raise ValueError(
            f"grid {explicit} gives {n} video tokens, but the attention sites have sequence lengths {lengths}; "
            "give the grid in tokens after patching (frames / temporal patch, height / patch, width / patch)"
        )
    occurrences: Counter[str] = Counter()
    for call, rep in zip(calls, reports):
        if rep.kind == "cross" and not plan.cross_attention:
            rep.reason = "cross-attention is left alone by default (Plan(cross_attention=True) reduces its queries)"
        eligible = (rep.kind in _VIDEO_KINDS or (rep.kind == "cross" and plan.cross_attention)) and not rep.reason
        if not eligible:
            continue
        rep.ordinal = runtime.ordinal(rep.path)
        rep.occurrence = occurrences[rep.path]
        occurrences[rep.path] += 1
        if plan.num_sites is not None and rep.ordinal >= plan.num_sites:
            raise ValueError(
                f"plan {plan.name or ''} has ratios for {plan.num_sites} attention sites, but the model has more "
                f"(site {rep.ordinal + 1} is {rep.path}); build the plan for this model's number of attention blocks"
            )
        features = plan.features_used(rep.ordinal)
        if rep.kind == "cross":
            features = tuple(f for f in features if f == "q")
        if not features:
            rep.reason = "the plan's ratio is 0 at every step for this site"
            continue
        if any(g < s for g, s in zip(rep.grid, plan.stride)):
            rep.reason = f"grid {rep.grid} is smaller than the stride {plan.stride}: no dst tokens to match to"
            continue
        rep.rewrite, rep.features = True, features
        if dry_run:
            continue
        spec = SiteSpec(
            # one key per captured graph: a new input shape (another grid) or a graph break must not
            # overwrite a site of an earlier graph or reuse its cached matching
            key=f"{rep.ordinal}.{rep.occurrence}@{len(runtime.reports)}",
            path=rep.path,
            ordinal=rep.ordinal,
            occurrence=rep.occurrence,
            kind=rep.kind,
            grid=rep.grid,
            text_len=rep.text_len,
            text_first=rep.text_position == "first",
        )
        runtime.register(spec)
        rewrite_attention(
            gm, call, runtime_id=runtime.id, site=spec.key, features=features, mode=plan.mode, timestep=timestep,
            symmetric=plan.symmetric,
        )
    if not dry_run:
        gm.graph.lint()
        gm.recompile()
    report = GraphReport(
        reports,
        grid=chosen.grid if chosen else None,
        grid_source=chosen.source if chosen else "",
        timestep=timestep.name if timestep is not None else None,
    )
    if not dry_run and not report.rewritten and not runtime.sites:
        warn_nothing_rewritten(report)
    log.info("asymrnr_fx: rewrote %d of %d attention sites", len(report.rewritten), len(reports))
    return report


def asymrnr_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    options: dict[str, Any] | None = None,
    mode: str | None = None,
    **_: Any,
) -> Callable[..., Any]:
    """The ``asymrnr`` Dynamo backend: rewrite attention, then compile with inductor."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown asymrnr backend options {unknown}; known: {list(_OPTION_NAMES)}")
    runtime: Runtime | None = opts.get("runtime")
    plan = runtime.plan if runtime is not None else coerce_plan(opts.get("plan"))
    runtime = runtime or default_runtime(plan)
    report = rewrite_graph(gm, plan, runtime, grid=opts.get("grid"))
    runtime.reports.append(report)
    if not opts.get("compile", True):
        return gm.forward
    from torch._inductor import list_mode_options
    from torch._inductor.compile_fx import compile_fx

    if report.rewritten:
        _allow_data_dependent_sizes(example_inputs)

    patches = dict(list_mode_options(mode)) if mode else {}
    patches.update(opts.get("inductor") or {})
    return compile_fx(gm, example_inputs, config_patches=patches)


def _allow_data_dependent_sizes(example_inputs: Sequence[Any]) -> None:
    """Let inductor trace ``asymrnr::select``'s data-dependent kept count.

    Dynamo only allows ops with data-dependent output sizes when ``fullgraph=True`` (or
    ``capture_dynamic_output_shape_ops`` is set globally). The rewritten graph is ours and
    the op's fake implementation bounds the size, so we switch the setting on for this
    graph's shape environment alone instead of for every compile in the process.
    """
    import dataclasses

    from torch._guards import detect_fake_mode

    env = getattr(detect_fake_mode(example_inputs), "shape_env", None)
    if env is not None and not env.allow_dynamic_output_shape_ops:
        env.settings = dataclasses.replace(env.settings, allow_dynamic_output_shape_ops=True)


def analysis_backend(plan: Plan, runtime: Runtime, grid: tuple[int, int, int] | None) -> Callable[..., Any]:
    """A backend that only classifies (for :func:`asymrnr_fx.inspect`) and runs the graph as captured."""

    def backend(gm: fx.GraphModule, example_inputs: Sequence[Any], **_: Any) -> Callable[..., Any]:
        runtime.reports.append(rewrite_graph(gm, plan, runtime, grid=grid, dry_run=True))
        return gm.forward

    return backend


def register() -> None:
    """Register the backend by name for environments where the entry point is not installed."""
    from torch._dynamo.backends.registry import _BACKENDS, register_backend

    if "asymrnr" not in _BACKENDS:
        register_backend(asymrnr_backend, name="asymrnr")
