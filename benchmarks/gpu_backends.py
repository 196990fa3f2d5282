"""Every diffusers attention backend that runs here, reduced, against the SDPA (``native``) result.

For a lent GPU machine (``benchmarks/gpu_check.sh`` runs it), and runnable on CPU for the
backends that exist there. A tiny Wan (2 blocks, bf16 on CUDA) is transformed with one plan;
for each backend in ``BACKENDS`` the script sets it, runs 4 denoising calls, and reports how
many sites were rewritten, how many matchings ran, and the largest difference from the
``native`` backend's reduced output. A backend that is not installed, or that raises on this
device, is reported with the reason, never skipped silently. Expected on a GPU: the SDPA
backends (``_native_flash``, ``_native_efficient``, ``_native_cudnn``, ``_native_math``) and
``flex`` reduce and agree with ``native`` to bf16 precision; so should the kernel-table backends
(``flash``, ``_flash_3``, ``xformers``: ``asymrnr_fx/passes/forms/kernels.py``), not yet run on
a GPU; ``sage`` is named in an ``AsymRnRWarning`` and runs unreduced (0 matchings).

    python benchmarks/gpu_backends.py [--device cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import warnings

import torch

import asymrnr_fx
from asymrnr_fx.testing.pipelines import tiny_transformer, transformer_inputs

# The ``*_hub`` variants download their kernels at run time, which this project never does: not listed.
BACKENDS = ("native", "_native_math", "_native_flash", "_native_efficient", "_native_cudnn", "flex",
            "flash", "_flash_3", "sage", "xformers")
CUDA_ONLY = {"_native_efficient", "_native_cudnn", "flash", "_flash_3", "sage", "xformers"}
TIMESTEPS = (900.0, 700.0, 500.0, 300.0)


def run(backend: str, device: str, dtype: torch.dtype) -> dict:
    """One backend: rewritten sites, matchings, outputs of the 4 calls (or the error)."""
    if device == "cpu" and backend in CUDA_ONLY:
        return {"status": "CUDA-only kernel: not run on CPU"}
    model = tiny_transformer("wan", layers=2).to(device, dtype)
    inputs = transformer_inputs("wan", dtype=dtype)
    inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    try:
        model.set_attention_backend(backend)
    except Exception as e:  # not installed, or not for this device: say which
        return {"status": f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            fast = asymrnr_fx.transform(model, plan)
            outs = []
            with torch.no_grad(), asymrnr_fx.generation(fast):
                for t in TIMESTEPS:
                    outs.append(fast(**{**inputs, "timestep": torch.tensor([t], device=device).long()})[0].float().cpu())
        except Exception as e:
            return {"status": f"error: {type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    runtime = asymrnr_fx.runtime_of(fast)
    rewritten = sum(len(r.rewritten) for r in runtime.reports)
    notes = [str(w.message)[:160] for w in seen if issubclass(w.category, asymrnr_fx.AsymRnRWarning)]
    return {"status": "ran", "rewritten": rewritten, "matchings": runtime.counts["match"], "outputs": outs, "warnings": notes}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--json", help="also write the table to this file")
    args = ap.parse_args(argv)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"tiny Wan, 2 blocks, {dtype}, {name}; plan q=0.5 kv=0.3 window 2, {len(TIMESTEPS)} calls")
    results = {b: run(b, args.device, dtype) for b in args.backends.split(",")}
    reference = results.get("native", {}).get("outputs")
    table = {}
    for backend, r in results.items():
        row = {k: v for k, v in r.items() if k != "outputs"}
        if r["status"] == "ran" and reference is not None:
            row["max_diff_vs_native"] = max(float((a - b).abs().max()) for a, b in zip(r["outputs"], reference))
        table[backend] = row
        detail = (f"rewritten {row['rewritten']}, matchings {row['matchings']}, "
                  f"max |diff| vs native {row.get('max_diff_vs_native', float('nan')):.3g}"
                  + (f"; warned: {row['warnings'][0]}" if row["warnings"] else "")) if r["status"] == "ran" else r["status"]
        print(f"  {backend:<18} {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "backends": table}, f, indent=2)
    return table


if __name__ == "__main__":
    main()
