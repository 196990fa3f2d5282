"""Built-in test models: a hand-written video DiT and tiny, random-weight diffusers pipelines.

Everything here is built in code (nothing is downloaded) and small enough for a CPU, so the
tests, the examples and the built-in models of :mod:`asymrnr_fx.evaluation.targets` run
real code paths in seconds. It imports only the core; diffusers and transformers are
imported when a pipeline is built.

* :mod:`.dit`        :class:`TinyVideoDiT`, a diffusers-free DiT calling ``scaled_dot_product_attention``
* :mod:`.pipelines`  tiny transformers and pipelines of every supported diffusers family
"""
from __future__ import annotations

from .dit import TinyVideoDiT
from .pipelines import FAMILIES, TinyPipeline, run_example, tiny_pipeline, tiny_transformer, transformer_inputs

__all__ = [
    "FAMILIES",
    "TinyPipeline",
    "TinyVideoDiT",
    "run_example",
    "tiny_pipeline",
    "tiny_transformer",
    "transformer_inputs",
]
