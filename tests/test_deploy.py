"""Shipping the compiled model: export -> AOTInductor package -> load in a fresh process.

The package must reproduce the in-process transform (same matchings, same outputs) in a
process that imports only torch and asymrnr_fx, keep the state of each loaded copy apart,
and refuse a package it cannot trust with an error that names the problem. AOTInductor
compiles take tens of seconds on a small CPU, so each family is packaged once per module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from asymrnr_fx import deploy, deploy_checks  # noqa: E402
from tiny_diffusers import changing_plan, num_sites, step_inputs, tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
ROOT = Path(__file__).resolve().parents[1]
TIMESTEPS = (900.0, 750.0, 600.0, 450.0, 300.0, 150.0)
WINDOW = 3  # 6 steps, cache window 3: matchings at steps 0 and 3, reuse in between
TOL = {"atol": 1e-5, "rtol": 1e-5}
MANIFEST = deploy_checks.MANIFEST_NAME


@dataclass
class Built:
    family: str
    model: torch.nn.Module
    ep: torch.export.ExportedProgram
    package: Path
    steps: list[dict[str, Any]]
    reference: list[torch.Tensor]  # in-process asymrnr_fx.transform outputs, one per step
    matching: list[int]  # steps at which the reference computed matchings


def _build(family: str, tmp_path_factory: pytest.TempPathFactory, return_dict: bool = False) -> Built:
    model = tiny_transformer(family)
    plan = changing_plan(num_sites(family), steps=len(TIMESTEPS), window=WINDOW)
    inputs = {**transformer_inputs(family), "return_dict": return_dict}
    steps = [step_inputs(inputs, t, i) for i, t in enumerate(TIMESTEPS)]
    fast = asymrnr_fx.transform(model, plan)
    with torch.no_grad():
        reference = [fast(**s)[0] for s in steps]
    matching = fast.runtime.matching_steps()
    assert matching == [0, 3]
    ep = deploy.export(model, plan, kwargs=steps[0])
    package = deploy.package(ep, tmp_path_factory.mktemp(family) / f"{family}.pt2")
    return Built(family, model, ep, package, steps, reference, matching)


@pytest.fixture(scope="module")
def cogvideox(tmp_path_factory):
    return _build("cogvideox", tmp_path_factory)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    return _build("wan", tmp_path_factory, return_dict=True)  # diffusers' default: returns a diffusers dataclass


# The fresh process: torch and asymrnr_fx only (diffusers must not be needed to run a package).
# CogVideoX runs first, returning a tuple; Wan's package returns diffusers' output dataclass, so
# loading it imports diffusers' module for that class. Before the steps, every call whose inputs
# differ from the export example must be refused (AOTInductor would drop samples or abort).
FRESH_PROCESS = """
import sys, threading, torch, asymrnr_fx
from asymrnr_fx import deploy
inputs, out = sys.argv[1], sys.argv[2]
results = {}
for family, (package, steps, wrong) in torch.load(inputs).items():
    model = deploy.load(package)
    refused = {}
    for case, change in wrong.items():
        try:
            model(**{**steps[0], **change})
            refused[case] = None
        except deploy.InputMismatchError as e:
            refused[case] = str(e)
    with torch.no_grad():
        full = [model(**s) for s in steps]
    rt = asymrnr_fx.runtime_of(model)
    results[family] = {"outs": [o[0] for o in full], "type": type(full[0]).__name__, "refused": refused,
                       "matching": rt.matching_steps(), "step": rt.step, "match": rt.counts["match"],
                       "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers", "tiny_diffusers"))}
    threads = {}  # two requests at once on the one loaded copy, each its own generation (this process's timeout: a hang)
    def request(k):
        with torch.no_grad(), asymrnr_fx.generation(model):
            threads[k] = [model(**s)[0] for s in steps]
    running = [threading.Thread(target=request, args=(k,)) for k in range(2)]
    [t.start() for t in running]
    [t.join() for t in running]
    results[family]["threads"] = [threads.get(k) for k in range(2)]
torch.save(results, out)
"""


def _wrong_inputs(built: Built) -> dict[str, dict[str, Any]]:
    """Inputs a package exported at ``steps[0]``'s shapes must refuse: each case changes one thing."""
    first = built.steps[0]
    x, t = first["hidden_states"], first["timestep"]
    frames = 1 if built.family == "cogvideox" else 2  # [B, F, C, H, W] latents vs [B, C, F, H, W]
    return {
        "batch 2": {"hidden_states": torch.cat([x, x])},  # AOTInductor returned only the first sample
        "larger latent": {"hidden_states": torch.randn(*x.shape[:-2], x.shape[-2] + 4, x.shape[-1] + 4)},
        "smaller latent": {"hidden_states": torch.randn(*x.shape[:-2], x.shape[-2] // 2, x.shape[-1] // 2)},  # aborted
        "fewer frames": {"hidden_states": x.narrow(frames, 0, 2)},  # aborted
        "float64": {"hidden_states": x.double()},
        "timestep dtype": {"timestep": t.float() if not t.is_floating_point() else t.long()},
        "python timestep": {"timestep": 500},
        "return_dict": {"return_dict": not first["return_dict"]},
        "extra argument": {"attention_kwargs": None},
    }


@pytest.fixture(scope="module")
def fresh_process(cogvideox, wan, tmp_path_factory):
    """Load both packages in one new Python process, run each family's 6 steps, return what it saw."""
    tmp = tmp_path_factory.mktemp("fresh")
    torch.save({b.family: (str(b.package), b.steps, _wrong_inputs(b)) for b in (cogvideox, wan)}, tmp / "inputs.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(tmp / "inputs.pt"), str(tmp / "out.pt")],
        check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(tmp / "out.pt")


@pytest.mark.parametrize("family", ["cogvideox", "wan"])
def test_package_in_fresh_process_matches_transform(family, request, fresh_process):
    built: Built = request.getfixturevalue(family)
    seen = fresh_process[family]
    if family == "cogvideox":  # first in the process, returns a tuple: nothing but torch and asymrnr_fx
        assert seen["modules"] == [] and seen["type"] == "tuple"
    else:  # diffusers' default return_dict=True: the output class's module is imported when the package loads
        assert seen["type"] == "Transformer2DModelOutput" and "diffusers.models.modeling_outputs" in seen["modules"]
    for out, ref in zip(seen["outs"], built.reference, strict=True):
        torch.testing.assert_close(out, ref, **TOL)
    for outs in seen["threads"]:  # two threads on one package: each request as if alone (before: a deadlock)
        for out, ref in zip(outs, built.reference, strict=True):
            torch.testing.assert_close(out, ref, **TOL)
    assert seen["matching"] == built.matching == [0, 3]  # matchings only at window starts
    assert seen["step"] == len(TIMESTEPS) - 1
    # every wrong call was refused before the compiled code ran, naming the argument and a fix
    assert set(seen["refused"]) == set(_wrong_inputs(built))
    for case, message in seen["refused"].items():
        assert message is not None, f"{case}: the package ran a call it was not exported for"
        named = "attention_kwargs" if case == "extra argument" else next(iter(_wrong_inputs(built)[case]))
        assert repr(named) in message or named in message, (case, message)
        assert any(fix in message.lower() for fix in ("re-export", "pass ", "convert")), (case, message)
    assert seen["match"] == 2 * len(built.matching) * num_sites(family)  # q and kv per site per window


def test_package_carries_ops_and_plan(cogvideox):
    kind, record = deploy.read_record(cogvideox.package)
    assert kind == "aoti" and record[deploy.FORMAT_KEY] == str(deploy.FORMAT_VERSION)
    call = json.loads(record[deploy.CALL_KEY])
    assert call["timestep"] == "timestep" and call["sites"] == ["transformer_blocks.0.attn1#0;joint;4x4x4;8;first;2x2x2"]
    assert record[deploy.OP_SCHEMA_KEY] == str(torch.ops.asymrnr.select.default._schema)
    names = [a.name for a in torch.ops.asymrnr.select.default._schema.arguments]
    selects = [dict(zip(names, n.args)) for n in cogvideox.ep.graph.nodes if n.target is torch.ops.asymrnr.select.default]
    assert [(s["site"], s["feature"]) for s in selects] == [(call["sites"][0], "q"), (call["sites"][0], "kv")]
    with zipfile.ZipFile(cogvideox.package) as z:  # the compiled code calls the Python op through the proxy executor
        extern = [json.loads(z.read(n)) for n in z.namelist() if n.endswith(".wrapper.json")]
    nodes = [node["node"] for node in extern[0]["nodes"]]
    assert [n["target"] for n in nodes] == ["asymrnr::select"] * 2
    assert [i["arg"] for n in nodes for i in n["inputs"] if i["name"] == "site"] == [{"as_string": call["sites"][0]}] * 2


def test_a_table_plan_for_another_site_count_is_refused_at_export(cogvideox):
    """As transform() refuses it at the first call; a package would only fail when first served."""
    sites = num_sites("cogvideox")
    with pytest.raises(ValueError, match=f"ratios for {sites + 1} attention sites but the model has {sites}"):
        deploy.export(cogvideox.model, changing_plan(sites + 1, steps=len(TIMESTEPS), window=WINDOW),
                      kwargs=cogvideox.steps[0])


def test_inspecting_a_loaded_package_names_the_fix(cogvideox):
    """A package keeps no site report; analysing its rewritten graph as a model would report it unreduced."""
    loaded = deploy.load(cogvideox.package)
    with pytest.raises(TypeError, match="keeps no site report.*plan=loaded.plan"):
        asymrnr_fx.inspect(loaded, **cogvideox.steps[0])
    report = asymrnr_fx.inspect(cogvideox.model, plan=loaded.plan, **cogvideox.steps[0])  # the fix it names
    assert [s.path for s in report.rewritten] == ["transformer_blocks.0.attn1"]


def test_a_package_keeps_its_model_familys_timestep_direction(cogvideox):
    """A warm-up call at t=0, then a request without a handle: CogVideoX's timesteps are known to fall, so
    the warm-up is a generation of its own, in a package as in transform() (before: the package learned
    the direction from the calls, counted the warm-up as step 0 and ran one step behind, with a warning)."""
    loaded = deploy.load(cogvideox.package)
    first = cogvideox.steps[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", asymrnr_fx.AsymRnRWarning)
        loaded(**dict(first, timestep=torch.zeros_like(first["timestep"])))
        outs = [loaded(**step)[0] for step in cogvideox.steps]
    for out, ref in zip(outs, cogvideox.reference, strict=True):
        torch.testing.assert_close(out, ref, **TOL)
    assert asymrnr_fx.runtime_of(loaded).matching_steps() == cogvideox.matching


def test_loaded_copies_and_generations_keep_separate_state(cogvideox):
    a, b = deploy.load(cogvideox.package), deploy.load(cogvideox.package)
    assert asymrnr_fx.runtime_of(a) is not asymrnr_fx.runtime_of(b)
    outs: dict[Any, list] = {"a": [], "b": []}
    # b starts two steps late: a shared clock would see b's 900 after a's 750 and restart
    order = ["a", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "b"]
    with torch.no_grad():
        for who in order:
            model = a if who == "a" else b
            outs[who].append(model(**cogvideox.steps[len(outs[who])])[0])
    for who, model in (("a", a), ("b", b)):
        for out, ref in zip(outs[who], cogvideox.reference, strict=True):
            torch.testing.assert_close(out, ref, **TOL)
        assert asymrnr_fx.runtime_of(model).matching_steps() == [0, 3]
    # two requests on one copy, one generation handle each, interleaved with an offset
    asymrnr_fx.reset(a)
    assert asymrnr_fx.runtime_of(a).step == 0
    g1, g2 = asymrnr_fx.generation(a), asymrnr_fx.generation(a)
    got: dict[Any, list] = {g1: [], g2: []}
    with torch.no_grad():
        for g in [g1, g1, g2, g1, g2, g2]:
            with g:
                got[g].append(a(**cogvideox.steps[len(got[g])])[0])
    for g in (g1, g2):
        assert g.step == 2
        for out, ref in zip(got[g], cogvideox.reference, strict=False):
            torch.testing.assert_close(out, ref, **TOL)
    # a pinned step: the same timestep every call no longer drives the clock
    asymrnr_fx.reset(b)
    with torch.no_grad():
        for i in range(4):
            asymrnr_fx.set_step(b, i)
            out = b(**cogvideox.steps[i])[0]
    torch.testing.assert_close(out, cogvideox.reference[3], **TOL)
    assert asymrnr_fx.runtime_of(b).matching_steps() == [0, 3]


def test_a_plan_is_fixed_once_transformed_or_packaged(cogvideox):
    """Assigning ``.plan`` used to be accepted and shown while the old plan kept running; now it names the fix."""
    other, third = asymrnr_fx.Plan.uniform(q=0.1), asymrnr_fx.Plan.uniform(q=0.2)
    loaded, fast = deploy.load(cogvideox.package), asymrnr_fx.transform(cogvideox.model, other)
    packaged = loaded.plan
    for owner in (loaded, fast, asymrnr_fx.runtime_of(loaded), fast.runtime):
        with pytest.raises(AttributeError, match=r"asymrnr_fx.transform\(model, plan\) again"):
            owner.plan = third
    assert loaded.plan is packaged and fast.plan is other
    with pytest.raises(TypeError, match="original model"):  # before: "rewrote nothing", the package's plan ran on
        asymrnr_fx.transform(loaded, third)
    assert asymrnr_fx.transform(fast, third).plan is third and fast.plan is other  # a new transform beside it


def test_export_save_load_round_trip(cogvideox, tmp_path):
    path = tmp_path / "program.pt2"
    torch.export.save(cogvideox.ep, path)
    loaded = torch.export.load(path)
    assert loaded.graph_module.meta["custom"]["asymrnr_fx"] == cogvideox.ep.graph_module.meta["custom"]["asymrnr_fx"]
    assert sum(n.target is torch.ops.asymrnr.select.default for n in loaded.graph.nodes) == 2
    model = deploy.load(path)
    assert model.kind == "export" and model.plan.cache_window == WINDOW
    with torch.no_grad():
        outs = [model(**s)[0] for s in cogvideox.steps]
    for out, ref in zip(outs, cogvideox.reference, strict=True):
        torch.testing.assert_close(out, ref, **TOL)
    assert asymrnr_fx.runtime_of(model).matching_steps() == [0, 3]
    # the record is checked before the graph is deserialized (a changed op schema would fail there)
    record = cogvideox.ep.graph_module.meta["custom"]["asymrnr_fx"]
    cogvideox.ep.graph_module.meta["custom"]["asymrnr_fx"] = {**record, deploy.FORMAT_KEY: "0"}
    try:
        torch.export.save(cogvideox.ep, tmp_path / "old.pt2")
    finally:
        cogvideox.ep.graph_module.meta["custom"]["asymrnr_fx"] = record
    with pytest.raises(deploy.PackageError, match="format version 0"):
        deploy.load(tmp_path / "old.pt2")


def test_timestep_read_by_position(wan):
    """Exported with positional (hidden_states, timestep): the loaded copy reads the timestep by position."""
    first = dict(wan.steps[0])
    args = (first.pop("hidden_states"), first.pop("timestep"))
    plan = changing_plan(num_sites("wan"), steps=len(TIMESTEPS), window=WINDOW)
    model = deploy.load(deploy.export(wan.model, plan, args=args, kwargs=first))  # an in-memory program runs eagerly
    with torch.no_grad():
        outs = []
        for s in wan.steps:
            rest = dict(s)
            outs.append(model(rest.pop("hidden_states"), rest.pop("timestep"), **rest)[0])
    for out, ref in zip(outs, wan.reference, strict=True):
        torch.testing.assert_close(out, ref, **TOL)
    assert model.timestep_position == 1 and asymrnr_fx.runtime_of(model).matching_steps() == [0, 3]


def _edit_package(src: Path, dst: Path, edit: Callable[[dict], None], manifest: bool = True) -> Path:
    """A copy of ``src`` whose AOTInductor metadata files went through ``edit``; with ``manifest``
    its hash manifest is written anew (so the record checks behind it are reached)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("_metadata.json"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            if not (manifest and info.filename.endswith(MANIFEST)):
                zout.writestr(info, data)
    if manifest:
        deploy_checks.write_manifest(dst)
    return dst


def _flip_plan_byte(meta: dict) -> None:
    text = meta[deploy.PLAN_KEY]
    meta[deploy.PLAN_KEY] = text[:40] + ("A" if text[40] != "A" else "B") + text[41:]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update({deploy.FORMAT_KEY: "2"}), "format version 2; this asymrnr_fx reads version 1"),
        (lambda m: m.pop(deploy.FORMAT_KEY), "no asymrnr_fx.format entry"),
        (lambda m: m.pop(deploy.PLAN_KEY), "no asymrnr_fx.plan entry"),
        (_flip_plan_byte, "asymrnr_fx.plan entry is corrupted"),
        (lambda m: m.update({deploy.PLAN_KEY: "not base64!"}), "asymrnr_fx.plan entry is corrupted"),
        (lambda m: m.update({deploy.OP_SCHEMA_KEY: "asymrnr::select(Tensor x) -> Tensor"}),
         r"built against asymrnr::select\(Tensor x\) -> Tensor, but this asymrnr_fx registers"),
    ],
    ids=["other-version", "no-format", "no-plan", "plan-digest", "plan-not-base64", "op-schema"],
)
def test_bad_packages_are_refused(cogvideox, tmp_path, edit, message):
    bad = _edit_package(cogvideox.package, tmp_path / "bad.pt2", edit)
    with pytest.raises(deploy.PackageError, match=message):
        deploy.load(bad)


def test_rewritten_package_still_loads_and_foreign_files_are_refused(cogvideox, tmp_path):
    same = deploy.load(_edit_package(cogvideox.package, tmp_path / "same.pt2", lambda m: None))  # control
    with torch.no_grad():
        torch.testing.assert_close(same(**cogvideox.steps[0])[0], cogvideox.reference[0], **TOL)
    plain = torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),))
    with pytest.raises(deploy.PackageError, match="carries no AsymRnR plan"):
        deploy.package(plain, tmp_path / "plain.pt2")
    torch.export.save(plain, tmp_path / "plain_ep.pt2")
    with pytest.raises(deploy.PackageError, match="without an AsymRnR record"):
        deploy.load(tmp_path / "plain_ep.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(deploy.PackageError, match="not a zip"):
        deploy.load(tmp_path / "junk.pt2")


# --------------------------------------------------------------------------- damaged archives
def _largest(path: Path) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as z:
        return max(z.infolist(), key=lambda i: i.file_size)


def _flip_in_place(src: Path, dst: Path, member: zipfile.ZipInfo, count: int = 256) -> Path:
    """A byte copy of ``src`` with ``count`` bytes inverted in the middle of ``member``'s stored data
    (the zip directory untouched: what a bad disk or a truncated copy does)."""
    data = bytearray(src.read_bytes())
    name_len, extra_len = int.from_bytes(data[member.header_offset + 26:member.header_offset + 28], "little"), \
        int.from_bytes(data[member.header_offset + 28:member.header_offset + 30], "little")
    start = member.header_offset + 30 + name_len + extra_len + member.compress_size // 2
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    dst.write_bytes(bytes(data))
    return dst


def test_damaged_or_altered_packages_are_refused_before_loading(cogvideox, tmp_path):
    """Before: 256 flipped bytes in the compiled library's embedded weights loaded and every output was NaN."""
    member = _largest(cogvideox.package)
    assert member.filename.endswith(".so") and member.compress_type == zipfile.ZIP_STORED
    with pytest.raises(deploy.PackageError, match=f"member {member.filename} is damaged.*Bad CRC-32"):
        deploy.load(_flip_in_place(cogvideox.package, tmp_path / "flipped.pt2", member))
    # the same bytes changed and the zip rewritten with a matching CRC: the manifest's SHA-256 refuses it
    with zipfile.ZipFile(cogvideox.package) as zin, zipfile.ZipFile(tmp_path / "rezipped.pt2", "w") as zout:
        for info in zin.infolist():
            data = bytearray(zin.read(info))
            if info.filename == member.filename:
                data[len(data) // 2:len(data) // 2 + 256] = bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 256])
            zout.writestr(info, bytes(data))
    with pytest.raises(deploy.PackageError, match=f"member {member.filename} does not match its SHA-256"):
        deploy.load(tmp_path / "rezipped.pt2")
    # a metadata edit without a new manifest, a dropped manifest, an added member
    with pytest.raises(deploy.PackageError, match="_metadata.json does not match its SHA-256"):
        deploy.load(_edit_package(cogvideox.package, tmp_path / "edited.pt2", lambda m: m.update(note="x"), manifest=False))
    with zipfile.ZipFile(cogvideox.package) as zin, zipfile.ZipFile(tmp_path / "bare.pt2", "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith(MANIFEST):
                zout.writestr(info, zin.read(info))
    with pytest.raises(deploy.PackageError, match="has no manifest"):
        deploy.load(tmp_path / "bare.pt2")
    added = tmp_path / "added.pt2"
    added.write_bytes(cogvideox.package.read_bytes())
    with zipfile.ZipFile(added, "a") as z:
        z.writestr(f"{cogvideox.package.stem}/data/aotinductor/model/extra.so", b"\x7fELF")
    with pytest.raises(deploy.PackageError, match="extra.so is not in the manifest"):
        deploy.load(added)


def test_damaged_saved_program_is_refused(cogvideox, tmp_path):
    path = tmp_path / "program.pt2"
    torch.export.save(cogvideox.ep, path)
    member = _largest(path)  # a weight
    with pytest.raises(deploy.PackageError, match=f"member {member.filename} is damaged"):
        deploy.load(_flip_in_place(path, tmp_path / "flipped.pt2", member))


NO_DIFFUSERS = """
import sys
sys.modules["diffusers"] = None  # as if diffusers were not installed
from asymrnr_fx import deploy
try:
    deploy.load(sys.argv[1])
except deploy.PackageError as e:
    print("REFUSED", e)
"""


def test_dataclass_output_package_without_diffusers_names_the_fix(wan):
    """Before: NotImplementedError 'Deserializing diffusers...Transformer2DModelOutput in pytree is not registered'."""
    proc = subprocess.run([sys.executable, "-c", NO_DIFFUSERS, str(wan.package)], check=False, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED" in proc.stdout and "Transformer2DModelOutput" in proc.stdout, proc.stdout
    assert "Install diffusers here, or export with return_dict=False" in proc.stdout


def test_input_spec_follows_dynamic_dims():
    """A dynamic dim is checked against its range and against the dims tied to it (here y's rows = 2 * batch)."""

    class Toy(torch.nn.Module):
        def forward(self, x, y, scale=2.0, *, mask=None):
            return x * scale + y[: x.shape[0]].sum() + mask.sum()

    batch = torch.export.Dim("batch", min=1, max=8)
    ep = torch.export.export(Toy(), (torch.randn(2, 3), torch.randn(4, 3), 3.0), {"mask": torch.ones(2)},
                             dynamic_shapes={"x": {0: batch}, "y": {0: 2 * batch}, "scale": None, "mask": {0: batch}})
    spec = json.loads(json.dumps(deploy_checks.input_spec(ep, ["x", "y", "scale", "mask"])))  # as stored

    def check(n: int, rows: int, masked: int, scale: float = 3.0, **extra: Any) -> None:
        deploy_checks.check_inputs(spec, (torch.randn(n, 3), torch.randn(rows, 3), scale),
                                   {"mask": torch.ones(masked), **extra}, "toy.pt2")

    check(5, 10, 5)
    check(8, 16, 8)
    for args, message in [
        ((9, 18, 9), r"dim 0 of 'x' is 9, outside the range 1\.\.8"),
        ((3, 7, 3), r"which never equals 7"),
        ((3, 8, 3), r"gives .* = 4, but dim 0 of 'x' gave .* = 3; the package was exported with these dims tied"),
        ((3, 6, 4), r"argument 'mask' .* tied"),
    ]:
        with pytest.raises(deploy.InputMismatchError, match=message):
            check(*args)
    with pytest.raises(deploy.InputMismatchError, match=r"argument 'scale' is float 2.0, .* the constant 3.0.*Pass scale=3.0"):
        check(3, 6, 3, scale=2.0)
    with pytest.raises(deploy.InputMismatchError, match=r"\['extra'\] not passed at export"):
        check(3, 6, 3, extra=1)
