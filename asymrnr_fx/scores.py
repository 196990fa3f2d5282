"""What every matching kernel shares: token rows read as a 2-D table, squared norms, and the
reduction they end with (the best score of each column and its row).

A leaf module so that the global (:mod:`asymrnr_fx.matching`) and the windowed
(:mod:`asymrnr_fx.matching_window`) matchings share it without importing each other.
"""
from __future__ import annotations

import torch


def column_max(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.max(dim=1)`` of a ``[R, m, n]`` CPU tensor without NaN: the best of every column and its first row.

    Why not ``max`` itself: with indices it is a scalar compare per element on CPU, as slow as
    the GEMM before it at 4 heads x 3,584 x 512 (2.4 ms on 2 threads). Read as a channels-last
    ``[R, n, 1, m]`` image, the columns are channels and a ``(1, m)`` max pool reduces them
    with vector compares, indices included (0.7 ms), keeping the first maximum on ties as
    ``max`` does. On NaN they differ (the pool keeps the last NaN, ``max`` the first): the
    caller checks.
    """
    rows, m, n = scores.shape
    best, nearest = torch.nn.functional.max_pool2d(scores.unsqueeze(1).permute(0, 3, 1, 2), (1, m), return_indices=True)
    return best.view(rows, n), nearest.view(rows, n)


def row_table(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], int]:
    """``x`` ``[B, H, N, d]`` as rows of one 2-D ``[R, d]`` view of its storage: ``(table, base, step)``
    with ``x[b, h, t] == table[base[b * H + h] + t * step]`` (``base`` in host ints: no device read).
    A layout whose strides are not multiples of ``d`` is copied first (the table is then of the copy).

    Why: the matchings gather token rows, and ``index_select`` along dim 0 of a 2-D table copies
    whole rows, while along dim 2 of a strided 4-D view (the video part of a text + video
    sequence, a head-interleaved projection) it is 2-6x slower (2 threads, sorted rows: 4 heads x
    4,096 x 64, 0.15 vs 0.33 ms; 2 heads x 17,550 x 64, 0.34 vs 1.30 ms).
    """
    bsz, heads, n, d = x.shape
    if x.numel() == 0:
        return x.new_empty(0, d), (0,) * (bsz * heads), 0
    strides = [s if size > 1 else 0 for s, size in zip(x.stride()[:3], x.shape[:3])]
    if (d > 1 and x.stride(3) != 1) or any(s % d for s in strides):
        return row_table(x.contiguous())  # a contiguous tensor always has a row view
    sb, sh, st = (s // d for s in strides)
    table = x.as_strided(((bsz - 1) * sb + (heads - 1) * sh + (n - 1) * st + 1, d), (d, 1))
    return table, tuple(b * sb + h * sh for b in range(bsz) for h in range(heads)), st


def table_rows(base: tuple[int, ...], tokens: torch.Tensor, step: int) -> torch.Tensor:
    """The flat row index into a :func:`row_table` of ``tokens`` (a 1-D or ``[.., k]`` index) for every (batch, head)."""
    return (torch.tensor(base, device=tokens.device).view(-1, 1) + tokens.reshape(1, -1) * step).view(-1)


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """``|x|^2`` over the last dim, as a batched dot product. Why not ``x.square().sum(-1)``: it writes the
    squares out and reads them back, 1.6x the time (159,744 rows of 64 on 2 threads: 2.6 vs 1.6 ms);
    ``vector_norm(x) ** 2`` is faster still but rounds through a square root, which breaks exact ties."""
    return torch.einsum("...d,...d->...", x, x)


#: On CUDA, score bfloat16 activations with bfloat16 GEMM operands and float32 accumulation (tensor cores)
#: instead of a float32 GEMM (CUDA cores, about a tenth of the rate): the same products and sums, see
#: :func:`bf16_operands`. Turned off for the process, with a warning, if the device has no such GEMM.
BF16_SCORES = True


def use_bf16(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :func:`bf16_scores` scores these activations (bfloat16, on CUDA, while available)."""
    return BF16_SCORES and dtype == torch.bfloat16 and device.type == "cuda"


def _gemm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b, out_dtype=torch.float32)  # CUDA: bfloat16 in, float32 accumulation and out


def bf16_parts(v: torch.Tensor) -> torch.Tensor:
    """Float32 ``v`` as three bfloat16 values ``[..., 3]`` whose sum is exactly ``v`` (8 + 8 + 8 bits of its 24)."""
    hi = v.bfloat16()
    rest = v - hi.float()  # exact: the bits below hi's
    mid = rest.bfloat16()
    return torch.stack([hi, mid, (rest - mid.float()).bfloat16()], -1)


def bf16_operands(rows: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bfloat16 operands ``[R, n, d + 3]``, ``[R, m, d + 3]`` of the biased euclidean scores ``2 a.b - |b|^2``
    of bfloat16-valued tokens (float32 tensors holding bfloat16 values).

    Why this is exact: ``a`` and ``2 b`` are bfloat16 values already, a product of two is exact in
    float32, and ``|b|^2`` (float32) rides in three bfloat16 columns that sum to it exactly against
    three columns of ones. So a GEMM that accumulates in float32 computes the float32 path's scores,
    summed in another order: the same nearest dst up to float32 rounding of near-ties.
    """
    lhs = torch.cat([rows, rows.new_ones(*rows.shape[:-1], 3)], -1).bfloat16()
    rhs = torch.cat([2 * dst, -bf16_parts(squared_norm(dst)).float()], -1).bfloat16()
    return lhs, rhs


def bf16_scores(rows: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """Float32 scores ``[R, n, m]`` from :func:`bf16_operands` (None where the device has no bfloat16 GEMM
    with float32 output: the caller scores in float32)."""
    global BF16_SCORES
    lhs, rhs = bf16_operands(rows, dst)
    try:
        return _gemm_f32(lhs, rhs.transpose(1, 2))
    except (RuntimeError, TypeError, NotImplementedError) as e:
        BF16_SCORES = False
        import warnings

        from .errors import AsymRnRWarning

        warnings.warn(f"asymrnr_fx: no bfloat16 GEMM with float32 output on {rows.device} ({e}); matching scores "
                      "run in float32 from now on (the same result, slower)", AsymRnRWarning, stacklevel=3)
        return None
