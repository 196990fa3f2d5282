"""AsymRnR under context parallelism, checked against one process.

* Shard-local AsymRnR (``Plan.shards``) on one process: equal to the independent slow
  reference restricted to each shard, ratio 0 exact, inductor equal to eager in one graph.
* diffusers' context parallelism on 2 CPU ranks over gloo (tests/cp_workers.py): Ulysses equals
  one process (matching is per head, each rank sees every token of its heads); ring equals
  one process with ``Plan(shards=2)``, with every rank matching at every reducing step.
  Every collective has a timeout, and a failing rank is an error here, never a hang.
"""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

import asymrnr_fx
from asymrnr_fx import Plan
from asymrnr_fx.testing import TinyVideoDiT
from asymrnr_fx.testing.cpu_parallel import launch
from reference import RefSite, ReferenceAsymRnR, patched_sdpa

import cp_workers
from asymrnr_fx.passes.ring_exchange import BEFORE, RECEIVED
from asymrnr_fx.passes.ulysses_exchange import BEFORE as ULYSSES_BEFORE

GRID = (2, 4, 4)
STEPS = (900.0, 600.0, 300.0)


def _run(m: torch.nn.Module, x: torch.Tensor, ref: ReferenceAsymRnR | None = None) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for step, t in enumerate(STEPS):
            if ref is not None:
                ref.start_forward(step)
            out.append(m(hidden_states=x, timestep=torch.tensor([t])))
    return out


@pytest.fixture(scope="module")
def dit() -> TinyVideoDiT:
    torch.manual_seed(0)
    return TinyVideoDiT(channels=4, dim=32, depth=2, heads=2, frames=2, height=8, width=8).eval()


@pytest.mark.parametrize("shards", [2, 4])  # 2: one frame per shard; 4: half frames (tiles cut by the boundaries)
def test_shard_local_plan_matches_the_slow_reference(dit, shards):
    plan = dataclasses.replace(cp_workers.plan(), shards=shards)
    x = torch.randn(1, 4, 2, 8, 8)
    fast = asymrnr_fx.transform(dit, plan, grid=GRID)
    eager = _run(fast, x)
    assert [(s.shards, s.shard_local, s.rewrite) for s in fast.report.sites] == [(shards, False, True)] * 2
    plain = _run(dit, x)
    torch.testing.assert_close(eager[0], plain[0], rtol=0, atol=0)  # ratio 0: the model itself, bitwise
    whole = _run(asymrnr_fx.transform(dit, dataclasses.replace(plan, shards=1), grid=GRID), x)
    assert all((e - w).abs().max() > 1e-4 for e, w in zip(eager[1:], whole[1:]))  # shard-local is not the whole-video matching
    ref = ReferenceAsymRnR(plan, [RefSite(GRID)] * 2)
    with patched_sdpa(ref):
        expected = _run(dit, x, ref)
    for step, (a, b) in enumerate(zip(eager, expected)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5, msg=f"step {step}")
    compiled = asymrnr_fx.transform(dit, plan, grid=GRID, compile=True)
    for step, (a, b) in enumerate(zip(_run(compiled, x), eager)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    assert len(compiled.runtime.reports) == 1  # one graph while the kept counts changed at every step


@pytest.mark.parametrize("shards,compile", [(2, True), (4, False)])
def test_shard_local_plan_with_a_window_matches_the_slow_reference(dit, shards, compile):
    """Plan(shards, window): each shard's src see the shard's dst within the window. At window 0 (the own
    tile, which every boundary here cuts) a src whose tile's dst another shard holds searches its shard."""
    plan = dataclasses.replace(cp_workers.plan(), shards=shards, window=(0, 0, 0))
    x = torch.randn(1, 4, 2, 8, 8)
    got = _run(asymrnr_fx.transform(dit, plan, grid=GRID, compile=compile), x)
    ref = ReferenceAsymRnR(plan, [RefSite(GRID)] * 2)
    with patched_sdpa(ref):
        expected = _run(dit, x, ref)
    for step, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"step {step}")
    if not compile:
        torch.testing.assert_close(got[0], _run(dit, x)[0], rtol=0, atol=0)  # ratio 0: the model itself, bitwise
    unwindowed = _run(asymrnr_fx.transform(dit, dataclasses.replace(plan, window=None), grid=GRID), x)
    assert all((g - u).abs().max() > 1e-4 for g, u in zip(got[1:], unwindowed[1:]))  # the window changed the matching


class _Twice(torch.nn.Module):
    """A block run twice per forward, on each half of the batch (as Mochi's per-sample attention loop does)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(hidden_states=hidden_states[:1], timestep=timestep[:1]),
                          self.inner(hidden_states=hidden_states[1:], timestep=timestep[1:])])


@pytest.mark.parametrize("window", [None, (0, 1, 1)])
def test_one_process_shards_match_every_call_of_a_module_on_its_own(dit, window):
    """Plan(shards) on one process: the second call of a module matches its own tokens (before: it reused the
    first call's shard matchings, keyed by the shard alone as a ring rank's calls are). Fixed dst, so that the
    partition does not depend on the call's seed: the second call must equal its input run alone."""
    plan = Plan.uniform(q=0.5, kv=0.3, dst="fixed", shards=2, window=window)
    x, t = torch.randn(2, 4, 2, 8, 8), torch.tensor([900.0, 900.0])
    with torch.no_grad():
        twice = asymrnr_fx.transform(_Twice(dit), plan, grid=GRID)
        both = twice(hidden_states=x, timestep=t)
        alone = asymrnr_fx.transform(dit, plan, grid=GRID)(hidden_states=x[1:], timestep=t[1:])
    torch.testing.assert_close(both[1:], alone, rtol=0, atol=0)
    assert twice.runtime.counts["match"] == 2 * 2 * 2 * 2 and twice.runtime.counts["reuse"] == 0  # calls x blocks x features x shards


def test_every_shard_keeps_the_same_count_at_a_ratio_below_its_dst(dit):
    """At 0.85 a quarter shard (8 tokens) would keep 1, fewer than the 0-2 dst tokens a half-frame shard
    holds: every shard with dst keeps the most any holds (ring ranks exchange equal-sized keys/values)."""
    plan = Plan.uniform(q=0.85, kv=0.85, shards=4)
    x = torch.randn(1, 4, 2, 8, 8)
    ref = ReferenceAsymRnR(plan, [RefSite(GRID)] * 2)
    with patched_sdpa(ref):
        expected = _run(dit, x, ref)
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match=r"4 shards of 8 tokens keep \d+ where the ratio 0.85 asks for 4"):
        got = _run(asymrnr_fx.transform(dit, plan, grid=GRID), x)  # said once per site and feature, not per call
    for step, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5, msg=f"step {step}")


def test_shards_that_do_not_divide_the_video_leave_the_site_intact(dit):
    fast = asymrnr_fx.transform(dit, Plan.uniform(q=0.5, kv=0.3, shards=3), grid=GRID)
    with pytest.warns(asymrnr_fx.AsymRnRWarning, match="shards=3"):
        _run(fast, torch.randn(1, 4, 2, 8, 8))
    assert not any(s.rewrite for s in fast.report.sites)
    assert "does not divide the 32 video tokens" in fast.report.sites[0].reason


# --------------------------------------------------------------------------- 2 CPU ranks, gloo
@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return launch(cp_workers.wan_modes, 2, timeout_s=500)


def test_ulysses_equals_one_process(two_ranks):
    for rank, result in enumerate(two_ranks):
        for variant in ("eager", "inductor"):
            r = result["ulysses", variant]
            assert max(r["vs_single"]) < 1e-6, (rank, variant, r)
            assert r["matches"] == [0, 4, 4]  # 2 blocks x (Q, K/V), at every reducing step
            assert r["sites"] == ["blocks.0.attn1", "blocks.1.attn1"]  # the model's names, not the CP hooks' closures
            assert r["rows"] == {"blocks.0.attn1": 0, "blocks.1.attn1": 1}
        assert result["ulysses", "inductor"]["graphs"] == 1


def test_ulysses_with_the_shard_plan_reduces_before_the_all_to_all(two_ranks):
    """Ulysses with Plan(shards=2): each rank reduces its own shard of every head before the all-to-all,
    which is one process with Plan(shards=2); the exchanges carry the kept tokens only."""
    for rank, result in enumerate(two_ranks):
        for variant in ("eager", "inductor"):
            r = result["ulysses shards", variant]
            assert max(r["vs_shard_local"]) < 1e-6, (rank, variant, r)
            assert r["matches"] == [0, 4, 4] and r["exchange"] == [ULYSSES_BEFORE] * 2, (rank, variant, r)
        assert result["ulysses shards", "inductor"]["graphs"] == 1
        (base, fast), = result["ulysses shards", "eager"]["all_to_all"]
        # per block: q, k, v out and back (4 exchanges); 32 video tokens per shard, floor(32 (1 - r)) kept
        p = cp_workers.plan()
        expected = []
        for step in range(3):
            for block in range(2):
                q, kv = (int(32 * (1 - t[block][step])) / 32 for t in (p.q, p.kv))
                expected += [q, kv, kv, q]
        assert len(base) == len(fast) == 24
        assert [f / b for b, f in zip(base, fast)] == pytest.approx(expected), (base, fast)


def test_ring_equals_one_process_with_shard_local_plan(two_ranks):
    for rank, result in enumerate(two_ranks):
        for variant in ("eager", "inductor"):
            r = result["ring", variant]
            assert max(r["vs_shard_local"]) < 1e-5, (rank, variant, r)
            # per block and step: the rank's queries once (its second ring call reuses them), its own K/V once:
            # the other shard's keys/values arrive reduced
            assert r["matches"] == [0, 4, 4], (rank, variant, r)
            assert r["exchange"] == [BEFORE, RECEIVED] * 2, (rank, variant, r)
            assert r["inspect"].count(f"ring exchange: {BEFORE}") == 2, r["inspect"]  # inspect() says so per site
        eager = result["ring", "eager"]
        assert eager["vs_base"][0] == 0.0 and min(eager["vs_base"][1:]) > 1e-3  # ratio 0 exact, then reduced
        # each block's keys/values are sent reduced: 32 video tokens per shard, floor(32 (1 - kv)) kept of them
        (base, fast), = eager["gathers"]
        kept = [int(32 * (1 - kv)) / 32 for step in zip(*cp_workers.plan().kv) for kv in step]
        pairs = [(f / b) for b, f in zip(base, fast) if b != f]
        assert len(base) == len(fast) and len(pairs) == 4, (base, fast)
        assert pairs == pytest.approx([k for k in kept if k < 1]), (pairs, kept)
        assert eager["rows"] == {"blocks.0.attn1": 0, "blocks.1.attn1": 1}
        assert result["ring", "inductor"]["graphs"] == 1


def test_ring_with_a_window_equals_one_process_with_the_shard_local_window(two_ranks):
    for rank, result in enumerate(two_ranks):
        r = result["ring window"]
        assert max(r["vs_shard_local"]) < 1e-5 and r["matches"] == [0, 4, 4], (rank, r)
        assert min(r["vs_unwindowed"][1:]) > 1e-4, (rank, r)  # the window changed the matching


def test_ring_in_a_per_sample_loop_matches_every_sample_on_its_own(two_ranks):
    """A module that runs ring attention once per sample makes one round of ring calls per sample: each
    round has its own matchings and moves its own exchange, as one process with Plan(shards=2) does."""
    for rank, result in enumerate(two_ranks):
        r = result["ring per sample"]
        assert max(r["vs_shard_local"]) < 1e-5, (rank, r)
        assert r["matches"] == [0, 8, 8], (rank, r)  # 2 blocks x 2 samples x (the rank's queries, its own K/V)
        assert r["occurrences"] == [(0, BEFORE), (1, RECEIVED), (2, BEFORE), (3, RECEIVED)] * 2, (rank, r)


def test_ring_calls_in_no_whole_rounds_leave_the_site_intact():
    """Three ring calls of one module over two ranks: which shard each holds cannot be told, so none is reduced."""
    from asymrnr_fx.passes.select_sites import select_sites
    from asymrnr_fx.report import SiteReport

    reports = [SiteReport(f"sdpa_{i}", "blocks.0.attn1", "Attention", "sdpa", kind="self", grid=(2, 4, 4), shards=2,
                          shard_local=True) for i in range(3)]
    other = SiteReport("sdpa_3", "blocks.1.attn1", "Attention", "sdpa", kind="self", grid=(2, 4, 4), shards=2,
                       shard_local=True)
    chosen = select_sites([*reports, other, dataclasses.replace(other, node="sdpa_4")], Plan.uniform(q=0.5, kv=0.3))
    assert [r.path for r in chosen] == ["blocks.1.attn1"] * 2
    assert all(not r.rewrite and "3 ring attention calls of this module for 2 ranks" in r.reason for r in reports)


def test_unified_ring_and_ulysses_on_four_ranks_equals_the_shard_local_plan():
    """Ring over 2 x Ulysses over 2: each rank holds one ring shard of one head group; the result is
    one process with Plan(shards=2), every rank sending its keys/values reduced."""
    for rank, result in enumerate(launch(cp_workers.unified, 4, timeout_s=300)):
        for variant, r in result.items():
            assert max(r["vs_shard_local"]) < 1e-5, (rank, variant, r)
            assert r["matches"] == [0, 4, 4], (rank, variant, r)  # per block: its queries, its own K/V
            assert r["exchange"] == [BEFORE, RECEIVED] * 2, (rank, variant, r)


def test_a_failing_rank_is_an_error_not_a_hang():
    start = time.monotonic()
    # whichever rank is reported first: the failing one, or its peer whose all_reduce lost the connection
    with pytest.raises(Exception, match="rank 1 failed on purpose|Connection (closed|reset) by peer"):
        launch(cp_workers.failing_rank, 2, timeout_s=120)
    assert time.monotonic() - start < 60


def test_apply_on_a_pipeline_under_ring_either_order(two_ranks):
    for result in two_ranks:
        for order, r in result["pipeline"].items():
            assert r["vs_shard_local"] < 1e-5, (order, r)
            assert r["matches"] > 0


def test_hunyuanvideo_with_the_library_cp_plan_reduces_under_ring(two_ranks):
    for result in two_ranks:
        r = result["hunyuanvideo"]
        assert r["base"] < 1e-6  # the cp_plan is right: diffusers' own ring run equals one process
        assert r["vs_shard_local"] < 1e-5, r
        assert [kind for _, kind, rewrite in r["sites"] if rewrite] == ["joint"] * 4  # 2 blocks x 2 ring calls
        # its prompt mask is split with the keys: each rank reduces what it receives, with the mask columns
        assert r["exchange"] == ["after the all-gather: the call has a mask, which each shard's keys would need "
                                 "reduced by another rank"] * 4, r["exchange"]
        # Ulysses interleaves the ranks' [video, prompt] pieces: left intact, saying why, and unchanged
        joint = [reason for rewrite, reason in r["ulysses"] if "Ulysses" in reason]
        assert len(joint) == 2 and not any(rewrite for rewrite, _ in r["ulysses"])
        assert r["ulysses_vs_base"] < 1e-6


def test_regional_compilation_under_context_parallelism(two_ranks):
    """compile="regional" under diffusers' CP hooks (before: refused, block 0 carries the CP input hook)."""
    for rank, result in enumerate(two_ranks):
        ulysses, ring = result["ulysses", "regional"], result["ring", "regional"]
        assert max(ulysses["vs_reference"]) < 1e-6 and ulysses["matches"] == [0, 4, 4], (rank, ulysses)
        assert max(ring["vs_reference"]) < 1e-5 and ring["matches"] == [0, 4, 4], (rank, ring)


def test_first_block_cache_under_context_parallelism_equals_one_process(two_ranks):
    """FirstBlockCache (before enable_parallelism, as diffusers requires) with a threshold that skips block 1
    after step 0: every rank takes the one-process decision, and block 0 is reduced at every step."""
    for rank, result in enumerate(two_ranks):
        for mode, per_step in (("ulysses", [0, 2, 2]), ("ring", [0, 2, 2])):  # ring: Q once, the rank's own K/V once
            r = result[mode, "fbc"]
            assert max(r["vs_one_process"]) < 1e-5, (rank, mode, r)
            assert r["by_block"] == [[], ["blocks.0.attn1"], ["blocks.0.attn1"]], (rank, mode, r)  # block 1 skipped
            assert r["matches"] == per_step and not r["warnings"], (rank, mode, r)
