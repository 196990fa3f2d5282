"""AsymRnR under diffusers' context parallelism: per-step time and bytes sent, 1 and 2 CPU ranks.

A Wan-shaped transformer (``--layers`` blocks, 4 heads x 32, a (16, 16, 16) token grid:
4,096 video tokens, 1 thread per rank) runs ``--steps`` denoising steps, baseline and AsymRnR
interleaved in each process: on one process, then on 2 gloo ranks under Ulysses and under
ring attention. Bytes sent per rank and step are counted around the collectives (a dispatch
mode over ``_c10d_functional`` ops, eager runs). Targets: AsymRnR's 2-rank / 1-rank step
time no worse than the baseline's (the reduction keeps scaling), and, under ring, bytes sent
dropping by the kept K/V fraction (each rank reduces its keys/values before the all-gather).
"ulysses shards" is Ulysses with ``Plan(shards=2)``: every rank reduces its own shard before
the all-to-all (shard-local, as ring), so the exchanges shrink too.

    python benchmarks/context_parallel.py [--steps 6] [--layers 2] [--q 0.5] [--kv 0.3]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch

import asymrnr_fx
from asymrnr_fx.testing.cpu_parallel import SentBytes, launch

GRID = (16, 16, 16)
#: Layouts on 2 ranks: "ulysses shards" is Ulysses with Plan(shards=2), reduced before the all-to-all.
MODES = ("ulysses", "ring", "ulysses shards")


def wan_shaped(layers: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    import diffusers

    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=256, ffn_dim=256, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
    ).eval()
    f, h, w = GRID
    inputs = {"hidden_states": torch.randn(1, 16, f, 2 * h, 2 * w), "timestep": torch.tensor([900]),
              "encoder_hidden_states": torch.randn(1, 16, 64), "return_dict": False}
    return model, inputs


def _time_steps(models: dict[str, Any], inputs: dict, steps: int) -> dict[str, float]:
    """Mean step time of each model, steps interleaved (each step runs every model once)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for name, m in models.items():  # warm-up: captures graphs
            m(**inputs)
        for name, m in models.items():
            if hasattr(m, "runtime"):
                m.runtime.reset()
        for step in range(steps):
            x = dict(inputs, timestep=torch.tensor([900 - 100 * step]))
            for name, m in models.items():
                start = time.perf_counter()
                m(**x)
                times[name].append(time.perf_counter() - start)
    return {k: statistics.mean(v) for k, v in times.items()}


def _bytes(model: Any, inputs: dict) -> int:
    mode = SentBytes()
    with torch.no_grad(), mode:
        model(**inputs)
    return sum(mode.sent.values())


def one_process(layers: int, steps: int, q: float, kv: float) -> dict[str, float]:
    torch.set_num_threads(1)
    model, inputs = wan_shaped(layers)
    plan = asymrnr_fx.Plan.uniform(q=q, kv=kv, cache_window=2)
    return _time_steps({"baseline": model, "asymrnr": asymrnr_fx.transform(model, plan)}, inputs, steps)


def ranks(rank: int, world: int, layers: int, steps: int, q: float, kv: float) -> dict[str, Any]:
    from diffusers import ContextParallelConfig

    model, inputs = wan_shaped(layers)
    out: dict[str, Any] = {}
    for mode in MODES:
        parallel = copy.deepcopy(model)
        parallel.enable_parallelism(config=ContextParallelConfig(**{f"{mode.split()[0]}_degree": world}))
        shards = world if mode.endswith("shards") else 1  # Ulysses with Plan(shards=N): reduced before the all-to-all
        plan = asymrnr_fx.Plan.uniform(q=q, kv=kv, cache_window=2, shards=shards)
        fast = asymrnr_fx.transform(parallel, plan)
        out[mode] = _time_steps({"baseline": parallel, "asymrnr": fast}, inputs, steps)
        out[mode]["bytes_baseline"] = _bytes(parallel, inputs)
        out[mode]["bytes_asymrnr"] = _bytes(fast, inputs)
        out[mode]["matches"] = fast.runtime.counts["match"]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--q", type=float, default=0.5)
    ap.add_argument("--kv", type=float, default=0.3)
    args = ap.parse_args(argv)
    single = one_process(args.layers, args.steps, args.q, args.kv)
    two = launch(ranks, 2, args.layers, args.steps, args.q, args.kv, timeout_s=1800)
    print(f"Wan-shaped, {GRID} = {GRID[0] * GRID[1] * GRID[2]} video tokens, {args.layers} blocks, q={args.q} kv={args.kv}, "
          f"{args.steps} steps, 1 thread per rank")
    print(f"{'layout':<22}{'baseline ms':>13}{'asymrnr ms':>12}{'speedup':>9}{'2/1 base':>10}{'2/1 asym':>10}{'MB sent base':>14}{'MB sent asym':>14}")
    print(f"{'1 process':<22}{single['baseline'] * 1e3:>13.0f}{single['asymrnr'] * 1e3:>12.0f}{single['baseline'] / single['asymrnr']:>8.2f}x")
    result = {"one_process": single, "two_ranks": two}
    for mode in MODES:
        r = max((rank[mode] for rank in two), key=lambda d: d["asymrnr"])  # the slowest rank sets the step
        ab, aa = r["baseline"] / single["baseline"], r["asymrnr"] / single["asymrnr"]
        sent_a = r["bytes_asymrnr"]
        sent_a = f"{sent_a / 1e6:>14.2f}" if isinstance(sent_a, int) else f"{sent_a:>14}"
        print(f"{'2 ranks ' + mode:<22}{r['baseline'] * 1e3:>13.0f}{r['asymrnr'] * 1e3:>12.0f}{r['baseline'] / r['asymrnr']:>8.2f}x"
              f"{ab:>10.2f}{aa:>10.2f}{r['bytes_baseline'] / 1e6:>14.2f}{sent_a}")
        print(f"   target: AsymRnR 2/1 ({aa:.2f}) <= baseline 2/1 ({ab:.2f}): {'met' if aa <= ab else 'NOT met'}")
    return result


if __name__ == "__main__":
    main()
