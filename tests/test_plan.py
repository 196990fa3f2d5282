"""Plans: constructors, the paper's tier tables, persistence and validation."""
import dataclasses
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from asymrnr_fx import Plan
from asymrnr_fx.plan import (
    CALIBRATION_OPTIONS,
    CAPTURE_OPTIONS,
    FEATURES,
    MAX_NAME_CHARS,
    OPTIONS,
    PUBLISHED,
    SCHEDULE_FIELDS,
    PlanError,
    PlanTypeError,
    coerce_plan,
    published_tiers,
)
from asymrnr_fx.plan_fields import MAX_EXTENT, describe

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


# ---------------------------------------------------------------------------- every field checked, by name
BAD_FIELDS = [
    ("stride", (2.7, 2, 2), "element 0 is float 2.7"),  # used to become (2, 2, 2)
    ("stride", (2, 2, 2, 2), "three positive"),
    ("stride", "222", "three positive"),
    ("cache_window", 2.5, "whole number"),  # used to be accepted and crash later
    ("cache_window", True, "whole number"),
    ("seed", -1, r"\[0, 2\*\*63\)"),
    ("seed", 1.5, "integer"),
    ("cross_attention", "false", "True or False"),  # used to count as True
    ("symmetric", 1, "True or False"),
    ("similarity", None, "one of"),
    ("mode", "avg", "unknown mode"),
    ("dst", "origin", "unknown dst"),
    ("text_position", 1, "one of"),
    ("grid", (2, 2), "three positive"),
    ("grid", (2, 2.0, 2), "element 1"),
    ("q", "abc", "ratio"),  # used to be a bare torch error
    ("q", True, "ratio"),
    ("q", torch.zeros(0, 3), "empty"),
    ("kv", [], "empty"),
    ("kv", [[0.1], [0.2, 0.3]], "ratio"),
    ("q", torch.zeros(3), r"shape \(3,\)"),
    ("q", torch.zeros(2, 2, dtype=torch.bool), "bool"),
    ("kv", object(), "ratio"),
    ("name", "x" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS}"),
    ("name", 7, "string"),
    # huge integers used to escape as bare ValueError / OverflowError, or be accepted and overflow later
    ("seed", 10**5000, r"\[0, 2\*\*63\).*16610-bit integer"),  # past Python's int/str digit limit
    ("seed", [10**5000], "integer too long to print"),
    ("cache_window", 2**63, r"\[1, 2\*\*63\)"),
    ("stride", (MAX_EXTENT + 1, 2, 2), f"at most {MAX_EXTENT}"),
    ("stride", (10**400, 2, 2), f"at most {MAX_EXTENT}"),  # used to be a bare OverflowError
    ("grid", (2, 2, 10**30), f"at most {MAX_EXTENT}"),
    ("q", 10**400, "finite"),  # used to be a bare OverflowError
    ("name", "\ud800", "not valid Unicode"),  # a lone surrogate cannot be written out as UTF-8
]


@pytest.mark.parametrize("field,value,match", BAD_FIELDS, ids=[f"{f}={describe(v)[:20]!r}" for f, v, _ in BAD_FIELDS])
def test_every_field_is_checked_and_the_error_names_it(field, value, match):
    with pytest.raises(PlanError, match=match) as err:
        Plan(**{"q": 0.5, "kv": 0.3, field: value})
    assert err.value.field == field and str(err.value).startswith(f"Plan.{field}: ")
    assert isinstance(err.value, ValueError)  # type mistakes are PlanTypeError: a TypeError and a ValueError


def test_type_mistakes_are_type_errors_and_values_are_canonical():
    with pytest.raises(TypeError):
        Plan(cache_window=2.5)
    with pytest.raises(PlanTypeError):
        Plan(cross_attention="false")
    with pytest.raises(PlanError) as err:  # a value out of range is not a TypeError
        Plan(cache_window=0)
    assert not isinstance(err.value, TypeError)
    import numpy as np

    p = Plan(q=np.float32(0.5), kv=0, stride=[2, np.int64(2), 2], grid=torch.Size([2, 4, 4]), seed=np.int64(3))
    assert (p.q, p.kv, p.stride, p.grid, p.seed) == (0.5, 0.0, (2, 2, 2), (2, 4, 4), 3)
    assert type(p.seed) is int and all(type(s) is int for s in p.stride)


def test_plans_are_frozen_and_replace_validates_again():
    plan = Plan.uniform(0.5, 0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.q = 0  # used to be ignored by the sites but saved
    faster = dataclasses.replace(plan, q=0.6)
    assert faster.ratio(0, 0, "q") == 0.6 and plan.ratio(0, 0, "q") == 0.5
    with pytest.raises(PlanError, match="largest useful ratio") as err:
        dataclasses.replace(plan, q=0.9)
    assert err.value.field == "q"
    with pytest.raises(PlanError) as err:
        dataclasses.replace(plan, cache_window=2.5)
    assert err.value.field == "cache_window"
    assert dataclasses.replace(plan, stride=(6, 2, 2), q=0.9).ratio(0, 0, "q") == 0.9


def test_tables_are_copied_in_and_out():
    q = torch.full((2, 3), 0.5)
    plan = Plan.from_table(q, torch.zeros(2, 3))
    q[0, 0] = 0.8  # the caller's tensor is not the plan's
    plan.table("q")[0, 1] = 0.8  # neither is a table it hands out
    assert plan.ratio(0, 0, "q") == 0.5 and plan.ratio(0, 1, "q") == 0.5
    assert isinstance(plan.q, tuple) and plan.q[0] == (0.5, 0.5, 0.5)  # the field itself is immutable
    assert torch.equal(dataclasses.replace(plan, seed=1).table("q"), plan.table("q"))


def test_cross_field_errors_name_a_field():
    with pytest.raises(PlanError, match="same") as err:
        Plan.from_table(q=torch.zeros(2, 3), kv=torch.zeros(3, 3))
    assert err.value.field == "kv"
    with pytest.raises(PlanError, match="symmetric") as err:
        Plan(q=0.5, kv=0.3, symmetric=True)
    assert err.value.field == "kv"


# ---------------------------------------------------------------------------- one declared list of options
def test_options_are_declared_once_and_grouped():
    plan = Plan()
    assert tuple(plan.options()) == OPTIONS and "q" not in OPTIONS and "kv" not in OPTIONS
    assert set(CAPTURE_OPTIONS) == {"stride", "similarity", "mode", "dst", "text_position", "cross_attention", "symmetric", "grid", "shards"}
    assert SCHEDULE_FIELDS == ("q", "kv", "cache_window", "seed", "window")
    assert set(OPTIONS) == set(CAPTURE_OPTIONS) | set(SCHEDULE_FIELDS[2:]) | {"name"}
    assert set(CALIBRATION_OPTIONS) == {"stride", "cache_window", "similarity", "seed", "grid", "text_position", "dst",
                                        "window"}
    assert tuple(plan.options("capture")) == CAPTURE_OPTIONS
    assert tuple(plan.options(calibrated=True)) == CALIBRATION_OPTIONS
    assert tuple(plan.options("schedule")) == ("cache_window", "seed", "window")
    other = dataclasses.replace(plan, seed=4, mode="mean")
    assert plan.differing_options(other) == {"mode": ("replace", "mean"), "seed": (0, 4)}
    assert plan.differing_options(other, "capture") == {"mode": ("replace", "mean")}
    for name in FEATURES + OPTIONS:  # every argument documented, tomesd style
        assert f" - {name}" in Plan.__doc__, name
    assert not hasattr(Plan, "for_budget") and not hasattr(Plan, "for_speedup")  # see asymrnr_fx.calibration.budget


def test_every_option_survives_save_and_load(tmp_path):
    plan = Plan.uniform(
        0.4, 0.0, stride=(3, 2, 2), cache_window=2, similarity="cosine", mode="mean", seed=9, grid=(4, 6, 6),
        text_position="last", cross_attention=True, dst="fixed", symmetric=True, name="all options",
    )
    again = Plan.load(plan.save(tmp_path / "p.safetensors"))
    assert again.options() == plan.options() and not again.differing_options(plan)
    assert {k: getattr(again, k) for k in OPTIONS} == {k: getattr(plan, k) for k in OPTIONS}


def test_dicts_with_unknown_fields_name_them():
    with pytest.raises(PlanError, match="not a plan field") as err:
        coerce_plan({"q": 0.5, "strides": (2, 2, 2)})
    assert err.value.field == "strides"
    assert coerce_plan({"q": 0.5, "stride": [2, 2, 2]}).stride == (2, 2, 2)


# ---------------------------------------------------------------------------- plan files are checked like constructors
def _write(path, options, q=torch.tensor(0.5, dtype=torch.float64), kv=torch.tensor(0.3, dtype=torch.float64)):
    tensors = {k: v for k, v in (("q", q), ("kv", kv)) if v is not None}
    save_file(tensors, str(path), metadata={"asymrnr_fx.plan": json.dumps(options)})
    return path


@pytest.mark.parametrize(
    "options,tensors,field",
    [
        ({"cross_attention": "false"}, {}, "cross_attention"),  # used to load as True
        ({"stride": [2.7, 2, 2]}, {}, "stride"),
        ({"cache_window": 2.5}, {}, "cache_window"),
        ({"name": "n" * 1_000_000}, {}, "name"),  # a huge name used to load
        ({"seed": "0"}, {}, "seed"),
        ({"future_option": 1}, {}, "future_option"),
        ({"q": 0.5}, {}, "q"),
        ({}, {"q": torch.zeros(4, dtype=torch.float64)}, "q"),
        ({}, {"kv": torch.zeros(0, 2, dtype=torch.float64)}, "kv"),
        ({}, {"kv": None}, "kv"),
        ([1, 2], {}, "options"),
        ("not an object", {}, "options"),
        (None, {}, "options"),
        ({"stride": [2**62, 2, 2]}, {}, "stride"),  # used to load, then overflow the tile arithmetic
        ({"grid": [2, 2, 10**30]}, {}, "grid"),
        ({"cache_window": 2**70}, {}, "cache_window"),
        ({"seed": float("nan")}, {}, "seed"),
        ({"name": "\ud800"}, {}, "name"),  # valid JSON, but not text that UTF-8 can hold
        ({}, {"q": torch.tensor(float("nan"), dtype=torch.float64)}, "q"),
        ({}, {"kv": torch.full((2, 2), float("inf"), dtype=torch.float64)}, "kv"),
        ({}, {"q": torch.tensor(True)}, "q"),
        ({}, {"q": torch.zeros(2, 2, 2, dtype=torch.float64)}, "q"),
        ({}, {"q": torch.zeros(2, 2, dtype=torch.complex64)}, "q"),
        ({}, {"q": torch.zeros(1, 1, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)}, "q"),  # was NotImplementedError
    ],
)
def test_loading_checks_every_field_and_names_it(tmp_path, options, tensors, field):
    path = _write(tmp_path / "bad.safetensors", options, **tensors)
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    assert err.value.field == field and str(path) in str(err.value)


def test_loading_a_corrupt_metadata_entry(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"q": torch.tensor(0.5), "kv": torch.tensor(0.3)}, str(path), metadata={"asymrnr_fx.plan": "{not json"})
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.load(path)


# ---------------------------------------------------------------------------- hostile plan files
def _write_meta(path, meta):
    """A plan file whose metadata entry is ``meta``, verbatim (not necessarily JSON a plan would write)."""
    tensors = {"q": torch.tensor(0.5, dtype=torch.float64), "kv": torch.tensor(0.3, dtype=torch.float64)}
    save_file(tensors, str(path), metadata={"asymrnr_fx.plan": meta})
    return path


def _load_error(path):
    with pytest.raises(PlanError) as err:
        Plan.load(path)
    assert str(path) in str(err.value)
    return err.value


def test_deeply_nested_metadata_is_a_plan_error(tmp_path):
    # json recurses per level: this used to escape as a bare RecursionError
    for meta in ("[" * 200_000 + "]" * 200_000, '{"stride": ' + "[" * 200_000 + "]" * 200_000 + "}"):
        err = _load_error(_write_meta(tmp_path / "deep.safetensors", meta))
        assert err.field == "options" and "malformed" in err.detail and "Plan.save" in err.detail
    # shallow enough to parse, too deep for any option: stopped before a check or repr recurses over it
    err = _load_error(_write_meta(tmp_path / "deep.safetensors", '{"grid": ' + "[" * 900 + "]" * 900 + "}"))
    assert err.field == "grid" and "nested" in err.detail


@pytest.mark.parametrize("field,literal", [
    ("seed", "9" * 5000),
    ("seed", "-" + "9" * 5000),
    ("cache_window", "1" + "0" * 5000),
    ("stride", "[" + "7" * 5000 + ", 2, 2]"),
    ("grid", "[[" + "7" * 5000 + "]]"),
    ("stride", "[1" + "0" * 400 + ", 2, 2]"),  # converts, but used to overflow float in the ratio limit
])
def test_integers_too_long_to_convert_name_their_field(tmp_path, field, literal):
    # Python refuses int() of more than 4300 digits: this used to be a bare ValueError
    err = _load_error(_write_meta(tmp_path / "long.safetensors", f'{{"{field}": {literal}}}'))
    assert err.field == field and "allowed range" in err.detail and "digit integer" in err.detail


def test_repeated_metadata_keys_are_rejected(tmp_path):
    # json.loads keeps the last, other readers the first: one file, two plans
    err = _load_error(_write_meta(tmp_path / "dup.safetensors", '{"seed": 1, "mode": "mean", "seed": 2}'))
    assert err.field == "seed" and "more than once" in err.detail


def _saved_bytes(tmp_path):
    path = _write_meta(tmp_path / "good.safetensors", '{"name": "caf\u00e9"}')  # the \u00e9 is stored as UTF-8
    assert Plan.load(path).name == "caf\u00e9"
    return path.read_bytes()


def _overflowing_shape(good: bytes) -> bytes:
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    header["q"]["shape"] = [2**32, 2**32, 2**32]  # 2**96 cells of 8 bytes
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + good[8 + n :]


@pytest.mark.parametrize("corrupt", [
    lambda good: good.replace("é".encode(), b"\xff\xfe"),  # metadata that is not UTF-8
    lambda good: good[:-4],  # truncated tensor data
    lambda good: good[:20],  # truncated header
    lambda good: b"",
    lambda good: b"\xff" * 64,  # not a safetensors file: absurd header length
    lambda good: good.replace(b'"F64"', b'"X64"', 1),  # unknown dtype
    _overflowing_shape,
], ids=["not-utf8", "short-data", "short-header", "empty", "garbage", "dtype", "shape-overflow"])
def test_unreadable_safetensors_files_are_plan_errors(tmp_path, corrupt):
    # these used to escape as safetensors' own SafetensorError, which is not even a ValueError
    path = tmp_path / "bad.safetensors"
    path.write_bytes(corrupt(_saved_bytes(tmp_path)))
    err = _load_error(path)
    assert err.field == "file" and "Plan.save" in err.detail and isinstance(err, ValueError)


def test_other_ratio_dtypes_still_load(tmp_path):
    # a hand-written file in another float or int dtype is read, as the constructor reads it
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        path = _write(tmp_path / "f.safetensors", {}, q=torch.tensor(0.5, dtype=dtype), kv=torch.tensor(0.25, dtype=dtype))
        assert Plan.load(path).ratio(0, 0, "kv") == 0.25
    path = _write(tmp_path / "i.safetensors", {}, q=torch.zeros(2, 3, dtype=torch.int32), kv=torch.zeros(2, 3))
    assert Plan.load(path).num_steps == 3


def test_plans_that_run_differently_never_print_alike():
    """inspect() and every report show the plan's repr: an option it left out would make two plans look the same."""
    base = Plan.uniform(0.3, 0.2)
    variants = [base, Plan.uniform(0.3, 0, symmetric=True), Plan.uniform(0.3, 0.2, dst="fixed"),
                Plan.uniform(0.3, 0.2, text_position="last"), Plan.uniform(0.3, 0.2, cross_attention=True),
                Plan.uniform(0.3, 0.2, grid=(4, 6, 6)), Plan.uniform(0.3, 0.2, shards=2), Plan.uniform(0.3, 0.2, window=(0, 1, 1)),
                Plan.uniform(0.3, 0.2, similarity="cosine"), Plan.uniform(0.3, 0.2, mode="mean"), Plan.uniform(0.3, 0.2, seed=1)]
    assert len({repr(p) for p in variants}) == len(variants)
    assert "symmetric" not in repr(base) and "dst" not in repr(base)  # defaults stay out: short lines


def test_runs_like_compares_ratios_and_options_not_names():
    a = Plan.uniform(0.4, 0.2)
    assert a.runs_like(Plan.uniform(0.4, 0.2, name="other label")) and not a.runs_like(Plan.uniform(0.4, 0.2, seed=1))
    assert not a.runs_like(Plan.uniform(0.4, 0.25)) and not a.runs_like(Plan.from_table([[0.4]], [[0.2]]))
    t = Plan.published("cogvideox-2b", "base")
    assert t.runs_like(Plan.published("cogvideox-2b", "base")) and not t.runs_like(Plan.published("cogvideox-2b", "fast"))
