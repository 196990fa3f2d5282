"""bfloat16 matching scores on CUDA: the same matching as float32 scores, and how much faster (GPU only).

For bfloat16 activations ``ops.best_match`` scores on CUDA with bfloat16 GEMM operands and float32
accumulation (tensor cores) instead of a float32 GEMM (CUDA cores), an exact rewrite of the same
products and sums (``asymrnr_fx/scores.py``, ``bf16_operands``; tested on CPU with an emulated GEMM).
This script checks it on the device: the nearest dst of every src token from both paths (any
difference must be a near-tie, within float32 rounding of the scores), and times both against the
model's own bfloat16 SDPA call at the same sizes. Default sizes: CogVideoX-2B's grid (13 x 30 x 45,
17,550 video tokens, 226 text), 30 heads x 64.

    python benchmarks/gpu_match_scores.py [--grid 13,30,45] [--heads 30] [--dim 64]
"""
from __future__ import annotations

import argparse

import torch

from asymrnr_fx import ops, scores


def cuda_ms(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="13,30,45")
    ap.add_argument("--heads", type=int, default=30)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--text", type=int, default=226)
    args = ap.parse_args(argv)
    assert torch.cuda.is_available(), "no CUDA device"
    grid = tuple(int(v) for v in args.grid.split(","))
    n = grid[0] * grid[1] * grid[2]
    dst, src = ops.partition(grid, (2, 2, 2), ops.draw_tile_choices(grid, (2, 2, 2), seed=0))
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, args.heads, n, args.dim, device="cuda", generator=g, dtype=torch.bfloat16)
    q = torch.randn(1, args.heads, n + args.text, args.dim, device="cuda", generator=g, dtype=torch.bfloat16)
    dst, src = dst.cuda(), src.cuda()

    def match(bf16: bool):
        scores.BF16_SCORES = bf16
        return ops.best_match(x, dst, "euclidean", rows=src)

    best16, near16 = match(True)
    assert scores.BF16_SCORES, "the bfloat16 GEMM with float32 output was not available (see the warning)"
    best32, near32 = match(False)
    differ = near16 != near32
    # a differing src must be a near-tie: both dst score within float32 rounding of each other (float64 check)
    xs, xd = x[0].double()[:, src], x[0].double()[:, dst]
    d16 = (xs - xd.gather(1, near16[0].unsqueeze(-1).expand(-1, -1, args.dim))).square().sum(-1)
    d32 = (xs - xd.gather(1, near32[0].unsqueeze(-1).expand(-1, -1, args.dim))).square().sum(-1)
    gap = ((d16 - d32).abs() / d32.clamp_min(1e-12))[differ[0]]
    times = {"sdpa bf16": cuda_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)),
             "best_match float32": cuda_ms(lambda: match(False)), "best_match bf16": cuda_ms(lambda: match(True))}
    scores.BF16_SCORES = True
    flops = {"sdpa bf16": 4 * args.heads * (n + args.text) ** 2 * args.dim}
    flops["best_match float32"] = flops["best_match bf16"] = 2 * args.heads * src.numel() * dst.numel() * (args.dim + 1)
    print(f"{torch.cuda.get_device_name()}: grid {grid}, {args.heads} heads x {args.dim}, src {src.numel()} x dst {dst.numel()}")
    print(f"nearest dst differs for {int(differ.sum())} of {differ.numel()} src tokens; largest relative distance gap "
          f"among them {float(gap.max()) if gap.numel() else 0.0:.2e} (near-ties if below ~1e-6); best score max diff "
          f"{float((best16 - best32).abs().max()):.3g}")
    if gap.numel() and float(gap.max()) > 1e-5:
        print("  !! differences beyond float32 rounding: the bfloat16 scores are NOT the same matching on this device; "
              "report it and set asymrnr_fx.scores.BF16_SCORES = False")
    for name, ms in times.items():
        print(f"  {name:20s} {ms:8.2f} ms  {flops[name] / ms / 1e9:8.1f} TFLOP/s")
    return {"differ": int(differ.sum()), "gap": float(gap.max()) if gap.numel() else 0.0, "ms": times}


if __name__ == "__main__":
    main()
