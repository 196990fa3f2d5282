"""AsymRnR in a Wan 2.1 pipeline (self-attention reduced, cross-attention left alone), tiny and offline.

UMT5 text encoder; the pipeline runs cond and uncond as two calls under cache_context('cond'/'uncond').

Run: python examples/pipeline_wan.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.WanPipeline.from_pretrained("/models/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=5))   # or Plan(cross_attention=True)
    video = pipe("a fox in the snow", num_inference_steps=50).frames[0]
"""
from __future__ import annotations

from asymrnr_fx.testing import run_example

if __name__ == "__main__":
    run_example("wan", __doc__)
