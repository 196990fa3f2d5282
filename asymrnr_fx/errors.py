"""The library's warning type: a leaf module, so anything can import it without pulling in the passes."""
from __future__ import annotations


class AsymRnRWarning(UserWarning):
    """Raised (as a warning) whenever reduction is off or may not be what was asked, so a no-op is never silent."""
