"""The library's warning and error types: a leaf module, so anything can import them without pulling in the passes."""
from __future__ import annotations

__all__ = ["AsymRnRWarning", "IncompatibleHookError"]


class AsymRnRWarning(UserWarning):
    """Raised (as a warning) whenever reduction is off or may not be what was asked, so a no-op is never silent."""


class IncompatibleHookError(ValueError):
    """A hook (cache, offloading) that would silently turn the reduction off; the message names it and the fix."""
