"""Attention forms: one file per way of calling attention, each an :class:`~.base.AttentionForm`.

The passes loop over :data:`FORMS`; adding a form is a new file here and an entry below.
"""
from __future__ import annotations

from typing import Any

from .base import ARGUMENTS, AttentionForm
from .sdpa import SDPA
from .flex import FLEX_ATTENTION
from .kernels import FLASH_ATTN_2, KERNELS, LEFT_INTACT, left_intact_reason
from .sdpa_lse import SDPA_LSE_CPU, SDPA_LSE_FLASH

#: Every form the passes rewrite, in the order they are tried.
FORMS: tuple[AttentionForm, ...] = (SDPA, SDPA_LSE_CPU, SDPA_LSE_FLASH, FLEX_ATTENTION, *KERNELS)

__all__ = ["ARGUMENTS", "FLASH_ATTN_2", "FLEX_ATTENTION", "FORMS", "KERNELS", "LEFT_INTACT", "SDPA", "SDPA_LSE_CPU",
           "SDPA_LSE_FLASH", "AttentionForm", "form_of", "left_intact_reason", "supported"]


def form_of(target: Any) -> tuple[AttentionForm, str] | None:
    """``(form, variant)`` of a call target that some form rewrites, else None."""
    for form in FORMS:
        variant = form.variant(target)
        if variant is not None:
            return form, variant
    return None


def supported() -> str:
    """How messages list the rewritten ops."""
    return ", ".join(f.describe for f in FORMS)
