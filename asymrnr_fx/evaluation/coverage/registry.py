"""Every known tiny case by class name, discovery of the video DiT classes, building them, and the
token grid their own patch geometry gives."""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import nn

from .case import CONFIG_SETS, EXTRA_CLASSES, Case, Grid
from .configs import _cases
from .test_configs import _test_cases

CASES: dict[str, Case] = {}
TEST_CASES: dict[str, Case] = {}


def cases(configs: str = "ours") -> dict[str, Case]:
    """Every known tiny case by class name, from the config set ``configs`` (:data:`CONFIG_SETS`: ``"ours"``,
    written here, or ``"diffusers"``, diffusers' own test configs). Built once; needs diffusers only when
    inputs are made."""
    if configs not in CONFIG_SETS:
        raise ValueError(f"configs={configs!r}: choose one of {CONFIG_SETS}")
    table, make = (CASES, _cases) if configs == "ours" else (TEST_CASES, _test_cases)
    if not table:
        table.update({c.name: c for c in make()})
    return table


# =========================================================================== discovery and building
def video_dit_classes() -> list[str]:
    """Every ``*Transformer3DModel`` class diffusers exports (top level or ``diffusers.models.transformers``),
    plus :data:`EXTRA_CLASSES` that exist in this version, sorted by name."""
    import importlib

    import diffusers
    from diffusers.models import transformers

    names = {n for mod in (diffusers, transformers) for n in dir(mod) if n.endswith("Transformer3DModel")}
    for module, name in EXTRA_CLASSES:
        with contextlib.suppress(Exception):
            if hasattr(importlib.import_module(f"diffusers.models.transformers.{module}"), name):
                names.add(name)
    return sorted(names)


def model_class(name: str) -> type:
    import importlib

    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None:
        case = cases().get(name) or cases("diffusers").get(name)
        module = case.module if case is not None and case.module else None
        if module is None:
            raise LookupError(f"{name} is not exported by diffusers")
        cls = getattr(importlib.import_module(f"diffusers.models.transformers.{module}"), name)
    return cls


def build_model(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = case.build() if case.build is not None else model_class(case.name)(**case.config)
    if case.prepare is not None:
        case.prepare(model)
    return model.eval()


def config_patch(config: Any) -> Grid:
    """(temporal, height, width) patch from a diffusers config: ``patch_size`` (int, 2- or 3-tuple) or
    ``latent_patch_size``, and ``patch_size_t`` (None or missing: 1). Written independently of the
    library's own grid functions, so the comparison below is a real check."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    p = get("patch_size", None)
    if p is None:
        p = get("latent_patch_size", None) or 1
    if isinstance(p, (list, tuple)):
        if len(p) == 3:
            return int(p[0]), int(p[1]), int(p[2])
        if len(p) == 2:
            return int(get("patch_size_t", None) or 1), int(p[0]), int(p[1])
        p = p[0]
    return int(get("patch_size_t", None) or 1), int(p), int(p)


def expected_grid(case: Case, model: nn.Module, inputs: dict[str, Any]) -> Grid:
    """The token grid (F, H, W) the model's own patch geometry gives for these inputs."""
    if case.layout == "tokens":
        if case.latent is None:
            raise ValueError(f"{case.name}: layout 'tokens' needs the token grid in Case.latent")
        return tuple(case.latent)  # type: ignore[return-value]
    x = inputs[case.key]
    if isinstance(x, (list, tuple)):
        x = x[0]
    shape = tuple(x.shape)
    f, h, w = {
        "BCFHW": lambda s: (s[2], s[3], s[4]),
        "BFCHW": lambda s: (s[1], s[3], s[4]),
        "BFHWC": lambda s: (s[1], s[2], s[3]),
        "CFHW": lambda s: (s[1], s[2], s[3]),
    }[case.layout](shape)
    pt, ph, pw = config_patch(getattr(model, "config", case.config) or case.config)
    return (math.ceil(f / pt), h // ph, w // pw)

