"""The kernel table (``asymrnr_fx/passes/forms/kernels.py``): one row per op, tested on the CPU.

Each op runs here as a stand-in registered under the real op's name and schema (written from
the library's source; registered only where the real op is absent), taking and returning the
real layout (``[B, S, H, D]`` tokens, the log-sum-exp as the kernel returns it), computed by
aten's CPU flash kernel. For diffusers' FA3 wrapper the op is diffusers' own (CUDA-only): the
stand-in is its CPU kernel, and the block calls diffusers' ``_flash_3`` backend function
itself. Every row must pass the per-form contract of ``test_forms._check_form`` and leave a
call it cannot reduce intact, with the reason.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing.dit import Block
from test_forms import GRID, LSE_CPU, _check_form, _plan, _with_blocks


def _attend_bshd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None, causal: bool):
    """``(out [B, S, H, D], lse [B, H, S])`` as the flash kernels compute them; fewer key heads as they are (GQA)."""
    groups = q.shape[2] // k.shape[2]
    k, v = (t.repeat_interleave(groups, dim=2) for t in (k, v))
    out, lse = LSE_CPU(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale)
    return out.transpose(1, 2).contiguous(), lse.contiguous()


def _lse_fake(q: torch.Tensor) -> torch.Tensor:
    return q.new_empty(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32)


def _stand_in(qualname: str, schema: str, impl: Callable, fake: Callable) -> object:
    """The op ``qualname``: the real one where its library registered it, else a CPU stand-in with its schema."""
    namespace, name = qualname.split("::")
    if not hasattr(getattr(torch.ops, namespace), name):
        torch.library.define(qualname, schema)
        torch.library.impl(qualname, "cpu", func=impl)
        torch.library.register_fake(qualname, fake)
    return getattr(getattr(torch.ops, namespace), name).default


# --------------------------------------------------------------------------- xformers' flash-attn 2 op
def _xformers_flash(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, max_seqlen_q, max_seqlen_k, p, softmax_scale,
                    is_causal, window_left, window_right, return_softmax, block_tables):
    assert (max_seqlen_q, max_seqlen_k) == (q.shape[1], k.shape[1]), "the call states lengths its tensors do not have"
    out, lse = _attend_bshd(q, k, v, softmax_scale, is_causal)
    return out, lse, torch.zeros(2, dtype=torch.int64)


XFORMERS_FLASH = _stand_in(
    "xformers_flash::flash_fwd",
    "(Tensor query, Tensor key, Tensor value, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? seqused_k, "
    "SymInt max_seqlen_q, SymInt max_seqlen_k, float p, float softmax_scale, bool is_causal, SymInt window_left, "
    "SymInt window_right, bool return_softmax, Tensor? block_tables) -> (Tensor, Tensor, Tensor)",
    _xformers_flash,
    lambda q, k, v, *rest: (q.new_empty(q.shape), _lse_fake(q), torch.empty(2, dtype=torch.int64)),
)


# --------------------------------------------------------------------------- xformers' flash-attn 3 op
def _xformers_flash3(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, leftpad_k, max_seqlen_q, max_seqlen_k, p,
                     softmax_scale, is_causal, descale_q=None, descale_k=None, descale_v=None, block_table=None,
                     use_kvsplit=False, window_left=-1, window_right=-1):
    assert (max_seqlen_q, max_seqlen_k) == (q.shape[1], k.shape[1]), "the call states lengths its tensors do not have"
    return _attend_bshd(q, k, v, softmax_scale, is_causal)


XFORMERS_FLASH3 = _stand_in(
    "xformers_flash3::flash_fwd",
    "(Tensor query, Tensor key, Tensor value, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? seqused_k, "
    "Tensor? leftpad_k, SymInt max_seqlen_q, SymInt max_seqlen_k, float p, float softmax_scale, bool is_causal, "
    "Tensor? descale_q=None, Tensor? descale_k=None, Tensor? descale_v=None, Tensor? block_table=None, "
    "bool use_kvsplit=False, SymInt window_left=-1, SymInt window_right=-1) -> (Tensor, Tensor)",
    _xformers_flash3,
    lambda q, k, v, *rest, **kw: (q.new_empty(q.shape), _lse_fake(q)),
)

# --------------------------------------------------------------------------- flash-attn 3's own op
_FA3_OPTIONAL = ("k_new", "v_new", "qv", "out_", "cu_seqlens_q", "cu_seqlens_k", "cu_seqlens_k_new", "seqused_q",
                 "seqused_k", "max_seqlen_q", "max_seqlen_k", "page_table", "kv_batch_idx", "leftpad_k", "rotary_cos",
                 "rotary_sin", "seqlens_rotary", "q_descale", "k_descale", "v_descale")


def _fa3(q, k, v, *args, **kwargs):
    bound = {**dict(zip((*_FA3_OPTIONAL, "softmax_scale", "causal"), args)), **kwargs}
    out, lse = _attend_bshd(q, k, v, bound.get("softmax_scale"), bound.get("causal", False))
    return out, lse, q.new_empty(0), q.new_empty(0)


FA3 = _stand_in(
    "flash_attn_3::_flash_attn_forward",
    "(Tensor q, Tensor k, Tensor v, " + ", ".join(
        f"{'SymInt' if n.startswith('max_') else 'Tensor'}? {n}=None" for n in _FA3_OPTIONAL)
    + ", float? softmax_scale=None, bool causal=False, SymInt window_size_left=-1, SymInt window_size_right=-1, "
    "SymInt attention_chunk=0, float softcap=0., bool rotary_interleaved=True, Tensor? scheduler_metadata=None, "
    "SymInt num_splits=1, bool? pack_gqa=None, SymInt sm_margin=0) -> (Tensor, Tensor, Tensor, Tensor)",
    _fa3,
    lambda q, k, v, *rest, **kw: (q.new_empty(q.shape), _lse_fake(q), q.new_empty(0), q.new_empty(0)),
)


# --------------------------------------------------------------------------- diffusers' FA3 wrapper (its `_flash_3` backend)
def _diffusers_flash3_backend() -> Callable:
    """diffusers' ``_flash_3`` backend function, its op given a CPU kernel (diffusers registers it for CUDA only)."""
    pytest.importorskip("diffusers")
    from diffusers.models import attention_dispatch

    def cpu(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, v_descale=None,
            attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0):
        out, lse = _attend_bshd(q, k, v, softmax_scale, causal)
        return out, lse.permute(0, 2, 1).contiguous()  # diffusers hands FA3's lse on as [B, S, H]

    torch.library.register_kernel("_diffusers_flash_attn_3::_flash_attn_forward", "cpu", cpu)
    return attention_dispatch._flash_attention_3


# --------------------------------------------------------------------------- the blocks
class KernelBlock(Block):
    """A DiT block whose attention is one kernel (``[B, S, H, D]``), and which uses its log-sum-exp too."""

    causal = False

    def call(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out [B, S, H, D], lse [B, H, S])`` from ``[B, S, H, D]`` inputs, as the kernel's caller calls it."""
        raise NotImplementedError

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, lse = self.call(*(t.transpose(1, 2) for t in (q, k, v)))
        return out.transpose(1, 2), lse

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        b, n, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a, lse = self.attend(q, k, v)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, n, d)) + 0.1 * lse.mean(1)[..., None]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class XformersFlashBlock(KernelBlock):
    def call(self, q, k, v):  # as xformers' flash FwOp.apply calls it without an attention bias
        out, lse, _ = XFORMERS_FLASH(q, k, v, None, None, None, q.shape[1], k.shape[1], 0.0, q.shape[-1] ** -0.5,
                                     self.causal, window_left=-1, window_right=-1, return_softmax=False, block_tables=None)
        return out, lse


class XformersFlash3Block(KernelBlock):
    def call(self, q, k, v):  # as xformers' flash3 FwOp.apply calls it
        return XFORMERS_FLASH3(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, seqused_k=None, leftpad_k=None,
                               max_seqlen_q=q.shape[1], max_seqlen_k=k.shape[1], p=0.0, softmax_scale=q.shape[-1] ** -0.5,
                               is_causal=self.causal, descale_q=None, descale_k=None, descale_v=None, block_table=None,
                               use_kvsplit=False, window_left=-1, window_right=-1)


class FA3Block(KernelBlock):
    def call(self, q, k, v):  # as flash_attn_interface.flash_attn_func (FlashAttnFunc.forward) calls it
        out, lse, *_ = FA3(q, k, v, *([None] * 20), q.shape[-1] ** -0.5, causal=self.causal, window_size_left=-1,
                           window_size_right=-1, attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, sm_margin=0)
        return out, lse


class DiffusersFA3Block(KernelBlock):
    backend: Callable = None

    def call(self, q, k, v):  # diffusers' `_flash_3` backend, with return_lse=True
        out, lse = type(self).backend(q, k, v, scale=None, is_causal=self.causal, return_lse=True)
        return out, lse.transpose(1, 2)


def _reference_attend(ref):
    return lambda self, q, k, v: ref(query=q, key=k, value=v, return_lse=True)


ROWS = {"xformers_flash": XformersFlashBlock, "xformers_flash3": XformersFlash3Block, "flash_attn_3": FA3Block,
        "flash_attn_3_diffusers": DiffusersFA3Block}


def _block(form: str) -> type:
    block = ROWS[form]
    if block is DiffusersFA3Block and block.backend is None:
        block.backend = staticmethod(_diffusers_flash3_backend())
    return block


@pytest.mark.parametrize("form", list(ROWS))
def test_kernel_row_matches_reference_eager_and_compiled(form, monkeypatch):
    block = _block(form)
    _check_form(_with_blocks(block), _plan(), torch.randn(1, 4, 2, 8, 8), form, block, _reference_attend, monkeypatch)


@pytest.mark.parametrize("form", list(ROWS))
def test_kernel_row_leaves_a_causal_call_intact_with_the_reason(form):
    report = asymrnr_fx.inspect(_with_blocks(_block(form), causal=True), hidden_states=torch.randn(1, 4, 2, 8, 8),
                                timestep=torch.tensor([900.0]), plan=Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.rewrite, s.reason) for s in report.sites] == [
        (form, False, "causal attention is not a video DiT attention")] * 2


class FA3RotaryBlock(KernelBlock):
    def call(self, q, k, v):  # FA3 asked to apply a rotary embedding by token position inside the kernel
        optional = dict.fromkeys(_FA3_OPTIONAL)
        optional["rotary_cos"] = optional["rotary_sin"] = q.new_ones(q.shape[1], q.shape[-1] // 2)
        out, lse, *_ = FA3(q, k, v, *optional.values(), q.shape[-1] ** -0.5, causal=False)
        return out, lse


def test_kernel_row_names_the_argument_that_ties_a_call_to_token_positions():
    report = asymrnr_fx.inspect(_with_blocks(FA3RotaryBlock), hidden_states=torch.randn(1, 4, 2, 8, 8),
                                timestep=torch.tensor([900.0]), plan=Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.rewrite) for s in report.sites] == [("flash_attn_3", False)] * 2
    assert report.sites[0].reason.startswith("rotary_cos is set: a rotary embedding applied inside the kernel")


# --------------------------------------------------------------------------- a kernel the table leaves intact: SageAttention
def _sage(query, key, value, output, query_scale, key_scale, tensor_layout, is_causal, qk_quant_gran, sm_scale, return_lse):
    output.copy_(_attend_bshd(query, key, value, sm_scale, bool(is_causal))[0])  # quantization left out: a stand-in
    return query.new_empty(0)


SAGE = _stand_in(
    "sageattention::qk_int8_sv_f16_accum_f32_attn",
    "(Tensor query, Tensor key, Tensor value, Tensor(a!) output, Tensor query_scale, Tensor key_scale, int tensor_layout, "
    "int is_causal, int qk_quant_gran, float sm_scale, int return_lse) -> Tensor",
    _sage,
    lambda query, *rest: query.new_empty(0),
)


class SageBlock(KernelBlock):
    def call(self, q, k, v):  # as SageAttention's sm80 path calls its attention op, after quantizing q and k
        out = torch.empty_like(q)
        SAGE(q, k, v, out, q.new_ones(1), k.new_ones(1), 0, 0, 2, q.shape[-1] ** -0.5, 0)
        return out, q.new_zeros(q.shape[0], q.shape[2], q.shape[1])


def test_sage_attention_op_is_reported_with_its_reason():
    report = asymrnr_fx.inspect(_with_blocks(SageBlock), hidden_states=torch.randn(1, 4, 2, 8, 8),
                                timestep=torch.tensor([900.0]), plan=Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.rewrite) for s in report.sites] == [("unsupported", False)] * 2
    reason = report.sites[0].reason
    assert reason.startswith("sageattention::qk_int8_sv_f16_accum_f32_attn: SageAttention's kernel") and "'native'" in reason
