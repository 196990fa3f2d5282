"""AsymRnR in a HunyuanVideo pipeline (dual- and single-stream joint attention, text last), tiny and offline.

Llama + CLIP text encoders with key-padding masks; the text-only token refiner is left alone.

Run: python examples/pipeline_hunyuanvideo.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.HunyuanVideoPipeline.from_pretrained("/models/HunyuanVideo", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.published("hunyuanvideo", "base"))  # 60 sites x 30 steps, stride (6,2,2)
    video = pipe("a cat walks on the grass", num_inference_steps=30).frames[0]
"""
from __future__ import annotations

import torch

import asymrnr_fx
from asymrnr_fx.integrations.tiny import example_args, print_comparison, timed_generate, tiny_pipeline


def main() -> None:
    args = example_args(__doc__.splitlines()[0])
    torch.set_num_threads(1)
    tp = tiny_pipeline("hunyuanvideo")  # the real pipeline class; random-weight tiny transformer, VAE, text encoder(s)
    extra = {"true_cfg_scale": 2.0}  # separate cond/uncond calls: each keeps its own matching
    base, base_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **extra)

    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=3)
    asymrnr_fx.apply(tp.pipe, plan, compile=args.compile, fullgraph=True)  # no callback: steps come from the timestep
    fast, fast_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **extra)

    print(asymrnr_fx.inspect(tp.pipe.transformer))  # every attention site the pipeline's transformer ran
    print_comparison(asymrnr_fx.runtime_of(tp.pipe.transformer), base, base_times, fast, fast_times)
    asymrnr_fx.remove(tp.pipe)  # the original transformer is back


if __name__ == "__main__":
    main()
