"""What the passes need to know of one way of calling attention: an :class:`AttentionForm`.

Why a unit: finding a call, reading its query/key/value/mask, knowing which of its calls can
be reduced and rebuilding it on reduced tensors all depend on the op's signature. With each
form in one file (``forms/sdpa.py`` ...), find / classify / rewrite loop over
:data:`~asymrnr_fx.passes.forms.FORMS` and never name an op.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from ..graph import node_shape

#: The argument names every form's :meth:`AttentionForm.read` returns (a form without one gives its default).
ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def heads_reason(q_shape: tuple, k_shape: tuple, masked: bool = False) -> str:
    """Why a call whose keys have fewer heads than its queries (grouped-query attention) is not reduced, or "".

    Why GQA reduces at all: queries are matched and gathered per query head, keys and values per
    key/value head, and query head ``h`` reads key head ``h // (Hq / Hkv)`` of the reduced keys as it
    did of the full ones. A mask is one per query head (or broadcast) and cannot follow the key
    heads' different selections, so a masked GQA call is left intact.
    """
    hq, hk = q_shape[1], k_shape[1]
    if hq == hk:
        return ""
    if not isinstance(hq, int) or not isinstance(hk, int) or hq % hk:
        return f"{hq} query heads are not a multiple of {hk} key heads"
    if masked:
        return "grouped-query attention (fewer key heads than query heads) with a mask is not supported"
    return ""


@dataclass(frozen=True)
class AttentionForm:
    """One attention op family.

    Attributes:
        name: short name, e.g. ``"sdpa"``.
        describe: how messages name it, e.g. ``"scaled_dot_product_attention"``.
        targets: call target -> the variant reported in ``SiteReport.form`` (``"torch"``, ``"aten"``).
        arg_names: positional order of the op's arguments, mapped onto :data:`ARGUMENTS`.
        defaults: value of each argument the call may leave out.
        check: ``(args, q_shape, k_shape) -> reason`` ("" when the call can be reduced): what this op's
            own arguments rule out (causal, grouped-query layouts, mask types).
        reduces_mask: its mask is a tensor over ``[..., Lq, Lk]`` that
            :func:`asymrnr_fx.ops.reduce_mask` can index down to the kept tokens (a form whose
            mask cannot be reduced must refuse masked calls in ``check``).
        op_args: the argument names the op itself takes (default: all of :data:`ARGUMENTS`);
            the others are defaults for the passes only and are never written back.
        outputs: None for an op returning the attention output; for an op returning a tuple,
            the index of each output the reduction restores: ``"tokens"`` (``[B, H, L, D]``) or
            ``"lse"`` (the log-sum-exp, ``[B, H, L]``) or ``"lse_bsh"`` (``[B, L, H]``, diffusers' FA3
            wrapper). A call that uses any other output is left intact.
        op_names: qualified op names (``"flash_attn::_flash_attn_forward"``) -> variant, for ops
            a library registers at import (matched by name: the library need not be installed
            for the table to exist).
        layout: ``"bhsd"`` (``[batch, heads, tokens, dim]``, SDPA's) or ``"bshd"`` (flash-attn,
            xformers: ``[batch, tokens, heads, dim]``); ``"tokens"`` outputs have the same layout.
        aliases: the op's own keyword names for arguments of :data:`ARGUMENTS` (``softmax_scale``
            -> ``scale``).
        write_positional: write every argument back positionally, in ``arg_names`` order (ops
            whose keyword names differ from the canonical ones, or that take no keywords).
        lengths: integer arguments that state a token count (``max_seqlen_q`` -> ``"query"``): the
            rewrite sets them to the reduced tensor's length, so the call never claims the full one.
    """

    name: str
    describe: str
    targets: Mapping[Any, str]
    arg_names: tuple[str, ...]
    defaults: Mapping[str, Any]
    check: Callable[[Mapping[str, Any], tuple, tuple], str]
    reduces_mask: bool = True
    op_args: tuple[str, ...] | None = None
    outputs: Mapping[int, str] | None = None
    op_names: Mapping[str, str] = field(default_factory=dict)
    layout: str = "bhsd"
    aliases: Mapping[str, str] = field(default_factory=dict)
    write_positional: bool = False
    lengths: Mapping[str, str] = field(default_factory=dict)

    def variant(self, target: Any) -> str | None:
        """The reported variant of ``target`` if this form owns it (by identity, or by op name), else None.

        Dynamo records ``torch.ops.aten.op(...)`` calls with the overload packet as target; its
        ``.default`` overload is what the form lists (and what the call resolves to).
        """
        if isinstance(target, torch._ops.OpOverloadPacket) and hasattr(target, "default"):
            target = target.default
        found = next((v for t, v in self.targets.items() if t is target), None)
        schema = getattr(target, "_schema", None)
        if found is None and schema is not None and getattr(target, "_overloadname", None) == "default":
            found = self.op_names.get(schema.name)
        return found

    def read(self, node: fx.Node) -> dict[str, Any]:
        """The call's arguments by name, defaults filled in."""
        bound = dict(self.defaults)
        bound.update(zip(self.arg_names, node.args))
        bound.update((self.aliases.get(k, k), v) for k, v in node.kwargs.items())
        return bound

    def shape(self, node: Any) -> tuple | None:
        """The ``[batch, heads, tokens, dim]`` shape of a q/k/v argument, whatever the layout."""
        shape = node_shape(node)
        if shape is None or self.layout == "bhsd" or len(shape) != 4:
            return shape
        return (shape[0], shape[2], shape[1], shape[3])

    def write(self, node: fx.Node, args: Mapping[str, Any]) -> None:
        """Point ``node`` at (reduced) arguments: query, key, value positional, the op's other arguments by keyword."""
        if self.write_positional:
            node.args, node.kwargs = tuple(args[n] for n in self.arg_names), {}
            return
        own = self.op_args if self.op_args is not None else ARGUMENTS
        node.args = (args["query"], args["key"], args["value"])
        node.kwargs = {k: args[k] for k in own if k not in ("query", "key", "value") and k in args}

    def output_reason(self, node: fx.Node) -> str:
        """Why the call's outputs cannot be restored ("" when they can): a tuple output used other
        than by indexing one of :attr:`outputs`."""
        if self.outputs is None:
            return ""
        for user in node.users:
            index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
            if index not in self.outputs:
                what = f"output {index}" if isinstance(index, int) else f"its output tuple ({user.name})"
                return f"{self.describe} call uses {what}, which the reduction cannot restore"
        return ""
