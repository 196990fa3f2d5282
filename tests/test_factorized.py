"""Factorized attention (Latte's layout): spatial blocks see one frame per batch row, temporal blocks
one position over time per batch row. Each is reduced with the grid of the part of the video one
row holds, (1, H, W) or (F, 1, 1), per batch row; checked against the independent slow reference,
ratio 0 exact, inductor equal to eager in one graph while the kept counts change."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing import TinyVideoDiT
from asymrnr_fx.testing.dit import Block, timestep_embedding
from reference import RefSite, ReferenceAsymRnR

GRID = (4, 4, 4)  # 4 frames of 8x8 latents, patch 2
STEPS = (900.0, 600.0, 300.0)


class FactorizedDiT(TinyVideoDiT):
    """The test DiT with a spatial block (frames folded into the batch) then a temporal block
    (the H x W grid folded into the batch), as Latte alternates them."""

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = hidden_states.shape
        p = self.patch
        hw = (h // p) * (w // p)
        x = self.embed(hidden_states).flatten(2).transpose(1, 2) + self.pos  # [B, F*H*W, D], frame-major
        d = x.shape[-1]
        cond = self.t_mlp(timestep_embedding(timestep, d))
        spatial, temporal = self.blocks
        x = spatial(x.reshape(b * f, hw, d), cond.repeat_interleave(f, 0)).reshape(b, f, hw, d)
        x = temporal(x.transpose(1, 2).reshape(b * hw, f, d), cond.repeat_interleave(hw, 0))
        x = x.reshape(b, hw, f, d).transpose(1, 2).reshape(b, f * hw, d)
        x = self.out(self.norm(x))
        x = x.view(b, f, h // p, w // p, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, c, f, h, w)


@pytest.fixture(scope="module")
def model() -> FactorizedDiT:
    torch.manual_seed(0)
    return FactorizedDiT(channels=4, dim=32, depth=2, heads=2, frames=4, height=8, width=8).eval()


def _plan() -> Plan:
    q = torch.tensor([[0.0, 0.5, 0.3], [0.0, 0.5, 0.25]])
    kv = torch.tensor([[0.0, 0.4, 0.2], [0.0, 0.25, 0.5]])
    return Plan.from_table(q=q, kv=kv, cache_window=1)


def _run(m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [m(hidden_states=x, timestep=torch.tensor([t] * x.shape[0])) for t in STEPS]


def test_spatial_and_temporal_sites_reduce_per_row_like_the_reference(model, monkeypatch):
    plan, x = _plan(), torch.randn(2, 4, 4, 8, 8)
    fast = asymrnr_fx.transform(model, plan)  # the grid is read from the input and the patch embedding
    eager = _run(fast, x)
    assert [(s.kind, s.factorized, s.grid, s.q_len, s.rewrite) for s in fast.report.sites] == [
        ("self", "spatial", (1, 4, 4), 16, True), ("self", "temporal", (4, 1, 1), 4, True)]
    plain = _run(model, x)
    torch.testing.assert_close(eager[0], plain[0], rtol=0, atol=1e-6)  # ratio 0: the model itself
    assert all((e - p).abs().max() > 1e-3 for e, p in zip(eager[1:], plain[1:]))  # it did reduce

    ref = ReferenceAsymRnR(plan, [RefSite((1, 4, 4)), RefSite((4, 1, 1))])
    monkeypatch.setattr(Block, "attend", lambda self, q, k, v: ref(query=q, key=k, value=v))
    with torch.no_grad():
        for step, t in enumerate(STEPS):
            ref.start_forward(step)
            want = model(hidden_states=x, timestep=torch.tensor([t] * 2))
            torch.testing.assert_close(eager[step], want, atol=2e-5, rtol=2e-5, msg=f"step {step}")
    monkeypatch.undo()

    compiled = asymrnr_fx.transform(model, plan, compile=True)
    for step, (a, b) in enumerate(zip(_run(compiled, x), eager)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    assert len(compiled.runtime.reports) == 1  # one graph while the kept counts changed at every step
    assert [s.factorized for s in compiled.report.rewritten] == ["spatial", "temporal"]


def test_factorized_sites_left_intact_say_why(model):
    x, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([900.0])
    # a temporal tile of one frame holds no src token: the temporal site is left intact, with the reason
    report = asymrnr_fx.inspect(model, hidden_states=x, timestep=t, plan=Plan.uniform(q=0.5, kv=0.3, stride=(1, 2, 2)))
    assert [(s.factorized, s.rewrite) for s in report.sites] == [("spatial", True), ("temporal", False)]
    assert "one token per tile of the stride" in report.sites[1].reason
    assert "self (temporal)" in str(report)
    # F == H*W with a batch that fits both foldings: which one it is cannot be told from shapes
    torch.manual_seed(0)
    square = FactorizedDiT(channels=4, dim=32, depth=2, heads=2, frames=4, height=4, width=4).eval()
    report = asymrnr_fx.inspect(square, hidden_states=torch.randn(1, 4, 4, 4, 4), timestep=t,
                                plan=Plan.uniform(q=0.5, kv=0.3), grid=(4, 2, 2))
    assert not report.rewritten
    assert all(s.reason.startswith("ambiguous factorized attention") for s in report.sites)
