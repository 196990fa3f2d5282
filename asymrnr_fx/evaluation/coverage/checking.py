"""One class: :func:`check` runs it plain, inspects it, reduces it, judges the outputs and the geometry,
and retries with ``grid=`` / ``text_position=``; optionally inductor against eager."""
from __future__ import annotations

import contextlib
import math
import signal
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ... import api
from ...plan import Plan
from ...errors import AsymRnRWarning
from .case import TIME_CAP, TIMESTEPS, Case, Grid
from .probe import geometry_problem, linear_attention, row_grid
from .registry import build_model, cases, expected_grid
from .test_configs import NO_TEST_CONFIG


# =========================================================================== one class
@dataclass
class Result:
    """What :func:`check` found for one class."""

    name: str
    status: str = "fails"
    why: str = ""  # the parenthesised part of the status: "not applicable (why)", "fails (error)"
    sites: int = 0
    rewritten: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    expected_grid: Grid | None = None
    grids: list[Grid] = field(default_factory=list)  # grids of the rewritten sites (default run)
    note: str = ""
    finite: bool | None = None
    differs: bool | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    inductor: str | None = None  # "ok (max diff ...)", "mismatch ...", "error: ...", or None (not run)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.status} ({self.why})" if self.why else self.status

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()} | {"label": self.label}


class CaseTimeout(Exception):
    """A class ran past its time cap."""


@contextlib.contextmanager
def time_cap(seconds: float | None):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (SIGALRM; no cap elsewhere)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"ran past the time cap of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tensors(out: Any) -> list[torch.Tensor]:
    """Every floating tensor of a model output (tuples, lists, dicts, diffusers BaseOutput), in order."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "to_tuple"):
        return _tensors(out.to_tuple())
    return []


def _short(e: BaseException, limit: int = 160) -> str:
    msg = " ".join(str(e).split())
    # Dynamo wraps errors from user code; keep the first line that names the real one
    msg = msg.split(" from user code:")[0].split("Set TORCHDYNAMO_VERBOSE")[0].strip()
    if type(e).__name__ == "BackendCompilerFailed" and " raised: " in msg:  # the backend's own error
        return _short_text(msg.split(" raised: ", 1)[1], limit)
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(msg: str, limit: int) -> str:
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _max_diff(a: Sequence[Sequence[torch.Tensor]], b: Sequence[Sequence[torch.Tensor]]) -> float:
    diffs = [(x.double() - y.double()).abs().max().item() for xs, ys in zip(a, b) for x, y in zip(xs, ys) if x.shape == y.shape]
    return max(diffs) if diffs else float("nan")


def _run(fn: Callable[..., Any], case: Case) -> list[list[torch.Tensor]]:
    with torch.no_grad():
        return [[t.detach().clone() for t in _tensors(fn(**case.inputs(t)))] for t in TIMESTEPS]


@dataclass
class Reduced:
    report: Any
    outputs: list[list[torch.Tensor]]
    warnings: list[str]
    num_sites: int = 0  # video sites the runtime numbered (the rows a table plan needs)


def reduced_run(model: nn.Module, case: Case, plan: Any, **options: Any) -> Reduced:
    """``transform(model, plan, **options)`` run at :data:`TIMESTEPS`; AsymRnRWarning messages recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        fast = api.transform(model, plan, **options)
        with api.generation(fast):
            outs = _run(fast, case)
    msgs = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    return Reduced(fast.report, outs, list(dict.fromkeys(msgs)), fast.runtime.table.num_sites)


def _clip(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reasons(report: Any, limit: int = 2, n_video: int | None = None) -> str:
    """Why the sites were left alone: the distinct (kind: reason), most frequent first, clipped.

    With ``n_video``: when no SDPA call attends over all the video tokens at once (the video
    self-attention runs another kernel, is linear, or is factorized), says that instead.
    """
    if report is None:
        return ""
    if n_video is not None and report.sites:
        lens = sorted({(s.q_len, s.kv_len) for s in report.sites if s.q_len is not None and s.kv_len is not None})
        if lens and not any(min(q, kv) >= n_video for q, kv in lens):
            seen = ", ".join(f"{q}x{kv}" for q, kv in lens)
            return f"no SDPA call attends over all {n_video} video tokens (query x key lengths seen: {seen})"
    left = [s for s in report.sites if not s.rewrite]
    if n_video is not None:  # the sites over the video tokens say more than text refiners or pooling
        video = [s for s in left if s.q_len is None or s.kv_len is None or min(s.q_len, s.kv_len) >= n_video]
        left = video or left
    c = Counter(_clip(f"{s.kind}: {s.reason}" if s.reason else s.kind) for s in left)
    return "; ".join(r for r, _ in c.most_common(limit))


def _tried(tried: list[tuple[str, str]]) -> str:
    """``label: outcome`` pairs, the labels of equal outcomes merged."""
    groups: dict[str, list[str]] = {}
    for label, outcome in tried:
        groups.setdefault(outcome, []).append(label)
    return "; ".join(f"{' / '.join(labels)}: {outcome}" for outcome, labels in groups.items())


def check(name: str, *, inductor: bool = False, cap: float | None = TIME_CAP, plan: Any = None,
          retry: bool = True, configs: str = "ours") -> Result:
    """Classify one class (see the package docstring). Never raises: errors become the result.

    ``configs`` picks the config set (:data:`~.case.CONFIG_SETS`): ``"ours"`` or ``"diffusers"`` (the
    configs of diffusers' own model tests; status "no test config" for a class diffusers does not test).

    ``retry=False`` skips the ``grid=`` / ``text_position=`` retries of a class the default leaves
    alone (faster; such a class then reads "not applicable" or "fails" with the default's reason).
    """
    start = time.perf_counter()
    res = Result(name)
    try:
        with time_cap(cap):
            _check(name, res, inductor=inductor, plan=plan, retry=retry, configs=configs)
    except CaseTimeout as e:
        res.status, res.why, res.error = "fails", str(e), traceback.format_exc(limit=8)
    except Exception as e:  # noqa: BLE001 - one bad class must not stop the sweep
        res.status, res.why, res.error = "fails", _short(e), traceback.format_exc(limit=8)
    finally:
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    res.seconds = time.perf_counter() - start
    return res


def _check(name: str, res: Result, *, inductor: bool, plan: Any, retry: bool = True, configs: str = "ours") -> None:
    plan = plan if plan is not None else Plan.uniform(q=0.5, kv=0.3)
    case = cases(configs).get(name)
    if case is None and configs == "diffusers" and name in NO_TEST_CONFIG:
        res.status, res.why = "no test config", "diffusers has no model or pipeline test for this class"
        return
    if case is None:
        res.status, res.why = "fails", f"no {configs!r} tiny config in asymrnr_fx/evaluation/coverage/ (new class?)"
        return
    model = build_model(case)

    # 1. plain eager: config and inputs are valid
    try:
        plain = _run(model, case)
    except Exception as e:  # noqa: BLE001
        res.status, res.why, res.error = "fails", f"plain model: {_short(e)}", traceback.format_exc(limit=8)
        return
    if not plain or not all(torch.isfinite(t).all() for t in plain[0]):
        res.status, res.why = "fails", "plain model output is empty or not finite (tiny config problem)"
        return
    expected = expected_grid(case, model, case.inputs(TIMESTEPS[0]))
    res.expected_grid = expected

    # 2. inspect, as a user would call it
    default_error = None
    report = None
    try:
        report = api.inspect(model, **case.inputs(TIMESTEPS[0]))
    except Exception as e:  # noqa: BLE001
        default_error = f"inspect: {_short(e, 130)}"
        res.error = traceback.format_exc(limit=8)
    if report is not None:
        _counts(res, report)
        if not report.sites:
            res.status, res.why = "not applicable", "no scaled_dot_product_attention call in the captured graph"
            res.note = "the attention runs another kernel (flex attention, a custom op, explicit softmax)"
            return

    # 3-4. default (no grid): geometry check, then the eager reduction
    if report is not None and report.rewritten:
        problem = geometry_problem(model, case, report, expected)
        if problem:
            res.status, res.why = "silently wrong", problem
            res.note = _rescue(model, case, plan, expected, report) if retry else ""
            return
        try:
            red = reduced_run(model, case, plan)
        except Exception as e:  # noqa: BLE001
            res.status, res.why, res.error = "fails", f"eager reduction: {_short(e)}", traceback.format_exc(limit=8)
            return
        _judge(res, red, plain, expected)
        _ratio_zero(res, model, case, plan, plain, red.num_sites, {})
        if res.status == "works":
            res.status, res.why = "works out of the box", ""
            res.note = f"grid {expected}; {res.note}"
            _maybe_inductor(res, model, case, plan, red, inductor, {})
        return

    # nothing rewritten (or an error): what an explicit grid= (and text_position=) gives
    n_video = math.prod(expected)
    base = default_error or f"nothing rewritten: {_reasons(report, 1, n_video)}"
    tried: list[tuple[str, str]] = []
    for variant in _variants(plan, expected, report) if retry else []:
        label = _variant_label(variant, plan)
        v_plan = variant.pop("plan")
        try:
            rep = api.inspect(model, plan=v_plan, **variant, **case.inputs(TIMESTEPS[0]))
        except Exception as e:  # noqa: BLE001
            tried.append((label, _short(e, 130).replace("BackendCompilerFailed: backend='backend' raised: ", "")))
            continue
        if not rep.rewritten:
            tried.append((label, f"rewrites nothing ({_reasons(rep, 1, n_video)})"))
            continue
        problem = geometry_problem(model, case, rep, expected)
        if problem:
            tried.append((label, f"rewrites {len(rep.rewritten)} site(s) but {problem}"))
            continue
        _counts(res, rep)
        try:
            red = reduced_run(model, case, v_plan, **variant)
        except Exception as e:  # noqa: BLE001
            res.status, res.why = "fails", f"eager reduction with {label}: {_short(e)}"
            res.error, res.note = traceback.format_exc(limit=8), f"default: {base}"
            return
        _judge(res, red, plain, expected)
        _ratio_zero(res, model, case, v_plan, plain, red.num_sites, variant)
        if res.status == "works":
            res.status, res.why = "works with grid=", ""
            res.note = f"{label}; {res.note}; default: {base}"
            _maybe_inductor(res, model, case, v_plan, red, inductor, variant)
        else:
            res.note = f"with {label}; default: {base}"
        return
    res.status = "fails" if default_error else "not applicable"
    res.why = default_error or (_reasons(report, 1, n_video) or "no site qualifies")
    linear = linear_attention(model)
    if not default_error and linear and res.why.startswith("no SDPA call attends over all"):
        res.why = f"linear attention: the video self-attention runs {linear}, not softmax attention; {res.why}"
    res.note = _tried(tried) if retry else "grid= not tried (retry=False)"


def _counts(res: Result, report: Any) -> None:
    res.sites, res.rewritten, res.kinds = len(report.sites), len(report.rewritten), report.counts()
    res.grids = list(dict.fromkeys(s.grid for s in report.rewritten))


def _variants(plan: Any, expected: Grid, report: Any) -> list[dict[str, Any]]:
    """What a user would try next: ``grid=``, then also ``Plan(text_position=...)`` (the sequence may join
    text and video by an index scatter, not a ``cat`` the pass can read)."""
    import dataclasses

    out = [{"plan": plan, "grid": expected}]
    out += [{"plan": dataclasses.replace(plan, text_position=p), "grid": expected} for p in ("first", "last")
            if getattr(plan, "text_position", "auto") != p]
    return out


def _variant_label(variant: dict[str, Any], base_plan: Any) -> str:
    label = f"grid={tuple(variant['grid'])}" if variant.get("grid") else "default"
    pos = getattr(variant["plan"], "text_position", "auto")
    return label + (f" + Plan(text_position={pos!r})" if pos != getattr(base_plan, "text_position", "auto") else "")


def _rescue(model: nn.Module, case: Case, plan: Any, expected: Grid, report: Any) -> str:
    """For a silently wrong class: would an explicit ``grid=`` (or ``text_position=``) fix it?"""
    notes: list[tuple[str, str]] = []
    for variant in _variants(plan, expected, report):
        label = _variant_label(variant, plan)
        v_plan = variant.pop("plan")
        try:
            rep = api.inspect(model, plan=v_plan, **variant, **case.inputs(TIMESTEPS[0]))
        except Exception as e:  # noqa: BLE001
            notes.append((label, _short(e, 100)))
            continue
        problem = geometry_problem(model, case, rep, expected) if rep.rewritten else "rewrites nothing"
        if not problem:
            return f"{label} fixes it ({len(rep.rewritten)} site(s) on the right tokens)"
        notes.append((label, problem))
    return _tried(notes)


def _judge(res: Result, red: Reduced, plain: list[list[torch.Tensor]], expected: Grid) -> None:
    """Outputs finite, different from the plain model, grids right: ``res.status = "works"``, else why not."""
    res.warnings = red.warnings
    rewritten = red.report.rewritten
    res.finite = all(torch.isfinite(t).all().item() for ts in red.outputs for t in ts)
    diff = _max_diff(red.outputs, plain)
    res.differs = bool(diff > 1e-6)
    wrong = [s for s in rewritten if s.grid != row_grid(expected, s)]
    if not rewritten:
        res.status, res.why = "fails", "transform() rewrote nothing" + (f": {red.warnings[0][:100]}" if red.warnings else "")
    elif wrong:
        res.status, res.why = "silently wrong", f"grid {wrong[0].grid} instead of {row_grid(expected, wrong[0])} at {wrong[0].path}"
    elif not res.finite:
        res.status, res.why = "fails", "reduced output not finite"
    elif not res.differs:
        res.status, res.why = "fails", "reduced output equals the plain output (the rewritten sites never ran)"
    elif red.warnings:
        res.status, res.why = "fails", f"AsymRnRWarning: {red.warnings[0][:100]}"
    else:
        res.status = "works"
        res.note = (res.note + "; " if res.note else "") + f"max abs diff vs plain {diff:.2g}"


def _ratio_zero(res: Result, model: nn.Module, case: Case, plan: Any, plain: list[list[torch.Tensor]], sites: int,
                options: dict[str, Any]) -> None:
    """The rewritten sites at ratio 0 are the model itself: a plan with ratio 0 at the first step (the
    rewrite still runs its select and restore, as identity) and ``plan``'s ratios at the second must give
    the plain output exactly at step 0 (within 1e-6) and a reduced one at step 1. Why: "finite and
    different from the plain model" alone would pass a rewrite that garbles every call."""
    if res.status != "works":
        return
    import dataclasses

    rows = max(sites, 1)  # a table plan has one row per video site the runtime numbered
    q, kv = (plan.ratio(0, 0, f) if f in plan.features_used(0) else 0.0 for f in ("q", "kv"))
    zero = dataclasses.replace(plan, q=[[0.0, q]] * rows, kv=[[0.0, kv]] * rows, cache_window=1, name="ratio 0, then the plan's")
    try:
        red = reduced_run(model, case, zero, **options)
    except Exception as e:  # noqa: BLE001
        res.status, res.why, res.error = "fails", f"ratio-0 run: {_short(e)}", traceback.format_exc(limit=8)
        return
    d0 = _max_diff(red.outputs[:1], plain[:1])
    if not d0 <= 1e-6:
        res.status, res.why = "fails", f"at ratio 0 the rewritten model is not the plain model (max diff {d0:.2g})"
        return
    res.note = (res.note + "; " if res.note else "") + f"ratio 0 exact (max diff {d0:.1g})"


def _maybe_inductor(res: Result, model: nn.Module, case: Case, plan: Any, eager: Reduced, inductor: bool,
                    options: dict[str, Any]) -> None:
    if not inductor:
        return
    try:
        comp = reduced_run(model, case, plan, compile=True, **options)
        d = _max_diff(comp.outputs, eager.outputs)
        res.inductor = f"ok (max diff {d:.1e})" if d <= 1e-4 else f"mismatch (max diff {d:.1e} > 1e-4)"
    except Exception as e:  # noqa: BLE001
        res.inductor = f"error: {_short(e, 120)}"
