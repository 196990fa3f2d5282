"""AsymRnR in an LTX-Video pipeline (pre-packed tokens, grid from num_frames/height/width), tiny and offline.

T5 text encoder; 9x32x32 px gives a 3x8x8 token grid, not a multiple of the stride (borders stay src).

Run: python examples/pipeline_ltx.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.LTXPipeline.from_pretrained("/models/LTX-Video", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=5))
    video = pipe("waves at sunset", width=704, height=480, num_frames=161, num_inference_steps=50).frames[0]
"""
from __future__ import annotations

from asymrnr_fx.testing import run_example

if __name__ == "__main__":
    run_example("ltx", __doc__)
