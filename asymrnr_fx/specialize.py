"""Symbolic-shape graphs from a bare ``torch.compile``: one static specialization per shape.

Why: with ``torch.compile(model, backend="asymrnr")`` and the default ``dynamic=None``,
Dynamo recompiles the second resolution it sees with symbolic lengths (its "automatic
dynamic" shapes), and ``dynamic=True`` does so from the start. The pass needs concrete
lengths: it places each attention's tokens on the video grid and checks that the grid
multiplies out to the sequence. A symbolic graph used to run unreduced with a warning.

Instead, the backend hands such a graph to :class:`PerShape`. At run time each new
concrete shape (tensor shapes and the symbolic ints Dynamo passes) is traced once more
from the captured graph with ``make_fx`` (pre-dispatch, so attention stays one
``aten.scaled_dot_product_attention`` call and the module paths of its nodes are kept),
the placeholders get the captured names back (timestep and video inputs are found by
name), and that static graph goes through the normal backend: the pass, then inductor.
Dynamo itself keeps one graph for all shapes, so its recompile limit is never reached;
we keep the last :data:`asymrnr_fx.calls.MAX_SHAPES` specializations (the one per-shape LRU,
:class:`~asymrnr_fx.calls.ShapeCache`) and warn when one is dropped.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx

from .calls import ShapeCache


def has_symbolic_inputs(example_inputs: Sequence[Any]) -> bool:
    """Whether Dynamo captured this graph with symbolic sizes (``dynamic=True`` or automatic dynamic)."""
    return any(
        isinstance(x, torch.SymInt) or (isinstance(x, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in x.shape))
        for x in example_inputs
    )


def scalar_inputs(gm: fx.GraphModule) -> list[int]:
    """Positions of graph inputs read with ``.item()``: with ``dynamic=True`` Dynamo lifts float
    module attributes (a norm's eps) to 0-d tensor inputs and reads them back in the graph."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return sorted({placeholders.index(n.args[0]) for n in gm.graph.nodes
                   if n.op == "call_method" and n.target == "item" and n.args and n.args[0] in placeholders})


def specialize(gm: fx.GraphModule, args: Sequence[Any]) -> fx.GraphModule:
    """``gm`` traced again at the concrete shapes of ``args``: every size a constant, node metadata
    (module paths, stack traces) and placeholder names as captured. Scalars read with
    ``.item()`` from inputs become constants (they are part of the specialization's key)."""
    from torch.fx import traceback as fx_traceback
    from torch.fx.experimental.proxy_tensor import make_fx

    scalars = scalar_inputs(gm)
    if scalars:
        gm = fx.GraphModule(gm, copy.deepcopy(gm.graph))
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        values = {placeholders[i]: args[i].item() for i in scalars}
        for node in list(gm.graph.nodes):
            if node.op == "call_method" and node.target == "item" and node.args[0] in values:
                node.replace_all_uses_with(values[node.args[0]])  # type: ignore[arg-type]
                gm.graph.erase_node(node)
        gm.recompile()
    with fx_traceback.preserve_node_meta():
        static = make_fx(fx.Interpreter(gm).run, pre_dispatch=True, tracing_mode="real")(*args)
    captured = [n for n in gm.graph.nodes if n.op == "placeholder"]
    traced = [n for n in static.graph.nodes if n.op == "placeholder"]
    if len(captured) != len(traced):
        raise RuntimeError(f"specializing a graph changed its inputs ({len(captured)} -> {len(traced)})")
    for old, new in zip(captured, traced):
        new.name = new.target = old.target
        if "example_value" in old.meta:
            new.meta.setdefault("example_value", new.meta.get("val"))
    static.graph.lint()
    static.recompile()
    return static


def _shape_key(args: Sequence[Any], scalars: Sequence[int]) -> tuple:
    shapes = tuple(
        (tuple(a.shape), a.dtype, a.device.type) if isinstance(a, torch.Tensor) else a if isinstance(a, int) else type(a).__name__
        for a in args
    )
    return shapes + tuple(args[i].item() for i in scalars)


class PerShape:
    """Runs a symbolic graph through a static, rewritten and compiled copy per concrete shape."""

    def __init__(self, gm: fx.GraphModule, compile_static: Callable[[fx.GraphModule, list], Callable[..., Any]]) -> None:
        self.gm = gm
        self.compile_static = compile_static
        self.scalars = scalar_inputs(gm)
        self._args: tuple = ()  # the call being specialized (read by _specialize)
        self.compiled = ShapeCache(self._specialize, "one symbolic graph compiled with backend='asymrnr'", with_key=True)

    def entry(self) -> Callable[..., Any]:
        def run(*args: Any) -> Any:  # Dynamo calls a backend's result with the graph inputs, unboxed
            return self.run(args)
        return run

    def _specialize(self, key: tuple) -> Callable[..., Any]:
        return self.compile_static(specialize(self.gm, self._args), list(self._args))

    def run(self, args: tuple) -> Any:
        self._args = args
        try:
            fn = self.compiled.get(_shape_key(args, self.scalars))
        finally:
            self._args = ()
        return fn(*args)
