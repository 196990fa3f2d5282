"""Attention forms beyond plain SDPA: the log-sum-exp kernels a split-KV caller (ring attention) merges.

The LSE form must reduce like SDPA (independent slow reference, ratio 0 exact, inductor equal
to eager, one graph while the kept counts change) and restore the log-sum-exp with the same
assignment as the output, so that partial results merged by their LSE equal one call on the
whole reduced problem. Ops that exist only on CUDA are checked on graphs built by hand.
"""
from __future__ import annotations

import operator
from typing import Optional

import pytest
import torch
import torch.fx as fx

import asymrnr_fx
from asymrnr_fx import Plan, ops
from asymrnr_fx.passes import rewrite_graph
from asymrnr_fx.testing import TinyVideoDiT
from asymrnr_fx.testing.dit import Block
from reference import RefSite, ReferenceAsymRnR

GRID = (2, 4, 4)  # frames 2, 8x8 latents, patch 2
LSE_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
STEPS = (900.0, 600.0, 300.0)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return LSE_CPU(q, k, v)


class LseBlock(Block):
    """A DiT block whose attention is the CPU flash kernel, and which uses its log-sum-exp too."""

    attend = staticmethod(_attend)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        b, n, d = x.shape
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a, lse = type(self).attend(q, k, v)
        x = x + gate1 * self.proj(a.transpose(1, 2).reshape(b, n, d)) + 0.1 * lse.mean(1)[..., None]
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


def _with_blocks(cls: type, **attrs) -> TinyVideoDiT:
    """The 2-block test DiT (2 frames of 8x8 latents) with its blocks swapped for ``cls``, same weights."""
    torch.manual_seed(0)
    m = TinyVideoDiT(channels=4, dim=32, depth=2, heads=2, frames=2, height=8, width=8).eval()
    for i, block in enumerate(m.blocks):
        swapped = cls(32, 2)
        swapped.load_state_dict(block.state_dict())
        for name, value in attrs.items():
            setattr(swapped, name, value)
        m.blocks[i] = swapped
    return m


@pytest.fixture(scope="module")
def model() -> TinyVideoDiT:
    return _with_blocks(LseBlock)


def _plan() -> Plan:
    """Ratio 0 at step 0 (the site still runs its select: identity), then changing kept counts."""
    q = torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]])
    kv = torch.tensor([[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]])
    return Plan.from_table(q=q, kv=kv, cache_window=1)


def _run(m: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [m(hidden_states=x, timestep=torch.tensor([t])) for t in STEPS]


def _reference_run(model: torch.nn.Module, ref: ReferenceAsymRnR, x: torch.Tensor) -> list[torch.Tensor]:
    """The model's steps with its attention patched to the slow reference (the caller patches)."""
    out = []
    with torch.no_grad():
        for step, t in enumerate(STEPS):
            ref.start_forward(step)
            out.append(model(hidden_states=x, timestep=torch.tensor([t])))
    return out


def _reference_outputs(model, plan, x, block: type, attend, monkeypatch) -> list[torch.Tensor]:
    """The model's steps with ``block.attend`` swapped for ``attend(ref)``, ``ref`` the slow reference."""
    ref = ReferenceAsymRnR(plan, [RefSite(GRID)] * 2)
    monkeypatch.setattr(block, "attend", attend(ref))
    try:
        return _reference_run(model, ref, x)
    finally:
        monkeypatch.undo()


def _check_form(model, plan, x, form: str, block: type, attend, monkeypatch, *, ratio0_atol: float = 1e-6,
                ref_atol: float = 2e-5) -> tuple[list[torch.Tensor], asymrnr_fx.AsymRnRModule]:
    """What every form must show on the 2-block DiT: both sites rewritten as ``form``; step 0 (ratio 0)
    the model itself; later steps reduced and equal to the slow reference; inductor equal to eager in
    one graph while the kept counts change. Returns the eager outputs and the compiled model."""
    fast = asymrnr_fx.transform(model, plan, grid=GRID)
    eager = _run(fast, x)
    assert [(s.form, s.kind, s.rewrite) for s in fast.report.sites] == [(form, "self", True)] * 2
    plain = _run(model, x)
    torch.testing.assert_close(eager[0], plain[0], rtol=0, atol=ratio0_atol)  # ratio 0: the model itself
    assert all((e - p).abs().max() > 1e-3 for e, p in zip(eager[1:], plain[1:]))  # it did reduce
    for step, (a, b) in enumerate(zip(eager, _reference_outputs(model, plan, x, block, attend, monkeypatch))):
        torch.testing.assert_close(a, b, atol=ref_atol, rtol=ref_atol, msg=f"step {step}")
    compiled = asymrnr_fx.transform(model, plan, grid=GRID, compile=True)
    for step, (a, b) in enumerate(zip(_run(compiled, x), eager)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    assert len(compiled.runtime.reports) == 1  # one graph while the kept counts changed at every step
    return eager, compiled


def test_lse_form_matches_reference_eager_and_compiled(model, monkeypatch):
    def attend(ref):
        return staticmethod(lambda q, k, v: ref(query=q, key=k, value=v, return_lse=True))

    _, compiled = _check_form(model, _plan(), torch.randn(1, 4, 2, 8, 8), "aten_lse", LseBlock, attend, monkeypatch)
    assert compiled.runtime.matching_steps() == [1, 2]  # step 0 reduces nothing in its window: no matching


def test_restored_parts_merge_by_lse_into_one_call_on_the_reduced_problem():
    """What ring attention does with two key shards: per part ``(out, lse)``, merged by weights
    ``exp(lse_i - lse)``. Restored with the output's assignment, the merged parts equal one
    call on all reduced keys, restored; any other assignment for the LSE would not."""
    torch.manual_seed(1)
    b, h, n, d = 1, 2, 32, 8
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    dst, src = ops.partition(GRID, (2, 2, 2), ops.draw_tile_choices(GRID, (2, 2, 2), seed=3))
    q_keep, q_assign = ops.select(ops.match(q, dst, src, "euclidean", grid=GRID, seed=3), n, 0.5, 0, True)
    kv_keep, _ = ops.select(ops.match(v, dst, src, "euclidean", grid=GRID, seed=4), n, 0.4, 0, True)
    qr, kr, vr = ops.gather_tokens(q, q_keep), ops.gather_tokens(k, kv_keep), ops.gather_tokens(v, kv_keep)
    whole, whole_lse = LSE_CPU(qr, kr, vr)
    half = kr.shape[2] // 2
    parts = [LSE_CPU(qr, kr[:, :, s], vr[:, :, s]) for s in (slice(0, half), slice(half, None))]
    restored = [(ops.restore_tokens(o, q_assign), ops.restore_lse(l, q_assign)) for o, l in parts]
    lse = torch.logsumexp(torch.stack([l for _, l in restored]), dim=0)
    merged = sum(o * torch.exp(l - lse)[..., None] for o, l in restored)
    torch.testing.assert_close(merged, ops.restore_tokens(whole, q_assign), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, ops.restore_lse(whole_lse, q_assign), atol=1e-5, rtol=1e-5)
    assert lse.shape == (b, h, n)


def _cuda_flash_graph(use: int) -> fx.GraphModule:
    """A graph calling the CUDA flash kernel (built by hand: it cannot run here) that uses outputs 0 and ``use``."""
    graph = fx.Graph()
    x = graph.placeholder("hidden_states")
    x.meta["val"] = torch.empty(1, 4, 2, 8, 8)
    q, k, v = (graph.placeholder(name) for name in ("q", "k", "v"))
    for node in (q, k, v):
        node.meta["val"] = torch.empty(1, 2, 32, 8)
    call = graph.call_function(torch.ops.aten._scaled_dot_product_flash_attention.default, (q, k, v))
    outs = [graph.call_function(operator.getitem, (call, i)) for i in (0, use)]
    graph.output(tuple(outs))
    return fx.GraphModule(torch.nn.Module(), graph)


def test_cuda_flash_kernel_is_a_form_and_other_outputs_keep_it_intact():
    rewritten = _cuda_flash_graph(use=1)
    report = rewrite_graph(rewritten, Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.kind, s.rewrite, s.reason) for s in report.sites] == [("aten_lse", "self", True, "")]
    targets = [n.target for n in rewritten.graph.nodes if n.op == "call_function"]
    assert ops.restore_tokens in targets and ops.restore_lse in targets
    intact = _cuda_flash_graph(use=2)  # cum_seq_q: describes the kernel's launch, cannot be restored
    report = rewrite_graph(intact, Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert not report.rewritten
    assert report.sites[0].reason == "aten._scaled_dot_product_flash_attention call uses output 2, which the reduction cannot restore"


# --------------------------------------------------------------------------- kernel table: flash-attn 2
def _flash_stand_in() -> object:
    """``flash_attn::_flash_attn_forward`` as flash-attn 2 registers it (same name, schema, ``[B, S, H, D]``
    layout and outputs), computed on the CPU by the aten flash kernel; the real one is CUDA-only."""
    if hasattr(torch.ops, "flash_attn") and hasattr(torch.ops.flash_attn, "_flash_attn_forward"):
        return torch.ops.flash_attn._flash_attn_forward.default

    @torch.library.custom_op("flash_attn::_flash_attn_forward", mutates_args=())
    def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, softmax_scale: float, causal: bool,
                window_size_left: int, window_size_right: int, softcap: float, alibi_slopes: Optional[torch.Tensor],
                return_softmax: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        groups = q.shape[2] // k.shape[2]  # flash-attn takes fewer key/value heads as they are (GQA / MQA)
        k, v = (t.repeat_interleave(groups, dim=2) for t in (k, v))
        out, lse = LSE_CPU(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale)
        return out.transpose(1, 2).contiguous(), lse, q.new_empty(0), torch.zeros(2, dtype=torch.int64)

    @forward.register_fake
    def _(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes, return_softmax):
        b, s, h, _ = q.shape
        return (q.new_empty(q.shape), q.new_empty(b, h, s, dtype=torch.float32), q.new_empty(0),
                torch.empty(2, dtype=torch.int64))

    return torch.ops.flash_attn._flash_attn_forward.default


FLASH = _flash_stand_in()


class FlashBlock(Block):
    """A DiT block calling flash-attn's op with ``[B, S, H, D]`` tensors, as diffusers' ``flash`` backend does."""

    causal = False

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # the kernel's layout
        return FLASH(q, k, v, 0.0, q.shape[-1] ** -0.5, self.causal, -1, -1, 0.0, None, False)[0].transpose(1, 2)


def _flash_model(causal: bool = False) -> TinyVideoDiT:
    return _with_blocks(FlashBlock, causal=causal)


def _reference_attend(ref):
    """The slow reference as a block's ``attend`` (``[B, H, S, D]``)."""
    return lambda self, q, k, v: ref(query=q, key=k, value=v)


def test_flash_attn_kernel_table_entry_matches_reference_eager_and_compiled(monkeypatch):
    model, x, plan = _flash_model(), torch.randn(1, 4, 2, 8, 8), _plan()
    _check_form(model, plan, x, "flash_attn", FlashBlock, _reference_attend, monkeypatch)
    mean = Plan.from_table(q=plan.table("q"), kv=plan.table("kv"), cache_window=1, mode="mean")  # merging, [B, S, H, D]
    for step, (a, b) in enumerate(zip(_run(asymrnr_fx.transform(model, mean, grid=GRID), x),
                                      _reference_outputs(model, mean, x, FlashBlock, _reference_attend, monkeypatch))):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5, msg=f"mean mode, step {step}")


def test_flash_attn_calls_it_cannot_reduce_are_left_intact_with_the_reason():
    model = _flash_model(causal=True)
    report = asymrnr_fx.inspect(model, hidden_states=torch.randn(1, 4, 2, 8, 8), timestep=torch.tensor([900.0]),
                                plan=Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.rewrite, s.reason) for s in report.sites] == [
        ("flash_attn", False, "causal attention is not a video DiT attention")] * 2


# --------------------------------------------------------------------------- flex_attention
def _relative_bias(score, b, h, q_idx, kv_idx):
    return score + 0.01 * (q_idx - kv_idx)


class FlexBlock(Block):
    """A DiT block calling ``flex_attention(q, k, v)``, optionally with a position-dependent score_mod."""

    score_mod = None

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, score_mod=self.score_mod)


def _flex_model(score_mod=None) -> TinyVideoDiT:
    return _with_blocks(FlexBlock, score_mod=score_mod)


def test_flex_attention_without_mods_matches_reference_eager_and_compiled(monkeypatch):
    _check_form(_flex_model(), _plan(), torch.randn(1, 4, 2, 8, 8), "flex", FlexBlock, _reference_attend, monkeypatch,
                ratio0_atol=1e-5, ref_atol=5e-5)


def test_flex_attention_with_a_score_mod_is_left_intact_with_the_reason():
    report = asymrnr_fx.inspect(_flex_model(_relative_bias), hidden_states=torch.randn(1, 4, 2, 8, 8),
                                timestep=torch.tensor([900.0]), plan=Plan.uniform(q=0.5, kv=0.3), grid=GRID)
    assert [(s.form, s.rewrite) for s in report.sites] == [("flex", False)] * 2
    assert all("score_mod" in s.reason for s in report.sites)
