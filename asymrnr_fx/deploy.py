"""Ship a transformed model: ``export`` -> ``package`` (AOTInductor) -> ``load`` in another process.

    ep = asymrnr_fx.deploy.export(model, plan, kwargs=inputs)    # torch.export + the AsymRnR pass
    asymrnr_fx.deploy.package(ep, "model.pt2")                     # AOTInductor .pt2, plan inside
    fast = asymrnr_fx.deploy.load("model.pt2")                     # any process: import asymrnr_fx only
    out = fast(**inputs)                                           # reads the timestep, tracks steps

What the graph carries: every rewritten attention site is an ``asymrnr::select`` node whose
arguments are the tensor to match on and a content-derived site string (module path, kind,
grid, text layout; see :func:`asymrnr_fx.sites.encode_site`). What travels beside the graph
is one record of strings (:data:`FORMAT_KEY`, :data:`PLAN_KEY`, :data:`PLAN_DIGEST_KEY`,
:data:`CALL_KEY`, :data:`OP_SCHEMA_KEY`): the format version, the plan (safetensors bytes,
base64), its SHA-256, how to find the timestep argument (and the site strings), and the
``asymrnr::select`` schema the graph calls. The record is kept

* in an ``ExportedProgram`` as ``ep.graph_module.meta["custom"]["asymrnr_fx"]``, which
  ``torch.export.save``/``torch.export.load`` serialize (as JSON) with the program;
* in an AOTInductor package as its ``aot_inductor.metadata`` (the ``*_metadata.json`` files
  of the .pt2 zip, readable without loading the compiled library).

:func:`load` rebuilds a :class:`~asymrnr_fx.runtime.Runtime` from the plan and, on every
call, reads the timestep once and opens the call around the compiled runner, exactly as
:func:`asymrnr_fx.transform_graph` does. The compiled code calls ``asymrnr::select`` back
through AOTInductor's proxy executor (the op is a Python custom op, registered by
``import asymrnr_fx``), so matching, selection and the cache run in Python as they do in
process.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import inspect as _inspect
import json
import os
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import custom_ops as _custom_ops
from . import integrations
from .deploy_checks import InputMismatchError, PackageError, check_inputs, input_spec, verify_archive, with_pytree_types, write_manifest
from .passes import rewrite_graph
from .calls import call_timestep
from .context import Capture
from .plan import Plan, coerce_plan
from .report import AsymRnRWarning, Report
from .runtime import Runtime, fixed_plan
from .state import cache_context

__all__ = ["FORMAT_VERSION", "Deployed", "InputMismatchError", "PackageError", "export", "load", "package", "read_record"]

#: Version of the record below; :func:`load` refuses any other.
FORMAT_VERSION = 1
#: Key of the record in ``graph_module.meta["custom"]``.
META_KEY = "asymrnr_fx"
FORMAT_KEY = "asymrnr_fx.format"
PLAN_KEY = "asymrnr_fx.plan"
PLAN_DIGEST_KEY = "asymrnr_fx.plan_sha256"
CALL_KEY = "asymrnr_fx.call"
OP_SCHEMA_KEY = "asymrnr_fx.op_schema"
RECORD_KEYS = (FORMAT_KEY, PLAN_KEY, PLAN_DIGEST_KEY, CALL_KEY, OP_SCHEMA_KEY)
#: AOTInductor model name inside the package (``aoti_compile_and_package`` uses "model").
MODEL_NAME = "model"


# importing custom_ops registers asymrnr::select: the proxy executor looks it up when a package loads

# --------------------------------------------------------------------------- export
def export(
    model: nn.Module,
    plan: Plan | Mapping[str, Any] | str | None = None,
    *,
    args: tuple = (),
    kwargs: Mapping[str, Any] | None = None,
    dynamic_shapes: Any = None,
    grid: tuple[int, int, int] | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` ``model`` with its attention rewritten by AsymRnR; the plan travels in the program.

    The model is exported (``args``/``kwargs`` are example inputs, as for ``torch.export.export``),
    the pass rewrites the exported graph (video grid from ``grid``, the plan, or the model's
    config for diffusers models), and the rewritten module is exported again so the result is
    a valid ``ExportedProgram`` whose sites are ``asymrnr::select`` nodes. Call the result's
    module only through :func:`load` (it opens the call the op needs).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"export() needs an nn.Module, got {type(model).__name__}")
    plan = coerce_plan(plan)
    args, kwargs = tuple(args), dict(kwargs or {})
    grid_fn = integrations.grid_fn_for(model)
    capture = Capture(grid_fn(model, args, kwargs) if grid_fn is not None else None)
    gm = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes).module()
    report = rewrite_graph(gm, plan, capture, grid=grid)
    if report.rewritten:  # a table plan for more sites than the model has: refused now, not at the package's first call
        rows = Runtime(plan)
        rows.register_rows(list(report.rows))
        rows.check_site_count()
    if not report.rewritten:
        warnings.warn(
            f"asymrnr_fx.deploy.export: no attention site of {type(model).__name__} was rewritten; the program "
            f"runs the unreduced model.\n{Report([report])}",
            AsymRnRWarning, stacklevel=2,
        )
    placeholders = list(gm.graph.find_nodes(op="placeholder"))
    timestep = placeholders[report.timestep_index] if report.timestep_index is not None else None
    name = str(timestep.target) if timestep is not None else None
    params = list(_inspect.signature(gm.forward).parameters)
    position = params.index(name) if name in params and params.index(name) < len(args) else None
    site_arg = _select_argument("site")
    sites = [str(n.args[site_arg]) for n in gm.graph.nodes if n.op == "call_function" and n.target is _custom_ops.SELECT_OP]
    ep = torch.export.export(gm, args, kwargs, dynamic_shapes=dynamic_shapes)
    call = {"timestep": name, "position": position, "sites": list(dict.fromkeys(sites)), "rows": list(report.rows),
            "inputs": input_spec(ep, params),  # checked before every call of a package (see deploy_checks)
            "direction": integrations.timestep_direction(model)}  # as transform() knows it: a warm-up is not a step
    ep.graph_module.meta.setdefault("custom", {})[META_KEY] = _make_record(plan, call)
    return ep


def _select_schema() -> str:
    return str(_custom_ops.SELECT_OP._schema)


def _select_argument(name: str) -> int:
    """Position of argument ``name`` in ``asymrnr::select``'s schema (the schema may grow arguments)."""
    return [a.name for a in _custom_ops.SELECT_OP._schema.arguments].index(name)


def _make_record(plan: Plan, call: dict[str, Any]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(plan.save(Path(tmp) / "plan.safetensors")).read_bytes()
    return {
        FORMAT_KEY: str(FORMAT_VERSION),
        PLAN_KEY: base64.b64encode(data).decode("ascii"),
        PLAN_DIGEST_KEY: hashlib.sha256(data).hexdigest(),
        CALL_KEY: json.dumps(call),
        OP_SCHEMA_KEY: _select_schema(),  # the compiled code calls the op with exactly these arguments
    }


def _record_of(ep: torch.export.ExportedProgram) -> dict[str, str] | None:
    custom = ep.graph_module.meta.get("custom")
    record = custom.get(META_KEY) if isinstance(custom, dict) else None
    return dict(record) if isinstance(record, dict) else None


# --------------------------------------------------------------------------- package
def package(
    exported: torch.export.ExportedProgram,
    path: str | os.PathLike,
    *,
    inductor_configs: Mapping[str, Any] | None = None,
) -> Path:
    """Compile ``exported`` (from :func:`export`) with AOTInductor into the ``.pt2`` at ``path``.

    A thin wrapper over ``torch._inductor.aoti_compile_and_package``; the record (format
    version, plan, call layout) goes into the package's ``aot_inductor.metadata``.
    ``inductor_configs`` are passed on (e.g. ``{"aot_inductor.debug_compile": True}``).
    """
    if not isinstance(exported, torch.export.ExportedProgram):
        raise TypeError(f"package() needs the ExportedProgram returned by asymrnr_fx.deploy.export(), got {type(exported).__name__}")
    record = _record_of(exported)
    if record is None:
        raise PackageError(
            "this ExportedProgram carries no AsymRnR plan (graph_module.meta['custom']['asymrnr_fx']); "
            "export it with asymrnr_fx.deploy.export(model, plan, ...)"
        )
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"an AOTInductor package path must end in .pt2, got {str(path)!r}")
    configs = dict(inductor_configs or {})
    metadata = {**dict(configs.pop("aot_inductor.metadata", None) or {}), **record}  # a fresh dict: inductor adds to it
    configs["aot_inductor.metadata"] = metadata
    out = torch._inductor.aoti_compile_and_package(exported, package_path=str(path), inductor_configs=configs)
    return write_manifest(out)  # a SHA-256 per member: load() refuses a damaged or altered archive


# --------------------------------------------------------------------------- load
def read_record(path: str | os.PathLike | torch.export.ExportedProgram) -> tuple[str, dict[str, str]]:
    """``(kind, record)`` of a package (``"aoti"``), a saved program or an ExportedProgram (``"export"``).

    Reads only metadata: neither the compiled library nor the saved graph is loaded, so a
    package built against another ``asymrnr::select`` schema can still be inspected. Raises
    :class:`PackageError` if the file is neither, or carries no AsymRnR record.
    """
    if isinstance(path, torch.export.ExportedProgram):
        record = _record_of(path)
        if record is None:
            raise PackageError("this ExportedProgram carries no AsymRnR record; export it with asymrnr_fx.deploy.export()")
        return "export", record
    path = Path(path)
    kind, names = _kind_of(path)
    if kind == "export":
        return kind, _saved_program_record(path, names)
    try:
        meta = dict(torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(path), MODEL_NAME))
    except Exception as e:  # the loader raises RuntimeError with the zip's complaint
        raise PackageError(f"{path}: cannot read the AOTInductor metadata of model {MODEL_NAME!r} ({e})") from e
    return kind, {k: v for k, v in meta.items() if k in RECORD_KEYS}


def _kind_of(path: Path) -> tuple[str, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no package at {path}")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        raise PackageError(f"{path} is not a .pt2 archive (not a zip file)") from None
    if any("/data/aotinductor/" in n for n in names):
        return "aoti", names
    if any("/models/" in n and n.endswith(".json") for n in names):
        return "export", names
    raise PackageError(f"{path} holds neither an AOTInductor model nor a saved ExportedProgram")


def _saved_program_record(path: Path, names: list[str]) -> dict[str, str]:
    """The record in a ``torch.export.save`` archive, read from its JSON without deserializing the graph."""
    found = [n for n in names if n.endswith(f"/models/{MODEL_NAME}.json")] or [n for n in names if "/models/" in n]
    record = None
    try:
        with zipfile.ZipFile(path) as z:
            program = json.loads(z.read(found[0]))
        custom = (program.get("graph_module", {}).get("metadata") or {}).get("custom")
        record = json.loads(custom).get(META_KEY) if custom else None
    except (ValueError, AttributeError, KeyError, IndexError, zipfile.BadZipFile) as e:
        raise PackageError(f"{path}: cannot read the saved program's metadata ({e})") from None
    if not isinstance(record, dict):
        raise PackageError(
            f"{path} is a saved ExportedProgram without an AsymRnR record (graph_module.meta['custom']"
            "['asymrnr_fx']); export the model with asymrnr_fx.deploy.export()"
        )
    return {k: str(v) for k, v in record.items()}


def _check_record(record: dict[str, str], where: str) -> tuple[Plan, dict[str, Any]]:
    """The plan and call layout of a record, or a :class:`PackageError` naming the bad entry."""
    version = record.get(FORMAT_KEY)
    if version is None:
        raise PackageError(
            f"{where} has no {FORMAT_KEY} entry: it was not built by asymrnr_fx.deploy (package() / export())"
        )
    if version != str(FORMAT_VERSION):
        raise PackageError(
            f"{where} has asymrnr_fx package format version {version}; this asymrnr_fx reads version "
            f"{FORMAT_VERSION}. Re-export and re-package the model with this version of asymrnr_fx"
        )
    for key in (PLAN_KEY, PLAN_DIGEST_KEY, CALL_KEY, OP_SCHEMA_KEY):
        if key not in record:
            raise PackageError(f"{where} has no {key} entry (format version {version} needs it); re-package the model")
    if record[OP_SCHEMA_KEY] != _select_schema():
        raise PackageError(
            f"{where} was built against {record[OP_SCHEMA_KEY]}, but this asymrnr_fx registers "
            f"{_select_schema()}; re-export and re-package the model with this version of asymrnr_fx"
        )
    try:
        data = base64.b64decode(record[PLAN_KEY].encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as e:
        raise PackageError(f"{where}: the {PLAN_KEY} entry is corrupted (not base64: {e})") from None
    if hashlib.sha256(data).hexdigest() != record[PLAN_DIGEST_KEY]:
        raise PackageError(f"{where}: the {PLAN_KEY} entry is corrupted (its SHA-256 does not match {PLAN_DIGEST_KEY})")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "plan.safetensors"
        file.write_bytes(data)
        try:
            plan = Plan.load(file)
        except Exception as e:  # safetensors, JSON and plan validation errors alike
            raise PackageError(f"{where}: the {PLAN_KEY} entry is not a valid plan ({e})") from e
    try:
        call = json.loads(record[CALL_KEY])
    except ValueError as e:
        raise PackageError(f"{where}: the {CALL_KEY} entry is corrupted ({e})") from None
    if not isinstance(call, dict) or not isinstance(call.get("sites", []), list):
        raise PackageError(f"{where}: the {CALL_KEY} entry is corrupted (not a JSON object with a 'sites' list)")
    return plan, call


class Deployed(nn.Module):
    """A loaded package or exported program: call it like the original model.

    Each call reads the timestep argument once (by name, or by position if it was passed
    positionally at export), advances this copy's step clock and runs the compiled code
    inside the call, so ``asymrnr::select`` finds this copy's runtime and generation state.
    :func:`asymrnr_fx.runtime_of`, :func:`~asymrnr_fx.reset`, :func:`~asymrnr_fx.set_step` and
    :func:`~asymrnr_fx.generation` accept it; two loaded copies never share state.
    """

    def __init__(self, runner: Any, plan: Plan, call: Mapping[str, Any], *, kind: str, source: str) -> None:
        super().__init__()
        if isinstance(runner, nn.Module):
            self.module = runner  # an exported program's module: registered, so .to()/.eval() reach it
        self.__dict__["runner"] = runner
        self.kind = kind
        self.source = source
        self.sites: list[str] = list(call.get("sites", []))
        self.timestep_name: str | None = call.get("timestep")
        self.timestep_position: int | None = call.get("position")
        # AOTInductor's runner trusts its inputs (a wrong shape drops data or reads out of bounds): check each call
        self.input_spec: dict[str, Any] = dict(call.get("inputs") or {}) if kind == "aoti" else {}
        # one call at a time through an AOTInductor runner: two threads in one runner deadlock in torch 2.13 when its
        # code calls back into a Python op (ours), holding the GIL; an exported program runs concurrent calls
        self.__dict__["_one_call"] = threading.Lock() if kind == "aoti" else contextlib.nullcontext()
        self.runtime = Runtime(plan)
        self.runtime.register_rows(list(call.get("rows", [])))  # every video site's plan row, zeroed ones too
        if call.get("direction") in (-1, 1):  # the model family's, recorded at export (older packages: learned)
            self.runtime.direction.value = call["direction"]
        self._asymrnr_runtime = self.runtime

    plan = property(lambda self: self.runtime.plan, fixed_plan, doc="The plan packaged with it (fixed: export again for another).")

    def _timestep(self, args: tuple, kwargs: dict) -> Any:
        pos, name = self.timestep_position, self.timestep_name
        if pos is not None and pos < len(args):
            return args[pos]
        if name is not None:
            return kwargs.get(name)
        return call_timestep(kwargs)  # no timestep input found at export: the usual names

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        check_inputs(self.input_spec, args, kwargs, self.source)
        with self._one_call:
            return self.runtime.run(lambda: self.runner(*args, **kwargs), self._timestep(args, kwargs))

    def cache_context(self, name: str) -> contextlib.AbstractContextManager:
        """A separate matching per diffusers cache context ("cond"/"uncond"), as :meth:`AsymRnRModule.cache_context`."""
        return cache_context(self.runtime, name)

    def __repr__(self) -> str:
        return f"Deployed(kind={self.kind!r}, source={self.source!r}, sites={len(self.sites)}, plan={self.plan!r})"


def load(path: str | os.PathLike | torch.export.ExportedProgram) -> Deployed:
    """Load a package from :func:`package`, a program saved with ``torch.export.save``, or an ExportedProgram.

    The record is checked before anything is loaded: a file not built by
    :mod:`asymrnr_fx.deploy`, another format version, or a missing or corrupted plan raise a
    :class:`PackageError` naming the problem. Every call of ``load`` gives an independent
    copy (own runner, own runtime and state).
    """
    where = "the ExportedProgram" if isinstance(path, torch.export.ExportedProgram) else str(path)
    if not isinstance(path, torch.export.ExportedProgram):
        # every member's CRC (and, for a package, its SHA-256) before anything in it is read
        verify_archive(path, _kind_of(Path(path))[0])
    kind, record = read_record(path)
    plan, call = _check_record(record, where)
    if isinstance(path, torch.export.ExportedProgram):
        runner = path.module()
    elif kind == "export":
        runner = with_pytree_types(lambda: torch.export.load(str(path)).module(), where)
    else:
        from torch._inductor.package import load_package

        runner = load_package(str(path), MODEL_NAME)
        # the runner rebuilds its call spec on every call: resolve its types now (a diffusers output class)
        with_pytree_types(lambda: [pytree.treespec_loads(s) for s in runner.loader.get_call_spec()], where)
    return Deployed(runner, plan, call, kind=kind, source=where)
