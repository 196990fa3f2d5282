"""AsymRnR in a context-parallel Wan pipeline (diffusers' ring or Ulysses attention), tiny and offline.

Launch one process per GPU (or per CPU rank):

    torchrun --nproc-per-node 2 examples/context_parallel.py [--mode ring|ulysses] [--shards] [--steps 6] [--compile]

On GPUs each rank takes its own device and NCCL; on a CPU-only machine the ranks use gloo
and two CPU shims (see ``asymrnr_fx.testing.cpu_parallel``: diffusers 0.42 divides by the
accelerator count, 0 there, and its native backend returns no log-sum-exp for ring). The
shims are only installed when no accelerator is present and are not needed on GPUs.

Rank 0 prints the result against one process running the same plan with ``shards`` set to
the ring degree (ring) or unchanged (Ulysses): the two agree to float rounding. ``--shards``
under Ulysses uses ``Plan(shards=world)``: every rank reduces its own shard before the
all-to-all (smaller exchanges), which one process with the same plan reproduces.

Real weights, when they are on disk (nothing here downloads):

    pipe = diffusers.WanPipeline.from_pretrained("/models/Wan2.1-T2V-1.3B-Diffusers", torch_dtype=torch.bfloat16).to(device)
    pipe.transformer.set_attention_backend("_native_flash")   # an LSE-returning backend for ring on CUDA
    pipe.transformer.enable_parallelism(config=diffusers.ContextParallelConfig(ring_degree=world))
    asymrnr_fx.apply(pipe, asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=5))
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

import asymrnr_fx
from asymrnr_fx.testing import tiny_pipeline
from asymrnr_fx.testing.cpu_parallel import cpu_shims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("ring", "ulysses"), default="ring")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--compile", action="store_true", help="compile the rewritten graph with inductor")
    ap.add_argument("--shards", action="store_true", help="Ulysses: Plan(shards=world), reduced before the all-to-all")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    timeout = datetime.timedelta(seconds=120)  # a rank that fails never leaves the others waiting for ever
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # one thread per rank: the ranks share the machine's cores
        cpu_shims()

    from diffusers import ContextParallelConfig

    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=3, shards=world if args.shards else 1)
    config = ContextParallelConfig(**{f"{args.mode}_degree": world})

    def generate(parallel: bool) -> torch.Tensor:
        tp = tiny_pipeline("wan", layers=2)
        tp.pipe.to(device)
        if parallel:
            tp.pipe.transformer.enable_parallelism(config=config)
            asymrnr_fx.apply(tp.pipe, plan, compile=args.compile)
        else:  # one process: ring computes shard-local AsymRnR over its ranks' shards
            asymrnr_fx.apply(tp.pipe, dataclasses.replace(plan, shards=world) if args.mode == "ring" else plan)
            # (under Ulysses with --shards the plan already holds shards=world)
        with torch.no_grad():
            frames = tp(num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0)).frames
        if rank == 0 and parallel:
            print(asymrnr_fx.inspect(tp.pipe.transformer))
        return frames

    parallel = generate(parallel=True)
    single = generate(parallel=False)
    if rank == 0:
        rel = float((parallel - single).norm() / single.norm())
        print(f"{args.mode} over {world} ranks vs one process: relative difference {rel:.2e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
