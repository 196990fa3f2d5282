"""The pure tensor ops against the slow reference, on fresh random inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from asymrnr_fx import ops
from reference import ref_asymrnr_attention, ref_match_one, ref_matching, ref_partition, ref_slots, ref_full_slots

GRIDS = [((4, 6, 6), (2, 2, 2)), ((5, 7, 3), (2, 2, 2)), ((7, 4, 6), (6, 2, 2)), ((3, 5, 4), (1, 2, 2))]


@pytest.mark.parametrize("grid,stride", GRIDS)
def test_partition_matches_reference(grid, stride):
    for seed in range(3):
        choices = ops.draw_tile_choices(grid, stride, seed)
        dst, src = ops.partition(grid, stride, choices)
        rdst, rsrc = ref_partition(grid, stride, choices)
        assert dst.tolist() == rdst and src.tolist() == rsrc
        tiles = math.prod(g // s for g, s in zip(grid, stride))
        assert len(rdst) == tiles and len(rdst) + len(rsrc) == math.prod(grid)


def test_partition_is_reproducible_and_changes_with_seed():
    grid, stride = (4, 8, 8), (2, 2, 2)
    a = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, ops.derive_seed(0, 1, 0, "q", 2)))[0]
    b = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, ops.derive_seed(0, 1, 0, "q", 2)))[0]
    c = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, ops.derive_seed(0, 1, 0, "q", 3)))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_worked_example_counts():
    # docs/method.md, section 3: CogVideoX-2B 13x30x45 = 17,550 tokens, 1,980 dst; r=0.8 keeps 3,509, r=0.3 keeps 12,285
    grid = (13, 30, 45)
    dst, _ = ops.partition(grid, (2, 2, 2), ops.draw_tile_choices(grid, (2, 2, 2), 0))
    assert dst.numel() == 1980
    assert ops.kept_count(17550, 0.8) == 3509 and ops.kept_count(17550, 0.3) == 12285
    assert ops.max_ratio((2, 2, 2)) == 0.875


def _features(dtype, B=2, H=3, N=None, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, N, d, generator=g).to(dtype)


@pytest.mark.parametrize("similarity", ["euclidean", "cosine", "dot"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matching_matches_reference(similarity, dtype):
    grid, stride = (2, 4, 6), (2, 2, 2)
    x = _features(dtype, N=math.prod(grid), seed=hash((similarity, str(dtype))) % 1000)
    assert not torch.equal(x[0], x[1])  # different content per sample
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 5))
    m = ops.match(x, dst, src, similarity)
    for b in range(2):
        for h in range(3):
            nearest, order = ref_match_one(x[b, h], dst.tolist(), src.tolist(), similarity)
            assert m.nearest[b, h].tolist() == nearest
            assert m.order[b, h].tolist() == order


def test_matching_ties_break_like_reference():
    # integer-valued features make exact ties; both sides must pick the first dst and keep src order
    grid, stride = (2, 4, 4), (2, 2, 2)
    x = torch.randint(0, 3, (1, 2, 32, 4)).float()
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 1))
    m = ops.match(x, dst, src, "euclidean")
    for h in range(2):
        nearest, order = ref_match_one(x[0, h], dst.tolist(), src.tolist(), "euclidean")
        assert m.nearest[0, h].tolist() == nearest and m.order[0, h].tolist() == order


@pytest.mark.parametrize("text_len,text_first", [(0, True), (5, True), (4, False)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 0.875])
def test_select_matches_reference(text_len, text_first, ratio):
    grid, stride = (4, 4, 4), (2, 2, 2)
    n = math.prod(grid)
    x = _features(torch.float32, N=n, seed=int(ratio * 10) + text_len)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 3))
    m = ops.match(x, dst, src, "euclidean")
    keep, assign = ops.select(m, n, ratio, text_len, text_first)
    assert keep.shape[-1] == text_len + max(ops.kept_count(n, ratio), dst.numel())
    for b in range(2):
        for h in range(3):
            kept, slots = ref_slots(n, ratio, dst.tolist(), src.tolist(), m.nearest[b, h].tolist(), m.order[b, h].tolist())
            rkeep, rslot = ref_full_slots(kept, slots, n, text_len, text_first)
            assert keep[b, h].tolist() == rkeep and assign[b, h].tolist() == rslot
    if ratio == 0.0:
        full = torch.arange(n + text_len).expand_as(keep)
        assert torch.equal(keep, full) and torch.equal(assign, full)


def _ops_attention(q, k, v, grid, stride, q_ratio, kv_ratio, seeds, text_len, text_first, mask, mode, similarity):
    n = math.prod(grid)
    start = text_len if text_first else 0
    sel = {}
    for feat, x, r, seed in (("q", q, q_ratio, seeds[0]), ("kv", v, kv_ratio, seeds[1])):
        dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, seed))
        m = ops.match(x[:, :, start : start + n], dst, src, similarity)
        sel[feat] = ops.select(m, n, r, text_len, text_first)
    (qk, qa), (kk, ka) = sel["q"], sel["kv"]
    red = ops.gather_tokens if mode == "replace" else None
    qr = red(q, qk) if red else ops.merge_tokens(q, qk, qa)
    kr = red(k, kk) if red else ops.merge_tokens(k, kk, ka)
    vr = red(v, kk) if red else ops.merge_tokens(v, kk, ka)
    mr = ops.reduce_mask(mask, qk, kk) if mask is not None else None
    return ops.restore_tokens(F.scaled_dot_product_attention(qr, kr, vr, attn_mask=mr), qa)


@pytest.mark.parametrize("mode", ["replace", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("similarity", ["euclidean", "cosine", "dot"])
def test_reduced_attention_matches_reference(mode, dtype, similarity):
    grid, stride, text_len = (2, 4, 4), (2, 2, 2), 3
    n = math.prod(grid)
    q, k, v = (_features(dtype, N=n + text_len, seed=s) for s in (11, 12, 13))
    text_first = mode == "replace"
    mask = torch.rand(2, 1, 1, n + text_len) > 0.2 if dtype == torch.float32 else None
    if mask is not None:
        mask[..., 0] = True
    out = _ops_attention(q, k, v, grid, stride, 0.6, 0.4, (7, 8), text_len, text_first, mask, mode, similarity)
    start = text_len if text_first else 0
    qm = ref_matching(q[:, :, start : start + n], grid, stride, 7, similarity)
    km = ref_matching(v[:, :, start : start + n], grid, stride, 8, similarity)
    ref = ref_asymrnr_attention(
        q, k, v, grid=grid, q_ratio=0.6, kv_ratio=0.4, q_match=qm, kv_match=km, text_len=text_len,
        text_first=text_first, mask=mask, mode=mode,
    )
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)
    # the reduction did something: reduced attention differs from full attention
    full = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (out.float() - full.float()).abs().max() > 10 * tol


def test_restoration_copies_dst_output():
    grid, stride = (2, 4, 4), (2, 2, 2)
    n = math.prod(grid)
    x = _features(torch.float32, N=n)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 0))
    m = ops.match(x, dst, src, "euclidean")
    keep, assign = ops.select(m, n, 0.5)
    reduced = torch.randn(2, 3, keep.shape[-1], 5)
    full = ops.restore_tokens(reduced, assign)
    for b in range(2):
        for h in range(3):
            kept = keep[b, h].tolist()
            for i, s in enumerate(src.tolist()):
                p = s if s in kept else int(dst[m.nearest[b, h, i]])
                assert torch.equal(full[b, h, s], reduced[b, h, kept.index(p)])


def test_todo_style_baseline_is_average_pooling():
    """Fixed dst + spatial matching + mean mode at the max ratio = 2x2 average pooling of K/V."""
    grid, stride = (2, 4, 6), (1, 2, 2)
    n = math.prod(grid)
    x = _features(torch.float32, N=n)
    dst, src = ops.partition(grid, stride, torch.zeros(2, 2, 3, dtype=torch.long))
    m = ops.match(x, dst, src, "spatial", grid=grid)
    keep, assign = ops.select(m, n, ops.max_ratio(stride))
    pooled = ops.merge_tokens(x, keep, assign)
    expected = F.avg_pool2d(x.view(2 * 3 * 2, 4, 6, 8).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(2, 3, 2 * 2 * 3, 8)
    torch.testing.assert_close(pooled, expected)


def test_random_matching_is_seeded_and_keeps_counts():
    grid, stride = (2, 4, 4), (2, 2, 2)
    x = _features(torch.float32, N=32)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 0))
    a, b = (ops.match(x, dst, src, "random", seed=4) for _ in range(2))
    c = ops.match(x, dst, src, "random", seed=5)
    assert torch.equal(a.order, b.order) and not torch.equal(a.order, c.order)
    assert ops.select(a, 32, 0.5)[0].shape[-1] == ops.kept_count(32, 0.5)


# The CPU kernel's fast paths (matching.py): [dst, src] scores reduced by a max pool from 16 dst and 16 rows up,
# a rank key cut by topk instead of a sorted order. The tests above use grids with fewer dst; these reach them.
@pytest.mark.parametrize("similarity", ["euclidean", "dot"])
@pytest.mark.parametrize("integer", [False, True])
def test_matching_with_many_dst_matches_reference(similarity, integer):
    grid, stride = (2, 8, 10), (2, 2, 2)  # 20 dst, 140 src
    n = math.prod(grid)
    g = torch.Generator().manual_seed(21)
    x = torch.randint(0, 3, (1, 2, n, 4), generator=g).float() if integer else torch.randn(1, 2, n, 8, generator=g)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 2))
    for chunk in (None, 40):  # one tile; tiles of 40 rows with a short last one (20 rows)
        best, nearest = ops.best_match(x, dst, similarity, chunk=chunk, rows=src)
        m = ops.match(x, dst, src, similarity)
        for h in range(2):
            ref_nearest, ref_order = ref_match_one(x[0, h], dst.tolist(), src.tolist(), similarity)
            assert nearest[0, h].tolist() == ref_nearest
            assert m.nearest[0, h].tolist() == ref_nearest and m.order[0, h].tolist() == ref_order


def test_column_max_is_max_with_first_index():
    g = torch.Generator().manual_seed(0)
    for m in (1, 16, 33, 512):
        s = torch.randint(-2, 3, (3, m, 40), generator=g).float()  # ties everywhere
        s[s == 0] = -0.0
        s[1, :, 5] = float("-inf")
        best, idx = ops.column_max(s)
        ref = s.max(dim=1)
        assert torch.equal(idx, ref.indices) and torch.equal(best, ref.values)
        assert torch.equal(best.signbit(), ref.values.signbit())


def test_best_match_with_nan_takes_the_first_nan_like_max():
    grid, stride = (2, 8, 8), (2, 2, 2)  # 16 dst: the max-pool path
    x = torch.randn(1, 1, 128, 8, generator=torch.Generator().manual_seed(3))
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 0))
    x[0, 0, dst[3]] = x[0, 0, dst[9]] = float("nan")  # two NaN dst: every score against them is NaN
    x[0, 0, src[5], 2] = float("nan")  # a NaN src: all its scores are NaN
    best, nearest = ops.best_match(x, dst, "euclidean", rows=src)
    expected = torch.full_like(nearest, 3)  # max's rule: the first NaN (the pool alone would keep the last)
    expected[..., 5] = 0
    assert best.isnan().all() and torch.equal(nearest, expected)


def test_rank_key_orders_like_a_stable_descending_sort():
    values = [0.5, -0.0, float("nan"), 0.0, float("inf"), 0.5, -1e-30, float("-inf"), -float("nan"), 1e-30, -2.0, 0.5]
    best = torch.tensor([values, values[::-1]])
    key = ops.rank_key(best)
    assert all(row.unique().numel() == row.numel() for row in key)  # distinct within a row
    assert torch.equal(key.argsort(-1), torch.sort(best, dim=-1, descending=True, stable=True).indices)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8, 0.875])
def test_selection_by_rank_equals_selection_by_order(ratio):
    grid, stride = (4, 8, 8), (2, 2, 2)
    n = math.prod(grid)
    x = torch.randint(0, 2, (2, 2, n, 3), generator=torch.Generator().manual_seed(4)).float()  # many tied scores
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 6))
    m = ops.match(x, dst, src, "euclidean")
    by_order = ops.Matching(m.dst, m.src, m.nearest, m.order)
    for text_len, text_first in ((0, True), (7, False)):
        a, b = ops.select(m, n, ratio, text_len, text_first), ops.select(by_order, n, ratio, text_len, text_first)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].is_contiguous()


def _layouts(grid, d=8, text=5, seed=7):
    """The same [B, H, N, d] video features in the layouts a model hands the matchings."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(grid)
    base = torch.randn(2, 3, n, d, generator=g)
    joint = torch.cat([torch.randn(2, 3, text, d, generator=g), base], 2)
    bshd = base.transpose(1, 2).contiguous().transpose(1, 2)  # a head-interleaved projection
    wide = torch.randn(2, 3, n, 2 * d, generator=g)
    wide[..., ::2] = base  # a stride of 2 in the channels: no 2-D row view, copied first
    return base, {"text + video slice": joint[:, :, text:], "heads interleaved": bshd, "strided channels": wide[..., ::2],
                  "expanded batch": base[:1].expand(2, -1, -1, -1), "one head of several": joint[:, 1:2, text:]}


@pytest.mark.parametrize("window", [None, (0, 1, 1)])
def test_matchings_are_the_same_on_every_activation_layout(window):
    grid, stride = (2, 6, 8), (2, 2, 2)
    base, layouts = _layouts(grid)
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 2))
    for name, x in layouts.items():
        ref = ops.match(x.contiguous(), dst, src, "euclidean", grid=grid, stride=stride, window=window)
        got = ops.match(x, dst, src, "euclidean", grid=grid, stride=stride, window=window)
        assert torch.equal(got.nearest, ref.nearest) and torch.equal(got.order, ref.order), name


def test_row_table_reads_every_token_row():
    from asymrnr_fx.scores import row_table, table_rows

    _, layouts = _layouts((2, 4, 4))
    for name, x in layouts.items():
        table, base, step = row_table(x)
        # a view of x's own storage where its strides allow one; strided channels are copied first
        assert (table.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()) == (name != "strided channels"), name
        tokens = torch.tensor([0, 5, 31, 7])
        rows = table.index_select(0, table_rows(base, tokens, step)).view(x.shape[0], x.shape[1], -1, x.shape[3])
        assert torch.equal(rows, x[:, :, tokens]), name


def test_bf16_parts_sum_exactly_to_their_float32():
    from asymrnr_fx.scores import bf16_parts

    g = torch.Generator().manual_seed(3)
    v = torch.randn(20_000, generator=g) * torch.logspace(-20, 20, 20_000)
    parts = bf16_parts(v)
    assert parts.dtype == torch.bfloat16
    assert torch.equal(parts.double().sum(-1), v.double())


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_bf16_scores_match_the_reference_as_float32_scores_do(monkeypatch, similarity):
    """On CUDA, bfloat16 activations are scored by a bfloat16 GEMM with float32 accumulation (tensor cores).
    Here that GEMM is emulated (float64 sums of the same bfloat16 operands, rounded once), so the test checks
    the operands: same nearest dst and ranking as the float64 reference (the cosine path keeps float32)."""
    from asymrnr_fx import scores

    calls = []

    def emulated(a, b):
        calls.append(a.dtype)
        return torch.bmm(a.double(), b.double()).float()

    monkeypatch.setattr(scores, "use_bf16", lambda dtype, device: dtype == torch.bfloat16)
    monkeypatch.setattr(scores, "_gemm_f32", emulated)
    grid, stride = (2, 4, 6), (2, 2, 2)
    x = _features(torch.bfloat16, N=math.prod(grid), d=16, seed=11) * 3
    dst, src = ops.partition(grid, stride, ops.draw_tile_choices(grid, stride, 5))
    m = ops.match(x, dst, src, similarity)
    assert calls == ([torch.bfloat16] if similarity == "euclidean" else [])
    for b in range(2):
        for h in range(3):
            nearest, order = ref_match_one(x[b, h], dst.tolist(), src.tolist(), similarity)
            assert m.nearest[b, h].tolist() == nearest and m.order[b, h].tolist() == order


def test_bf16_scores_fall_back_to_float32_where_the_device_has_no_such_gemm(monkeypatch):
    from asymrnr_fx import AsymRnRWarning, scores

    monkeypatch.setattr(scores, "BF16_SCORES", True)
    rows, dst = torch.randn(2, 5, 8).bfloat16().float(), torch.randn(2, 3, 8).bfloat16().float()
    with pytest.warns(AsymRnRWarning, match="run in float32"):
        assert scores.bf16_scores(rows, dst) is None  # CPU: no bfloat16 GEMM with float32 output
    assert scores.BF16_SCORES is False
