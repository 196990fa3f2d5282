"""Attention kernels of other libraries, one table row each: what diffusers' ``flash``, ``_flash_3`` and ``xformers`` backends call.

Why a table: these kernels differ from SDPA only in their name, layout and argument order,
so each is one :class:`~.base.AttentionForm` built by :func:`kernel` from one row. They are
matched by op name (``torch.ops.<namespace>.<op>``), so the table needs no import of the
library and stays testable on a CPU through a stand-in op registered under the same name and
schema (``tests/test_kernels.py``). Every row refuses, with a reason, the arguments that tie
the call to token positions or to a launch (causal, windows, packed sequences, caches, rotary
embeddings inside the kernel, a preallocated output).

Kernels that reach the graph but cannot be reduced are listed in :data:`LEFT_INTACT` (by op
name or namespace) with the reason each site reports. A kernel that never reaches the graph
as one node (SageAttention's Triton path: Dynamo traces into its quantization and attention
kernels) has no site at all; the backend check (:mod:`asymrnr_fx.integrations.hooks`) names
those sites and points to the SDPA backends.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .base import AttentionForm, heads_reason

#: What every row's check refuses when the argument is set (not None), and why.
_PACKED = "packed variable-length sequences (cu_seqlens / seqused): the reduction works on [batch, tokens] tensors"
_CACHE = "a paged or appended key/value cache: its indices address the full sequence"
_ROTARY = "a rotary embedding applied inside the kernel by token position: reduced tokens would take other positions"
_OUT = "a preallocated output the kernel writes: the reduced call has fewer tokens"
#: The arguments the passes need on every form, for a kernel that does not take them.
_COMMON = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
_ALIASES = {"q": "query", "k": "key", "v": "value", "softmax_scale": "scale", "causal": "is_causal", "p": "dropout_p",
            "window_left": "window_size_left", "window_right": "window_size_right"}


def _check(a: Mapping[str, Any], q_shape: tuple, k_shape: tuple, *, unset: Mapping[str, str]) -> str:
    """Why a kernel call cannot be reduced exactly ("" when it can)."""
    if a["is_causal"] is not False:
        return "causal attention is not a video DiT attention"
    if (a.get("window_size_left", -1), a.get("window_size_right", -1)) != (-1, -1):
        return "local (windowed) attention: reduced tokens would change which keys each query sees"
    if a.get("attention_chunk", 0) not in (0, None):
        return "chunked local attention (attention_chunk): reduced tokens would change which keys each query sees"
    if a.get("softcap", 0.0) not in (0, 0.0) or a.get("alibi_slopes") is not None:
        return "softcapped or ALiBi-biased attention is not supported"
    for arg, why in unset.items():
        if a.get(arg) is not None:
            return f"{arg} is set: {why}"
    return heads_reason(q_shape, k_shape)


def kernel(op: str, name: str, params: Mapping[str, Any], *, outputs: Mapping[int, str],
           unset: Mapping[str, str] | None = None, lengths: Mapping[str, str] | None = None) -> AttentionForm:
    """One table row: a ``[B, S, H, D]`` kernel registered as ``op``, its parameters in schema order (with the
    defaults a call may leave out; canonical names for query/key/value/scale/causal/dropout), written back
    positionally. ``lengths``: integer arguments set to the reduced tokens' count (``max_seqlen_q`` -> ``query``)."""
    return AttentionForm(
        name=name, describe=op, targets={}, op_names={op: name}, arg_names=tuple(params),
        aliases=_ALIASES, defaults={**_COMMON, **params},
        check=functools.partial(_check, unset=unset or {}),
        reduces_mask=False,  # none of these kernels takes a dense mask
        layout="bshd", outputs=outputs, write_positional=True, lengths=lengths or {},
    )


_QKV = {"query": None, "key": None, "value": None}

#: flash-attn 2 (``flash_attn/flash_attn_interface.py``), what diffusers' ``flash`` backend reaches through
#: ``flash_attn_func``: ``(out [B, S, H, D], softmax_lse [B, H, S], S_dmask, rng_state)``.
FLASH_ATTN_2 = kernel(
    "flash_attn::_flash_attn_forward", "flash_attn",
    {**_QKV, "dropout_p": 0.0, "scale": None, "is_causal": False, "window_size_left": -1, "window_size_right": -1,
     "softcap": 0.0, "alibi_slopes": None, "return_softmax": False},
    outputs={0: "tokens", 1: "lse"},
)

#: diffusers' own wrapper of FA3 (``diffusers/models/attention_dispatch.py``), what its ``_flash_3`` backend
#: calls: ``(out [B, S, H, D], lse [B, S, H])`` (diffusers permutes FA3's ``[B, H, S]`` log-sum-exp).
DIFFUSERS_FLASH_ATTN_3 = kernel(
    "_diffusers_flash_attn_3::_flash_attn_forward", "flash_attn_3_diffusers",
    {**_QKV, "scale": None, "is_causal": False, "qv": None, "q_descale": None, "k_descale": None, "v_descale": None,
     "attention_chunk": 0, "softcap": 0.0, "num_splits": 1, "pack_gqa": None, "deterministic": False, "sm_margin": 0},
    outputs={0: "tokens", 1: "lse_bsh"},
    unset={"qv": "an extra query-value product the reduction does not gather"},
)

#: flash-attn 3 (``hopper/flash_attn_interface.py``, ``flash_attn_func``), called directly or by a hub build
#: that keeps the name: ``(out [B, S, H, D], softmax_lse [B, H, S], out_accum, softmax_lse_accum)``.
FLASH_ATTN_3 = kernel(
    "flash_attn_3::_flash_attn_forward", "flash_attn_3",
    {**_QKV, "k_new": None, "v_new": None, "qv": None, "out_": None, "cu_seqlens_q": None, "cu_seqlens_k": None,
     "cu_seqlens_k_new": None, "seqused_q": None, "seqused_k": None, "max_seqlen_q": None, "max_seqlen_k": None,
     "page_table": None, "kv_batch_idx": None, "leftpad_k": None, "rotary_cos": None, "rotary_sin": None,
     "seqlens_rotary": None, "q_descale": None, "k_descale": None, "v_descale": None, "scale": None,
     "is_causal": False, "window_size_left": -1, "window_size_right": -1, "attention_chunk": 0, "softcap": 0.0,
     "rotary_interleaved": True, "scheduler_metadata": None, "num_splits": 1, "pack_gqa": None, "sm_margin": 0},
    outputs={0: "tokens", 1: "lse"},
    unset={"k_new": _CACHE, "v_new": _CACHE, "qv": "an extra query-value product the reduction does not gather",
           "out_": _OUT, "cu_seqlens_q": _PACKED, "cu_seqlens_k": _PACKED, "cu_seqlens_k_new": _PACKED,
           "seqused_q": _PACKED, "seqused_k": _PACKED, "page_table": _CACHE, "kv_batch_idx": _CACHE,
           "leftpad_k": _CACHE, "rotary_cos": _ROTARY, "rotary_sin": _ROTARY, "seqlens_rotary": _ROTARY,
           "scheduler_metadata": "a launch schedule computed for the full sequence lengths"},
)

#: xformers' flash-attn 2 op (``xformers/ops/fmha/flash.py``), what ``memory_efficient_attention`` (diffusers'
#: ``xformers`` backend) runs without a mask: ``(out [B, S, H, D], lse [B, H, S], rng_state)``.
XFORMERS_FLASH = kernel(
    "xformers_flash::flash_fwd", "xformers_flash",
    {**_QKV, "cu_seqlens_q": None, "cu_seqlens_k": None, "seqused_k": None, "max_seqlen_q": None, "max_seqlen_k": None,
     "dropout_p": 0.0, "scale": None, "is_causal": False, "window_size_left": -1, "window_size_right": -1,
     "return_softmax": False, "block_tables": None},
    outputs={0: "tokens", 1: "lse"},
    unset={"cu_seqlens_q": _PACKED, "cu_seqlens_k": _PACKED, "seqused_k": _PACKED, "block_tables": _CACHE},
    lengths={"max_seqlen_q": "query", "max_seqlen_k": "key"},
)

#: xformers' flash-attn 3 op (``xformers/ops/fmha/flash3.py``), what ``memory_efficient_attention`` runs on
#: Hopper GPUs: ``(out [B, S, H, D], lse [B, H, S])``.
XFORMERS_FLASH_3 = kernel(
    "xformers_flash3::flash_fwd", "xformers_flash3",
    {**_QKV, "cu_seqlens_q": None, "cu_seqlens_k": None, "seqused_k": None, "leftpad_k": None, "max_seqlen_q": None,
     "max_seqlen_k": None, "dropout_p": 0.0, "scale": None, "is_causal": False, "descale_q": None, "descale_k": None,
     "descale_v": None, "block_table": None, "use_kvsplit": False, "window_size_left": -1, "window_size_right": -1},
    outputs={0: "tokens", 1: "lse"},
    unset={"cu_seqlens_q": _PACKED, "cu_seqlens_k": _PACKED, "seqused_k": _PACKED, "leftpad_k": _CACHE,
           "block_table": _CACHE},
    lengths={"max_seqlen_q": "query", "max_seqlen_k": "key"},
)

#: Every kernel-table form, tried after SDPA's.
KERNELS: tuple[AttentionForm, ...] = (FLASH_ATTN_2, DIFFUSERS_FLASH_ATTN_3, FLASH_ATTN_3, XFORMERS_FLASH, XFORMERS_FLASH_3)

_SDPA_BACKENDS = "use an SDPA backend for this site (set_attention_backend('native'), '_native_flash', '_native_cudnn')"
_SAGE = ("SageAttention's kernel takes queries and keys quantized to int8 with per-block scales computed before "
         f"the call, and writes a preallocated output: the reduction cannot rebuild it; {_SDPA_BACKENDS}")

#: Attention kernels that reach a graph but are never rewritten: qualified op name or namespace -> the reason.
LEFT_INTACT: Mapping[str, str] = {
    "sageattention": _SAGE,
    "sageattention_sm89": _SAGE,
    "sageattention_sm90": _SAGE,
    "flash_attn::_flash_attn_varlen_forward": "flash-attn's variable-length kernel (diffusers' flash_varlen "
                                              f"backends) takes {_PACKED}; {_SDPA_BACKENDS}",
    "aten::_efficient_attention_forward": "the memory-efficient kernel called directly (xformers runs it for an "
                                          f"attention bias or mask) is not rewritten; {_SDPA_BACKENDS}",
}


def left_intact_reason(target: Any) -> str:
    """The reason a kernel of :data:`LEFT_INTACT` gives for its site, else ""."""
    schema = getattr(target, "_schema", None)
    if schema is None:
        default = getattr(target, "default", None)
        schema = getattr(default, "_schema", None)
    if schema is None:
        return ""
    name = schema.name
    reason = LEFT_INTACT.get(name) or LEFT_INTACT.get(name.split("::", 1)[0], "")
    return f"{name}: {reason}" if reason else ""
