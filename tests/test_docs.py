"""Every ```python block of README.md and docs/*.md runs, for real, and the pages hold together.

How blocks run:

* The blocks of one page run in order, in one namespace, like a notebook: a block may use
  what an earlier block of the same page defined. Each page starts empty, in its own
  temporary directory (files a block writes, e.g. ``plan.safetensors``, land there).
* ``<!-- docs-test: setup=NAME -->`` on the line right before a block first adds the names of
  setup NAME (below) to the page's namespace. No block is ever skipped.
* A block fails the test if it raises; blocks assert or print what they show. Using a name
  that moved out of the top level (``asymrnr_fx.export``, ``asymrnr_fx.calibrate``, ...) is an
  error here: the docs must use the new homes.

Setups (tiny models built in code; nothing is downloaded, nothing calls ``from_pretrained``):

* ``dit``: ``model`` = :class:`asymrnr_fx.testing.TinyVideoDiT` (seed 0, eval), ``x`` a
  ``[1, 4, 4, 16, 16]`` latent, ``t`` = ``tensor([900.])``, ``example_inputs`` =
  ``{"hidden_states": x, "timestep": t}``, ``timesteps`` ten ``[1]``-tensors from 900 to 0.
* ``cogvideox``: ``transformer`` (= ``model``) = ``tiny_transformer("cogvideox")``,
  ``example_inputs`` = ``transformer_inputs("cogvideox")`` and from it ``x``, ``t``, ``text``;
  ``timesteps`` ten timesteps of ``t``'s dtype and shape from 900 to 0; ``pipe`` =
  ``tiny_pipeline("cogvideox").pipe`` (a real ``diffusers.CogVideoXPipeline``) and ``prompt``.
* ``wan``: ``wan`` = ``tiny_transformer("wan", layers=2)``, ``wan_inputs`` = ``transformer_inputs("wan")``.

Time: the pages are written so that each expensive thing (an inductor compile, the
AOTInductor package) happens once; the whole file takes a few minutes at most on 2 CPU cores.
"""
from __future__ import annotations

import re
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = ("toy", "bench")  # docs/toy/ (the toy's history) and docs/bench/ (raw benchmark output)

README_COMMANDS = (  # CI runs these verbatim (.ci/run)
    'pip install torch==2.13.0 && pip install -e ".[demo]" && asymrnr-fx demo',
    'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q',
)


def pages() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").rglob("*.md") if p.relative_to(ROOT / "docs").parts[0] not in SKIPPED_DIRS)
    return [ROOT / "README.md", *docs]


# --------------------------------------------------------------------------- extraction
FENCE = re.compile(r"^```(\w*)[^\n]*$", re.M)
MARK = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    setup: str | None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The page's ```python blocks, in order, each with the setup its marker names."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{start + 1}: unclosed code block")
        body = "\n".join(lines[start + 1 : i]) + "\n"
        i += 1
        if lang != "python":
            continue
        setup = None
        if start > 0 and (mark := MARK.search(lines[start - 1])):
            options = dict(opt.split("=", 1) for opt in mark.group(1).split())
            unknown = set(options) - {"setup"}
            assert not unknown, f"{page.relative_to(ROOT)}:{start}: unknown docs-test option(s) {sorted(unknown)}"
            setup = options.get("setup")
        found.append(Block(page, start + 1, body, setup))
    return found


# --------------------------------------------------------------------------- setups
def _dit() -> dict[str, Any]:
    from asymrnr_fx.testing import TinyVideoDiT

    torch.manual_seed(0)
    model = TinyVideoDiT().eval()
    x = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([900.0])
    timesteps = [torch.tensor([float(v)]) for v in torch.linspace(900, 0, 10).tolist()]
    return {"model": model, "x": x, "t": t, "example_inputs": {"hidden_states": x, "timestep": t}, "timesteps": timesteps}


def _cogvideox() -> dict[str, Any]:
    from asymrnr_fx.testing.pipelines import tiny_pipeline, tiny_transformer, transformer_inputs

    transformer = tiny_transformer("cogvideox")
    inputs = transformer_inputs("cogvideox")
    t = inputs["timestep"]
    timesteps = [torch.full_like(t, v) for v in torch.linspace(900, 0, 10).round().tolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' notes on casting tiny random modules
        pipe = tiny_pipeline("cogvideox").pipe
    return {"transformer": transformer, "model": transformer, "example_inputs": inputs, "x": inputs["hidden_states"],
            "t": t, "text": inputs["encoder_hidden_states"], "timesteps": timesteps, "pipe": pipe,
            "prompt": "a red circle moving left"}


def _wan() -> dict[str, Any]:
    from asymrnr_fx.testing.pipelines import tiny_transformer, transformer_inputs

    return {"wan": tiny_transformer("wan", layers=2), "wan_inputs": transformer_inputs("wan")}


SETUPS: dict[str, Callable[[], dict[str, Any]]] = {"dit": _dit, "cogvideox": _cogvideox, "wan": _wan}


# --------------------------------------------------------------------------- running
def run_page(page: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for block in blocks_of(page):
        if block.setup is not None:
            namespace.update(SETUPS[block.setup]())
        with warnings.catch_warnings():
            # the docs use the new homes of moved names; an old one is an error, not a warning
            warnings.filterwarnings("error", message=r"asymrnr_fx\.\w+ moved to ", category=DeprecationWarning)
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as err:  # noqa: BLE001 - report which block, with its traceback
                raise AssertionError(
                    f"the code block at {block.where} raised {type(err).__name__}: {err}\n\n{traceback.format_exc()}"
                ) from err


PAGES_WITH_CODE = [p for p in pages() if blocks_of(p)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_page(page)


# --------------------------------------------------------------------------- cheap checks
def test_every_block_is_found_and_every_setup_is_known():
    total = 0
    for page in pages():
        text = page.read_text()
        found = blocks_of(page)
        assert len(found) == len(re.findall(r"^```python", text, re.M)), f"{page}: a python block is not at column 0"
        for block in found:
            assert block.setup is None or block.setup in SETUPS, f"{block.where}: unknown setup {block.setup!r}"
            assert block.code.strip(), f"{block.where}: empty block"
        markers = len(re.findall(r"<!--\s*docs-test:", text))
        assert markers == sum(b.setup is not None for b in found), f"{page}: a docs-test marker is not right before a python block"
        total += len(found)
    assert total >= 10


def test_blocks_download_nothing_and_use_the_new_names():
    old = r"asymrnr_fx\.(export|package|load|calibrate|Calibration|measure_sensitivity|plan_for_budget|plan_for_speedup|" \
          r"plot_calibration|plot_plan|Runtime|rewrite_graph|asymrnr_backend)\b"
    for page in pages():
        for block in blocks_of(page):
            assert "from_pretrained" not in block.code, f"{block.where}: from_pretrained belongs in prose"
            assert not re.search(old, block.code), f"{block.where}: uses a moved name ({re.search(old, block.code)[0]})"
            assert not re.search(r"from asymrnr_fx import [^\n]*\b(export|package|load|calibrate|Runtime)\b", block.code), block.where


def test_readme_keeps_the_ci_commands_and_stays_short():
    text = (ROOT / "README.md").read_text()
    for command in README_COMMANDS:
        assert f"```bash\n{command}\n```" in text, f"README lost the set-up command {command!r}"
    assert len(text.splitlines()) <= 230, "README.md is the front door: move long sections to docs/"
    assert "Moved names" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_links_resolve_and_nothing_points_outside():
    link = re.compile(r"\]\(([^)\s]+)\)")
    for page in pages():
        text = page.read_text()
        assert "shared/" not in text, f"{page}: points at shared/"
        for target in link.findall(text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: link to {target} (no such file)"
            assert ROOT in dest.parents or dest == ROOT, f"{page.relative_to(ROOT)}: link {target} leaves the repository"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{page.relative_to(ROOT)}: link to {target} (no such heading)"
