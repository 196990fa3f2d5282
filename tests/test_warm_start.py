"""Warm starts: a rewritten model is served from inductor's caches like a plain one.

A server restart compiles the same model and plan again. Plain inductor then hits both the
AOTAutograd cache and the FX graph cache and skips tracing and lowering; the rewritten graph
used to bypass AOTAutograd's cache (it calls our graph functions, which that cache does not
know), so every restart re-traced and re-lowered the whole model (6 blocks: 7.4 s against
4.4 s). These tests read inductor's own cache counters, so they do not depend on timing.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from tiny_diffusers import tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
PLAN = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3)


def _compile_once(seed: int) -> tuple[torch.Tensor, dict[str, int]]:
    """Build, transform and inductor-compile a fresh tiny CogVideoX; return its output and the cache counters."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(seed)
    model = asymrnr_fx.transform(tiny_transformer("cogvideox"), PLAN, compile=True)
    with torch.no_grad():
        out = model(**transformer_inputs("cogvideox"))[0]
    assert model.runtime.counts["match"] > 0, "the compiled model did not reduce"
    return out, {**counters["aot_autograd"], **counters["inductor"]}


def _assert_same(warm: torch.Tensor, cold: torch.Tensor) -> None:
    """The same output up to the last bits. Why not bitwise: MKL's GEMMs may round differently with the
    alignment of their operands, which differs between two builds of the model in one process (the full
    suite once saw 3.6e-7 on half the elements); a different matching or plan moves outputs by 1e-3 and more."""
    torch.testing.assert_close(warm, cold, rtol=1e-5, atol=1e-6)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cold"))
    with torch._inductor.config.patch(fx_graph_cache=True), torch._functorch.config.patch(enable_autograd_cache=True):
        yield tmp_path


def test_second_compile_hits_aot_and_fx_caches(cache_dir):
    cold_out, cold = _compile_once(0)
    assert cold.get("autograd_cache_bypass", 0) == 0, f"AOTAutograd bypassed the rewritten graph: {cold}"
    assert cold.get("autograd_cache_saved", 0) >= 1
    warm_out, warm = _compile_once(0)
    assert warm.get("autograd_cache_hit", 0) >= 1 and warm.get("autograd_cache_miss", 0) == 0, warm
    assert warm.get("fxgraph_cache_miss", 0) == 0, warm
    _assert_same(warm_out, cold_out)


def test_mega_cache_artifacts_round_trip(cache_dir, monkeypatch):
    """``torch.compiler.save_cache_artifacts`` after a cold compile, ``load_cache_artifacts`` into an
    empty cache directory (another machine), and the compile there is served from them."""
    cold_out, _ = _compile_once(1)
    saved = torch.compiler.save_cache_artifacts()
    assert saved is not None, "no cache artifacts were recorded"
    artifacts, _info = saved
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache_dir / "other_machine"))
    torch.compiler.load_cache_artifacts(artifacts)
    warm_out, warm = _compile_once(1)
    assert warm.get("autograd_cache_hit", 0) >= 1 and warm.get("autograd_cache_miss", 0) == 0, warm
    _assert_same(warm_out, cold_out)
