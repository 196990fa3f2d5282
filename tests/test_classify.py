"""Attention classification: masks, an explicit grid as long as the prompt, the aten overload packet.

Most cases run the analysis passes on a graph captured by Dynamo (fake example values, as
in real use) or built by ``torch.fx.symbolic_trace`` with real example values; a few go
end to end through :func:`asymrnr_fx.transform` to show a refused site runs untouched.
"""
import warnings

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.passes import classify_attention, find_attention, infer_grids
from tiny_diffusers import capture

L = 8  # video tokens: grid (2, 2, 2)
GRID = (2, 2, 2)


def classify(gm, grid=GRID, text_position="auto"):
    reports, _ = classify_attention(find_attention(gm), infer_grids(gm, explicit=grid), text_position)
    return reports


X = torch.randn(2, 2, L, 4, generator=torch.Generator().manual_seed(0))
KEEP = torch.tensor([[True] * L, [True] * 5 + [False] * 3])  # second sample: 3 padded keys


def sdpa(x, mask):
    return F.scaled_dot_product_attention(x, x, x, attn_mask=mask)


def _additive(keep):
    return torch.zeros(2, 1, L, L).masked_fill(~keep[:, None, None, :], float("-inf"))


def _filled_in_place(keep):
    """A frame-causal mask written into a constant one by slice assignment (its producer is a constant)."""
    mask = torch.full((L, L), float("-inf"))
    for f in range(2):
        mask[f * 4:(f + 1) * 4, : (f + 1) * 4] = 0.0
    return mask


def _masked_in_place(keep):
    mask = torch.zeros(L, L)
    mask.masked_fill_(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    return mask


def _padding_in_place(keep):
    mask = torch.zeros(2, 1, 1, L)
    mask[1, ..., 5:] = float("-inf")  # written in place, but one row for every query: still key padding
    return mask


# (mask builder from the key-keep flags, whether the site is still a rewrite candidate)
MASKS = {
    "frame-causal, filled in place": (_filled_in_place, False),
    "causal, masked_fill_ in place": (_masked_in_place, False),
    "key padding written in place": (_padding_in_place, True),
    "key padding [B,1,1,L]": (lambda keep: keep[:, None, None, :], True),
    "key padding [B,H,1,L]": (lambda keep: keep[:, None, None, :].expand(2, 2, 1, L), True),
    "repeated rows [B,1,L,L]": (lambda keep: keep.view(2, 1, 1, L).repeat(1, 1, L, 1), True),
    "expanded rows [B,H,L,L]": (lambda keep: ~(~keep[:, None, None, :]).expand(2, 2, L, L), True),
    "additive key padding": (_additive, True),
    "all true": (lambda keep: torch.ones(2, 1, L, L, dtype=torch.bool), True),
    "causal": (lambda keep: torch.ones(L, L, dtype=torch.bool).tril(), False),
    "diagonal only": (lambda keep: torch.eye(L, dtype=torch.bool), False),
    "per-query bias": (lambda keep: torch.arange(L * L, dtype=torch.float32).view(1, 1, L, L) / 100, False),
}


@pytest.mark.parametrize("case", list(MASKS))
def test_only_masks_that_are_the_same_for_every_query_are_reduced(case):
    build, reducible = MASKS[case]
    gm = capture(lambda x, keep: sdpa(x, build(keep)), X, KEEP)
    (rep,) = classify(gm)
    assert rep.kind == "self"  # the class is still reported
    if reducible:
        assert rep.reason == ""
    else:
        assert rep.reason.startswith("mask varies per query: "), rep.reason


def test_a_mask_given_as_input_cannot_be_checked_and_is_left_alone():
    bias = torch.randn(1, 1, L, L)
    (rep,) = classify(capture(sdpa, X, bias))
    assert rep.reason.startswith("mask varies per query: ") and "[1, 1, 8, 8]" in rep.reason
    (rep,) = classify(capture(sdpa, X, KEEP[:, None, None, :]))  # a key-padding input is fine
    assert rep.reason == ""


def _traced_with_real_values(mask):
    """A symbolic_trace graph whose nodes carry real example values (``meta["val"]``)."""

    class M(nn.Module):
        def forward(self, x, mask):
            return F.scaled_dot_product_attention(x, x, x, attn_mask=mask)

    gm = fx.symbolic_trace(M())

    class Record(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            n.meta["val"] = out
            return out

    Record(gm).run(X, mask)
    return gm


def test_real_example_values_are_checked_row_by_row():
    same_rows = KEEP.view(2, 1, 1, L).repeat(1, 1, L, 1)
    (rep,) = classify(_traced_with_real_values(same_rows))
    assert rep.kind == "self" and rep.reason == ""
    diagonal = torch.eye(L, dtype=torch.bool).expand(2, 1, L, L)
    (rep,) = classify(_traced_with_real_values(diagonal))
    assert rep.reason.startswith("mask varies per query: row 1 of the [2, 1, 8, 8] mask differs from row 0")


class Masked(nn.Module):
    """Attention over a (2, 2, 2)-token video with a causal or a key-padding mask."""

    def __init__(self, causal):
        super().__init__()
        self.causal = causal
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states, timestep):
        x = self.proj(hidden_states.flatten(2).transpose(1, 2)).unflatten(-1, (2, 2)).transpose(1, 2)  # [B, 2, 8, 2]
        if self.causal:
            mask = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        else:
            mask = torch.ones(x.shape[0], 1, 1, L, dtype=torch.bool, device=x.device)
        return F.scaled_dot_product_attention(x, x, x, attn_mask=mask)


def test_a_causal_site_runs_untouched_and_says_why():
    torch.manual_seed(0)
    latents, t = torch.randn(1, 4, 2, 2, 2), torch.tensor([500.0])
    model = Masked(causal=True).eval()
    fast = asymrnr_fx.transform(model, Plan.uniform(0.5, 0.3), grid=GRID)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", asymrnr_fx.AsymRnRWarning)
        out = fast(latents, t)
    (site,) = fast.report.sites
    assert not site.rewrite and site.reason.startswith("mask varies per query: ")
    assert torch.equal(out, model(latents, t))
    padded = asymrnr_fx.transform(Masked(causal=False).eval(), Plan.uniform(0.5, 0.3), grid=GRID)
    with torch.no_grad():
        padded(latents, t)
    assert padded.report.sites[0].rewrite


# ---------------------------------------------------------------------------- grid vs prompt
class Joint(nn.Module):
    """CogVideoX-like joint attention: 8 prompt tokens first, then a (4, 4, 4)-token video."""

    def __init__(self):
        super().__init__()
        self.text = nn.Linear(6, 8)
        self.video = nn.Linear(4, 8)

    def forward(self, hidden_states, encoder_hidden_states, timestep):
        video = self.video(hidden_states.flatten(2).transpose(1, 2))  # [B, 64, 8]
        seq = torch.cat([self.text(encoder_hidden_states), video], dim=1)  # [B, 72, 8]
        q = seq.unflatten(-1, (2, 4)).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q)


JOINT_ARGS = (torch.randn(1, 4, 4, 4, 4), torch.randn(1, 8, 6), torch.tensor([500.0]))


def test_an_explicit_grid_as_long_as_the_prompt_is_an_error_naming_both_lengths():
    gm = capture(Joint(), *JOINT_ARGS)
    with pytest.raises(ValueError, match=r"gives 8 video tokens, the length of the prompt \(encoder_hidden_states: 8 tokens\).*64"):
        classify(gm, grid=(2, 2, 2))
    with pytest.raises(ValueError, match="length of the prompt"):  # an explicit text side does not hide it
        classify(gm, grid=(2, 2, 2), text_position="first")
    (rep,) = classify(gm, grid=(4, 4, 4))
    assert (rep.kind, rep.text_len, rep.text_position, rep.reason) == ("joint", 8, "first", "")


def test_cogvideox_with_a_grid_of_prompt_length_fails_through_transform():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=1,
        text_embed_dim=16, time_embed_dim=8, sample_frames=13, sample_height=8, sample_width=8, patch_size=2,
        max_text_seq_length=8,
    ).eval()
    inputs = {"hidden_states": torch.randn(1, 4, 4, 8, 8), "encoder_hidden_states": torch.randn(1, 8, 16),
              "timestep": torch.tensor([500]), "return_dict": False}
    fast = asymrnr_fx.transform(model, Plan.uniform(0.5, 0.3), grid=(2, 2, 2))
    with torch.no_grad(), pytest.raises(Exception, match=r"8 video tokens, the length of the prompt.*8 tokens"):
        fast(**inputs)


# ---------------------------------------------------------------------------- aten overload packet
class Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states, timestep):
        q = self.proj(hidden_states.flatten(2).transpose(1, 2)).unflatten(-1, (2, 2)).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q) * timestep.view(-1, 1, 1, 1) / 1000


def test_the_aten_overload_packet_is_attention_like_its_overload():
    torch.manual_seed(0)
    model, latents, t = Video().eval(), torch.randn(1, 4, 2, 4, 4), torch.tensor([999.0])
    outs = {}
    for target in ("default", "packet"):
        gm = torch.export.export(model, (latents, t)).module()
        nodes = [n for n in gm.graph.nodes if n.target is torch.ops.aten.scaled_dot_product_attention.default]
        assert len(nodes) == 1
        if target == "packet":
            nodes[0].target = torch.ops.aten.scaled_dot_product_attention
            gm.recompile()
        (call,) = find_attention(gm)
        assert call.form == "aten"
        fast = asymrnr_fx.transform_graph(gm, Plan.uniform(0.5, 0.3))
        (site,) = asymrnr_fx.runtime_of(fast).reports[0].sites
        assert site.rewrite and site.kind == "self" and site.reason == "", site.reason
        with torch.no_grad():
            outs[target] = fast(latents, t)
    torch.testing.assert_close(outs["packet"], outs["default"])
    with torch.no_grad():
        assert not torch.allclose(outs["packet"], model(latents, t))  # it did reduce
