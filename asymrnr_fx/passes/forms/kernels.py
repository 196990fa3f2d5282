"""Attention kernels of other libraries, one table entry each: what diffusers' ``flash`` ... backends call.

Why a table: these kernels differ from SDPA only in their name, layout and argument order,
so each is one :class:`~.base.AttentionForm` built from one row. They are matched by op name
(``torch.ops.<namespace>.<op>``), so the table needs no import of the library and stays
testable on a CPU through a stand-in op registered under the same name and schema
(``tests/test_forms.py``). A kernel that is a Python call rather than a registered op
(``sageattn``) never reaches the graph as one node; its sites are reported by the backend
check (:mod:`asymrnr_fx.integrations.hooks`), which points to the SDPA backends.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import AttentionForm, heads_reason


def _check_flash(a: Mapping[str, Any], q_shape: tuple, k_shape: tuple) -> str:
    if a["is_causal"] is not False:
        return "causal attention is not a video DiT attention"
    if (a.get("window_size_left", -1), a.get("window_size_right", -1)) != (-1, -1):
        return "local (windowed) attention: reduced tokens would change which keys each query sees"
    if a.get("softcap", 0.0) not in (0, 0.0) or a.get("alibi_slopes") is not None:
        return "softcapped or ALiBi-biased attention is not supported"
    return heads_reason(q_shape, k_shape)


#: flash-attn 2 (``pip install flash-attn``), what diffusers' ``flash`` backend calls:
#: ``(out [B, S, H, D], softmax_lse [B, H, S], S_dmask, rng_state)``.
FLASH_ATTN_2 = AttentionForm(
    name="flash_attn",
    describe="flash_attn::_flash_attn_forward",
    targets={},
    op_names={"flash_attn::_flash_attn_forward": "flash_attn"},
    arg_names=("query", "key", "value", "dropout_p", "scale", "is_causal", "window_size_left", "window_size_right",
               "softcap", "alibi_slopes", "return_softmax"),
    aliases={"q": "query", "k": "key", "v": "value", "softmax_scale": "scale", "causal": "is_causal"},
    defaults={"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False},
    check=_check_flash,
    reduces_mask=False,  # the kernel takes no mask
    layout="bshd",
    outputs={0: "tokens", 1: "lse"},
    write_positional=True,
)

#: Every kernel-table form, tried after SDPA's.
KERNELS: tuple[AttentionForm, ...] = (FLASH_ATTN_2,)
