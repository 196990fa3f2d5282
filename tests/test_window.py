"""Plan.window: matching restricted to the dst of nearby tiles, against the independent slow reference."""
import dataclasses
import math

import pytest
import torch

import asymrnr_fx
from asymrnr_fx import matching_window as mw, ops
from asymrnr_fx.errors import PlanError
from asymrnr_fx.plan import Plan
from reference import ref_match_one, ref_similarity

CASES = [  # grid, stride, window: tiles that divide the grid or leave borders, windows of 0 to past the grid
    ((2, 4, 6), (2, 2, 2), (1, 1, 1)),
    ((3, 10, 13), (1, 2, 2), (0, 2, 2)),
    ((5, 9, 17), (2, 2, 2), (0, 1, 2)),
    ((4, 16, 16), (2, 2, 2), (0, 2, 2)),
    ((1, 20, 9), (1, 2, 2), (0, 3, 1)),
    ((7, 12, 20), (2, 3, 3), (1, 0, 1)),
    ((4, 16, 16), (1, 2, 2), (0, 0, 0)),
    ((3, 4, 4), (1, 2, 2), (5, 9, 9)),
]


def _assert_like_reference(m, x, dst, src, similarity, window, grid, stride, offset=0):
    """Nearest dst equal to the reference's; the ranking equal to it except where two float32 scores tie
    while their float64 values differ (then either order is right)."""
    for b in range(x.shape[0]):
        for h in range(x.shape[1]):
            nearest, order = ref_match_one(x[b, h], dst, src, similarity, window, grid, stride, offset)
            assert m.nearest[b, h].tolist() == nearest
            score = [ref_similarity(x[b, h, src[i]], x[b, h, dst[nearest[i]]], similarity) for i in m.order[b, h].tolist()]
            assert all(score[i] >= score[i + 1] - 1e-5 * max(1.0, abs(score[i])) for i in range(len(score) - 1))
            assert sorted(m.order[b, h].tolist()) == sorted(order)


@pytest.mark.parametrize("grid,stride,window", CASES)
@pytest.mark.parametrize("similarity", ["euclidean", "cosine", "dot"])
def test_windowed_matching_matches_reference(grid, stride, window, similarity):
    g = torch.Generator().manual_seed(hash((grid, similarity)) % 1000)
    x = torch.randn(2, 2, math.prod(grid), 8, generator=g)
    stride = ops.site_stride(grid, stride)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 3))
    m = ops.match(x, dst, src, similarity, grid=grid, stride=stride, window=window)
    _assert_like_reference(m, x, dst.tolist(), src.tolist(), similarity, window, grid, stride)


SHARD_CASES = [  # grid, stride, window, shards: boundaries inside frames, rows and tiles, and on them
    ((4, 12, 10), (2, 2, 2), (0, 0, 0), 3),
    ((4, 12, 10), (2, 2, 2), (0, 1, 1), 5),
    ((3, 10, 13), (1, 2, 2), (0, 1, 0), 2),
    ((5, 8, 9), (2, 2, 2), (1, 0, 1), 5),
    ((2, 8, 8), (2, 2, 2), (0, 0, 0), 2),
]


@pytest.mark.parametrize("grid,stride,window,shards", SHARD_CASES)
def test_windowed_matching_of_a_shard_matches_reference(grid, stride, window, shards):
    """Each shard (Plan.shards, a ring rank) sees its own dst within the window; a src with none there
    searches the whole shard (at window 0 every src of a tile whose dst another shard holds)."""
    x = torch.randn(2, 2, math.prod(grid), 8, generator=torch.Generator().manual_seed(sum(grid)))
    stride = ops.site_stride(grid, stride)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 5))
    size, strays = math.prod(grid) // shards, 0
    for lo in range(0, math.prod(grid), size):
        d, r = ops.shard_partition(dst, src, lo, lo + size)
        if d.numel() == 0:  # kept whole, never matched (as the runtime does)
            continue
        piece = x[:, :, lo:lo + size]
        best, _ = mw.window_match(piece, d, r, "euclidean", grid, stride, window, lo)
        strays += int(best.isneginf().any(0).any(0).sum())
        m = ops.match(piece, d, r, "euclidean", grid=grid, stride=stride, window=window, offset=lo)
        _assert_like_reference(m, piece, d.tolist(), r.tolist(), "euclidean", window, grid, stride, lo)
    assert strays > 0 or window != (0, 0, 0)


def test_windowed_ties_break_like_reference():
    # integer-valued features make exact ties: the first dst in tile order wins, src keep their order
    grid, stride, window = (2, 8, 8), (1, 2, 2), (1, 1, 1)
    x = torch.randint(0, 3, (1, 2, math.prod(grid), 4)).float()
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 1))
    m = ops.match(x, dst, src, "euclidean", grid=grid, stride=stride, window=window)
    for h in range(2):
        nearest, order = ref_match_one(x[0, h], dst.tolist(), src.tolist(), "euclidean", window, grid, stride)
        assert m.nearest[0, h].tolist() == nearest and m.order[0, h].tolist() == order


def test_window_over_the_whole_grid_is_the_global_matching():
    grid, stride = (4, 8, 12), (2, 2, 2)
    x = torch.randn(1, 3, math.prod(grid), 16, generator=torch.Generator().manual_seed(0))
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 2))
    full = ops.match(x, dst, src, "euclidean")
    for window in [(9, 9, 9), (1 << 20,) * 3]:  # the largest a plan accepts: the layout is clamped to the tile grid
        windowed = ops.match(x, dst, src, "euclidean", grid=grid, stride=stride, window=window)
        assert torch.equal(full.nearest, windowed.nearest)
        assert torch.equal(full.order, windowed.order)


def test_a_narrow_window_scores_fewer_pairs_and_changes_the_matching():
    from asymrnr_fx.matching_window import _layout

    grid, stride = (4, 32, 32), (2, 2, 2)
    layout = _layout(grid, stride, (0, 1, 1), "cpu")
    scored = layout.cells.numel() * layout.cand.shape[1]
    assert scored * 4 < (4 * 32 * 32) * (4 * 32 * 32 // 8)  # < 1/4 of the global GEMM, dst rows included
    x = torch.randn(1, 2, math.prod(grid), 8, generator=torch.Generator().manual_seed(1))
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 0))
    near = ops.match(x, dst, src, "euclidean", grid=grid, stride=stride, window=(0, 1, 1)).nearest
    assert not torch.equal(near, ops.match(x, dst, src, "euclidean").nearest)


def test_window_plan_checks():
    assert Plan.uniform(window=[0, 2, 2]).window == (0, 2, 2)
    assert "window=(0, 2, 2)" in repr(Plan.uniform(window=(0, 2, 2)))
    for bad, kind in [((0, -1, 2), PlanError), ((1, 2), PlanError), ("0,2,2", TypeError), ((0, 2.0, 2), TypeError)]:
        with pytest.raises(kind, match="Plan.window"):
            Plan.uniform(window=bad)
    assert Plan.uniform(window=(0, 2, 2), shards=2).shards == 2  # a shard's src see its own dst (test below)
    with pytest.raises(PlanError, match="random"):
        Plan.uniform(window=(0, 2, 2), similarity="random")


def test_window_survives_a_plan_file(tmp_path):
    plan = Plan.uniform(q=0.5, kv=0.3, window=(1, 2, 3))
    assert Plan.load(plan.save(tmp_path / "p.safetensors")).window == (1, 2, 3)


@pytest.mark.parametrize("compile", [False, True])
def test_transformed_model_with_a_window_matches_reference(compile):
    from test_transform import changing_plan, reference_run, sample
    from tiny_dit import TinyVideoDiT

    torch.manual_seed(0)
    model = TinyVideoDiT(dim=32, heads=2, depth=2, frames=4, height=12, width=12).eval()  # grid (4, 6, 6): 2 x 3 x 3 tiles
    latents = torch.randn(2, 4, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    plan = dataclasses.replace(changing_plan(window=3), window=(0, 1, 1))
    fast = asymrnr_fx.transform(model, plan, compile=compile)
    with torch.no_grad():
        out, _ = sample(fast, latents)
    ref_out, _, _ = reference_run(model, plan, latents)
    torch.testing.assert_close(out, ref_out, atol=5e-5, rtol=5e-5)
    global_out, _, _ = reference_run(model, changing_plan(window=3), latents)
    assert (ref_out - global_out).abs().max() > 1e-4  # the window changed which tokens merged


def test_windowed_matching_with_nan_activations_stays_in_range():
    # NaN activations make their scores NaN, padding candidates' included: every pick must still be a dst slot
    grid, stride, window = (2, 20, 20), (2, 4, 4), (0, 1, 1)  # 5 x 5 tiles: blocks with padding candidates
    x = torch.randn(1, 2, math.prod(grid), 8, generator=torch.Generator().manual_seed(5))
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 0))
    layout = mw._layout(grid, stride, window, "cpu")
    assert layout.cand.max() == dst.numel()  # padding exists
    x[0, 0, dst[layout.tile_of_cell[dst] == 0]] = float("nan")  # tile 0's dst: the row padding candidates read
    x[0, 1, src[3]] = float("nan")  # a NaN src: all its scores are NaN
    m = ops.match(x, dst, src, "euclidean", grid=grid, stride=stride, window=window)
    assert ((m.nearest >= 0) & (m.nearest < dst.numel())).all()
    clean = ops.match(torch.nan_to_num(x, nan=0.5), dst, src, "euclidean", grid=grid, stride=stride, window=window)
    others = torch.arange(src.numel()) != 3  # a src's NaN changes its own scores only
    assert torch.equal(m.nearest[0, 1, others], clean.nearest[0, 1, others])
