"""Training recipes: the presets (hyper-parameters of v1-v7) and the stage schedule syntax and geometry.

Why its own module: what a run trains on is data, read by tests and the README recipes, and
changes apart from the loop in :mod:`.train` that runs it.
"""

from __future__ import annotations

from pathlib import Path

from .model import SCHEDULER_CONFIG
from .spec import VideoSpec

# Default folder of a run's checkpoint, CSV log and preset outputs: the current directory (never
# the package). ``--init-from`` names (v7's ``v5_final.safetensors``, ...) are looked up there too.
CHECKPOINT_DIR = Path(".")
# A trained model is shipped by moving it into weights/ (where the demo takes the newest), and
# only if it is better than the shipped one; training never writes there.
V2_OUT = CHECKPOINT_DIR / "v2_final.safetensors"
V3_OUT = CHECKPOINT_DIR / "v3_final.safetensors"

# Training hyper-parameters per preset (command-line flags override them; --resume restores them).
PRESETS: dict[str, dict] = {
    # The first toy model, as shipped: 8 x 24 x 24, 7000 steps, bf16 autocast.
    "v1": dict(version=1, stages="8:7000", batch_size=8, lr=1e-3, warmup=200, ema=0.999, cond_dropout=0.1,
               fg_weight=4.0, shape_weight=0.0, bf16=True, out=str(CHECKPOINT_DIR / "v1_final.safetensors"),
               evals_per_stage=0, eval_samples=24, final_eval_samples=48, final_train_samples=48, eval_steps=20),
    # The second: 32 x 32 canvas; 4-, then 8-, then 16-frame clips (512, 1024, 2048 tokens);
    # shape-aware loss. fp32: on this CPU bf16 autocast is *slower* (0.72 vs 0.56 s/step at 576
    # tokens, 4.2 vs 2.6 at 2048). Budget (one thread, uncontended): ~0.55 / ~1.4 / ~3.7 s per
    # step -> 37 + 23 + 46 min of training plus ~14 min of evaluations.
    "v2": dict(version=2, stages="4:4000,8:1000,16:750", batch_size=8, lr=1e-3, warmup=200, ema=0.998,
               cond_dropout=0.1, fg_weight=4.0, shape_weight=8.0, bf16=False, out=str(V2_OUT),
               evals_per_stage=2, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20),
    # Second phase of the second model: phase one ("v2", stopped after its 8-frame stage, kept as
    # v2_phase1.pt, now in git history) drew every shape as a blob whose *area* followed the shape word
    # but not its outline. Outlines are drawn at low noise, which the shift-3 noise levels of
    # phase one visit rarely (18% of steps at sigma < 0.4): this phase starts from phase one's
    # EMA weights with a fresh optimizer, uniform noise levels (40% at sigma < 0.4) and 2500
    # more 4-frame steps, then 500 of the 16-frame stage (2048 tokens). ~23 + ~31 min, one thread.
    "v2-finish": dict(version=2, stages="4:2500,16:500", batch_size=8, lr=5e-4, warmup=100, ema=0.998,
                      cond_dropout=0.1, fg_weight=4.0, shape_weight=8.0, bf16=False, out=str(V2_OUT),
                      evals_per_stage=1, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20,
                      sigma_shift=1.0, init_from="v2_phase1.pt"),
    # The third: v2's model and canvas; the plain flow-matching loss (v1's and v2's pixel
    # weights biased the denoiser towards drawing object colour wherever an object might be:
    # see losses.foreground_weights); shapes that differ at the object's scale (disc, ring, bar);
    # a first stage of 2-frame clips (one latent frame, 256 tokens, ~2x cheaper than 4 frames)
    # that spends the budget on what is decided per frame: colour, size and shape. The 16-frame
    # stage is ~1.4x v2's, which lost the motion there.
    "v3": dict(version=3, stages="2:4000,4:1500,8:600,16:700", batch_size=8, lr=1e-3, warmup=200, ema=0.998,
               cond_dropout=0.1, fg_weight=0.0, shape_weight=0.0, bf16=False, out=str(V3_OUT),
               evals_per_stage=1, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20),
    # The fourth (see README "What a v4 should change"): v3's weights, then most steps on
    # 8-frame clips (motion; v3 spent 4000 of 6800 steps on motionless 2-frame clips) and a long
    # 16-frame stage before the learning rate has decayed. ~40 + ~41 min on two threads.
    "v4": dict(version=3, stages="8:3000,16:1200", batch_size=8, lr=5e-4, warmup=100, ema=0.998,
               cond_dropout=0.1, fg_weight=0.0, shape_weight=0.0, bf16=False, out=str(CHECKPOINT_DIR / "v4_final.safetensors"),
               evals_per_stage=2, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20,
               init_from="v3_final.safetensors"),
    # The fifth: v4 still drew motionless objects (direction 0.17 after 3000 8-frame steps) where
    # v1 learned motion. So v1's transformer (2 heads of 64: twice v3's temporal RoPE
    # frequencies; 3 blocks) started from v1's weights (which know colour and direction; "ring"
    # and "bar" get fresh word embeddings), on v3's canvas and shapes; 8-frame clips, then 16.
    "v5": dict(version=5, stages="8:2000,16:1000", batch_size=8, lr=5e-4, warmup=100, ema=0.998,
               cond_dropout=0.1, fg_weight=0.0, shape_weight=0.0, bf16=False, out=str(CHECKPOINT_DIR / "v5_final.safetensors"),
               evals_per_stage=1, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20,
               init_from="v1_final.safetensors"),
    # A sixth, for shape (v5 learned colour and motion, not shape): v5's weights, more steps, and
    # uniform noise levels (outlines are settled at low noise, which shift 3 visits rarely;
    # v2 tried this only with its biased pixel weights). Stopped after its 8-frame stage with
    # shape still at 0.29 (README "v6").
    "v6": dict(version=5, stages="8:2500,16:500", batch_size=8, lr=5e-4, warmup=100, ema=0.998,
               cond_dropout=0.1, fg_weight=0.0, shape_weight=0.0, bf16=False, out=str(CHECKPOINT_DIR / "v6_final.safetensors"),
               evals_per_stage=1, eval_samples=24, final_eval_samples=48, final_train_samples=24, eval_steps=20,
               init_from="v5_final.safetensors", sigma_shift=1.0),
    # The seventh, for shape: v5's weights, trained first on 2-frame clips of a 24 px canvas (the
    # 14-16 px object nearly fills it, so its place is nearly known and the shape word is what is
    # left to explain: scored on 2-frame clips of the 32 px canvas, a pilot reached shape 0.88
    # after 3 min and 0.96 after 13, where one on 32 px clips was at 0.29 after 3), then on
    # 8-frame 24 px clips alternating with those (shape held across frames, motion kept), then on
    # the model's own 16 x 32 x 32 clips alternating with 8 x 24 x 24.
    "v7": dict(version=5, stages="2@24:2500:16,2@24+8@24:2000:16,8@24+16:600:8", batch_size=16, lr=5e-4,
               warmup=100, ema=0.998, cond_dropout=0.1, fg_weight=0.0, shape_weight=0.0, bf16=False,
               out=str(CHECKPOINT_DIR / "v7_final.safetensors"), evals_per_stage=1, eval_samples=24,
               final_eval_samples=48, final_train_samples=24, eval_steps=20, init_from="v5_final.safetensors"),
}
for _preset in PRESETS.values():  # phase-one defaults for the keys that came later
    _preset.setdefault("sigma_shift", SCHEDULER_CONFIG["shift"])
    _preset.setdefault("init_from", None)
HYPER = tuple(PRESETS["v2-finish"]) + ("seed", "preset", "log_every")  # restored by --resume


Part = tuple[int, int | None]  # (frames, square canvas side in pixels; None = the model's canvas)


def parse_stages(text: str, default_batch: int) -> list[tuple[tuple[Part, ...], int, int]]:
    """``"2@24+8:3000:16,16:600"`` -> ``[(parts, steps, batch), ...]``.

    A stage is ``PARTS:STEPS[:BATCH]``; ``PARTS`` is one or more ``FRAMES[@CANVAS]`` joined by
    ``+``, and the stage's steps cycle through them (step ``i`` trains on part ``i % len``).
    ``@CANVAS`` trains on square clips of that side instead of the model's canvas: RoPE is
    relative, so what a smaller canvas teaches carries over, and on a canvas little larger than
    the object its position is nearly known, which is what let v7 learn shape (README)."""
    stages = []
    for part_text in text.split(","):
        head, *rest = part_text.split(":")
        try:
            parts = tuple((int(f), int(c[0]) if c else None)
                          for f, *c in (p.split("@") for p in head.split("+")))
            numbers = [int(x) for x in rest]
        except ValueError:
            raise ValueError(f"bad stage {part_text!r}: want FRAMES[@CANVAS][+...]:STEPS[:BATCH]") from None
        if len(numbers) not in (1, 2) or min(numbers) <= 0 or any(
                f <= 0 or (c is not None and c <= 0) for f, c in parts):
            raise ValueError(f"bad stage {part_text!r}: want FRAMES[@CANVAS][+...]:STEPS[:BATCH]")
        stages.append((parts, numbers[0], numbers[1] if len(numbers) == 2 else default_batch))
    return stages


def part_spec(base: VideoSpec, part: Part) -> VideoSpec:
    """The clip geometry of one stage part: ``base`` with its frames and, if set, its canvas."""
    frames, canvas = part
    return base.replace(frames=frames) if canvas is None else base.replace(frames=frames, height=canvas, width=canvas)


def eval_spec(base: VideoSpec, parts: tuple[Part, ...]) -> VideoSpec:
    """Where a stage is evaluated: the model's own canvas at the stage's longest clips (a small
    training canvas is a means; the model is used on its own)."""
    return base.replace(frames=max(f for f, _ in parts))


def clip_offset(stages: list[tuple[int, int, int]], step: int) -> tuple[int, int]:
    """(stage index, index of the step's first clip in the data stream) for global ``step``."""
    offset, start = 0, 0
    for i, (_, steps, batch) in enumerate(stages):
        if step < start + steps:
            return i, offset + (step - start) * batch
        offset += steps * batch
        start += steps
    raise IndexError(step)
