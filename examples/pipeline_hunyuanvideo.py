"""AsymRnR in a HunyuanVideo pipeline (dual- and single-stream joint attention, text last), tiny and offline.

Llama + CLIP text encoders with key-padding masks; the text-only token refiner is left alone.

Run: python examples/pipeline_hunyuanvideo.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.HunyuanVideoPipeline.from_pretrained("/models/HunyuanVideo", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.published("hunyuanvideo", "base"))  # 60 sites x 30 steps, stride (6,2,2)
    video = pipe("a cat walks on the grass", num_inference_steps=30).frames[0]
"""
from __future__ import annotations

from asymrnr_fx.testing import run_example

if __name__ == "__main__":
    run_example("hunyuanvideo", __doc__, true_cfg_scale=2.0)
