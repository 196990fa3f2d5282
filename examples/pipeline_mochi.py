"""AsymRnR in a Mochi pipeline (per-sample joint attention over the valid prompt tokens, text last), tiny and offline.

Mochi's timesteps rise during sampling; the step tracker learns the direction from the first change.

Run: python examples/pipeline_mochi.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.MochiPipeline.from_pretrained("/models/mochi-1-preview", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.published("mochi", "base"))  # 48 blocks x 30 steps, stride (6,2,2)
    video = pipe("a boat on a lake", num_inference_steps=30).frames[0]
"""
from __future__ import annotations

from asymrnr_fx.testing import run_example

if __name__ == "__main__":
    run_example("mochi", __doc__)
