"""Would a lower-precision score change the matching? Measured on the toy model's real activations.

Runs one toy generation with a plan, keeps the activations every matching sees, and matches
them again from bfloat16-rounded inputs (float32 accumulation): prints the fraction of src
tokens whose nearest dst changes, the gap between each src's best and second-best score (what
a rounding error would have to bridge), and the time of the score GEMM in float32 and in
bfloat16 at the CogVideoX-shaped sizes of ``speed_cogvideox.py`` (4 heads x 3,584 src x 512
dst x 64). No plan option uses bfloat16 scores; this is the measurement behind that choice
(docs/benchmarks.md).

    python benchmarks/match_precision.py [--steps 10] [--threads 2]
"""
from __future__ import annotations

import argparse
from unittest import mock

import torch
from match_kernel import median_ms

import asymrnr_fx
from asymrnr_fx import ops, runtime
from asymrnr_fx.toy.model import _default_model, generate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seen = []
    real_match = ops.match

    def keep(video, dst, src, *a, **k):
        seen.append((video.detach().clone(), dst, src))
        return real_match(video, dst, src, *a, **k)

    model = _default_model()
    fast = asymrnr_fx.transform(model.transformer, asymrnr_fx.Plan.uniform(q=0.5, kv=0.3))
    with mock.patch.object(runtime.ops, "match", keep):
        generate(["a red circle moving right"], num_steps=args.steps, transformer=fast, model=model)
    changed = total = 0
    gaps = []
    for video, dst, src in seen:
        nearest = ops.best_match(video, dst, "euclidean", rows=src)[1]
        changed += int((ops.best_match(video.bfloat16().float(), dst, "euclidean", rows=src)[1] != nearest).sum())
        total += nearest.numel()
        a, b = video[:, :, src].float(), video[:, :, dst].float()
        scores = 2 * a @ b.transpose(-1, -2) - (b * b).sum(-1).unsqueeze(-2)
        top = scores.topk(2, dim=-1).values
        gaps.append((top[..., 0] - top[..., 1]).flatten())
    gap = torch.cat(gaps)
    quantiles = torch.quantile(gap[torch.randperm(gap.numel())[:100_000]], torch.tensor([0.01, 0.05, 0.10, 0.50]))
    g = torch.Generator().manual_seed(0)
    lhs, rhs = torch.randn(4, 3584, 65, generator=g), torch.randn(4, 65, 512, generator=g)
    lhs16, rhs16 = lhs.bfloat16(), rhs.bfloat16()
    out = {"matchings": len(seen), "src_tokens": total, "nearest_changed": changed / total,
           "gap_quantiles": {f"{q:.2f}": float(v) for q, v in zip((0.01, 0.05, 0.10, 0.50), quantiles)},
           "gemm_ms": {"float32": median_ms(lambda: torch.bmm(lhs, rhs)), "bfloat16": median_ms(lambda: torch.bmm(lhs16, rhs16))}}
    print(f"toy, {len(seen)} matchings, {total} src tokens: nearest dst changed from bfloat16 inputs for "
          f"{changed} ({100 * changed / total:.2f}%)")
    print("best - second-best score, quantiles 1/5/10/50%: " + " / ".join(f"{float(v):.3f}" for v in quantiles))
    print(f"score GEMM 4 x 3,584 x 512 x 65, {torch.get_num_threads()} threads: float32 {out['gemm_ms']['float32']:.2f} ms, "
          f"bfloat16 {out['gemm_ms']['bfloat16']:.2f} ms (bfloat16 output)")
    return out


if __name__ == "__main__":
    main()
