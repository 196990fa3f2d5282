"""AsymRnR under diffusers' context parallelism: per-step time and bytes sent, 1 and 2 CPU ranks.

A Wan-shaped transformer (``--layers`` blocks, 4 heads x 32, a (16, 16, 16) token grid:
4,096 video tokens, 1 thread per rank) runs ``--steps`` denoising steps on 2 gloo ranks:
the one-process model (on every rank at once) and each parallel layout, baseline and AsymRnR,
all interleaved step by step. Bytes sent per rank and step are counted around the collectives
(``testing.cpu_parallel.SentBytes``, the profiler's record of ``_c10d_functional`` ops). Targets: AsymRnR's 2-rank / 1-rank step
time no worse than the baseline's (the reduction keeps scaling), and, under ring, bytes sent
dropping by the kept K/V fraction (each rank reduces its keys/values before the all-gather).
"ulysses shards" is Ulysses with ``Plan(shards=2)``: every rank reduces its own shard before
the all-to-all (shard-local, as ring), so the exchanges shrink too.

    python benchmarks/context_parallel.py [--steps 10] [--layers 2] [--q 0.5] [--kv 0.3]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections import Counter
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


def ranks(rank: int, world: int, layers: int, steps: int, q: float, kv: float) -> dict[str, Any]:
    """Every layout's baseline and AsymRnR, and the one-process pair, steps interleaved.

    Why the one-process models run here too, on every rank at once: the 2-rank / 1-rank ratio
    then compares steps taken under the same conditions (both cores busy, the same minute),
    not two runs minutes apart whose timings drift by more than the difference measured.
    """
    from diffusers import ContextParallelConfig

    model, inputs = wan_shaped(layers)
    plan = asymrnr_fx.Plan.uniform(q=q, kv=kv, cache_window=2)
    models: dict[str, Any] = {"1 process baseline": model, "1 process asymrnr": asymrnr_fx.transform(model, plan)}
    for mode in MODES:
        parallel = copy.deepcopy(model)
        parallel.enable_parallelism(config=ContextParallelConfig(**{f"{mode.split()[0]}_degree": world}))
        shards = world if mode.endswith("shards") else 1  # Ulysses with Plan(shards=N): reduced before the all-to-all
        models[f"{mode} baseline"] = parallel
        models[f"{mode} asymrnr"] = asymrnr_fx.transform(parallel, dataclasses.replace(plan, shards=shards))
    for m in models.values():
        if hasattr(m, "runtime"):
            m.runtime.timings = Counter()  # host seconds inside asymrnr::select, per step
    times = _time_steps(models, inputs, steps)
    select = {name: 1e3 * sum(m.runtime.timings.values()) / (steps + 1) for name, m in models.items() if hasattr(m, "runtime")}
    out: dict[str, Any] = {"1 process": {"baseline": times["1 process baseline"], "asymrnr": times["1 process asymrnr"],
                                         "select_ms": select["1 process asymrnr"]}}
    for mode in MODES:
        out[mode] = {"baseline": times[f"{mode} baseline"], "asymrnr": times[f"{mode} asymrnr"],
                     "select_ms": select[f"{mode} asymrnr"],
                     "bytes_baseline": _bytes(models[f"{mode} baseline"], inputs),
                     "bytes_asymrnr": _bytes(models[f"{mode} asymrnr"], inputs),
                     "matches": models[f"{mode} asymrnr"].runtime.counts["match"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--q", type=float, default=0.5)
    ap.add_argument("--kv", type=float, default=0.3)
    args = ap.parse_args(argv)
    two = launch(ranks, 2, args.layers, args.steps, args.q, args.kv, timeout_s=1800)
    single = max((rank["1 process"] for rank in two), key=lambda d: d["asymrnr"])
    print(f"Wan-shaped, {GRID} = {GRID[0] * GRID[1] * GRID[2]} video tokens, {args.layers} blocks, q={args.q} kv={args.kv}, "
          f"{args.steps} steps, 1 thread per rank")
    print(f"{'layout':<22}{'baseline ms':>13}{'asymrnr ms':>12}{'speedup':>9}{'2/1 base':>10}{'2/1 asym':>10}"
          f"{'MB sent base':>14}{'MB sent asym':>14}{'select ms':>11}")
    print(f"{'1 process':<22}{single['baseline'] * 1e3:>13.0f}{single['asymrnr'] * 1e3:>12.0f}{single['baseline'] / single['asymrnr']:>8.2f}x"
          f"{'':>48}{single['select_ms']:>11.1f}")
    result = {"one_process": single, "two_ranks": two}
    for mode in MODES:
        r = max((rank[mode] for rank in two), key=lambda d: d["asymrnr"])  # the slowest rank sets the step
        ab, aa = r["baseline"] / single["baseline"], r["asymrnr"] / single["asymrnr"]
        sent_a = r["bytes_asymrnr"]
        sent_a = f"{sent_a / 1e6:>14.2f}" if isinstance(sent_a, int) else f"{sent_a:>14}"
        print(f"{'2 ranks ' + mode:<22}{r['baseline'] * 1e3:>13.0f}{r['asymrnr'] * 1e3:>12.0f}{r['baseline'] / r['asymrnr']:>8.2f}x"
              f"{ab:>10.2f}{aa:>10.2f}{r['bytes_baseline'] / 1e6:>14.2f}{sent_a}{r['select_ms']:>11.1f}")
        print(f"   target: AsymRnR 2/1 ({aa:.2f}) <= baseline 2/1 ({ab:.2f}): {'met' if aa <= ab else 'NOT met'}")
    return result


if __name__ == "__main__":
    main()
