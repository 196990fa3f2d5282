"""Which module each site string names, and its plan row: the site table of one transformed model.

Why apart from the runtime: this is what the model *is* (its attention modules, their rows,
how graph paths map to the model's own names), fixed once the model has been captured; the
runtime's other half is what each call *does* (matchings, cache, events).
"""
from __future__ import annotations

import functools
import weakref
from typing import Any

import torch

from .plan import Plan
from .sites import SiteSpec, decode_site

__all__ = ["SiteTable"]


def _step(obj: Any, part: str) -> Any:
    """One step of a Dynamo module path. A ``functools.partial`` over a module (diffusers' hooks
    wrap ``forward`` as ``partial(new_forward, module)``) is named as a bound method: its
    ``__self__`` is the module it was given."""
    if part.isdigit() and isinstance(obj, (tuple, list)):
        return obj[int(part)]
    if part == "__self__" and isinstance(obj, functools.partial) and obj.args and not hasattr(obj, "__self__"):
        return obj.args[0]
    return getattr(obj, part)


class SiteTable:
    """Site strings -> :class:`~asymrnr_fx.sites.SiteSpec` (full path, plan row), for one model."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.site_order: dict[str, int] = {}  # full module path -> plan row
        self.sites: dict[str, SiteSpec] = {}  # full key -> spec
        self._specs: dict[tuple[str, str, int | None], SiteSpec] = {}  # (site string, prefix, anchor) -> spec
        self._model: "weakref.ref | None" = None
        self._param_names: dict[int, str] = {}
        self._unknown: set[int] = set()
        self._canonical: dict[str, str] = {}  # graph module path -> the model's own name

    def ordinal(self, path: str) -> int:
        """Plan row of an attention module: its place among the model's video sites.

        Rows come from :meth:`register_rows` (a graph of the whole model lists every video site,
        rewritten or not) or, for graphs that serve several modules (regional blocks, frames after
        a graph break, where every video site is rewritten), from the order the sites first run.
        """
        if path not in self.site_order:
            n = self.plan.num_sites
            if n is not None and len(self.site_order) >= n:
                raise ValueError(
                    f"plan {self.plan.name or ''} has ratios for {n} attention sites, but the model has more "
                    f"(site {len(self.site_order) + 1} is {path}); build the plan for this model's number of "
                    "attention blocks"
                )
            self.site_order[path] = len(self.site_order)
        return self.site_order[path]

    def register_rows(self, paths: "tuple[str, ...] | list[str]") -> None:
        """Give each video site of a captured top-level graph its row, in graph order.

        Why at capture: a site whose plan ratios are all zero is left intact, so it never runs
        ``asymrnr::select``; numbering only the sites that run would shift every later row.
        """
        for path in paths:
            self.ordinal(self.canonical(path))

    def canonical(self, path: str) -> str:
        """The model's own name for the module a graph path reaches (``path`` itself if none).

        Why: Dynamo names a module by how the code reached it, so a block reached through a
        wrapper (a hook's closure, a patched bound ``forward``) gets a path such as
        ``blocks.0.forward.__self__.attn1``; plan rows and cache keys must not depend on that.
        """
        found = self._canonical.get(path)
        if found is not None:
            return found
        model = self._model() if self._model is not None else None
        found = path
        if model is not None and path:
            obj: Any = model
            try:
                for part in path.split("."):
                    obj = _step(obj, part)
            except (AttributeError, IndexError, TypeError, KeyError):
                obj = None
            if isinstance(obj, torch.nn.Module):
                names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
                found = names.get(id(obj), path)
        if len(self._canonical) < 100_000:
            self._canonical[path] = found
        return found

    @property
    def num_sites(self) -> int:
        return len(self.site_order)

    def bind(self, model: Any) -> None:
        """Remember the model whose parameters identify its attention modules at run time."""
        self._model = weakref.ref(model)
        self._param_names = {}
        self._canonical = {}

    def index_parameters(self) -> None:
        """Name the model's parameters now, if not yet done.

        Why: a tool that swaps the model's block lists during its call (cache-dit) would
        otherwise have them named by its own wrapper paths when the index is built mid-call.
        """
        if not self._param_names:
            self._index_parameters()

    def _index_parameters(self) -> bool:
        """(Re)build the parameter-address index from the model; False if the model is gone."""
        model = self._model() if self._model is not None else None
        if model is None:
            return False
        self._param_names = {p.data_ptr(): n for n, p in model.named_parameters()}
        return True

    def _anchored_path(self, relative: str, ptr: int) -> str | None:
        """The full path of the attention module whose parameter lives at ``ptr``, or None.

        The graph's own path may be relative (a block graph, a frame resumed after a hook's
        graph break); the parameter says which module instance actually ran.
        """
        name = self._param_names.get(ptr)
        if name is None and ptr not in self._unknown:
            if self._index_parameters():  # built lazily, rebuilt when weights moved (``.to()``, offloading)
                name = self._param_names.get(ptr)
            if name is None:
                self._unknown.add(ptr)
        if name is None:
            return None
        owner = name.split(".")[:-1]  # the module holding the parameter, e.g. blocks.3.attn1.to_q
        leaf = relative.rsplit(".", 1)[-1]
        if leaf in owner:  # the graph's (relative) module name, placed in the full path
            return ".".join(owner[: len(owner) - owner[::-1].index(leaf)])
        # no usable name (a frame resumed inside the attention module): the projection's parent
        return ".".join(owner[:-1]) or None

    def resolve(self, site: str, prefix: str = "", anchor: torch.Tensor | None = None) -> SiteSpec:
        """The spec of a site string run under ``prefix`` with parameter ``anchor`` (cached)."""
        ptr = anchor.data_ptr() if anchor is not None and self._model is not None else None
        spec = self._specs.get((site, prefix, ptr))
        if spec is None:
            g = decode_site(site)
            path = (self._anchored_path(g.path, ptr) if ptr is not None else None) or self.canonical(prefix + g.path)
            spec = SiteSpec(
                key=f"{path}#{g.occurrence}", path=path, ordinal=self.ordinal(path), occurrence=g.occurrence,
                kind=g.kind, grid=g.grid, text_len=g.text_len, text_first=g.text_first, shards=g.shards, local=g.local,
            )
            if len(self._specs) > 100_000:  # weights that move every call (offloading): stay bounded
                self._specs.clear()
                self._unknown.clear()
            self._specs[site, prefix, ptr] = spec
            self.sites[spec.key] = spec
        return spec

    def check_site_count(self) -> None:
        """After a full call: a table plan must have exactly as many rows as the model has sites."""
        n = self.plan.num_sites
        if n is not None and self.num_sites not in (0, n):
            raise ValueError(
                f"plan {self.plan.name or ''} has ratios for {n} attention sites but the model has "
                f"{self.num_sites} video attention sites ({', '.join(list(self.site_order)[:3])}, ...); "
                "build the plan for this model's number of attention blocks"
            )
