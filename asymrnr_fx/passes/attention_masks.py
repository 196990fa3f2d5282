"""Attention masks, from the graph: which query rows are provably the same.

Why: a reduced query takes the output of its dst query, which is only right when both saw
the same keys, i.e. when their rows of the attention mask are equal. Two analyses:

* :func:`mask_query_variation`: every query row is the same (a key-padding mask: its query dim
  broadcasts, e.g. ``[B, 1, 1, L]``, or it is built by expanding/repeating one, or every row of a
  real example value is the same; an all-true mask qualifies);
* :func:`video_rows_variation`: only the rows of the *video* queries are the same. Text queries are
  never reduced, so their rows may differ. HunyuanVideo 1.5 builds its joint mask as
  ``a & a.transpose(-1, -2)`` from a key-padding mask ``a`` that is padded with ``True`` over the
  video positions: the text rows of padding tokens are all false, but every video row is ``a``.

Both only say yes when the graph shows it (or real values do); anything they cannot follow is a
"no", with the reason, and the site is left intact.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx

from .graph import node_value


def _same(a: Any, b: Any) -> bool:
    """Sizes equal without guarding: symbolic sizes (e.g. Mochi's data-dependent prompt length) compare by expression."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    ea = a.node.expr if isinstance(a, torch.SymInt) else a
    eb = b.node.expr if isinstance(b, torch.SymInt) else b
    try:
        return bool(ea == eb)
    except Exception:  # noqa: BLE001 - an undecidable comparison is "not the same"
        return False


# --------------------------------------------------------------------------- every query row
# Ops whose output row r (along the query dim, -2) depends only on row r of each tensor
# input, with inputs aligned from the right: elementwise ops, dtype casts, copies.
_ROWWISE_NAMES = frozenset(
    "to type bool float half bfloat16 double int long contiguous clone detach logical_not bitwise_not neg "
    "__invert__ __neg__ __and__ __or__ __xor__ __add__ __sub__ __mul__ __truediv__ add sub mul div "
    "masked_fill where logical_and logical_or logical_xor bitwise_and bitwise_or eq ne lt le gt ge "
    "maximum minimum clamp _to_copy alias".split()
)
# Ops that tile their input (right-aligned): equal rows stay equal.
_TILE_NAMES = frozenset("expand expand_as broadcast_to repeat".split())
# Factories: every element the same value (e.g. an all-true mask).
_CONSTANT_NAMES = frozenset("ones zeros full ones_like zeros_like full_like new_ones new_zeros new_full".split())
_OPERATORS = {operator.invert: "__invert__", operator.neg: "__neg__", operator.and_: "__and__",
              operator.or_: "__or__", operator.xor: "__xor__", operator.add: "__add__", operator.sub: "__sub__",
              operator.mul: "__mul__", operator.truediv: "__truediv__"}


def _op_name(node: fx.Node) -> str:
    """``masked_fill`` for ``torch.masked_fill``, ``x.masked_fill_``, ``aten.masked_fill.Scalar`` alike."""
    target = node.target
    if node.op == "call_method":
        name = str(target)
    else:
        try:
            name = _OPERATORS.get(target, "")
        except TypeError:  # an unhashable target
            name = ""
        name = name or getattr(target, "_opname", None) or getattr(target, "__name__", None) or str(target)
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name  # in-place variant


def _is_real(value: torch.Tensor) -> bool:
    """A tensor with data (not a fake/meta example value)."""
    return type(value) in (torch.Tensor, torch.nn.Parameter) and value.device.type != "meta"


def _is_scalar(node: fx.Node) -> bool:
    """A node that stands for a number (e.g. a symbolic size), not a tensor."""
    return isinstance(node_value(node), (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool))


def _real_value(node: Any) -> torch.Tensor | None:
    """The actual values behind a node, where the graph has them: a real example value, a
    fake tensor's recorded constant, or a ``get_attr`` constant."""
    if isinstance(node, torch.Tensor):
        return node
    if not isinstance(node, fx.Node):
        return None
    if node.op == "get_attr":
        obj: Any = node.graph.owning_module
        for part in str(node.target).split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.Tensor) and _is_real(obj):
            return obj
    val = node_value(node)
    if not isinstance(val, torch.Tensor):
        return None
    if _is_real(val):
        return val
    constant = getattr(val, "constant", None)  # fake tensors of small literals keep their values
    return constant if isinstance(constant, torch.Tensor) and _is_real(constant) else None


def _row_difference(mask: torch.Tensor) -> str:
    """'' when every query row of ``mask`` is the same, else which row differs from row 0."""
    if mask.dim() < 2 or mask.shape[-2] <= 1:
        return ""
    rows = mask.reshape(-1, *mask.shape[-2:])
    differs = (rows != rows[:, :1, :]).any(-1).any(0)
    if not bool(differs.any()):
        return ""
    return f"row {int(differs.nonzero()[0])} of the {list(mask.shape)} mask differs from row 0"


# Views: writing into one writes into the tensor it views.
_VIEW_NAMES = frozenset(
    "view view_as reshape getitem __getitem__ select slice narrow transpose permute t expand expand_as unsqueeze "
    "squeeze flatten unflatten as_strided diagonal unbind split chunk alias detach".split()
)


_IN_PLACE_OPERATORS = frozenset(getattr(operator, n) for n in
                                "setitem iadd isub imul itruediv ifloordiv imod ipow iand ior ixor ilshift irshift".split())


def _is_operator(target: Any) -> bool:
    """A function of Python's ``operator`` module (``and_`` is ``&``, not an in-place op)."""
    return getattr(target, "__module__", None) in ("_operator", "operator")


def _raw_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "_opname", None) or getattr(node.target, "__name__", None) or str(node.target)


def _written_in_place(node: fx.Node, max_nodes: int = 64) -> str:
    """The in-place op that writes into ``node``'s tensor (directly or through a view of it), or ''.

    Why: a mask built as ``full(-inf)`` and then filled by slice assignment (``mask[a:b, :c] = 0``) is
    not the factory's constant, though its producer is one."""
    todo, seen = [node], set()
    while todo and len(seen) < max_nodes:
        current = todo.pop()
        seen.add(current)
        for user in current.users:
            if user.op not in ("call_function", "call_method") or not user.args or user.args[0] is not current:
                continue
            if user.target in _IN_PLACE_OPERATORS or (user.op == "call_method" or not _is_operator(user.target)) and (
                    (raw := _raw_name(user)).endswith("_") and not raw.endswith("__")):
                return f"{_raw_name(user)}() writes into it in place ({user.name})"
            if _op_name(user) in _VIEW_NAMES and user not in seen:
                todo.append(user)
    return ""


def mask_query_variation(mask: Any, max_nodes: int = 64) -> str:
    """'' when ``mask`` (an ``attn_mask`` argument) is provably the same for every query, else why not."""
    seen: set[fx.Node] = set()

    def why(node: Any) -> str:
        value = node_value(node) if isinstance(node, fx.Node) else node
        if isinstance(value, torch.Tensor) and (value.dim() < 2 or _same(value.shape[-2], 1)):
            return ""  # broadcasts over the queries: a key-padding mask
        real = _real_value(node)
        if real is not None:
            return _row_difference(real)
        if not isinstance(node, fx.Node):
            return f"a {type(node).__name__} mask"
        shape = list(value.shape) if isinstance(value, torch.Tensor) else "?"
        if node in seen or len(seen) >= max_nodes:
            return f"cannot show that the {shape} mask {node.name} is the same for every query"
        seen.add(node)
        written = _written_in_place(node)
        if written:
            return f"the {shape} mask {node.name} is not shown to be the same for every query: {written}"
        name = _op_name(node) if node.op in ("call_function", "call_method") else ""
        if name in _CONSTANT_NAMES:
            return ""
        inputs = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not _is_scalar(a)]
        if name in _TILE_NAMES:
            inputs = inputs[:1]  # the tiled tensor; expand_as's other argument only gives the shape
        if inputs and (name in _TILE_NAMES or name in _ROWWISE_NAMES):
            for parent in inputs:
                reason = why(parent)
                if reason:
                    return reason
            return ""
        if name:
            return f"the {shape} mask comes from {name}() and is not shown to be the same for every query"
        return f"the {shape} mask is the graph {node.op} {node.target}, whose rows cannot be checked"

    return why(mask)


# --------------------------------------------------------------------------- the video rows only
_SHAPE_NAMES = frozenset("view reshape unsqueeze flatten unflatten _unsafe_view".split())
_SWAP_NAMES = frozenset("transpose swapaxes swapdims t permute".split())
_PAD_NAMES = frozenset("pad constant_pad_nd".split())


def _int(x: Any) -> int | None:
    """A size as a plain int where it is one (a SymInt, or a graph node computing one, whose
    expression simplifies to a number counts: ``(32 + u0) - u0``)."""
    if isinstance(x, fx.Node):
        x = node_value(x)
    if isinstance(x, int):
        return x
    if isinstance(x, torch.SymInt):
        expr = x.node.expr
        return int(expr) if getattr(expr, "is_number", False) else None
    return None


def _swaps_last_two(node: fx.Node, ndim: int) -> bool:
    """``transpose(-2, -1)`` (any spelling) or a permute that only swaps the last two dims."""
    name = _op_name(node)
    dims = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, int)]
    if name == "t":
        return ndim == 2
    if name == "permute":
        perm = node.args[1:] if len(node.args) > 2 else (node.args[1] if len(node.args) > 1 else node.kwargs.get("dims"))
        perm = [p % ndim for p in perm] if isinstance(perm, (list, tuple)) and all(isinstance(p, int) for p in perm) else []
        return perm == [*range(ndim - 2), ndim - 1, ndim - 2]
    return len(dims) == 2 and {d % ndim for d in dims} == {ndim - 2, ndim - 1}


def video_rows_variation(mask: Any, lo: int, hi: int, max_nodes: int = 64) -> str:
    """'' when the query rows ``lo .. hi-1`` of ``mask`` are provably the same (per batch and head),
    else why not. Rows outside the span (the text queries, never reduced) may differ."""
    budget = [max_nodes]

    def rows(node: Any) -> str:
        if not mask_query_variation(node):
            return ""
        real = _real_value(node)
        if real is not None:
            return _row_difference(real[..., lo:hi, :]) if real.dim() >= 2 else ""
        if not isinstance(node, fx.Node) or node.op not in ("call_function", "call_method"):
            return f"cannot show that the video query rows of {getattr(node, 'name', node)} are the same"
        budget[0] -= 1
        value, name = node_value(node), _op_name(node)
        if budget[0] < 0 or not isinstance(value, torch.Tensor):
            return f"cannot show that the video query rows of {node.name} are the same"
        if name in _SWAP_NAMES and _swaps_last_two(node, value.dim()):
            return columns(node.args[0], lo, hi)  # rows of x.mT over the span = columns of x over it
        inputs = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node) and not _is_scalar(a)]
        if name in _ROWWISE_NAMES and inputs:
            return next((r for r in map(rows, inputs) if r), "")
        return f"the video query rows of the mask come from {name}() and are not shown to be the same"

    def columns(node: Any, a: int, b: int) -> str:
        """'' when ``node[..., a:b]`` is provably constant along the last dim, for every leading index."""
        value = node_value(node) if isinstance(node, fx.Node) else node
        if isinstance(value, torch.Tensor) and (value.dim() == 0 or _same(value.shape[-1], 1)):
            return ""  # broadcasts over the last dim
        real = _real_value(node)
        if real is not None:
            part = real[..., a:b]
            return "" if part.numel() == 0 or bool((part == part[..., :1]).all()) else (
                f"the mask's key entries {a}..{b - 1} differ")
        why_not = f"cannot show that the mask is the same for every video query ({getattr(node, 'name', node)})"
        if not isinstance(node, fx.Node) or not isinstance(value, torch.Tensor) or node.op not in (
                "call_function", "call_method"):
            return why_not
        budget[0] -= 1
        if budget[0] < 0:
            return why_not
        name = _op_name(node)
        if name in _CONSTANT_NAMES:
            return ""
        inputs = [x for x in (*node.args, *node.kwargs.values()) if isinstance(x, fx.Node) and not _is_scalar(x)]
        if name in _ROWWISE_NAMES and inputs:
            return next((r for r in (columns(x, a, b) for x in inputs) if r), "")
        source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        src = node_value(source) if source is not None else None
        if not isinstance(src, torch.Tensor) or src.dim() == 0:
            return why_not
        if name in _TILE_NAMES or name in _SHAPE_NAMES:
            # the last dim kept (same size): a flat index keeps its position within the last dim
            reps = node.args[1:] if len(node.args) > 2 else (node.args[1:2] and node.args[1])
            last_tiled = name == "repeat" and not (isinstance(reps, (list, tuple)) and reps and reps[-1] == 1)
            if _same(src.shape[-1], 1) or (_same(src.shape[-1], value.shape[-1]) and not last_tiled):
                return columns(source, a, b)
            return why_not
        if name in _PAD_NAMES:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
            mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
            left, right = (_int(pad[0]), _int(pad[1])) if isinstance(pad, (list, tuple)) and len(pad) >= 2 else (None, None)
            if mode != "constant" or left is None or right is None:
                return why_not
            if b <= left:
                return ""  # the span is all left padding: one value
            # where the input ends, as an int (None when the length is data-dependent)
            end = _int(value.shape[-1] - right) if isinstance(value.shape[-1], torch.SymInt) else value.shape[-1] - right
            if end is not None and a >= end:
                return ""  # all right padding
            if a >= left and end is not None and b <= end:
                return columns(source, a - left, b - left)
        return why_not

    return rows(mask)
