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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")

import asymrnr_fx  # noqa: E402
from asymrnr_fx import deploy  # noqa: E402
from tiny_diffusers import changing_plan, num_sites, step_inputs, tiny_transformer, transformer_inputs  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
ROOT = Path(__file__).resolve().parents[1]
TIMESTEPS = (900.0, 750.0, 600.0, 450.0, 300.0, 150.0)
WINDOW = 3  # 6 steps, cache window 3: matchings at steps 0 and 3, reuse in between
TOL = {"atol": 1e-5, "rtol": 1e-5}


@dataclass
class Built:
    family: str
    model: torch.nn.Module
    ep: torch.export.ExportedProgram
    package: Path
    steps: list[dict[str, Any]]
    reference: list[torch.Tensor]  # in-process asymrnr_fx.transform outputs, one per step
    matching: list[int]  # steps at which the reference computed matchings


def _build(family: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    model = tiny_transformer(family)
    plan = changing_plan(num_sites(family), steps=len(TIMESTEPS), window=WINDOW)
    inputs = transformer_inputs(family)
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
    return _build("wan", tmp_path_factory)


# The fresh process: torch and asymrnr_fx only (diffusers must not be needed to run a package).
FRESH_PROCESS = """
import sys, torch, asymrnr_fx
from asymrnr_fx import deploy
inputs, out = sys.argv[1], sys.argv[2]
results = {}
for family, (package, steps) in torch.load(inputs).items():
    model = deploy.load(package)
    with torch.no_grad():
        outs = [model(**s)[0] for s in steps]
    rt = asymrnr_fx.runtime_of(model)
    results[family] = {"outs": outs, "matching": rt.matching_steps(), "step": rt.step, "match": rt.counts["match"]}
results["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("diffusers", "transformers", "tiny_diffusers"))
torch.save(results, out)
"""


@pytest.fixture(scope="module")
def fresh_process(cogvideox, wan, tmp_path_factory):
    """Load both packages in one new Python process, run each family's 6 steps, return what it saw."""
    tmp = tmp_path_factory.mktemp("fresh")
    torch.save({b.family: (str(b.package), b.steps) for b in (cogvideox, wan)}, tmp / "inputs.pt")
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
    assert fresh_process["modules"] == []  # nothing but torch and asymrnr_fx
    for out, ref in zip(seen["outs"], built.reference, strict=True):
        torch.testing.assert_close(out, ref, **TOL)
    assert seen["matching"] == built.matching == [0, 3]  # matchings only at window starts
    assert seen["step"] == len(TIMESTEPS) - 1
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


def _edit_package(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of ``src`` whose AOTInductor metadata files went through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("_metadata.json"):
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(info, data)
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
