"""The matching kernel against the attention kernel at the same sizes, quiet and under CPU load.

``ops.best_match`` scores every src token against the dst tokens and keeps the best, in tiles
of ``ops.MATCH_TILE_ELEMENTS`` scores (``auto``; a fixed row count for comparison). How it
holds up when another process shares the cores, and how far it is from the attention
kernel's efficiency, is what this script measures: interleaved in one process, the model's
SDPA call and ``best_match`` at several row-chunk sizes (``none``: one GEMM over all rows),
GFLOP/s of each; with ``--load N`` it runs the same again with N busy processes beside it
(what a server's VAE or text encoder does to the transformer) and prints both. Every chunk
size must give the same matching (checked). The windowed matching (``Plan(window=(0, 1, 1))``)
is timed beside them; its GFLOP/s count the global matching's pairs, the work it replaces.
``benchmarks/speed_cogvideox.py`` prints this table at its own sizes.

    python benchmarks/match_kernel.py [--tokens 4096] [--heads 4] [--dim 64] [--load 1] [--threads N]
    python benchmarks/match_kernel.py --grid 13,30,45 --heads 2 --shards 2 --chunks auto   # a ring rank at 2B scale
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from asymrnr_fx import ops
from asymrnr_fx.evaluation.bench import busy_processes


def median_ms(fn, repeats: int = 15) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def kernel_table(grid: tuple[int, int, int], heads: int, dim: int, text: int, chunks: list[int | None] | None = None,
                 repeats: int = 9, rounds: int = 3, load: int = 0, windows: tuple[tuple[int, int, int], ...] = ((0, 1, 1),),
                 shards: int = 1) -> dict:
    """Median ms and GFLOP/s of SDPA over (video + text) tokens and of ``best_match`` on the
    grid's (2, 2, 2) partition, interleaved, with ``load`` busy processes beside it; and ms of the
    windowed matching at each of ``windows`` (its GFLOP/s counted on the global matching's pairs,
    the work it replaces). ``shards`` > 1: also one shard's matchings, global and windowed (a ring
    rank's, ``Plan.shards``; the second shard, cut by boundaries on both sides)."""
    n = grid[0] * grid[1] * grid[2]
    dst, src = ops.partition(grid, (2, 2, 2), ops.draw_tile_choices(grid, (2, 2, 2), seed=0))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, heads, n, dim, generator=g)
    q = torch.randn(1, heads, n + text, dim, generator=g)
    flops_match = 2 * heads * src.numel() * dst.numel() * dim
    flops_sdpa = 4 * heads * (n + text) ** 2 * dim
    variants = {"sdpa": (lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q), flops_sdpa)}
    for c in chunks or ["auto"]:
        label = {None: "all", "auto": "auto"}.get(c, c)
        chunk = None if c == "auto" else (c or src.numel())
        variants[f"best_match chunk={label}"] = ((lambda chunk=chunk: ops.best_match(x, dst, "euclidean", chunk=chunk, rows=src)),
                                                 flops_match)
    for w in windows:
        variants[f"window_match {','.join(map(str, w))}"] = (
            (lambda w=w: ops.match(x, dst, src, "euclidean", grid=grid, stride=(2, 2, 2), window=w)), flops_match)
    if shards > 1:
        size = n // shards
        lo = size
        d, r = ops.shard_partition(dst, src, lo, lo + size)
        piece, pairs = x[:, :, lo:lo + size], 2 * heads * r.numel() * d.numel() * dim
        variants[f"shard 2/{shards} best_match"] = ((lambda: ops.match(piece, d, r, "euclidean")), pairs)
        for w in windows:
            variants[f"shard 2/{shards} window {','.join(map(str, w))}"] = (
                (lambda w=w: ops.match(piece, d, r, "euclidean", grid=grid, stride=(2, 2, 2), window=w, offset=lo)), pairs)
    reference = ops.best_match(x, dst, "euclidean", chunk=128, rows=src)[1]
    for name, (fn, _) in variants.items():
        if name.startswith("best_match"):
            assert torch.equal(fn()[1], reference), f"{name} changed the matching"
    times: dict[str, list[float]] = {name: [] for name in variants}
    with busy_processes(load):
        for _ in range(rounds):
            for name, (fn, _) in variants.items():
                times[name].append(median_ms(fn, repeats))
    print(f"{n} video + {text} text tokens {grid}, {heads} heads x {dim}, src {src.numel()} x dst {dst.numel()}; "
          f"{torch.get_num_threads()} threads, {load} busy process(es) beside it")
    out = {}
    for name, (_, flops) in variants.items():
        ms = statistics.median(times[name])
        out[name] = {"ms": ms, "gflops": flops / ms / 1e6, "spread_ms": [min(times[name]), max(times[name])]}
        print(f"  {name:28s} {ms:8.2f} ms  {flops / ms / 1e6:7.1f} GFLOP/s  (rounds {min(times[name]):.2f}-{max(times[name]):.2f} ms)")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096, help="video tokens (grid 4 x H x W with stride (2, 2, 2))")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--text", type=int, default=226, help="text tokens in the SDPA call")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all variants")
    ap.add_argument("--chunks", default="auto,128,512,none",
                    help="row chunks to time; 'auto' = the default tile budget, 'none' = all rows in one GEMM")
    ap.add_argument("--load", type=int, default=0, help="also measure with this many busy processes beside it")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--grid", default=None, help="F,H,W token grid instead of --tokens (CogVideoX-2B: 13,30,45)")
    ap.add_argument("--shards", type=int, default=1,
                    help="also time one shard's matchings, global and windowed (a ring rank's; must divide the tokens)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.grid:
        grid = tuple(int(g) for g in args.grid.split(","))
    else:
        side = round((args.tokens / 4) ** 0.5)
        grid = (4, side, args.tokens // (4 * side))
    if (grid[0] * grid[1] * grid[2]) % args.shards:
        ap.error(f"--shards {args.shards} does not divide the {grid[0] * grid[1] * grid[2]} video tokens")
    chunks = [c.strip() if c.strip() == "auto" else (None if c.strip() == "none" else int(c)) for c in args.chunks.split(",")]
    table = functools.partial(kernel_table, grid, args.heads, args.dim, args.text, chunks, args.repeats, args.rounds,
                              shards=args.shards)
    out = {"quiet": table()}
    if args.load:
        out["load"] = table(load=args.load)
    return out


if __name__ == "__main__":
    main()
