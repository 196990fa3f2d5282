"""Analysis pass: every scaled-dot-product-attention call in a graph, arguments normalised.

Dynamo graphs call ``torch._C._nn.scaled_dot_product_attention`` either positionally or
with keyword-only ``query=/key=/value=`` (diffusers' attention dispatch); exported graphs
call ``aten.scaled_dot_product_attention.default`` (a hand-built graph may call the
overload packet ``aten.scaled_dot_product_attention`` itself, which dispatches to the same
op). All are brought to one argument dict so the
later passes never care which form they met. Lower-level attention ops (flash/efficient
kernels after decomposition) are found too, but only to be reported as unsupported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

SDPA_TORCH = torch._C._nn.scaled_dot_product_attention
SDPA_ATEN = torch.ops.aten.scaled_dot_product_attention.default
SDPA_ATEN_PACKET = torch.ops.aten.scaled_dot_product_attention
#: Call targets rewritten as attention, and the form each is reported as.
SDPA_FORMS: tuple[tuple[Any, str], ...] = ((SDPA_TORCH, "torch"), (SDPA_ATEN, "aten"), (SDPA_ATEN_PACKET, "aten"))
ARG_NAMES: tuple[str, ...] = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
DEFAULTS: dict[str, Any] = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


@dataclass
class AttentionCall:
    """One attention node and what it was called with."""

    node: fx.Node
    form: str  # "torch" | "aten" | "unsupported"
    args: dict[str, Any]
    path: str
    module_type: str

    @property
    def query(self) -> fx.Node:
        return self.args["query"]

    @property
    def key(self) -> fx.Node:
        return self.args["key"]

    @property
    def value(self) -> fx.Node:
        return self.args["value"]


def node_value(node: Any) -> Any:
    """The fake/example value Dynamo (``example_value``) or export (``val``) recorded for a node."""
    if not isinstance(node, fx.Node):
        return None
    return node.meta.get("val", node.meta.get("example_value"))


def node_shape(node: Any) -> tuple | None:
    val = node_value(node)
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def clean_module_path(raw: str) -> str:
    """``L['self'].__dict__['_modules']['blocks'].0.attn`` -> ``blocks.0.attn``, relative to the root module."""
    s = re.sub(r"^L\['[^']+'\]", "", raw)  # the root module, whatever the argument was called
    s = re.sub(r"\.?__dict__\['_modules'\]\['([^']+)'\]", r".\1", s)
    s = re.sub(r"\._modules\['([^']+)'\]", r".\1", s)
    s = re.sub(r"\['([^']+)'\]", r".\1", s)
    s = re.sub(r"\[(\d+)\]", r".\1", s)
    return s.strip(".")


def _module_of(node: fx.Node) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name, ""
    raw, cls = list(stack.values())[-1]
    name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
    return clean_module_path(str(raw)) or node.name, name.rsplit(".", 1)[-1]


def _normalise(node: fx.Node) -> dict[str, Any]:
    bound = dict(DEFAULTS)
    for name, value in zip(ARG_NAMES, node.args):
        bound[name] = value
    bound.update(node.kwargs)
    return bound


def sdpa_form(target: Any) -> str | None:
    """``"torch"``/``"aten"`` for a scaled-dot-product-attention call target, else None."""
    return next((form for fn, form in SDPA_FORMS if target is fn), None)


def _is_other_attention(node: fx.Node) -> bool:
    name = getattr(node.target, "__name__", str(node.target))
    return "scaled_dot_product" in name and "backward" not in name


def find_attention(gm: fx.GraphModule) -> list[AttentionCall]:
    """All attention calls in graph order; forms the rewrite cannot handle are marked ``unsupported``."""
    calls = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        form = sdpa_form(node.target) or ("unsupported" if _is_other_attention(node) else None)
        if form is None:
            continue
        path, module_type = _module_of(node)
        args = _normalise(node) if form != "unsupported" else {}
        calls.append(AttentionCall(node, form, args, path, module_type))
    return calls
