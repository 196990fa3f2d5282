"""The matching kernel against the attention kernel at the same sizes, quiet and under CPU load.

``ops.best_match`` scores every src token against the dst tokens and keeps the best, 128 rows
at a time by default (each tile reduced while in cache). Whether that loop of small GEMMs
holds up when another process shares the cores, and how far it is from the attention
kernel's efficiency, is what this script measures: interleaved in one process, the model's
SDPA call and ``best_match`` at several row-chunk sizes (``none``: one GEMM over all rows),
GFLOP/s of each; with ``--load N`` it first starts N busy processes beside it (what a
server's VAE or text encoder does to the transformer). Every chunk size must give the same
matching (checked).

    python benchmarks/match_kernel.py [--tokens 4096] [--heads 4] [--dim 64] [--load 1] [--threads N]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

from asymrnr_fx import ops


def _busy(stop: "mp.synchronize.Event") -> None:
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = (a @ a).tanh_()


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096, help="video tokens (grid F x H x W with stride (2, 2, 2))")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--text", type=int, default=226, help="text tokens in the SDPA call")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all variants")
    ap.add_argument("--chunks", default="128,512,none", help="row chunks to time; 'none' = all rows in one GEMM")
    ap.add_argument("--load", type=int, default=0, help="busy processes to run beside it")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    side = round((args.tokens / 4) ** 0.5)
    grid = (4, side, args.tokens // (4 * side))
    n = grid[0] * grid[1] * grid[2]
    dst, src = ops.partition(grid, (2, 2, 2), ops.draw_tile_choices(grid, (2, 2, 2), seed=0))
    torch.manual_seed(0)
    x = torch.randn(1, args.heads, n, args.dim)
    q = torch.randn(1, args.heads, n + args.text, args.dim)
    chunks = [None if c.strip() == "none" else int(c) for c in args.chunks.split(",")]
    flops_match = 2 * args.heads * src.numel() * dst.numel() * args.dim
    flops_sdpa = 4 * args.heads * (n + args.text) ** 2 * args.dim
    variants = {"sdpa": (lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q), flops_sdpa)}
    for c in chunks:
        variants[f"best_match chunk={c or 'all'}"] = (
            (lambda c=c: ops.best_match(x, dst, "euclidean", chunk=c or src.numel(), rows=src)), flops_match)
    reference = ops.best_match(x, dst, "euclidean", chunk=128, rows=src)[1]
    for name, (fn, _) in variants.items():
        if name != "sdpa":
            assert torch.equal(fn()[1], reference), f"{name} changed the matching"
    stop = mp.Event()
    workers = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(args.load)]
    for w in workers:
        w.start()
    if workers:
        time.sleep(1.0)
    try:
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (fn, _) in variants.items():
                times[name].append(_median_ms(fn, args.repeats))
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    print(f"{n} video tokens {grid}, {args.heads} heads x {args.dim}, src {src.numel()} x dst {dst.numel()}; "
          f"{torch.get_num_threads()} threads, {args.load} busy process(es) beside it")
    out = {}
    for name, (_, flops) in variants.items():
        ms = statistics.median(times[name])
        out[name] = {"ms": ms, "gflops": flops / ms / 1e6, "spread_ms": [min(times[name]), max(times[name])]}
        print(f"  {name:28s} {ms:8.2f} ms  {flops / ms / 1e6:7.1f} GFLOP/s  (rounds {min(times[name]):.2f}-{max(times[name]):.2f} ms)")
    return out


if __name__ == "__main__":
    main()
