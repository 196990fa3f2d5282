"""Fast checks of the shipped toy text-to-video model, its dataset and its scorer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from asymrnr_fx.toy import dataset, rendering, scorer

torch.set_num_threads(1)


def test_dataset_is_deterministic_per_seed() -> None:
    a, attrs_a = dataset.make_batch(3, range(4))
    b, attrs_b = dataset.make_batch(3, range(4))
    c, _ = dataset.make_batch(4, range(4))
    assert torch.equal(a, b) and attrs_a == attrs_b
    assert not torch.equal(a, c)
    assert a.shape == (4, dataset.NUM_FRAMES, 3, dataset.HEIGHT, dataset.WIDTH)
    assert a.dtype == torch.float32 and a.min() >= -1 and a.max() <= 1


def test_dataset_item_fields() -> None:
    item = dataset.ToyVideoDataset(5, seed=1, split="heldout")[2]
    assert item["attributes"] in dataset.HELDOUT_COMBOS
    assert item["caption"] == dataset.caption(*item["attributes"])
    assert dataset.detokenize(item["input_ids"][None]) == [item["caption"]]


def test_heldout_split_is_compositional() -> None:
    train, held = set(dataset.TRAIN_COMBOS), set(dataset.HELDOUT_COMBOS)
    assert held and not train & held and train | held == set(dataset.ALL_COMBOS)
    # every attribute pair of a held-out triple was seen in training
    for c, s, d in held:
        assert any(t[0] == c and t[1] == s for t in train)
        assert any(t[0] == c and t[2] == d for t in train)
        assert any(t[1] == s and t[2] == d for t in train)


def test_tokenizer_round_trip() -> None:
    captions = [dataset.caption(*a) for a in dataset.ALL_COMBOS]
    ids = dataset.tokenize(captions)
    assert ids.shape == (len(captions), dataset.MAX_TOKENS) and ids.dtype == torch.long
    assert dataset.detokenize(ids) == captions
    assert (dataset.tokenize("")[0] == dataset.PAD_ID).all()
    assert dataset.tokenize("a purple blob")[0, 1] == dataset.WORD_TO_ID[dataset.UNK]
    assert all(dataset.parse_caption(c) == a for c, a in zip(captions, dataset.ALL_COMBOS))
    with pytest.raises(ValueError):
        dataset.tokenize(" ".join(["a"] * (dataset.MAX_TOKENS + 1)))


def test_scorer_labels_ground_truth_clips() -> None:
    videos, attrs = dataset.make_batch(123, range(240), dataset.ALL_COMBOS)
    acc = scorer.prompt_accuracy(videos, attrs)
    assert acc["n"] == 240
    for key in ("colour", "shape", "direction", "all", "colour_direction"):
        assert acc[key] > 0.95, (key, acc[key])


@pytest.mark.parametrize("spec", [dataset.SPEC_V3, dataset.SPEC_V3.replace(frames=4)], ids=["v3", "v3-4-frames"])
def test_scorer_labels_other_shapes(spec) -> None:
    """The third model's shapes (disc, ring, bar) on its canvas, clean and blurred + noisy."""
    videos, attrs = dataset.make_batch(7, range(90), dataset.combos(spec), spec)
    assert {a[1] for a in attrs} == set(spec.shapes)
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3)
    flat = torch.nn.functional.pad(videos.flatten(0, 1), (1, 1, 1, 1), mode="replicate")
    blurred = torch.nn.functional.conv2d(flat, kernel, groups=3).view_as(videos)
    blurred = blurred + 0.1 * torch.randn(videos.shape, generator=torch.Generator().manual_seed(0))
    for clips in (videos, blurred):
        acc = scorer.prompt_accuracy(clips, attrs, spec=spec)
        assert min(acc[k] for k in ("colour", "shape", "direction")) > 0.95, acc
    # a filled disc of a ring's area is not a ring: the hole is what the scorer reads
    masks = torch.from_numpy(rendering._shape_coverage("circle", 16, 16, 12.5, 32, 32) > 0.5).numpy()[None]
    assert scorer.classify_shape(masks, spec.shapes) == "circle"


def test_combos_split_every_shape_set_the_same_way() -> None:
    assert dataset.combos(None, "train") == dataset.TRAIN_COMBOS
    assert dataset.combos(dataset.SPEC_V1, "heldout") == dataset.HELDOUT_COMBOS
    train, held = dataset.combos(dataset.SPEC_V3, "train"), dataset.combos(dataset.SPEC_V3, "heldout")
    assert len(held) == 12 and len(train) == 48 and not set(train) & set(held)
    assert all(dataset.parse_caption(dataset.caption(*a)) == a for a in held)
    assert dataset.VideoSpec.from_dict(dataset.SPEC_V3.to_dict()) == dataset.SPEC_V3


def test_scorer_abstains_on_empty_video() -> None:
    flat = torch.zeros(dataset.NUM_FRAMES, 3, dataset.HEIGHT, dataset.WIDTH)
    assert scorer.predict_attributes(flat) == ("none", "none", "none")


def test_init_from_a_smaller_vocabulary_keeps_its_words_and_initialises_the_new_ones() -> None:
    """v5 started from v1's weights, whose vocabulary lacks "ring" and "bar" (appended later)."""
    from asymrnr_fx.toy.model import ToyTextEncoder
    from asymrnr_fx.toy.train import _load_grown

    torch.manual_seed(0)
    old, new = ToyTextEncoder(10, 8, 16), ToyTextEncoder(12, 8, 16)
    fresh_rows = new.token.weight[10:].detach().clone()
    _load_grown(new, old.state_dict())
    assert torch.equal(new.token.weight[:10], old.token.weight)
    assert torch.equal(new.token.weight[10:], fresh_rows)
    assert torch.equal(new.position, old.position)
    with pytest.raises(RuntimeError):  # anything else that does not fit still fails
        _load_grown(ToyTextEncoder(12, 8, 32), old.state_dict())


def test_stages_parse_canvases_and_alternating_parts() -> None:
    from asymrnr_fx.toy.recipes import eval_spec, parse_stages, part_spec

    stages = parse_stages("2@24+8:3000:16,16:600", default_batch=8)
    assert stages == [(((2, 24), (8, None)), 3000, 16), (((16, None),), 600, 8)]
    assert parse_stages("4:5000,16:1000", 8) == [(((4, None),), 5000, 8), (((16, None),), 1000, 8)]
    small = part_spec(dataset.SPEC_V3, (2, 24))
    assert (small.frames, small.height, small.width, small.shapes) == (2, 24, 24, dataset.SPEC_V3.shapes)
    assert eval_spec(dataset.SPEC_V3, stages[0][0]) == dataset.SPEC_V3.replace(frames=8)
    for bad in ("2@:10", "2@24", "x:10", "2+:10", "0@24:10"):
        with pytest.raises(ValueError):
            parse_stages(bad, 8)


def test_spec_fits_only_canvases_that_hold_the_whole_path() -> None:
    assert dataset.SPEC_V1.fits() and dataset.SPEC_V3.fits()
    assert dataset.SPEC_V3.replace(frames=2, height=24, width=24).fits()
    assert not dataset.SPEC_V3.replace(frames=16, height=24, width=24).fits()  # 15.4 px ring + 10.5 px travel
    rng = np.random.default_rng(0)
    spec = dataset.SPEC_V3.replace(frames=8, height=24, width=24)
    for combo in dataset.combos(spec)[:12]:  # and sample_params keeps such clips inside
        p = dataset.sample_params(rng, combo, spec=spec)
        hx, hy = dataset.half_extent(combo[1], spec.object_size)
        dx, dy = dataset.DIRECTIONS[combo[2]]
        for f in (0, spec.frames - 1):
            cx, cy = p.start[0] + dx * p.speed * f, p.start[1] + dy * p.speed * f
            assert hx <= cx <= spec.width - hx and hy <= cy <= spec.height - hy
    with pytest.raises(ValueError, match="does not fit"):  # and refuses a path that would leave the canvas
        dataset.sample_params(rng, ("red", "bar", "right"), spec=spec.replace(frames=16))


def test_training_alternates_stage_parts_and_evaluates_on_the_model_canvas(tmp_path) -> None:
    """A stage ``2@24+4`` trains step 1 on 2-frame 24 px clips, step 2 on 4-frame clips of the
    model's 32 px canvas; the finished model is scored and saved at the model's geometry."""
    import csv

    from asymrnr_fx.toy import weights_spec
    from asymrnr_fx.toy.train import main

    out = tmp_path / "m.safetensors"
    main(["--preset", "v3", "--stages", "2@24+4:2:2", "--checkpoint-dir", str(tmp_path), "--out", str(out),
          "--evals-per-stage", "0", "--final-eval-samples", "1", "--final-train-samples", "1", "--eval-steps", "1",
          "--log-every", "1", "--threads", str(torch.get_num_threads())])
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["frames"] for r in rows if r["loss"]] == ["2", "4"]
    spec = weights_spec(out)
    assert (spec.frames, spec.height, spec.width) == (4, 32, 32)
    with pytest.raises(ValueError, match="do not fit"):
        main(["--preset", "v3", "--stages", "16@24:2:2", "--checkpoint-dir", str(tmp_path), "--out", str(out),
              "--threads", str(torch.get_num_threads())])


@pytest.fixture(scope="module")
def toy_model():
    from asymrnr_fx.toy.model import load_toy_model

    return load_toy_model()


def test_shipped_weights_load_and_sample(toy_model) -> None:
    from asymrnr_fx.toy.model import generate

    spec = toy_model.spec
    prompts = [dataset.caption(*a) for a in dataset.combos(spec, "train")[:2]]
    out = generate(prompts, num_steps=1, model=toy_model)
    assert out.shape == (2, spec.frames, 3, spec.height, spec.width)
    assert torch.isfinite(out).all() and out.abs().max() <= 1


def test_generate_calls_transformer_like_diffusers(toy_model) -> None:
    from asymrnr_fx.toy.model import generate

    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return toy_model.transformer(**kwargs)

    steps = []
    spec = toy_model.spec
    prompt = dataset.caption("green", spec.shapes[-1], "down")
    a = generate(prompt, num_steps=3, seed=5, transformer=spy, model=toy_model,
                 callback=lambda i, t, x: steps.append(i))
    b = generate(prompt, num_steps=3, seed=5, model=toy_model)
    assert torch.equal(a, b) and steps == [0, 1, 2] and len(calls) == 3
    timesteps = [float(c["timestep"][0]) for c in calls]
    assert all(x > y for x, y in itertools.pairwise(timesteps))
    for c in calls:
        assert c["return_dict"] is False
        batch = c["hidden_states"].shape[0]
        assert c["hidden_states"].shape[1:] == (spec.frames, 3, spec.height, spec.width)
        assert c["timestep"].shape == (batch,)
        assert c["encoder_hidden_states"].shape[:2] == (batch, dataset.MAX_TOKENS)


def test_interleaved_generation_equals_one_at_a_time(toy_model) -> None:
    """The demo's timing loop (variants advanced step by step in turn) makes the same videos."""
    from asymrnr_fx.toy.model import generate, generate_interleaved

    prompt = [dataset.caption(*dataset.combos(toy_model.spec, "heldout")[0])]
    halved = []

    def other(**kwargs):  # a second, different "variant"
        halved.append(1)
        return toy_model.transformer(**kwargs)[0].mul(0.5), None

    videos, seconds = generate_interleaved(prompt, {"a": toy_model.transformer, "b": other}, num_steps=2,
                                           seed=4, model=toy_model)
    assert torch.equal(videos["a"], generate(prompt, num_steps=2, seed=4, model=toy_model))
    assert torch.equal(videos["b"], generate(prompt, num_steps=2, seed=4, model=toy_model, transformer=other))
    assert not torch.equal(videos["a"], videos["b"])
    assert [len(seconds[k]) for k in ("a", "b")] == [2, 2] and min(seconds["a"] + seconds["b"]) > 0


# The floor the README states for the shipped weights (held-out prompts; chance: colour 0.20,
# shape 0.33, direction 0.25). v7 measured 1.00 / 1.00 / 1.00 unreduced and 1.00 / 0.92 / 1.00
# with the demo's plan here; shape's floor leaves room for 3 of the 12 outlines to differ.
ACCURACY_FLOOR = {"colour": 0.9, "shape": 0.75, "direction": 0.9}
FLOOR_PROMPTS, FLOOR_STEPS = 12, 8


@pytest.mark.parametrize("variant", ["baseline", "AsymRnR, the demo's plan"])
def test_shipped_weights_reach_the_stated_accuracy_floor(toy_model, variant) -> None:
    """12 of the 12 held-out attribute triples (never trained on), 8 sampler steps: the unreduced
    model and the demo's default (calibrated, shipped) plan both read back right."""
    import asymrnr_fx
    from asymrnr_fx.commands.demo_plan import plan_path, resample
    from asymrnr_fx.plan import coerce_plan
    from asymrnr_fx.toy import newest_weights as newest_toy_weights
    from asymrnr_fx.toy.model import generate

    prompts = [dataset.caption(*c) for c in dataset.combos(toy_model.spec, "heldout")[:FLOOR_PROMPTS]]
    transformer = None
    if variant != "baseline":
        plan = resample(coerce_plan(plan_path(newest_toy_weights())), FLOOR_STEPS)
        transformer = asymrnr_fx.transform(toy_model.transformer, plan)
    with torch.no_grad():
        videos = generate(prompts, num_steps=FLOOR_STEPS, seed=3, model=toy_model, transformer=transformer)
    if transformer is not None:
        assert transformer.runtime.counts["match"] > 0  # the plan did reduce
    acc = scorer.prompt_accuracy(videos, prompts, spec=toy_model.spec)
    for attribute, floor in ACCURACY_FLOOR.items():
        assert acc[attribute] >= floor, f"{variant}: {attribute} {acc[attribute]:.2f} < {floor} ({acc['predictions']})"
