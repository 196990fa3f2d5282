"""The library's warning and error types: a leaf module, so anything can import them without pulling in the passes.

The modules that raise them re-export them (``asymrnr_fx.plan_fields.PlanError``,
``asymrnr_fx.deploy.PackageError``, ...), so either import works.
"""
from __future__ import annotations

__all__ = ["AsymRnRWarning", "IncompatibleHookError", "InputMismatchError", "PackageError", "PlanError", "PlanTypeError"]


class AsymRnRWarning(UserWarning):
    """Raised (as a warning) whenever reduction is off or may not be what was asked, so a no-op is never silent."""


class IncompatibleHookError(ValueError):
    """A hook (cache, offloading) that would silently turn the reduction off; the message names it and the fix."""


class PlanError(ValueError):
    """A plan field with an invalid value; :attr:`field` names it."""

    def __init__(self, field_name: str, detail: str, source: str | None = None) -> None:
        self.field = field_name
        self.detail = detail
        self.source = source
        where = f" (in {source})" if source else ""
        super().__init__(f"Plan.{field_name}{where}: {detail}")

    def located(self, source: str) -> "PlanError":
        """The same error, saying where the value came from (e.g. a plan file)."""
        return type(self)(self.field, self.detail, source)


class PlanTypeError(PlanError, TypeError):
    """A plan field of the wrong type (also a :class:`PlanError`, hence a ``ValueError``)."""


class PackageError(ValueError):
    """A package or saved program that :func:`asymrnr_fx.deploy.load` cannot use: not ours, another
    format version, a bad plan, a damaged archive."""


class InputMismatchError(PackageError):
    """A call whose inputs differ from those the package was exported for (the compiled code
    would silently drop data or read out of bounds, so the call is refused before it runs)."""
