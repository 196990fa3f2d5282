"""The one custom op the rewritten graph calls: ``asymrnr::select``.

Which tokens survive depends on the activations and on Python-side state (step, cache), so
the compiler must treat it as opaque. Its fake implementation returns a fresh *unbacked*
size for the kept count, bounded to ``[1, L]``; the reduced gather -> attention -> restore
chain then compiles once and the count may change on every call without recompiling.

Its arguments are the tensor to match on, a parameter of the attention module (it tells the
running module instance apart at run time), a site string (module path relative to the
compiled region plus the site's grid and text layout, see
:func:`asymrnr_fx.sites.encode_site`) and the feature. No runtime id or step is passed:
the op reads the active call (runtime, generation state, region prefix) from a context
variable set outside the graph, so graphs are shareable across blocks, models, processes.

This module holds only the op's schema and fake (what the passes and the compiler need);
the kernel is registered by :mod:`asymrnr_fx.runtime`, so the rewrite never imports the
run-time state.
"""
from __future__ import annotations

from typing import Optional

import torch

from .sites import decode_site


@torch.library.custom_op("asymrnr::select", mutates_args=())
def select(x: torch.Tensor, anchor: Optional[torch.Tensor], site: str, feature: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep [B, H, n], assign [B, H, L])`` for one site and feature at the current step.

    The real kernel replaces this body when :mod:`asymrnr_fx.runtime` is imported.
    """
    raise RuntimeError("asymrnr::select has no kernel in this process: import asymrnr_fx (its runtime registers it)")


@select.register_fake
def _select_fake(x: torch.Tensor, anchor: Optional[torch.Tensor], site: str, feature: str) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, heads, length = x.shape[0], x.shape[1], x.shape[2]
    # The true lower bound (every text token and one dst per stride tile are always kept) keeps
    # the compiler from guarding on "kept == 1": SDPA's mask-shape check with a [B, 1, 1, L]
    # key-padding mask and inductor's CPU bmm lowering both ask it, and cannot answer it for an
    # unbacked size. A symbolic L (Mochi: data-dependent prompt length) gives no static bounds.
    static = isinstance(length, int)
    low = min(decode_site(site).min_kept_of(length), length) if static else 1
    kept = torch.library.get_ctx().new_dynamic_size(min=max(low, 1), max=length if static else None)
    return x.new_empty((bsz, heads, kept), dtype=torch.long), x.new_empty((bsz, heads, length), dtype=torch.long)


SELECT_OP = torch.ops.asymrnr.select.default
