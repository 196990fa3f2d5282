"""AsymRnR in a Wan 2.1 pipeline (self-attention reduced, cross-attention left alone), tiny and offline.

UMT5 text encoder; the pipeline runs cond and uncond as two calls under cache_context('cond'/'uncond').

Run: python examples/pipeline_wan.py [--steps 6] [--compile]

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.WanPipeline.from_pretrained("/models/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16)
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=5))   # or Plan(cross_attention=True)
    video = pipe("a fox in the snow", num_inference_steps=50).frames[0]
"""
from __future__ import annotations

import torch

import asymrnr_fx
from asymrnr_fx.integrations.tiny import example_args, print_comparison, timed_generate, tiny_pipeline


def main() -> None:
    args = example_args(__doc__.splitlines()[0])
    torch.set_num_threads(1)
    tp = tiny_pipeline("wan")  # the real pipeline class; random-weight tiny transformer, VAE, text encoder(s)
    extra: dict = {}
    base, base_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **extra)

    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=3)
    asymrnr_fx.apply(tp.pipe, plan, compile=args.compile, fullgraph=True)  # no callback: steps come from the timestep
    fast, fast_times = timed_generate(tp, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0), **extra)

    print(asymrnr_fx.inspect(tp.pipe.transformer))  # every attention site the pipeline's transformer ran
    print_comparison(asymrnr_fx.runtime_of(tp.pipe.transformer), base, base_times, fast, fast_times)
    asymrnr_fx.remove(tp.pipe)  # the original transformer is back


if __name__ == "__main__":
    main()
