"""Hook verdicts: what AsymRnR composes with among diffusers cache hooks, offloading hooks
(diffusers' and accelerate's) and diffusers attention backends.

Why this exists: the pass only sees what Dynamo captures. A hook that runs its module outside
the captured graph (``torch.compiler.disable``), or that makes Dynamo recompile per module
and step until it gives up (its recompile limit of 8), leaves attention calls unreduced
without any error. That is the worst failure this library can have, so every hook we know
gets a verdict, measured on tiny Wan and CogVideoX (``tests/test_compose.py``):

* it composes: the reduction stays on at every block the hook computes, steps advance, and
  the hook keeps skipping; or
* it is refused: :func:`check` raises :class:`IncompatibleHookError` naming the tool, why it
  loses the reduction, and what to do instead. :func:`asymrnr_fx.transform` checks before
  building the model, and every call of the transformed model checks again, so a hook added
  after ``transform`` is refused at the next call, before anything runs unreduced.

Attention backends are per site, not per model: a site whose diffusers backend does not call
``scaled_dot_product_attention`` (``flex``, flash-attn, sage, xformers, ...) is left intact
and :func:`warn_backends` names it with its backend, once per model and set of sites.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import AsymRnRWarning, IncompatibleHookError
from .diffusers import accelerate_hooks, diffusers_hook_names, repeated_blocks

__all__ = ["ACCELERATE_HOOKS", "HOOKS", "REWRITTEN_BACKENDS", "SDPA_BACKENDS", "IncompatibleHookError", "Verdict", "backend_sites", "check",
           "check_call", "verdicts", "warn_backends"]


@dataclass(frozen=True)
class Verdict:
    """What AsymRnR does with one tool: ``composes`` or not, and if not, why and what to do instead."""

    tool: str
    composes: bool
    reason: str = ""
    fix: str = ""


_CACHE_FIX = (
    "Remove it (model.disable_cache(), or build the model without it) and use a cache that composes with "
    "AsymRnR: FirstBlockCache"
)
_OFFLOAD_FIX = (
    "Keep the transformer on one device while it denoises: remove the offloading (model.disable_group_offload() / "
    "accelerate's remove_hook_from_module), or offload other pipeline components only"
)

#: diffusers hook registry names -> verdict (names, so importing this module never imports diffusers).
HOOKS: dict[str, Verdict] = {
    **dict.fromkeys(("fbc_leader_block_hook", "fbc_block_hook"), Verdict("FirstBlockCache", True)),
    "pyramid_attention_broadcast": Verdict(
        "PyramidAttentionBroadcast", False,
        "its hook reads its per-call state (an iteration counter and the timestep callback's value) inside the "
        "compiled attention modules, so Dynamo recompiles them at every call; past its recompile limit (8) they run "
        "unreduced (tiny Wan: 8 graphs after 8 steps, then the fallback)",
        _CACHE_FIX,
    ),
    **dict.fromkeys(("faster_cache_denoiser", "faster_cache_block"), Verdict(
        "FasterCache", False,
        "its hooks read per-call state (iteration counters, the timestep callback) inside the compiled blocks, so "
        "Dynamo recompiles them at every call; past its recompile limit (8) those blocks run unreduced while the "
        "rest of the call stays compiled, with no error (tiny Wan, 14 steps: reduced at steps 0-6, then not at all)",
        _CACHE_FIX,
    )),
    "taylorseer_cache": Verdict(
        "TaylorSeer", False,
        "its hook runs its compute/predict decision under torch.compiler.disable in every hooked module, and Dynamo "
        "guards on that decision per module: each module and decision is another compile of the same frame, so past "
        "Dynamo's recompile limit (8, reached with 4 hooked modules) the hooked modules run unreduced, with no error",
        _CACHE_FIX,
    ),
    **dict.fromkeys(("mag_cache_leader_block_hook", "mag_cache_block_hook"), Verdict(
        "MagCache", False,
        "its block hooks run every transformer block under torch.compiler.disable, so no attention call of a block "
        "reaches the graph AsymRnR rewrites: the reduction would be off at every block",
        _CACHE_FIX,
    )),
    **dict.fromkeys(("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading"), Verdict(
        "group offloading", False,
        "its onload/offload hooks run under torch.compiler.disable around every offloaded module, and the weights it "
        "moves change storage between calls: at leaf level no attention call reaches the rewritten graph, at block "
        "level the graph is cut at every block and the sites lose their module identity",
        _OFFLOAD_FIX,
    )),
}

#: accelerate hooks (``module._hf_hook``) -> verdict, each with the predicate that recognises it.
ACCELERATE_HOOKS: tuple[tuple[Callable[[Any], bool], Verdict], ...] = (
    (lambda hook: type(hook).__name__ == "AlignDevicesHook" and bool(getattr(hook, "offload", False)), Verdict(
        "accelerate cpu_offload", False,
        "accelerate's AlignDevicesHook loads every module's weights in its pre-forward hook, outside the graph "
        "Dynamo captures, so no attention call reaches the rewritten graph",
        _OFFLOAD_FIX,
    )),
)

#: diffusers attention backends that call ``torch.nn.functional.scaled_dot_product_attention`` (rewritable).
SDPA_BACKENDS = frozenset({"native", "_native_flash", "_native_math", "_native_efficient", "_native_cudnn"})
#: diffusers attention backends whose calls reach a form the passes rewrite: SDPA's, and ``flex``
#: (``flex_attention`` without a score_mod or block_mask; see :mod:`asymrnr_fx.passes.forms.flex`).
REWRITTEN_BACKENDS = SDPA_BACKENDS | {"flex"}


def verdicts(model: nn.Module) -> dict[str, tuple[Verdict, list[str]]]:
    """Every known tool on ``model``: tool name -> (verdict, module paths carrying it).

    A group-offloading verdict names its level (``block_level`` / ``leaf_level``); accelerate's
    ``cpu_offload`` (an ``AlignDevicesHook`` that offloads weights) is refused for the same
    reason as leaf-level group offloading.
    """
    found: dict[str, tuple[Verdict, list[str]]] = {}
    for path, module in model.named_modules():
        for name in diffusers_hook_names(module):
            verdict = HOOKS.get(name)
            if verdict is None:
                continue
            if verdict.tool == "group offloading":
                level = _group_offload_level(module, name)
                verdict = Verdict(f"group offloading ({level})" if level else verdict.tool, False, verdict.reason, verdict.fix)
            found.setdefault(verdict.tool, (verdict, []))[1].append(path or "<model>")
        for hook in accelerate_hooks(module):
            for recognises, verdict in ACCELERATE_HOOKS:
                if recognises(hook):
                    found.setdefault(verdict.tool, (verdict, []))[1].append(path or "<model>")
    return found


def _group_offload_level(module: nn.Module, name: str) -> str:
    hook = getattr(module, "_diffusers_hook").hooks.get(name)
    kind = getattr(getattr(hook, "config", None), "offload_type", None)
    return str(getattr(kind, "value", kind or ""))


def check(model: nn.Module, compile: Any = False) -> None:
    """Refuse ``model`` if it carries a tool that would silently turn the reduction off (see :data:`HOOKS`).

    With ``compile="regional"``, a repeated block that already carries a diffusers hook is
    refused too: regional compilation replaces the block's ``forward``, which would silently
    drop the hook (e.g. FirstBlockCache would stop skipping).
    """
    refused = [(v, paths) for v, paths in verdicts(model).values() if not v.composes]
    if refused:
        verdict, paths = refused[0]
        where = ", ".join(paths[:3]) + (f", ... ({len(paths)} modules)" if len(paths) > 3 else "")
        raise IncompatibleHookError(
            f"asymrnr_fx does not compose with {verdict.tool} (on {where}): {verdict.reason}. {verdict.fix}. "
            f"Composes: {', '.join(sorted({v.tool for v in HOOKS.values() if v.composes}))}."
        )
    if compile == "regional":
        hooked = {path: names for path, block in repeated_blocks(model) if (names := diffusers_hook_names(block))}
        if hooked:
            names = sorted({n for ns in hooked.values() for n in ns})
            raise IncompatibleHookError(
                f"compile='regional' would replace the forward of blocks carrying diffusers hooks "
                f"({', '.join(list(hooked)[:3])}{', ...' if len(hooked) > 3 else ''}: {', '.join(names)}) and so "
                "silently drop the hook; use compile=True or compile=False with this hook"
            )


def backend_sites(model: nn.Module) -> list[tuple[str, str]]:
    """Attention modules whose diffusers backend the passes do not rewrite: (module path, backend name), in model order.

    A processor without its own backend uses diffusers' process-wide active backend, so that
    one counts too (``set_attention_backend`` sets both).
    """
    out = []
    active = None
    for path, module in model.named_modules():
        processor = getattr(module, "processor", None)
        if processor is None or not hasattr(processor, "_attention_backend"):
            continue
        backend = processor._attention_backend
        if backend is None:
            if active is None:
                active = _active_backend()
            backend = active
        name = str(getattr(backend, "value", backend))
        if name and name not in REWRITTEN_BACKENDS:
            out.append((path, name))
    return out


def _active_backend() -> str:
    try:
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    except ImportError:  # pragma: no cover - a processor with _attention_backend means diffusers is there
        return "native"
    backend = _AttentionBackendRegistry._active_backend
    return str(getattr(backend, "value", backend))


_WARNED: "weakref.WeakKeyDictionary[nn.Module, frozenset]" = weakref.WeakKeyDictionary()


def warn_backends(model: nn.Module) -> list[tuple[str, str]]:
    """Warn (``AsymRnRWarning``, once per model and set of sites) about sites a non-SDPA backend keeps intact."""
    sites = backend_sites(model)
    key = frozenset(sites)
    if sites and _WARNED.get(model) != key:
        _WARNED[model] = key
        lines = "; ".join(f"{path}: left intact: attention backend '{name}' is not SDPA or flex" for path, name in sites[:8])
        more = f"; ... ({len(sites)} sites)" if len(sites) > 8 else ""
        warnings.warn(
            f"asymrnr_fx: {len(sites)} attention sites are not reduced ({lines}{more}). AsymRnR rewrites the "
            "backends that call scaled_dot_product_attention or flex_attention; use "
            "model.set_attention_backend('native') (or 'flex', '_native_flash', '_native_math', '_native_efficient', "
            "'_native_cudnn')",
            AsymRnRWarning, stacklevel=3,
        )
    elif not sites:
        _WARNED.pop(model, None)
    return sites


def check_call(model: nn.Module) -> None:
    """Per call of a transformed model: hooks or backends changed since ``transform`` are refused or reported.

    (A hook registered on a block after ``compile="regional"`` wraps the block's compiled region
    and is judged by :data:`HOOKS` alone.)

    One walk over the modules (well under a millisecond for a 40-block DiT): cheap next to a
    denoising step, and the only way to see a hook registered after ``transform``.
    """
    check(model)
    warn_backends(model)
