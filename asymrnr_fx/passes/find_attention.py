"""Analysis pass: every attention call in a graph, arguments normalised.

Which call targets are attention, and how their arguments read, is each form's knowledge
(:mod:`.forms`); this pass only walks the graph and records, per call, its form, its
arguments by name and the module it came from. Lower-level attention ops (flash/efficient
kernels after decomposition, the kernels of ``forms.LEFT_INTACT``) are found too, but only to
be reported as unsupported, with their reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch.fx as fx

from .analysis import Analysis
from .forms import AttentionForm, form_of, left_intact_reason


@dataclass
class AttentionCall:
    """One attention node, its form, and what it was called with."""

    node: fx.Node
    form: str  # the reported variant: "torch" | "aten" | "unsupported"
    args: dict[str, Any]
    path: str
    module_type: str
    spec: AttentionForm | None = None  # the form that reads and rebuilds it (None: unsupported)

    @property
    def query(self) -> fx.Node:
        return self.args["query"]

    @property
    def key(self) -> fx.Node:
        return self.args["key"]

    @property
    def value(self) -> fx.Node:
        return self.args["value"]


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


def _is_other_attention(node: fx.Node) -> bool:
    name = getattr(node.target, "__name__", str(node.target))
    return ("scaled_dot_product" in name and "backward" not in name) or bool(left_intact_reason(node.target))


def find_attention(gm: fx.GraphModule) -> list[AttentionCall]:
    """All attention calls in graph order; ops no form rewrites are marked ``unsupported``."""
    calls = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        found = form_of(node.target)
        if found is None and not _is_other_attention(node):
            continue
        path, module_type = _module_of(node)
        if found is None:
            calls.append(AttentionCall(node, "unsupported", {}, path, module_type))
        else:
            form, variant = found
            calls.append(AttentionCall(node, variant, form.read(node), path, module_type, form))
    return calls


def find_attention_pass(a: Analysis) -> None:
    a.calls = find_attention(a.gm)
