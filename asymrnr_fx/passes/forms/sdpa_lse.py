"""Scaled-dot-product attention that also returns its log-sum-exp, as an attention form.

Why: a caller that merges partial attention results (ring attention over key shards, or
any split-KV scheme) weighs each part by its log-sum-exp, so the op it calls is the aten
kernel that returns ``(output, logsumexp, ...)``: diffusers' ``_native_flash`` /
``_native_cudnn`` ring paths on CUDA, ``aten._scaled_dot_product_flash_attention_for_cpu``
on CPU, and the same ops in graphs from ``torch.export``. The reduction restores the
log-sum-exp with the same assignment as the output, so every part stays exact with respect
to the reduced problem and the caller's merge is unchanged. Only the output and the
log-sum-exp may be used: the other outputs (sequence offsets, RNG state) describe the
kernel's own launch and are refused.
"""
from __future__ import annotations

import torch

from .base import AttentionForm
from .sdpa import _check

FLASH_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
FLASH_CUDA = torch.ops.aten._scaled_dot_product_flash_attention.default

#: ``(output, logsumexp) = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, *, attn_mask, scale)``
SDPA_LSE_CPU = AttentionForm(
    name="sdpa_lse_cpu",
    describe="aten._scaled_dot_product_flash_attention_for_cpu",
    targets={FLASH_CPU: "aten_lse"},
    arg_names=("query", "key", "value", "dropout_p", "is_causal"),
    defaults={"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False},
    check=_check,
    op_args=("query", "key", "value", "dropout_p", "is_causal", "attn_mask", "scale"),
    outputs={0: "tokens", 1: "lse"},
)

#: ``(output, logsumexp, cum_seq_q, ...) = aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, return_debug_mask, *, scale)``
SDPA_LSE_FLASH = AttentionForm(
    name="sdpa_lse_flash",
    describe="aten._scaled_dot_product_flash_attention",
    targets={FLASH_CUDA: "aten_lse"},
    arg_names=("query", "key", "value", "dropout_p", "is_causal", "return_debug_mask"),
    defaults={"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False,
              "return_debug_mask": False},
    check=_check,
    reduces_mask=False,  # the kernel takes no mask
    op_args=("query", "key", "value", "dropout_p", "is_causal", "return_debug_mask", "scale"),
    outputs={0: "tokens", 1: "lse"},
)
