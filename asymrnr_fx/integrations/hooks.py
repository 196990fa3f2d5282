"""Hook verdicts: what AsymRnR composes with among diffusers cache hooks, offloading hooks
(diffusers' and accelerate's) and diffusers attention backends.

Why this exists: the pass only sees what Dynamo captures. A hook that runs its module outside
the captured graph (``torch.compiler.disable``), or that makes Dynamo recompile per module
and step until it gives up (its recompile limit of 8), leaves attention calls unreduced
without any error. That is the worst failure this library can have, so every hook we know
gets a verdict, measured on tiny Wan and CogVideoX (``tests/test_compose.py``):

* it composes: the reduction stays on at every block the hook computes, steps advance, and
  the hook keeps skipping. Cache hooks that run Python around their module (MagCache,
  TaylorSeer, FasterCache, PyramidAttentionBroadcast, SeaCache) compose *below* the hook:
  the module's own forward is compiled as a region the hook calls (:mod:`asymrnr_fx.regions`),
  so their decisions and state stay in Python and cost no recompile; or
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
from .diffusers import accelerate_hooks, diffusers_hook_names

__all__ = ["ACCELERATE_HOOKS", "HOOKS", "HOOK_PREFIXES", "REWRITTEN_BACKENDS", "SDPA_BACKENDS", "IncompatibleHookError", "Verdict",
           "backend_sites", "below_hooked", "below_key", "check", "check_call", "verdict_of", "verdicts", "warn_backends",
           "warn_unknown"]


@dataclass(frozen=True)
class Verdict:
    """What AsymRnR does with one tool: ``composes`` or not, and if not, why and what to do instead."""

    tool: str
    composes: bool
    reason: str = ""
    fix: str = ""
    below: bool = False  # composes when its module is compiled below the hook (asymrnr_fx.regions)


_OFFLOAD_FIX = (
    "Keep the transformer on one device while it denoises: remove the offloading (model.disable_group_offload() / "
    "accelerate's remove_hook_from_module), or offload other pipeline components only"
)

#: diffusers hook registry names -> verdict (names, so importing this module never imports diffusers).
#: ``below``: the hook runs Python around its module (a decision under ``torch.compiler.disable``,
#: per-call state), so its module is compiled as a region below the hook and the model runs
#: eagerly above (:mod:`asymrnr_fx.regions`); the hook's own logic never enters a graph.
HOOKS: dict[str, Verdict] = {
    **dict.fromkeys(("fbc_leader_block_hook", "fbc_block_hook"), Verdict("FirstBlockCache", True)),
    "pyramid_attention_broadcast": Verdict("PyramidAttentionBroadcast", True, below=True),
    **dict.fromkeys(("faster_cache_denoiser", "faster_cache_block"), Verdict("FasterCache", True, below=True)),
    "taylorseer_cache": Verdict("TaylorSeer", True, below=True),
    **dict.fromkeys(("mag_cache_leader_block_hook", "mag_cache_block_hook"), Verdict("MagCache", True, below=True)),
    **dict.fromkeys(("sea_cache_root", "sea_cache_leader_block", "sea_cache_block", "sea_cache_post_norm"),
                    Verdict("SeaCache", True, below=True)),
    # casts each leaf layer's weights around its forward: traced into the graph like any module code
    **dict.fromkeys(("layerwise_casting", "peft_autocast_disable"), Verdict("layerwise casting", True)),
    "layer_skip_hook": Verdict(
        "layer skip", False,
        "it replaces a block's or attention's output (or, for attention scores, the output of "
        "scaled_dot_product_attention through a TorchFunctionMode around the call), and guiders add and remove it "
        "around single calls; the reduced attention is not what it was written to intercept, and this combination "
        "is not verified",
        "Remove it (registry.remove_hook('layer_skip_hook')), or use a guider without layer skipping",
    ),
    "smoothed_energy_guidance_hook": Verdict(
        "smoothed energy guidance", False,
        "it blurs the attention queries inside the attention call it hooks, over the full token grid, and guiders "
        "add and remove it around single calls; the reduction's kept queries are not the grid it blurs, and this "
        "combination is not verified",
        "Use a guider without smoothed energy guidance",
    ),
    **dict.fromkeys(("text_kv_cache_transformer", "text_kv_cache_block"), Verdict(
        "text KV cache", False,
        "it feeds each block's attention precomputed text keys and values through attention_kwargs (NucleusMoE-Image, "
        "an image transformer); joint attention fed cached text keys is not verified with the reduction",
        "Remove it (registry.remove_hook('text_kv_cache_block'))",
    )),
    **dict.fromkeys(("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading"), Verdict(
        "group offloading", False,
        "its onload/offload hooks run under torch.compiler.disable around every offloaded module, and the weights it "
        "moves change storage between calls: at leaf level no attention call reaches the rewritten graph, at block "
        "level the graph is cut at every block and the sites lose their module identity",
        _OFFLOAD_FIX,
    )),
}

#: diffusers hook names made per module or per guider (``cp_input---<id>``, ``SkipLayerGuidance_0``):
#: context parallelism's split/gather hooks compose (:mod:`.context_parallel`, tests/test_context_parallel.py);
#: the guiders' layer-skip and smoothed-energy hooks are judged as the hooks they register.
HOOK_PREFIXES: dict[str, Verdict] = {
    **dict.fromkeys(("cp_input---", "cp_output---"), Verdict("context parallelism", True)),
    **dict.fromkeys(("SkipLayerGuidance_", "AutoGuidance_"), HOOKS["layer_skip_hook"]),
    "SmoothedEnergyGuidance_": HOOKS["smoothed_energy_guidance_hook"],
}


def verdict_of(name: str) -> Verdict | None:
    """The verdict of a diffusers hook registry name, or None for a hook this library does not know."""
    found = HOOKS.get(name)
    if found is None:
        found = next((v for prefix, v in HOOK_PREFIXES.items() if name.startswith(prefix)), None)
    return found


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
#: diffusers attention backends whose calls reach a form the passes rewrite: SDPA's, ``flex``
#: (``flex_attention`` without a score_mod or block_mask; see :mod:`asymrnr_fx.passes.forms.flex`), and the
#: kernel-table ops (:mod:`asymrnr_fx.passes.forms.kernels`): ``flash`` (flash-attn 2), ``_flash_3`` (diffusers'
#: flash-attn 3 op) and ``xformers`` (its flash / flash3 ops; with a mask xformers runs a kernel left intact, which
#: that site's report names). Tested on CPU stand-ins of those ops; a call that does not reach the graph as the op
#: leaves the site unrewritten, and the call's fallback warning says so.
REWRITTEN_BACKENDS = SDPA_BACKENDS | {"flex", "flash", "_flash_3", "xformers"}


def verdicts(model: nn.Module) -> dict[str, tuple[Verdict, list[str]]]:
    """Every known tool on ``model``: tool name -> (verdict, module paths carrying it).

    A group-offloading verdict names its level (``block_level`` / ``leaf_level``); accelerate's
    ``cpu_offload`` (an ``AlignDevicesHook`` that offloads weights) is refused for the same
    reason as leaf-level group offloading.
    """
    found: dict[str, tuple[Verdict, list[str]]] = {}
    for path, module in model.named_modules():
        for name in diffusers_hook_names(module):
            verdict = verdict_of(name)
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


def check(model: nn.Module) -> None:
    """Refuse ``model`` if it carries a tool that would silently turn the reduction off (see :data:`HOOKS`).

    The same for every compile mode: a hooked block is compiled below its hook (:mod:`asymrnr_fx.regions`).
    """
    refused = [(v, paths) for v, paths in verdicts(model).values() if not v.composes]
    if refused:
        verdict, paths = refused[0]
        where = ", ".join(paths[:3]) + (f", ... ({len(paths)} modules)" if len(paths) > 3 else "")
        raise IncompatibleHookError(
            f"asymrnr_fx does not compose with {verdict.tool} (on {where}): {verdict.reason}. {verdict.fix}. "
            f"Composes: {', '.join(sorted({v.tool for v in HOOKS.values() if v.composes}))}."
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
        lines = "; ".join(f"{path}: left intact: attention backend '{name}' is not one AsymRnR rewrites" for path, name in sites[:8])
        more = f"; ... ({len(sites)} sites)" if len(sites) > 8 else ""
        warnings.warn(
            f"asymrnr_fx: {len(sites)} attention sites are not reduced ({lines}{more}). AsymRnR rewrites the "
            f"backends {', '.join(sorted(REWRITTEN_BACKENDS))}; use model.set_attention_backend('native') (or another of them)",
            AsymRnRWarning, stacklevel=3,
        )
    elif not sites:
        _WARNED.pop(model, None)
    return sites


def below_hooked(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules carrying a hook that composes below it (``Verdict.below``), with their paths, in model order."""
    out = []
    for path, module in model.named_modules():
        if any((v := verdict_of(n)) is not None and v.below for n in diffusers_hook_names(module)):
            out.append((path, module))
    return out


def below_key(model: nn.Module) -> tuple:
    """What the regions below hooks depend on: every hooked module and its hook names (cheap to compare per call)."""
    return tuple((id(m), tuple(names)) for m in model.modules() if (names := diffusers_hook_names(m)))


_UNKNOWN: "weakref.WeakKeyDictionary[nn.Module, frozenset]" = weakref.WeakKeyDictionary()


def warn_unknown(model: nn.Module) -> list[str]:
    """Warn (``AsymRnRWarning``, once per model and set of names) about diffusers hooks without a verdict.

    Why: a hook this library has not judged may run its module outside the captured graph
    (the reduction then off there, without an error); saying so is the least it can do.
    """
    names = sorted({n for m in model.modules() for n in diffusers_hook_names(m) if verdict_of(n) is None})
    key = frozenset(names)
    if names and _UNKNOWN.get(model) != key:
        _UNKNOWN[model] = key
        warnings.warn(
            f"asymrnr_fx: the model carries diffusers hooks this version has no verdict for ({', '.join(names)}): "
            "whether the reduction stays on in the modules they wrap is not known. Check asymrnr_fx.runtime_of(model)"
            ".events for matchings at every block and step, or remove the hook",
            AsymRnRWarning, stacklevel=3,
        )
    elif not names:
        _UNKNOWN.pop(model, None)
    return names


def check_call(model: nn.Module) -> None:
    """Per call of a transformed model: hooks or backends changed since ``transform`` are refused or reported.

    (A hook registered on a block after ``compile="regional"`` wraps the block's compiled region
    and is judged by :data:`HOOKS` alone.)

    One walk over the modules (well under a millisecond for a 40-block DiT): cheap next to a
    denoising step, and the only way to see a hook registered after ``transform``.
    """
    check(model)
    warn_unknown(model)
    warn_backends(model)
