"""Grouped-query attention (fewer key/value heads than query heads, ``enable_gqa=True``) whose video
queries attend to ``[prompt, video]`` keys, as Cosmos3-Omni's generation pathway does: queries are
reduced per query head, keys/values per key/value head (their prompt part kept); checked against the
independent slow reference, ratio 0 exact, inductor equal to eager in one graph."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing.dit import timestep_embedding
from reference import RefSite, ReferenceAsymRnR

GRID = (2, 4, 4)
TEXT = 6
STEPS = (900.0, 600.0, 300.0)


class GqaBlock(nn.Module):
    """Video queries (4 heads) over ``[prompt, video]`` keys/values (2 heads), enable_gqa=True."""

    def __init__(self, dim: int, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.hd)
        self.proj = nn.Linear(dim, dim)
        self.ada = nn.Linear(dim, 2 * dim)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    def forward(self, x: torch.Tensor, text: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c)[:, None].chunk(2, dim=-1)
        b, n, d = x.shape
        h = self.norm(x) * (1 + scale) + shift
        q = self.q(h).view(b, n, self.heads, self.hd).transpose(1, 2)
        both = torch.cat([text, h], dim=1)
        k, v = self.kv(both).view(b, -1, 2, self.kv_heads, self.hd).permute(2, 0, 3, 1, 4)
        return x + self.proj(self.attend(q, k, v).transpose(1, 2).reshape(b, n, d))


class GqaDiT(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv3d(4, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.pos = nn.Parameter(torch.randn(1, 32, dim) * 0.5)
        self.t_mlp = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(GqaBlock(dim) for _ in range(depth))
        self.out = nn.Linear(dim, 4 * 4)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.embed(hidden_states).flatten(2).transpose(1, 2) + self.pos
        c = self.t_mlp(timestep_embedding(timestep, x.shape[-1]))
        for block in self.blocks:
            x = block(x, encoder_hidden_states, c)
        return self.out(x)


@pytest.fixture(scope="module")
def model() -> GqaDiT:
    torch.manual_seed(0)
    return GqaDiT().eval()


def _run(m: nn.Module, x: torch.Tensor, text: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [m(hidden_states=x, timestep=torch.tensor([t]), encoder_hidden_states=text) for t in STEPS]


def _assert_reference(model: GqaDiT, plan: Plan, x: torch.Tensor, text: torch.Tensor, outputs: list[torch.Tensor],
                      monkeypatch, tol: float = 2e-5) -> None:
    """``outputs`` (one per step of ``STEPS``) equal the model whose attention is the independent slow reference."""
    ref = ReferenceAsymRnR(plan, [RefSite(GRID, TEXT, True)] * 2)
    monkeypatch.setattr(GqaBlock, "attend", lambda self, q, k, v: ref(query=q, key=k, value=v))
    with torch.no_grad():
        for step, t in enumerate(STEPS):
            ref.start_forward(step)
            want = model(hidden_states=x, timestep=torch.tensor([t]), encoder_hidden_states=text)
            torch.testing.assert_close(outputs[step], want, atol=tol, rtol=tol, msg=f"step {step}")


def test_gqa_video_queries_over_prompt_and_video_keys_match_reference(model, monkeypatch):
    plan = Plan.from_table(q=torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]]),
                           kv=torch.tensor([[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]]), cache_window=1)
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, TEXT, 32)
    fast = asymrnr_fx.transform(model, plan, grid=GRID)
    eager = _run(fast, x, text)
    assert [(s.kind, s.q_len, s.kv_len, s.text_len, s.text_position, s.rewrite) for s in fast.report.sites] == [
        ("joint", 32, 32 + TEXT, TEXT, "first", True)] * 2
    plain = _run(model, x, text)
    torch.testing.assert_close(eager[0], plain[0], rtol=0, atol=1e-6)  # ratio 0: the model itself
    assert all((e - p).abs().max() > 1e-3 for e, p in zip(eager[1:], plain[1:]))

    _assert_reference(model, plan, x, text, eager, monkeypatch)
    monkeypatch.undo()

    compiled = asymrnr_fx.transform(model, plan, grid=GRID, compile=True)
    for step, (a, b) in enumerate(zip(_run(compiled, x, text), eager)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    assert len(compiled.runtime.reports) == 1  # one graph while the kept counts changed


def test_gqa_with_a_mask_is_left_intact_with_the_reason(model, monkeypatch):
    mask = torch.ones(1, 1, 32, 32 + TEXT, dtype=torch.bool)
    monkeypatch.setattr(GqaBlock, "attend", lambda self, q, k, v: F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=True))
    report = asymrnr_fx.inspect(model, hidden_states=torch.randn(1, 4, 2, 8, 8), timestep=torch.tensor([900.0]),
                                encoder_hidden_states=torch.randn(1, TEXT, 32), plan=Plan.uniform(), grid=GRID)
    assert [(s.form, s.rewrite) for s in report.sites] == [("torch", False)] * 2
    assert all(s.reason == "grouped-query attention (fewer key heads than query heads) with a mask is not supported"
               for s in report.sites)


def test_flex_attention_gqa_matches_reference_eager(model, monkeypatch):
    """The same sites through ``flex_attention(enable_gqa=True)`` (no score_mod, no block_mask): same reduction."""
    from torch.nn.attention.flex_attention import flex_attention

    plan = Plan.from_table(q=torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]]),
                           kv=torch.tensor([[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]]), cache_window=1)
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, TEXT, 32)
    monkeypatch.setattr(GqaBlock, "attend", lambda self, q, k, v: flex_attention(q, k, v, enable_gqa=True))
    fast = asymrnr_fx.transform(model, plan, grid=GRID)
    got = _run(fast, x, text)
    assert [(s.form, s.kind, s.rewrite) for s in fast.report.sites] == [("flex", "joint", True)] * 2
    _assert_reference(model, plan, x, text, got, monkeypatch, tol=5e-5)


def test_flash_attn_gqa_matches_reference_eager_and_compiled(model, monkeypatch):
    """The same sites through flash-attn's op (``[B, S, H, D]``, 2 key/value heads for 4 query heads, which
    flash-attn takes as they are), on the CPU stand-in registered under its name and schema."""
    from test_forms import FLASH

    def flash(self, q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        return FLASH(q, k, v, 0.0, q.shape[-1] ** -0.5, False, -1, -1, 0.0, None, False)[0].transpose(1, 2)

    plan = Plan.from_table(q=torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.3, 0.6]]),
                           kv=torch.tensor([[0.0, 0.4, 0.2], [0.0, 0.5, 0.3]]), cache_window=1)
    x, text = torch.randn(1, 4, 2, 8, 8), torch.randn(1, TEXT, 32)
    monkeypatch.setattr(GqaBlock, "attend", flash)
    fast = asymrnr_fx.transform(model, plan, grid=GRID)
    eager = _run(fast, x, text)
    assert [(s.form, s.kind, s.rewrite) for s in fast.report.sites] == [("flash_attn", "joint", True)] * 2
    plain = _run(model, x, text)
    torch.testing.assert_close(eager[0], plain[0], rtol=0, atol=1e-6)  # ratio 0: the model itself
    assert all((e - p).abs().max() > 1e-3 for e, p in zip(eager[1:], plain[1:]))
    compiled = _run(asymrnr_fx.transform(model, plan, grid=GRID, compile=True), x, text)
    for step, (a, b) in enumerate(zip(compiled, eager)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"inductor, step {step}")
    _assert_reference(model, plan, x, text, eager, monkeypatch)
