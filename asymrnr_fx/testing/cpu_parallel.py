"""Running diffusers' context parallelism on CPU ranks (gloo), for tests, the example and the benchmark.

Two shims, both for diffusers 0.42 on a machine without an accelerator, neither needed on GPUs:

* ``enable_parallelism`` computes ``rank % torch.accelerator.device_count()``, which is 0 on
  a CPU-only machine: the count is reported as 1 there.
* diffusers' ``native`` attention backend returns no log-sum-exp, which ring attention merges
  by; on CPU the aten kernel ``_scaled_dot_product_flash_attention_for_cpu`` returns one, so
  the backend's forward op calls it when ring asks (``return_lse=True``). On CUDA the
  ``_native_flash`` / ``_native_cudnn`` backends already return it.

:func:`launch` spawns ranks on 127.0.0.1 with a timeout on every collective and on the whole
run: a rank that fails or hangs is an error in the caller, never a hang.
"""
from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["SentBytes", "cpu_shims", "init_gloo", "launch", "tensor_parallel_cpu_shim"]

_SHIMMED = False


def cpu_shims() -> None:
    """Install the two CPU shims above (idempotent; only where no accelerator is present)."""
    global _SHIMMED
    if _SHIMMED or torch.accelerator.is_available():
        return
    _SHIMMED = True
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    import diffusers.models.attention_dispatch as dispatch

    plain = dispatch._native_attention_forward_op

    def forward_op(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Any = None,
                   dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                   return_lse: bool = False, _save_ctx: bool = True, _parallel_config: Any = None) -> Any:
        if not return_lse:
            return plain(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, False,
                         _save_ctx=_save_ctx, _parallel_config=_parallel_config)
        q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))  # diffusers' [B, S, H, D] -> [B, H, S, D]
        if attn_mask is not None and attn_mask.dtype == torch.bool:  # the CPU kernel takes additive masks only
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(~attn_mask, float("-inf"))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
        return out.permute(0, 2, 1, 3), lse.permute(0, 2, 1)

    dispatch._native_attention_forward_op = forward_op


def tensor_parallel_cpu_shim() -> None:
    """Let diffusers' tensor parallelism shard on a CPU (gloo) mesh: a test-side shim, for tests only.

    diffusers 0.42's ``apply_tensor_parallel`` refuses any mesh whose device type is not in
    ``hooks.tensor_parallel._SUPPORTED_TP_DEVICES`` (cuda, neuron, tpu, xpu); on a machine
    without an accelerator the mesh ``enable_parallelism`` builds is a ``"cpu"`` one. The
    sharding itself is torch's ``parallelize_module`` (``ColwiseParallel`` / ``RowwiseParallel``
    on DTensors), which runs on CPU over gloo, so the shim only adds ``"cpu"`` to that tuple.
    Idempotent; installs nothing where an accelerator is present. Use with :func:`cpu_shims`
    (``enable_parallelism`` also needs its ``device_count`` shim on CPU).
    """
    if torch.accelerator.is_available():
        return
    import diffusers.hooks.tensor_parallel as tensor_parallel

    if "cpu" not in tensor_parallel._SUPPORTED_TP_DEVICES:
        tensor_parallel._SUPPORTED_TP_DEVICES = (*tensor_parallel._SUPPORTED_TP_DEVICES, "cpu")


def init_gloo(rank: int, world: int, port: int, timeout_s: float = 60.0) -> None:
    """Join a gloo process group on 127.0.0.1: every collective of the group times out after ``timeout_s``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, out_dir: str, args: tuple) -> None:
    torch.set_num_threads(1)  # one thread per rank: ranks share the machine's cores
    init_gloo(rank, world, port)
    try:
        cpu_shims()
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def launch(fn: Callable[..., Any], world: int, *args: Any, timeout_s: float = 300.0) -> list[Any]:
    """Run ``fn(rank, world, *args)`` on ``world`` spawned CPU ranks; return each rank's result.

    ``fn`` must be importable (a module-level function). A rank that raises terminates the
    others and raises here; past ``timeout_s`` every rank is killed and ``TimeoutError`` raised.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(_entry, args=(fn, world, _free_port(), out_dir, args), nprocs=world,
                                 join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise TimeoutError(f"{world} ranks did not finish within {timeout_s:.0f} s; killed")
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=False) for r in range(world)]


class SentBytes:
    """Bytes this rank sends through functional collectives inside the ``with`` block, in total
    (``sent``, by op) and per call (``calls``): all-gather sends its input to every peer,
    all-to-all all but its own share, all-reduce its input.

    Why the profiler and not a ``TorchDispatchMode``: Dynamo runs no compiled code while a
    dispatch mode is active, so a transformed model would run eagerly, unreduced, and be
    counted as such. The profiler records each op's input shapes and dtypes as it runs,
    compiled or not.
    """

    _BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "int": 4, "bool": 1}

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.calls: list[tuple[str, int]] = []

    def __enter__(self) -> "SentBytes":
        self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._prof.__exit__(*exc)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        events = sorted(self._prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
        for e in events:
            name = e.name()
            if not name.startswith("_c10d_functional::") or not e.shapes() or not e.shapes()[0]:
                continue
            nbytes = math.prod(e.shapes()[0]) * self._BYTES.get(e.dtypes()[0], 4)
            if "all_gather" in name:
                sent = nbytes * (e.concrete_inputs()[1] - 1)
            elif "all_to_all" in name:
                sent = nbytes * (world - 1) // world
            elif "all_reduce" in name:
                sent = nbytes
            else:
                continue
            self.sent[name] += sent
            self.calls.append((name, sent))
