"""Plans: constructors, the paper's tier tables, persistence and validation."""
import pytest
import torch
from safetensors.torch import load_file

from asymrnr_fx import Plan
from asymrnr_fx.plan import PUBLISHED, published_tiers

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "reference" / "official-schedules"


def test_uniform_defaults():
    p = Plan.uniform(q=0.5, kv=0.3)
    assert (p.stride, p.cache_window, p.similarity, p.mode, p.seed) == ((2, 2, 2), 5, "euclidean", "replace", 0)
    assert p.ratio(7, 123, "q") == 0.5 and p.ratio(0, 0, "kv") == 0.3
    assert p.attention_cost() == pytest.approx(0.5 * 0.7)
    assert p.features_used(0) == ("q", "kv")
    assert Plan.uniform(q=0.0, kv=0.2).features_used(3) == ("kv",)


def test_table_lookup_and_bounds():
    q = torch.rand(3, 4) * 0.8
    p = Plan.from_table(q=q, kv=torch.zeros(3, 4))
    assert p.num_sites == 3 and p.num_steps == 4
    assert p.ratio(2, 3, "q") == pytest.approx(float(q[2, 3]))
    with pytest.raises(ValueError, match="covers 4 denoising steps"):
        p.ratio(0, 4, "q")
    with pytest.raises(ValueError, match="3 attention sites"):
        p.ratio(3, 0, "q")


def _independent_ratio(tier, threshold_map):
    best = 0.0
    for threshold, ratio in threshold_map.items():
        if tier >= threshold and ratio > best:
            best = ratio
    return best


@pytest.mark.parametrize("model", [m for m in PUBLISHED if PUBLISHED[m].maps])
def test_published_tables_resolve_to_method_ratios(model):
    # read the shared reference copy, not the packaged one, to check the shipped data too
    tiers = load_file(str(SHARED / PUBLISHED[model].file)) if SHARED.exists() else published_tiers(model)
    packaged = published_tiers(model)
    for k in ("q", "v"):
        assert torch.equal(tiers[k], packaged[k])
    for point, (q_map, v_map) in PUBLISHED[model].maps.items():
        plan = Plan.published(model, point)
        blocks, steps = tiers["q"].shape
        assert (plan.num_sites, plan.num_steps) == (blocks, steps)
        assert plan.stride == PUBLISHED[model].stride and plan.cache_window == PUBLISHED[model].cache_window
        for b in range(0, blocks, 3):
            for s in range(steps):
                assert plan.ratio(b, s, "q") == _independent_ratio(int(tiers["q"][b, s]), q_map)
                assert plan.ratio(b, s, "kv") == _independent_ratio(int(tiers["v"][b, s]), v_map)


def test_cogvideox_statistics_match_the_paper_readme():
    # shared/reference/README.md: Q on in 27% of cells, V in 30%; mean cost 0.76 base, 0.71 fast
    base, fast = Plan.published("cogvideox-2b", "base"), Plan.published("cogvideox-2b", "fast")
    assert float((base.table("q") > 0).double().mean()) == pytest.approx(0.27, abs=0.01)
    assert float((base.table("kv") > 0).double().mean()) == pytest.approx(0.30, abs=0.01)
    assert base.attention_cost() == pytest.approx(0.76, abs=0.01)
    assert fast.attention_cost() == pytest.approx(0.71, abs=0.01)


def test_tier_tables_are_constant_inside_cache_windows():
    for model, sched in PUBLISHED.items():
        q = published_tiers(model)["q"]
        w = sched.cache_window
        for start in range(0, q.shape[1], w):
            assert bool((q[:, start : start + w] == q[:, start : start + 1]).all()), model


def test_save_load_round_trip(tmp_path):
    plan = Plan.published("mochi", "fast", seed=7, grid=(5, 6, 8))
    again = Plan.load(plan.save(tmp_path / "p.safetensors"))
    assert again.options() == plan.options()
    for f in ("q", "kv"):
        assert torch.equal(again.table(f), plan.table(f))
    uni = Plan.load(Plan.uniform(0.4, 0.2, mode="mean").save(tmp_path / "u.safetensors"))
    assert uni.ratio(99, 99, "q") == 0.4 and uni.mode == "mean" and not uni.is_table


def test_loading_a_tier_table_as_a_plan_says_what_to_do():
    with pytest.raises(ValueError, match="from_tiers"):
        from importlib import resources

        with resources.as_file(resources.files("asymrnr_fx") / "data" / "official" / PUBLISHED["mochi"].file) as path:
            Plan.load(path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"q": -0.1}, "negative"),
        ({"q": 0.9}, "largest useful ratio"),
        ({"kv": float("nan")}, "finite"),
        ({"stride": (2, 2)}, "three positive"),
        ({"cache_window": 0}, "cache_window"),
        ({"similarity": "l1"}, "similarity"),
        ({"mode": "avg"}, "mode"),
        ({"text_position": "middle"}, "text_position"),
        ({"grid": (4, 0, 4)}, "grid"),
    ],
)
def test_invalid_plans_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Plan(**{"q": 0.5, "kv": 0.3, **kwargs})


def test_mismatched_tables_and_unknown_models():
    with pytest.raises(ValueError, match="same"):
        Plan.from_table(q=torch.zeros(2, 3), kv=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no published schedule"):
        Plan.published("sora")
    with pytest.raises(ValueError, match="no published threshold map"):
        Plan.published("cogvideox-5b")
    assert Plan.uniform(q=0.9, kv=0.3, stride=(6, 2, 2)).ratio(0, 0, "q") == 0.9
