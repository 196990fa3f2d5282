"""AsymRnR in a CogVideoX pipeline (joint attention, text first), built tiny and offline.

CogVideoXDDIMScheduler, T5 text encoder; CFG runs cond+uncond in one batch.

Run: python examples/pipeline_cogvideox.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.CogVideoXPipeline.from_pretrained("/models/CogVideoX-2b", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.published("cogvideox-2b", "base"))  # 30 blocks x 50 steps, window 5
    video = pipe("a panda playing guitar", num_inference_steps=50).frames[0]
"""
from __future__ import annotations

from asymrnr_fx.testing import run_example

if __name__ == "__main__":
    run_example("cogvideox", __doc__)
