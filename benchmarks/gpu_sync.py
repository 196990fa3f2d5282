"""Host syncs per denoising step on CUDA: where AsymRnR makes the CPU wait for the GPU.

Runs the CogVideoX-shaped model compiled with AsymRnR (whole model and regional) for 10
steps (cache window 5) under ``torch.cuda.set_sync_debug_mode("warn")`` and counts the
synchronisation warnings per step. Expected: one per step (the timestep read, once per call,
outside the graph), more at window starts (steps 0 and 5: the matching). A reuse step with
more than one is a regression.

    python benchmarks/gpu_sync.py
"""
from __future__ import annotations

import warnings

import torch

import asymrnr_fx
from asymrnr_fx.evaluation.bench import cogvideox_shaped


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA device"
    model, inputs = cogvideox_shaped(layers=4, frames=4, size=64, dtype=torch.bfloat16)
    model = model.cuda()
    inputs = {k: (v.cuda() if isinstance(v, torch.Tensor) else tuple(t.cuda() for t in v)) for k, v in inputs.items()}
    plan = asymrnr_fx.Plan.uniform(q=0.8, kv=0.4, cache_window=5)
    for mode in (True, "regional"):
        fast = asymrnr_fx.transform(model, plan, compile=mode)
        with torch.no_grad(), asymrnr_fx.generation(fast):
            fast(**inputs)  # compile outside the count
        counts = []
        with torch.no_grad(), asymrnr_fx.generation(fast):
            for i, t in enumerate(torch.linspace(999, 1, 10, device="cuda")):
                kw = dict(inputs, timestep=t.expand(inputs["hidden_states"].shape[0]))
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    fast(**kw)
                    torch.cuda.set_sync_debug_mode("default")
                counts.append(sum("synchroniz" in str(w.message) for w in seen))
        print(f"compile={mode!r}: syncs per step {counts}")


if __name__ == "__main__":
    main()
