"""What the passes need to know of one way of calling attention: an :class:`AttentionForm`.

Why a unit: finding a call, reading its query/key/value/mask, knowing which of its calls can
be reduced and rebuilding it on reduced tensors all depend on the op's signature. With each
form in one file (``forms/sdpa.py`` ...), find / classify / rewrite loop over
:data:`~asymrnr_fx.passes.forms.FORMS` and never name an op.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch.fx as fx

#: The argument names every form's :meth:`AttentionForm.read` returns (a form without one gives its default).
ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


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
            :func:`asymrnr_fx.ops.reduce_mask` can index down to the kept tokens.
    """

    name: str
    describe: str
    targets: Mapping[Any, str]
    arg_names: tuple[str, ...]
    defaults: Mapping[str, Any]
    check: Callable[[Mapping[str, Any], tuple, tuple], str]
    reduces_mask: bool = True

    def variant(self, target: Any) -> str | None:
        """The reported variant of ``target`` if this form owns it (compared by identity), else None."""
        return next((v for t, v in self.targets.items() if t is target), None)

    def read(self, node: fx.Node) -> dict[str, Any]:
        """The call's arguments by name, defaults filled in."""
        bound = dict(self.defaults)
        bound.update(zip(self.arg_names, node.args))
        bound.update(node.kwargs)
        return bound

    def write(self, node: fx.Node, args: Mapping[str, Any]) -> None:
        """Point ``node`` at (reduced) arguments: query, key, value positional, the rest by keyword."""
        rest = dict(args)
        node.args = (rest.pop("query"), rest.pop("key"), rest.pop("value"))
        node.kwargs = rest
