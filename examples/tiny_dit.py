"""A small hand-written video DiT (no diffusers), with and without AsymRnR.

The model, :class:`asymrnr_fx.testing.TinyVideoDiT`, patchifies the video and runs
timestep-modulated self-attention blocks; it shows that asymrnr_fx works on any model that
calls ``torch.nn.functional.scaled_dot_product_attention``. Run this file to see the report
and a short denoising loop with and without AsymRnR.
"""
from __future__ import annotations

import torch

from asymrnr_fx.testing import TinyVideoDiT  # tests/test_transform.py imports it from here too

if __name__ == "__main__":
    import asymrnr_fx
    from asymrnr_fx.calibration import euler

    torch.manual_seed(0)
    model = TinyVideoDiT().eval()
    x = torch.randn(2, 4, 4, 16, 16)
    plan = asymrnr_fx.Plan.uniform(q=0.5, kv=0.3, cache_window=3)
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        ref = euler(model, {"hidden_states": x}, 10)
        out = euler(fast, {"hidden_states": x}, 10)
    print(fast.report)
    print(f"matching ran at steps {fast.runtime.matching_steps()}; cache hits {fast.runtime.counts['reuse']}")
    print(f"max |difference| vs unreduced model after 10 steps: {(out - ref).abs().max():.4f}")
