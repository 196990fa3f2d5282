"""Probe 1b: exact ties (small-integer features, euclidean/dot): nearest AND order must equal ref_match_one exactly."""
import math, random, sys
sys.path.insert(0, "tests")
import torch
from asymrnr_fx import ops
from reference import ref_match_one

rng = random.Random(7)
strides = [(1, 2, 2), (2, 2, 2), (2, 3, 3), (1, 4, 4)]
cases = mism_n = mism_o = 0
fails = []
for trial in range(150):
    stride = rng.choice(strides)
    grid = (rng.randint(1, 5), rng.randint(2, 3 * stride[1] + 2), rng.randint(2, 3 * stride[2] + 2))
    n = math.prod(grid)
    if n > 400: continue
    divs = [k for k in range(2, 9) if n % k == 0]
    if not divs: continue
    shards = rng.choice(divs)
    window = tuple(rng.choice([0, 0, 1, 2, 9]) for _ in range(3))
    sim = rng.choice(["euclidean", "dot"])
    st = ops.site_stride(grid, stride)
    dst, src = ops.partition(grid, st, ops.draw_tile_choices(grid, st, trial))
    big = torch.randint(0, 2, (2, n + 3, 3, 4), generator=torch.Generator().manual_seed(trial)).float()
    x = big.transpose(1, 2)[:, :, 3:]
    size = n // shards
    for lo in range(0, n, size):
        d, r = ops.shard_partition(dst, src, lo, lo + size)
        if d.numel() == 0: continue
        piece = x[:, :, lo:lo + size]
        m = ops.match(piece, d, r, sim, grid=grid, stride=st, window=window, offset=lo)
        cases += 1
        for b in range(2):
            for h in range(3):
                rn, ro = ref_match_one(piece[b, h], d.tolist(), r.tolist(), sim, window, grid, st, lo)
                if m.nearest[b, h].tolist() != rn:
                    mism_n += 1; fails.append(("nearest", trial, grid, st, window, shards, lo, sim, b, h))
                elif m.order[b, h].tolist() != ro:
                    mism_o += 1; fails.append(("order", trial, grid, st, window, shards, lo, sim, b, h))
print(f"pieces {cases}: nearest mismatches {mism_n}, order mismatches {mism_o}")
for f in fails[:10]: print(f)
