"""diffusers video transformers and pipelines, unchanged.

Why a separate module: the FX pass only sees tensors, and a sequence length alone cannot
say which (frames, height, width) grid the video tokens lie on — (4, 8, 8) and (8, 4, 8)
have the same 256 tokens but different neighbours, so the partition would be wrong. Every
diffusers video transformer knows its grid from its call arguments and its config
(patch sizes, temporal patching, packed-token sizes), so this module reads it from there:

* :func:`grid_fn_for` returns, per model class, a function ``(model, args, kwargs) ->
  (F, H, W)`` in tokens; :func:`asymrnr_fx.transform` and :func:`asymrnr_fx.inspect` use
  it automatically when no ``grid_fn`` is given.
* :func:`dynamo_config_for` names the Dynamo settings a family needs to be captured as one
  graph (Mochi drops padded prompt tokens with ``nonzero``, a data-dependent shape).
* :func:`repeated_blocks` finds the blocks that regional compilation compiles.

Putting AsymRnR into a pipeline (:func:`asymrnr_fx.apply`) is in :mod:`asymrnr_fx.pipelines`,
a layer above the API; this module only knows about diffusers' models.
"""
from __future__ import annotations

import contextlib
import functools
import inspect as _inspect
import math
from typing import Any, Callable

import torch
from torch import nn

Grid = tuple[int, int, int]
GridFn = Callable[[nn.Module, tuple, dict], "Grid | None"]

#: Pipeline attributes that hold a denoising transformer (Wan 2.2 has two experts).
TRANSFORMER_COMPONENTS: tuple[str, ...] = ("transformer", "transformer_2")


# --------------------------------------------------------------------------- argument access
@functools.lru_cache(maxsize=None)
def _signature(cls: type) -> _inspect.Signature:
    return _inspect.signature(cls.forward)


def _arguments(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by parameter name (pipelines mix positional and keyword calls)."""
    try:
        bound = _signature(type(model)).bind_partial(model, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    out = dict(bound.arguments)
    out.pop("self", None)
    out.update(out.pop("kwargs", {}) or {})
    return out


def _config(model: nn.Module, name: str, default: Any = None) -> Any:
    config = getattr(model, "config", None)
    return getattr(config, name, default) if config is not None else default


def _patch(model: nn.Module) -> tuple[int, int, int]:
    """(temporal, height, width) patch size from the config: int or tuple ``patch_size``, optional ``patch_size_t``."""
    p = _config(model, "patch_size", 1) or 1
    if isinstance(p, (tuple, list)):
        if len(p) == 3:
            return int(p[0]), int(p[1]), int(p[2])
        if len(p) == 2:
            p_t = _config(model, "patch_size_t", 1) or 1
            return int(p_t), int(p[0]), int(p[1])
        p = p[0]
    p_t = _config(model, "patch_size_t", 1) or 1  # CogVideoX 1.0 has patch_size_t=None: no temporal patching
    return int(p_t), int(p), int(p)


def _latents(model: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = _arguments(model, args, kwargs).get("hidden_states")
    return x if isinstance(x, torch.Tensor) else None


# --------------------------------------------------------------------------- per-family grids
def _grid_from_latents(model: nn.Module, args: tuple, kwargs: dict, frame_axis: int) -> Grid | None:
    x = _latents(model, args, kwargs)
    if x is None or x.dim() != 5:
        return None
    pt, ph, pw = _patch(model)
    f, h, w = x.shape[frame_axis], x.shape[3], x.shape[4]
    return (f // pt, h // ph, w // pw)


def grid_channels_first(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """Latents ``[B, C, F, H, W]`` patched by (p_t, p, p): HunyuanVideo, Wan, Mochi."""
    return _grid_from_latents(model, args, kwargs, frame_axis=2)


def grid_cogvideox(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """CogVideoX latents are ``[B, F, C, H, W]``; 1.5 also patches time (``patch_size_t``)."""
    return _grid_from_latents(model, args, kwargs, frame_axis=1)


def grid_ltx(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """LTX-Video gets pre-packed tokens ``[B, N, C]`` plus ``num_frames``/``height``/``width``.

    The pipeline passes the latent sizes, which are the token grid when the transformer
    does no further patching (all released LTX checkpoints); with a patch size > 1 the
    latent sizes are divided by it. Whichever reading matches the token count wins.
    """
    bound = _arguments(model, args, kwargs)
    x = bound.get("hidden_states")
    sizes = [bound.get(k) for k in ("num_frames", "height", "width")]
    if not isinstance(x, torch.Tensor) or any(not isinstance(s, int) for s in sizes):
        return None  # ``video_coords`` given instead: the grid is not recoverable from shapes
    f, h, w = sizes
    pt, ph, pw = _patch(model)
    for grid in ((f, h, w), (-(-f // pt), h // ph, w // pw)):
        if grid[0] * grid[1] * grid[2] == x.shape[1]:
            return grid
    return (f, h, w)


def grid_generic(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """Other diffusers video transformers: 5-D latents, the layout told by the channel count.

    Models configured with ``in_visual_dim`` (Kandinsky 5 and 6) take channels-last latents
    ``[B, F, H, W, C]``, decided by the convention, not the shape: with 16 channels and a 16-wide
    latent the shape alone is ambiguous. Otherwise the axis holding ``in_channels`` is the
    channel axis: ``[B, C, F, H, W]`` (the common layout) or ``[B, F, C, H, W]`` (CogVideoX-like).
    """
    x = _latents(model, args, kwargs)
    if x is None or x.dim() != 5:
        return None
    pt, ph, pw = _patch(model)
    c = _config(model, "in_channels")
    shape = tuple(x.shape)
    if _config(model, "in_visual_dim") is not None:  # [B, F, H, W, C]
        f, h, w = shape[1], shape[2], shape[3]
    elif c is not None and shape[2] == c and shape[1] != c:  # [B, F, C, H, W]
        f, h, w = shape[1], shape[3], shape[4]
    else:  # [B, C, F, H, W]
        f, h, w = shape[2], shape[3], shape[4]
    return (f // pt, h // ph, w // pw)


class GridHint(tuple):
    """A grid ``(F, H, W)`` that also says where the other (context) tokens sit in a joint sequence.

    Why: a packed sequence assembled by index scatter (MiniMax-H3) has no ``cat`` from which
    :mod:`~asymrnr_fx.passes.classify_attention` can read the side of the text; the model's own
    arguments say it. ``text_position`` is ``"first"`` (video is the tail block), ``"last"``, or None
    (unknown: the pass reads it off the graph). It is an ordinary tuple everywhere else.
    """

    text_position: str | None

    def __new__(cls, grid: Grid, text_position: str | None = None) -> "GridHint":
        obj = super().__new__(cls, (int(grid[0]), int(grid[1]), int(grid[2])))
        obj.text_position = text_position
        return obj


def _same_grid(grids: list[Grid]) -> Grid | None:
    """The one grid all samples share, or None: one grid per call is all the pass can reduce on."""
    return grids[0] if grids and all(g == grids[0] for g in grids) else None


def grid_joyimage_edit_plus(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """JoyImage-Edit-Plus takes pre-patchified tokens ``[B, N, C, p_t, p_h, p_w]`` and each sample's
    component token grids in ``shape_list``: the target first, then any reference images.

    The grid is the target's ``shape_list[i][0]``, but only when the target is the whole image block
    (one component per sample, no padding): reference or padding tokens packed after the target inside
    the same block would be taken as video by a grid of ``N`` tokens, and the pass has no video span
    (offset + length) to exclude them. Then None: the site is left intact.
    """
    bound = _arguments(model, args, kwargs)
    x, shapes = bound.get("hidden_states"), bound.get("shape_list")
    if not isinstance(x, torch.Tensor) or x.dim() != 6 or not isinstance(shapes, (list, tuple)):
        return None
    if len(shapes) != x.shape[0] or any(not isinstance(s, (list, tuple)) or len(s) != 1 for s in shapes):
        return None  # reference images packed after the target (or a malformed shape_list)
    try:
        grid = _same_grid([tuple(int(v) for v in s[0]) for s in shapes])
    except (TypeError, ValueError):
        return None
    if grid is None or len(grid) != 3 or grid[0] * grid[1] * grid[2] != x.shape[1]:
        return None  # samples differ, or padding tokens follow the target
    return grid


def grid_wan_animate2(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """Wan-Animate 2 takes a list of per-sample latents ``[C, F, H, W]``, patched by the config's
    ``patch_size`` (a Conv3d with stride = kernel). All samples must share one grid, and it must
    give ``seq_len`` tokens (the model's own check), else None."""
    bound = _arguments(model, args, kwargs)
    xs = bound.get("hidden_states")
    if not isinstance(xs, (list, tuple)) or not xs or not all(isinstance(u, torch.Tensor) and u.dim() == 4 for u in xs):
        return None
    pt, ph, pw = _patch(model)
    grid = _same_grid([(u.shape[1] // pt, u.shape[2] // ph, u.shape[3] // pw) for u in xs])
    seq_len = bound.get("seq_len")
    if grid is None or (isinstance(seq_len, int) and grid[0] * grid[1] * grid[2] != seq_len):
        return None
    return grid


def grid_minimax_h3(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """MiniMax-H3 packs ``[text, audio, video]`` rows into one sequence by ``index_copy``: the video
    rows arrive pre-patchified (``[B, N, C * p_t * p_h * p_w]``) and the grid is only in the
    ``(t, h, w)`` ``position_ids`` of the video rows.

    Read, checked, never guessed: the video rows must be the tail block of the sequence
    (``video_indices == [S - N, S)``; then every other row is context before the video:
    ``text_position="first"``), and their positions must be exactly the row-major grid
    ``(t0 + f, h0 + h, w0 + w)`` of ``F x H x W = N`` tokens. Anything else (conditioning rows at other
    positions, video rows interleaved with audio) returns None and the site is left intact.
    Costs one host read per call (the check of the index and position tensors).
    """
    bound = _arguments(model, args, kwargs)
    x, pos, idx = bound.get("hidden_states"), bound.get("position_ids"), bound.get("video_indices")
    if not all(isinstance(t, torch.Tensor) for t in (x, pos, idx)) or x.dim() != 3 or pos.dim() != 2 or idx.dim() != 1:
        return None
    n, seq = x.shape[1], pos.shape[0]
    pt, ph, pw = _patch(model)
    c = _config(model, "in_channels")
    if n == 0 or idx.numel() != n or pos.shape[1] != 3 or n > seq or (c is not None and x.shape[2] != c * pt * ph * pw):
        return None
    with torch.no_grad():
        tail = torch.arange(seq - n, seq, device=idx.device, dtype=idx.dtype)
        rows = pos.index_select(0, idx.long()).round().long()
        lo = rows.amin(0)
        f, h, w = (int(v) + 1 for v in (rows.amax(0) - lo).tolist())
        if f * h * w != n or not torch.equal(idx, tail):
            return None
        axes = [torch.arange(s, device=rows.device) for s in (f, h, w)]
        want = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(n, 3) + lo
        if not torch.equal(rows, want) or not torch.equal(pos.index_select(0, idx.long()), want.to(pos.dtype)):
            return None
    return GridHint((f, h, w), text_position="first" if n < seq else None)


def grid_cosmos3(model: nn.Module, args: tuple, kwargs: dict) -> Grid | None:
    """Cosmos3-Omni packs ``[text (und), video (gen)]`` into one sequence and splits it at ``und_len``;
    the generation pathway's queries are the gen rows. Their grid is read only where they are exactly
    one vision item's tokens in row-major order: one vision item (no sound or action tokens), its
    ``vision_sequence_indexes`` the whole tail ``[und_len, sequence_length)`` and its
    ``vision_token_shapes[0]`` the patched latent's (T, H / p, W / p). Anything else: None (left intact).
    Costs one host read per call (the index check)."""
    bound = _arguments(model, args, kwargs)
    tokens, shapes, idx = bound.get("vision_tokens"), bound.get("vision_token_shapes"), bound.get("vision_sequence_indexes")
    und, seq = bound.get("und_len"), bound.get("sequence_length")
    if any(bound.get(k) is not None for k in ("sound_tokens", "action_tokens")) or not isinstance(und, int):
        return None
    if not isinstance(tokens, (list, tuple)) or len(tokens) != 1 or not isinstance(shapes, (list, tuple)) or len(shapes) != 1:
        return None
    latent, p = tokens[0], _config(model, "latent_patch_size", 1)
    if not isinstance(latent, torch.Tensor) or latent.dim() != 5 or latent.shape[0] != 1 or not isinstance(idx, torch.Tensor):
        return None
    grid = (int(latent.shape[2]), -(-int(latent.shape[3]) // p), -(-int(latent.shape[4]) // p))
    if tuple(int(v) for v in shapes[0]) != grid or seq != und + math.prod(grid) or idx.numel() != math.prod(grid):
        return None
    with torch.no_grad():
        if not torch.equal(idx.long().cpu(), torch.arange(und, seq)):
            return None
    return GridHint(grid, text_position="first")


#: Model class name -> grid function. Names, not classes, so importing this module never imports diffusers.
GRID_FNS: dict[str, GridFn] = {
    "CogVideoXTransformer3DModel": grid_cogvideox,
    "HunyuanVideoTransformer3DModel": grid_channels_first,
    "WanTransformer3DModel": grid_channels_first,
    "MochiTransformer3DModel": grid_channels_first,
    "LTXVideoTransformer3DModel": grid_ltx,
    "LTX2VideoTransformer3DModel": grid_ltx,
    "JoyImageEditPlusTransformer3DModel": grid_joyimage_edit_plus,
    "WanAnimate2Transformer3DModel": grid_wan_animate2,
    "MiniMaxH3Transformer3DModel": grid_minimax_h3,
    "Cosmos3OmniTransformer": grid_cosmos3,
}

#: Dynamo settings per model class. Mochi selects each sample's valid prompt tokens with
#: ``nonzero``; capturing that data-dependent size keeps the forward one graph (else it
#: breaks into pieces whose attention calls never see the timestep).
DYNAMO_CONFIG: dict[str, dict[str, Any]] = {
    "MochiTransformer3DModel": {"capture_dynamic_output_shape_ops": True},
}


#: Which way each pipeline's timesteps move within a generation (-1 falls, +1 rises), where the
#: diffusers pipeline is known; other models learn it from their own calls (see ``state.Direction``).
TIMESTEP_DIRECTION: dict[str, int] = {
    "CogVideoXTransformer3DModel": -1,
    "HunyuanVideoTransformer3DModel": -1,
    "WanTransformer3DModel": -1,
    "LTXVideoTransformer3DModel": -1,
    # Mochi: not declared. MochiPipeline passes rising timesteps, but callers of the bare transformer
    # often pass falling ones; it learns from its first generation instead.
}


def timestep_direction(model: nn.Module) -> int | None:
    """-1 if ``model``'s pipeline passes falling timesteps, +1 rising, None if not known."""
    for cls in type(model).__mro__:
        if cls.__name__ in TIMESTEP_DIRECTION:
            return TIMESTEP_DIRECTION[cls.__name__]
    return None


def is_diffusers_model(model: Any) -> bool:
    """A diffusers ``ModelMixin`` (checked by module name, without importing diffusers)."""
    return any(c.__module__.split(".")[0] == "diffusers" and c.__name__ == "ModelMixin" for c in type(model).__mro__)


def grid_fn_for(model: nn.Module) -> GridFn | None:
    """The grid function for ``model``'s class; :func:`grid_generic` for other diffusers models; else None."""
    for cls in type(model).__mro__:
        fn = GRID_FNS.get(cls.__name__)
        if fn is not None:
            return fn
    return grid_generic if is_diffusers_model(model) else None


def dynamo_config_for(model: nn.Module) -> dict[str, Any]:
    """Dynamo config patches ``model`` needs to trace as one graph (empty for most)."""
    for cls in type(model).__mro__:
        if cls.__name__ in DYNAMO_CONFIG:
            return dict(DYNAMO_CONFIG[cls.__name__])
    return {}


def tracing(model: nn.Module) -> contextlib.AbstractContextManager:
    """A context in which Dynamo captures ``model`` with the settings it needs."""
    cfg = dynamo_config_for(model)
    return torch._dynamo.config.patch(**cfg) if cfg else contextlib.nullcontext()


def diffusers_hook_names(module: nn.Module) -> list[str]:
    """Names in ``module``'s own diffusers hook registry (``module._diffusers_hook``), in registration order."""
    registry = getattr(module, "_diffusers_hook", None)
    return list(getattr(registry, "hooks", {}) or {})


def reset_hook_state(model: nn.Module) -> None:
    """Reset the state of every diffusers hook in ``model`` (a cache hook's step counter, cached residuals),
    so a call that only looked at the model (``inspect``) leaves the next generation as it would have been."""
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and hasattr(registry, "reset_stateful_hooks"):
            registry.reset_stateful_hooks(recurse=False)


def accelerate_hooks(module: nn.Module) -> list[Any]:
    """accelerate's hooks on ``module`` (``module._hf_hook``, a ``SequentialHook`` unpacked), read without importing accelerate."""
    hook = getattr(module, "_hf_hook", None)
    return [] if hook is None else list(getattr(hook, "hooks", None) or (hook,))


def hooks_of(model: nn.Module) -> list[str]:
    """Names of the hooks in ``model``, sorted: diffusers' (``module._diffusers_hook`` registries) and
    accelerate's (``module._hf_hook``, as ``accelerate:<class>``), so a warning can name an offloading hook too."""
    names = set()
    for module in model.modules():
        names.update(diffusers_hook_names(module))
        names.update(f"accelerate:{type(h).__name__}" for h in accelerate_hooks(module))
    return sorted(names)


# --------------------------------------------------------------------------- regional compilation
def repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks regional compilation compiles, with their module paths, in model order.

    diffusers models name them in ``_repeated_blocks`` (class names); models that do not
    (CogVideoX) are searched for a ``ModuleList`` holding two or more modules of one class.
    """
    names = set(getattr(model, "_repeated_blocks", None) or ())
    if names:
        return [(path, m) for path, m in model.named_modules() if type(m).__name__ in names]
    found = []
    for path, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) >= 2 and len({type(c) for c in m}) == 1:
            if any(isinstance(c, nn.ModuleList) for c in m):
                continue
            found += [(f"{path}.{i}" if path else str(i), c) for i, c in enumerate(m)]
    # keep only outermost blocks (a block may itself hold a ModuleList of sub-blocks)
    return [(p, m) for p, m in found if not any(p.startswith(q + ".") for q, _ in found if q != p)]
