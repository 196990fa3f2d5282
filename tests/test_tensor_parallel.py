"""AsymRnR under diffusers' tensor parallelism, checked against one process.

``enable_parallelism(config=TensorParallelConfig(tp_degree=2))`` shards Q/K/V column-wise and
the output projections row-wise (torch's ``parallelize_module`` on DTensors): each rank runs
ordinary attention over its half of the heads and the whole sequence. AsymRnR's matching is
per head, so the reduced TP model equals the reduced one-process model.

diffusers 0.42.1 ships a ``_tp_plan`` for Flux, Flux2 and QwenImage only (image models: a
1-frame grid, joint text + image attention); the test runs a tiny random-weight Flux on 2 CPU
ranks over gloo (tests/tp_workers.py), with a test-side shim that lets diffusers shard on a
CPU mesh (``tensor_parallel_cpu_shim``). Every collective has a timeout (``launch``).
"""
from __future__ import annotations

import pytest

from asymrnr_fx.testing.cpu_parallel import launch

import tp_workers

WORLD = 2
SITES = ["transformer_blocks.0.attn", "single_transformer_blocks.0.attn"]  # the model's own names: TP hooks wrap Linears only
TOKENS = tp_workers.TEXT + tp_workers.IMAGE[0] * tp_workers.IMAGE[1]


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return launch(tp_workers.flux_tp, WORLD, timeout_s=300)


def test_the_model_is_sharded_and_diffusers_own_tp_run_equals_one_process(two_ranks):
    for rank, result in enumerate(two_ranks):
        assert result["sharded"] and result["world_group"], (rank, result)
        assert max(result["base_vs_one_process"]) < 1e-6, (rank, result["base_vs_one_process"])
        assert result["single_vs_base"][0] == 0.0 and min(result["single_vs_base"][1:]) > 1e-3  # ratio 0, then reduced
        assert result["single_sites"] == [(path, "joint", True, tp_workers.HEADS, TOKENS, tp_workers.TEXT) for path in SITES]
        for variant in ("eager", "inductor"):
            assert result[variant]["rows"] == {path: row for row, path in enumerate(SITES)}, (rank, variant)
        assert result["inductor"]["graphs"] == 1  # one graph while the kept counts changed at every step


@pytest.mark.parametrize("variant", ["eager", "inductor", "transform, enable"])
def test_tensor_parallel_equals_one_process(two_ranks, variant):
    for rank, result in enumerate(two_ranks):
        r = result[variant]
        assert max(r["vs_single"]) < 1e-6, (rank, variant, r)
        assert r["matches"] == [0, 4, 4], (rank, variant, r)  # 2 sites x (Q, K/V), at every reducing step, on every rank
        # each rank's calls hold its half of the heads and the whole joint sequence, under the model's own names
        assert r["sites"] == [(path, "joint", True, tp_workers.HEADS // WORLD, TOKENS, tp_workers.TEXT) for path in SITES], r
