"""The package is layered: imports only point down, there is no import circle, and the core
imports with torch and sympy alone.

Layers, lowest first; a module may import its own layer and the ones below it:

* ``core``: everything not named below (ops, plan, runtime, state, custom_ops, passes/,
  backend, api, report, integrations/, pipelines);
* ``calibration``: ``asymrnr_fx.calibration``;
* ``testing``: ``asymrnr_fx.testing`` and ``asymrnr_fx.toy``, the built-in models (test
  models and tiny pipelines; the shipped toy model). They need only the core;
* ``evaluation``: ``asymrnr_fx.evaluation``, whose model registry builds those models;
* ``commands``: ``asymrnr_fx.commands``, ``asymrnr_fx.cli`` and the package facade
  ``asymrnr_fx/__init__.py`` (it serves calibration names lazily), so a module inside the
  package imports the module that defines a name, never ``asymrnr_fx`` itself.

Imports are read with :mod:`ast`, wherever they stand: at module level, inside functions,
under ``if TYPE_CHECKING``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asymrnr_fx"
LAYERS = ("core", "calibration", "testing", "evaluation", "commands")
#: first dotted part below ``asymrnr_fx`` -> layer (everything else is core)
LAYER_OF_PART = {
    "calibration": "calibration",
    "testing": "testing",
    "toy": "testing",
    "evaluation": "evaluation",
    "commands": "commands",
    "cli": "commands",
}
#: optional dependencies the core must not need at import time
OPTIONAL = ("diffusers", "transformers", "tokenizers", "matplotlib", "safetensors", "tqdm", "PIL", "skimage")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the package
    line: int
    runtime: bool  # False under ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "commands"  # the facade
    return LAYER_OF_PART.get(parts[1], "core")


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of a package module in ``path``, resolved to the module it loads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "asymrnr_fx":
                    found.append(Import(name, alias.name, node.lineno, runtime))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            if base_name.split(".")[0] == "asymrnr_fx":
                for alias in node.names:
                    sub = f"{base_name}.{alias.name}"
                    found.append(Import(name, sub if sub in modules else base_name, node.lineno, runtime))
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def all_imports() -> list[Import]:
    modules = package_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


# --------------------------------------------------------------------------- tests
def test_layer_map_covers_the_package():
    """Every top-level module or subpackage is either core or named in LAYER_OF_PART, on purpose."""
    top = {name.split(".")[1] for name in package_modules() if "." in name}
    core = sorted(part for part in top if part not in LAYER_OF_PART)
    assert {"calibration", "evaluation", "testing", "commands", "cli"} <= top
    moved = {"calibrate", "sensitivity", "budget", "plot", "compare", "bench", "targets", "metrics", "media"}
    assert not moved & top, "calibration/evaluation modules are back at the top level"
    assert "api" in core and "plan" in core


def test_imports_point_down_only():
    modules = package_modules()
    missing, upward = [], []
    for imp in all_imports():
        if imp.target not in modules:
            missing.append(f"{imp.source}:{imp.line} imports {imp.target}, which does not exist")
            continue
        src, dst = layer(imp.source), layer(imp.target)
        if LAYERS.index(dst) > LAYERS.index(src):
            upward.append(f"{imp.source}:{imp.line} ({src}) imports {imp.target} ({dst})")
    assert not missing, "\n".join(missing)
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return out


def test_no_import_circles():
    """No module reaches itself through imports: function-level ones and ``if TYPE_CHECKING`` ones
    included (a circle for the type checker is a circle in the design; a Protocol breaks it)."""
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        if imp.target != imp.source and not imp.source.startswith(imp.target + "."):
            edges.setdefault(imp.source, set()).add(imp.target)  # a module's own packages are not an edge
    assert not _cycles(edges), "import circles: " + "; ".join(" <-> ".join(c) for c in _cycles(edges))


#: The run-time side: per-model state, the call entry, and what drives them.
RUN_TIME = ("runtime", "state", "module", "api", "backend", "deploy", "pipelines", "calls", "specialize")


def test_the_rewrite_imports_no_run_time_module():
    """The passes and the op's schema need the plan, the capture context and the site strings only:
    run-time state reaches them through the call (the op's kernel is registered from the runtime)."""
    rewrite_side = lambda m: m.startswith("asymrnr_fx.passes") or m == "asymrnr_fx.custom_ops"  # noqa: E731
    run_time = {f"asymrnr_fx.{m}" for m in RUN_TIME}
    wrong = [f"{imp.source}:{imp.line} imports {imp.target}" for imp in all_imports()
             if rewrite_side(imp.source) and imp.target in run_time]
    assert not wrong, "the rewrite reaches into the run-time side:\n" + "\n".join(wrong)
    assert {f"asymrnr_fx.{m}" for m in RUN_TIME} <= set(package_modules())  # the list names real modules


def _run(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which the :data:`OPTIONAL` packages look uninstalled.

    A ``None`` entry in ``sys.modules`` is how Python spells "not importable": ``import x``
    raises ModuleNotFoundError and ``importlib.util.find_spec("x")`` returns None (torch's
    Dynamo probes some packages that way, so a finder that raises would break torch, not us).
    """
    prelude = f"import sys\nBLOCKED = {OPTIONAL!r}\nABOVE_CORE = {sorted(LAYER_OF_PART)!r}\n"
    prelude += "sys.modules.update(dict.fromkeys(BLOCKED))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)


def test_core_imports_without_optional_dependencies():
    result = _run("""
        import asymrnr_fx, sys
        loaded = sorted(m for m in sys.modules if m.startswith("asymrnr_fx."))
        above = [m for m in loaded if m.split(".")[1] in ABOVE_CORE]
        assert not above, f"import asymrnr_fx loaded {above}"
        blocked = [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
        assert not blocked, blocked
        try:
            import diffusers  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError("diffusers was not blocked")
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_moved_names_load_on_first_use_and_say_where_they_went():
    """The top level is the user API (16 names at most); deployment, calibration and internals moved
    to their modules, and the old top-level names still work with a DeprecationWarning naming the new home."""
    result = _run("""
        import sys, warnings
        import asymrnr_fx
        assert "asymrnr_fx.calibration" not in sys.modules
        assert len(asymrnr_fx.__all__) <= 16, asymrnr_fx.__all__
        for name, home in sorted(asymrnr_fx._MOVED.items()):
            assert name not in asymrnr_fx.__all__, name
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                value = getattr(asymrnr_fx, name)
            assert value is getattr(__import__(f"asymrnr_fx.{home}", fromlist=[name]), name), name
            assert [str(w.message) for w in seen] == [f"asymrnr_fx.{name} moved to asymrnr_fx.{home}.{name}; import it from there"]
            assert seen[0].category is DeprecationWarning
        assert asymrnr_fx.calibration.calibrate.__module__ == "asymrnr_fx.calibration.measure"
        print("ok")
    """)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_every_public_top_level_name_resolves():
    import asymrnr_fx

    for name in asymrnr_fx.__all__:
        assert getattr(asymrnr_fx, name) is not None, name
    with pytest.raises(AttributeError):
        asymrnr_fx.no_such_name  # noqa: B018
