"""What :mod:`asymrnr_fx.deploy` checks before it trusts a package or runs its compiled code.

* **Inputs.** AOTInductor's runner takes whatever tensors it is given: a batch-2 call of a
  batch-1 package silently drops the second sample, and a smaller latent makes the compiled
  code read past its buffers (``double free or corruption``, the process aborts). So the
  package records the input spec it was exported for (:func:`input_spec`) and every call is
  checked against it (:func:`check_inputs`) before the compiled code runs.
* **Archive.** The plan is checksummed inside the record, but a flipped byte in an embedded
  weight would load and give NaN. :func:`write_manifest` stores a SHA-256 per zip member next
  to AOTInductor's files; :func:`verify_archive` checks every member's CRC and hash first.
* **Output types.** A program exported with diffusers' ``return_dict=True`` returns a diffusers
  dataclass, which pytree can only rebuild once diffusers registered it:
  :func:`with_pytree_types` imports the module the error names and retries.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils import _pytree as pytree

from .errors import InputMismatchError, PackageError

__all__ = [
    "InputMismatchError", "PackageError", "check_inputs", "input_spec", "verify_archive", "with_pytree_types",
    "write_manifest",
]

T = TypeVar("T")
#: The manifest member, under the archive's root folder.
MANIFEST_NAME = "asymrnr_fx/manifest.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- input spec
def input_spec(ep: torch.export.ExportedProgram, params: list[str]) -> dict[str, Any]:
    """The user inputs ``ep`` was exported for, as JSON-able data: call layout and one entry per pytree leaf.

    Tensors give shape (a dynamic dim as its symbol, range and, for ``a*s + b``, the linear
    form), dtype and device type; non-tensor leaves give the constant export specialized on.
    ``params`` are the forward's parameter names (to name positional arguments).
    """
    in_spec = ep.call_spec.in_spec
    user = [s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    if in_spec is None or in_spec.num_leaves != len(user):
        return {}
    args, kwargs = pytree.tree_unflatten(list(range(len(user))), in_spec)
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    ranges = ep.range_constraints
    leaves = []
    for path, index in pytree.tree_flatten_with_path((args, kwargs))[0]:
        arg = user[index].arg
        entry: dict[str, Any] = {"path": pytree.keystr(path), "name": _leaf_name(path, params)}
        node = placeholders.get(getattr(arg, "name", None))
        val = node.meta.get("val") if node is not None else None
        if isinstance(arg, torch.export.graph_signature.ConstantArgument):
            entry.update(kind="constant", **_constant(arg.value))
        elif isinstance(val, torch.Tensor):
            entry.update(kind="tensor", shape=[_dim(d, ranges) for d in val.shape],
                         dtype=str(val.dtype).removeprefix("torch."), device=val.device.type)
        elif isinstance(val, torch.SymInt):
            entry.update(kind="int", dim=_dim(val, ranges))
        else:
            entry.update(kind="other")  # e.g. a script object: not checked
        leaves.append(entry)
    return {"positional": len(args), "keywords": list(kwargs), "leaves": leaves}


def _leaf_name(path: tuple, params: list[str]) -> str:
    """``hidden_states`` or ``hidden_states[0]`` for a leaf of ``(args, kwargs)``; positional args by parameter name."""
    first, rest = path[1], pytree.keystr(path[2:])
    if getattr(path[0], "idx", 1) == 0:
        i = first.idx
        return (params[i] if i < len(params) else f"args[{i}]") + rest
    return f"{first.key}{rest}"


def _constant(value: Any) -> dict[str, Any]:
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    return {"repr": repr(value)}


def _bound(x: Any) -> int | None:
    try:
        return int(x)
    except Exception:  # int_oo and friends: no bound
        return None


def _dim(d: Any, ranges: Mapping[Any, Any]) -> int | dict[str, Any]:
    """A static dim as its int; a symbolic one as ``{"text", "min", "max"}`` plus ``symbol`` or ``linear``."""
    if not isinstance(d, torch.SymInt):
        return int(d)
    expr = d.node.expr
    if expr.is_number:
        return int(expr)
    from torch.utils._sympy.value_ranges import bound_sympy

    vr = bound_sympy(expr, dict(ranges))
    out: dict[str, Any] = {"text": str(expr), "min": _bound(vr.lower), "max": _bound(vr.upper)}
    if expr.is_Symbol:
        out["symbol"] = str(expr)
    elif len(expr.free_symbols) == 1:
        (s,) = expr.free_symbols
        a, b = expr.coeff(s), expr.subs(s, 0)
        if expr.is_polynomial(s) and a.is_Integer and b.is_Integer and (expr - a * s - b) == 0:
            root = ranges.get(s)
            out["linear"] = {"symbol": str(s), "a": int(a), "b": int(b),
                             "min": _bound(root.lower) if root is not None else None,
                             "max": _bound(root.upper) if root is not None else None}
    return out


# --------------------------------------------------------------------------- input check
def check_inputs(spec: Mapping[str, Any], args: tuple, kwargs: Mapping[str, Any], where: str) -> None:
    """Raise :class:`InputMismatchError` unless ``(args, kwargs)`` fit ``spec`` (from :func:`input_spec`)."""
    if not spec:
        return
    exported = f"{where} was exported for"
    keywords = list(spec["keywords"])
    if len(args) != spec["positional"]:
        raise InputMismatchError(
            f"{exported} {spec['positional']} positional argument(s) and keyword arguments {keywords}; "
            f"got {len(args)} positional. Pass the arguments as the export example did, or re-export with this layout"
        )
    missing = [k for k in keywords if k not in kwargs]
    extra = [k for k in kwargs if k not in keywords]
    if missing or extra:
        said = (f"argument(s) {missing} missing" if missing else "") + (" and " if missing and extra else "")
        said += f"argument(s) {extra} not passed at export" if extra else ""
        raise InputMismatchError(
            f"{exported} keyword arguments {keywords}; {said}. The compiled code has an input for each argument "
            "of the export example only: pass exactly those, or re-export with these arguments in the example"
        )
    leaves = pytree.tree_flatten_with_path((tuple(args), {k: kwargs[k] for k in keywords}))[0]
    recorded = spec["leaves"]
    paths = [pytree.keystr(p) for p, _ in leaves]
    if paths != [r["path"] for r in recorded]:
        i = next((i for i, (r, p) in enumerate(zip(recorded, paths)) if r["path"] != p), min(len(paths), len(recorded)))
        at = recorded[i]["name"] if i < len(recorded) else paths[i]
        raise InputMismatchError(
            f"{exported} inputs nested differently (tuples, lists, dicts) from this call's, first at {at!r}: it "
            f"expects {len(recorded)} leaves {[r['name'] for r in recorded]}, got {len(paths)}. Pass the same "
            "structure as the export example, or re-export with this one"
        )
    symbols: dict[str, tuple[int, str]] = {}
    for entry, (_, value) in zip(recorded, leaves):
        _check_leaf(entry, value, symbols, exported)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{_a(str(value.dtype).removeprefix('torch.'))} tensor of shape {tuple(value.shape)} on {value.device.type}"
    return f"{type(value).__name__} {value!r}"


def _expected(entry: Mapping[str, Any]) -> str:
    if entry["kind"] == "tensor":
        dims = ", ".join(str(d) if isinstance(d, int) else d["text"] for d in entry["shape"])
        return f"{_a(entry['dtype'])} tensor of shape ({dims}{',' if len(entry['shape']) == 1 else ''}) on {entry['device']}"
    if entry["kind"] == "constant":
        return f"the constant {entry['value']!r}" if "value" in entry else f"the constant {entry['repr']}"
    return "an int"


def _check_leaf(entry: Mapping[str, Any], value: Any, symbols: dict[str, tuple[int, str]], exported: str) -> None:
    name, kind = entry["name"], entry["kind"]

    def refuse(why: str, fix: str) -> InputMismatchError:
        return InputMismatchError(
            f"argument {name!r} is {_describe(value)}, but {exported} {_expected(entry)}: {why}. {fix}"
        )

    if kind == "constant":
        if isinstance(value, torch.Tensor):
            same = False
        elif "repr" in entry:
            same = repr(value) == entry["repr"]
        else:
            want = entry["value"]
            same = isinstance(value, bool) == isinstance(want, bool) and type(value == want) is bool and value == want
        if not same:
            raise refuse("torch.export specializes the program on non-tensor inputs",
                         f"Pass {name}={entry.get('value', entry.get('repr'))!r}, or re-export with this value")
        return
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise refuse("the compiled code takes an int here", "Pass an int")
        _check_dim(entry["dim"], value, f"{name!r}", symbols, refuse)
        return
    if kind != "tensor":
        return
    if not isinstance(value, torch.Tensor):
        raise refuse("the compiled code reads a tensor here", "Pass a tensor as at export")
    fix = "Convert the input, or re-export and re-package the model with inputs of this kind"
    if str(value.dtype).removeprefix("torch.") != entry["dtype"]:
        raise refuse("the dtype differs", fix)
    if value.device.type != entry["device"]:
        raise refuse("the device differs", fix)
    if value.dim() != len(entry["shape"]):
        raise refuse(f"{value.dim()} dims instead of {len(entry['shape'])}", "Pass the shape the package was exported for")
    for i, (want, got) in enumerate(zip(entry["shape"], value.shape)):
        if isinstance(want, int):
            if got != want:
                raise refuse(
                    f"dim {i} is {got}, and the package was exported with it fixed at {want}",
                    f"Re-export with dynamic_shapes= making dim {i} of {name!r} dynamic, or export at this shape",
                )
        else:
            _check_dim(want, int(got), f"dim {i} of {name!r}", symbols, refuse)


def _check_dim(want: Mapping[str, Any], got: int, what: str, symbols: dict[str, tuple[int, str]],
               refuse: Callable[[str, str], InputMismatchError]) -> None:
    """A dynamic dim: within its range, and consistent with every other dim of the same symbol."""
    lo, hi = want.get("min"), want.get("max")
    wider = f"Re-export with a range in dynamic_shapes= that holds {got} for {what}, or export at this shape"
    if (lo is not None and got < lo) or (hi is not None and got > hi):
        span = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise refuse(f"{what} is {got}, outside the range {span} the package was exported for ({want['text']})", wider)
    symbol, value = want.get("symbol"), got
    if symbol is None and "linear" in want:
        lin = want["linear"]
        symbol, (value, rem) = lin["symbol"], divmod(got - lin["b"], lin["a"])
        if rem:
            raise refuse(f"{what} is {got}, but the package was exported for {want['text']}, which never equals {got}", wider)
        r_lo, r_hi = lin.get("min"), lin.get("max")
        if (r_lo is not None and value < r_lo) or (r_hi is not None and value > r_hi):
            raise refuse(f"{what} = {got} needs {symbol} = {value}, outside {symbol}'s range {r_lo}..{r_hi}", wider)
    if symbol is None:
        return
    seen = symbols.setdefault(symbol, (value, what))
    if seen[0] != value:
        raise refuse(
            f"{what} gives {symbol} = {value}, but {seen[1]} gave {symbol} = {seen[0]}; the package was exported "
            "with these dims tied",
            "Pass inputs whose tied dims agree, or re-export with separate dims in dynamic_shapes=",
        )


# --------------------------------------------------------------------------- archive manifest
def _root(names: list[str]) -> str:
    return names[0].split("/", 1)[0] if names and "/" in names[0] else ""


def _manifest_name(names: list[str]) -> str:
    root = _root(names)
    return f"{root}/{MANIFEST_NAME}" if root else MANIFEST_NAME


def _sha256(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> str:
    """SHA-256 of a member, read in chunks; reading to the end also checks its CRC-32."""
    digest = hashlib.sha256()
    try:
        with z.open(info) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # "Bad CRC-32 for file ...", truncated data
        raise PackageError(
            f"{where}: archive member {info.filename} is damaged ({e}); copy the file again or re-package the model"
        ) from None
    return digest.hexdigest()


def write_manifest(path: str | Path) -> Path:
    """Append ``<root>/asymrnr_fx/manifest.json`` (a SHA-256 per member) to the archive at ``path``."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        name = _manifest_name([i.filename for i in infos])
        if any(i.filename == name for i in infos):
            raise ValueError(f"{path} already has a manifest ({name})")
        digests = {i.filename: _sha256(z, i, str(path)) for i in infos}
    manifest = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "members": digests}
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(name, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def verify_archive(path: str | Path, kind: str) -> None:
    """Check every member of the archive before anything in it is loaded.

    Every kind: each member's CRC-32. AOTInductor packages (``kind="aoti"``) also: the
    manifest written by :func:`write_manifest` is there, and lists exactly the members, each
    with its SHA-256 (so a member damaged with a matching CRC, added or dropped is refused too).
    """
    where = str(path)
    again = "copy the file again, or re-package the model with asymrnr_fx.deploy.package()"
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise PackageError(f"{where} is not a .pt2 archive ({e})") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise PackageError(f"{where}: archive member {duplicate} appears twice; {again}")
        if kind != "aoti":
            for info in infos:
                _sha256(z, info, where)
            return
        name = _manifest_name(names)
        if name not in names:
            raise PackageError(
                f"{where} has no manifest ({name}): it was not written by asymrnr_fx.deploy.package(), or its "
                "members were rewritten; re-package the model with asymrnr_fx.deploy.package()"
            )
        try:
            manifest = json.loads(z.read(name))
            listed = dict(manifest["members"])
        except (ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise PackageError(f"{where}: the manifest {name} is corrupted ({e}); {again}") from None
        for info in infos:
            if info.filename == name:
                continue
            if info.filename not in listed:
                raise PackageError(f"{where}: archive member {info.filename} is not in the manifest (added after "
                                   f"packaging); {again}")
            if _sha256(z, info, where) != listed[info.filename]:
                raise PackageError(f"{where}: archive member {info.filename} does not match its SHA-256 in the "
                                   f"manifest (the file is damaged or was changed); {again}")
        gone = [n for n in listed if n not in names]
        if gone:
            raise PackageError(f"{where}: archive member {gone[0]} listed in the manifest is missing; {again}")


# --------------------------------------------------------------------------- pytree output types
_UNREGISTERED = re.compile(r"Deserializing (\S+) in pytree is not registered")


def with_pytree_types(fn: Callable[[], T], where: str, attempts: int = 16) -> T:
    """``fn()``, importing the module of any pytree type it cannot deserialize and retrying.

    Why: diffusers registers its output dataclasses with pytree when their module is imported,
    and a process that imported only torch and asymrnr_fx has not.
    """
    tried: set[str] = set()
    for _ in range(attempts):
        try:
            return fn()
        except NotImplementedError as e:
            found = _UNREGISTERED.search(str(e))
            if found is None:
                raise
            type_name = found.group(1)
            if type_name in tried:
                raise PackageError(
                    f"{where} returns {type_name}; importing its module did not register it with pytree. Export "
                    "with return_dict=False so the package returns a tuple"
                ) from e
            tried.add(type_name)
            _import_module_of(type_name, where, e)
    return fn()


def _import_module_of(type_name: str, where: str, cause: Exception) -> None:
    parts = type_name.split(".")
    error: Exception | None = None
    for cut in range(len(parts) - 1, 0, -1):  # longest module prefix first (a nested class has a longer name)
        try:
            importlib.import_module(".".join(parts[:cut]))
            return
        except ImportError as e:
            error = error or e
    raise PackageError(
        f"{where} returns {type_name} (the model was exported returning that class, e.g. diffusers' default "
        f"return_dict=True), which cannot be imported in this process ({error}). Install {parts[0]} here, or "
        "export with return_dict=False so the package returns a tuple"
    ) from cause
