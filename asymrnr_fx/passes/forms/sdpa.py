"""``torch.nn.functional.scaled_dot_product_attention`` as an attention form.

Dynamo graphs call ``torch._C._nn.scaled_dot_product_attention`` either positionally or with
keyword-only ``query=/key=/value=`` (diffusers' attention dispatch); exported graphs call
``aten.scaled_dot_product_attention.default`` (a hand-built graph may call the overload
packet itself, which dispatches to the same op).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.fx as fx

from ..graph import node_value
from .base import ARGUMENTS, AttentionForm, heads_reason

SDPA_TORCH = torch._C._nn.scaled_dot_product_attention
SDPA_ATEN = torch.ops.aten.scaled_dot_product_attention.default
SDPA_ATEN_PACKET = torch.ops.aten.scaled_dot_product_attention


def _check(a: Mapping[str, Any], q_shape: tuple, k_shape: tuple) -> str:
    if a["is_causal"] is not False:
        return "causal attention (is_causal) is not a video DiT attention"
    if k_shape[1] != q_shape[1]:
        if a["enable_gqa"] is not True:
            return f"{q_shape[1]} query heads and {k_shape[1]} key heads without enable_gqa=True"
        return heads_reason(q_shape, k_shape, masked=a["attn_mask"] is not None)
    mask = node_value(a["attn_mask"]) if isinstance(a["attn_mask"], fx.Node) else a["attn_mask"]
    if mask is not None and not isinstance(mask, torch.Tensor):
        return f"attention mask of type {type(mask).__name__} is not supported"
    return ""


SDPA = AttentionForm(
    name="sdpa",
    describe="scaled_dot_product_attention",
    targets={SDPA_TORCH: "torch", SDPA_ATEN: "aten", SDPA_ATEN_PACKET: "aten"},
    arg_names=ARGUMENTS,
    defaults={"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False},
    check=_check,
)
