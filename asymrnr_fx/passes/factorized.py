"""Factorized attention (Latte): calls that see one frame, or one position, of the video at a time.

Why: a factorized video DiT never attends over all F x H x W tokens. Its *spatial* blocks fold
the frames into the batch (``[B*F, H*W]`` tokens: each call row is one frame), its *temporal*
blocks fold the spatial grid into the batch (``[B*H*W, F]``: each row is one position over
time). Partition and matching already run per batch element, so such a call is reduced
exactly as a self-attention site whose grid is the part of the video one row holds:
``(1, H, W)`` for a spatial call, ``(F, 1, 1)`` for a temporal one.

Read from shapes against the model's grid: sequence ``H*W`` with a batch that is a multiple
of ``F`` (spatial), or sequence ``F`` with a batch that is a multiple of ``H*W`` (temporal).
A length that is both (``F == H*W`` with a batch that fits either) is ambiguous and left intact.
:mod:`.classify_attention` counts these sites only after full-grid ones, so a guessed grid is
never chosen because of them when another grid explains whole-video attention.
"""
from __future__ import annotations

from .infer_grid import GridCandidate

#: The factorization of a site, as reported: what one batch row of the call holds.
FOLDS = {
    "spatial": "one frame per batch row (frames folded into the batch)",
    "temporal": "one spatial position per batch row (the H x W grid folded into the batch)",
}


def fold(q_shape: tuple, k_shape: tuple, cand: GridCandidate) -> tuple[str, tuple[int, int, int]] | str | None:
    """``(factorization, per-row grid)`` for a call that folds frames or positions into its batch,
    a reason string when the shapes fit both, or None when they fit neither.

    ``q_shape``/``k_shape`` are ``[batch, heads, tokens, dim]``. Only single-process grids are read
    (ring shards of a factorized model are not): ``cand.shards`` must be 1.
    """
    f, h, w = cand.grid
    batch, lq = q_shape[0], q_shape[2]
    if cand.shards != 1 or f < 2 or h * w < 2 or not isinstance(batch, int) or not isinstance(lq, int):
        return None
    found = []
    if lq == h * w and batch % f == 0:
        found.append(("spatial", (1, h, w)))
    if lq == f and batch % (h * w) == 0:
        found.append(("temporal", (f, 1, 1)))
    if len(found) > 1:
        return (f"ambiguous factorized attention: {lq} tokens with batch {batch} fit both one frame (H*W) and one "
                f"position over time (F) of grid {cand.grid}; left intact")
    return found[0] if found else None

