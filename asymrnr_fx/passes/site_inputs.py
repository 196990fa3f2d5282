"""Input-based corrections to the shape classification: which call inputs reach each site.

Why apart from :mod:`.classify_attention`: lengths alone cannot tell a prompt as long as the
video from the video, nor a text refiner from a video site. These read the graph's inputs
(names that say prompt, video-like tensors) and fix or explain what the lengths got wrong,
and check an explicit grid against the prompt's length.
"""
from __future__ import annotations

import re

import torch
import torch.fx as fx

from ..report import SiteReport
from .find_attention import AttentionCall
from .graph import input_name, is_parameter, node_value
from .infer_grid import GridCandidate

_PROMPT_INPUT = re.compile(r"encoder|text|prompt|context|caption|txt", re.IGNORECASE)


def prompt_lengths(graph: fx.Graph) -> list[tuple[str, int]]:
    """``(input name, tokens)`` of the graph inputs that hold the prompt: ``[B, T, D]`` float
    embeddings or a ``[B, T]`` integer/bool mask whose name says text (``encoder_hidden_states``,
    ``encoder_attention_mask``, ``text``, ``prompt``, ``context``, ...)."""
    found = []
    for node in graph.find_nodes(op="placeholder"):
        name = str(node.target)
        if "parameters" in name or "buffers" in name or not _PROMPT_INPUT.search(name):
            continue
        val = node_value(node)
        if not isinstance(val, torch.Tensor) or val.dim() != (3 if val.is_floating_point() else 2):
            continue
        if isinstance(val.shape[1], int):
            found.append((input_name(name), val.shape[1]))  # Dynamo's L_kwargs_x_ -> x
    return found


def check_given_grid(calls: list[AttentionCall], reports: list[SiteReport], cand: GridCandidate) -> None:
    """An explicit grid as long as the prompt, where a joint attention's text part is not: the
    pass would reduce the prompt as if it were the video. Raise, naming both lengths."""
    if cand.source != "given" or not calls:
        return
    n = cand.num_tokens
    prompts = prompt_lengths(calls[0].node.graph)
    for rep in reports:
        if rep.kind != "joint" or rep.q_len is None:
            continue
        for name, length in prompts:
            if length == n and rep.text_len != length:
                raise ValueError(
                    f"grid {cand.grid} gives {n} video tokens, the length of the prompt ({name}: {length} tokens): "
                    f"the joint attention {rep.path} ({rep.q_len} tokens) would take the prompt as the video and "
                    f"the other {rep.text_len} tokens as text. Give the grid of the video tokens (the {rep.text_len} "
                    "non-prompt tokens, in tokens after patching: frames / temporal patch, height / patch, width / patch)"
                )


def mark_prompt_only(calls: list[AttentionCall], reports: list[SiteReport]) -> list[SiteReport]:
    """Tag "other" sites that attend over the prompt tokens alone (a text refiner): the grid
    says nothing about them, so a graph holding only such sites (a piece before a graph break)
    is no evidence that an explicit grid is wrong (:func:`..manager._check_explicit_grid`)."""
    prompts = prompt_lengths(calls[0].node.graph) if calls else []
    for rep in reports:
        hit = next((p for p in prompts if rep.kind == "other" and rep.q_len == rep.kv_len == p[1]), None)
        if hit is None:
            continue
        rep.extra["prompt_only"] = hit[0]
        if "grid" in rep.reason:  # the grid mismatch is not why: this attention never sees the video
            rep.reason = f"attention over the prompt alone ({hit[0]}: {hit[1]} tokens), not over the video"
    return reports


def _input_flow(graph: fx.Graph) -> dict[fx.Node, tuple[bool, str | None]]:
    """Per node: (reached by a video-like input, the name of a prompt input reaching it, if any).

    Video-like: a floating call input of 3 or more dims whose name does not say text (latents,
    packed tokens, the hidden states a fragment resumes with, rotary tables: over-inclusive on
    purpose, so only a call that certainly never sees the video is flagged). One pass in graph order.
    """
    flow: dict[fx.Node, tuple[bool, str | None]] = {}
    for node in graph.nodes:
        if node.op == "placeholder" and not is_parameter(node) and "buffers" not in str(node.target):
            name = str(node.target)
            val = node_value(node)
            if _PROMPT_INPUT.search(name):  # the prompt's embeddings name it; its masks and positions do not
                floating = isinstance(val, torch.Tensor) and val.is_floating_point()
                flow[node] = (False, input_name(name) if floating else None)
            else:
                video = isinstance(val, torch.Tensor) and val.is_floating_point() and val.dim() >= 3
                flow[node] = (video or not isinstance(val, torch.Tensor), None)  # unknown values count as video
            continue
        video, prompt = False, None
        for parent in node.all_input_nodes:
            v, p = flow.get(parent, (False, None))
            video, prompt = video or v, prompt or p
        flow[node] = (video, prompt)
    return flow


def mark_by_inputs(calls: list[AttentionCall], reports: list[SiteReport]) -> list[SiteReport]:
    """Correct what lengths alone got wrong, from which call inputs reach the query and the key.

    Why: a prompt as long as the video (Kandinsky 5 at 8 text and 8 video tokens) makes the text
    blocks' self-attention look like video self-attention and the video-to-text cross-attention
    look like self-attention; reducing either on the video grid would be silently wrong. A query
    that no video-like input reaches is attention over the prompt alone (left intact); a "self"
    site whose key no video-like input reaches is cross-attention.
    """
    if not calls:
        return reports
    flow = _input_flow(calls[0].node.graph)
    for call, rep in zip(calls, reports):
        if rep.kind not in ("self", "joint", "cross") or call.spec is None:
            continue
        q_video, q_prompt = flow.get(call.query, (True, None))
        if not q_video and q_prompt:
            rep.kind, rep.grid, rep.text_len, rep.text_position = "other", None, 0, None
            rep.extra["prompt_only"] = q_prompt
            rep.reason = f"attention over the prompt alone ({q_prompt}: {rep.q_len} tokens), not over the video"
            continue
        key = call.args.get("key")
        k_video, k_prompt = flow.get(key, (True, None)) if isinstance(key, fx.Node) else (True, None)
        if rep.kind == "self" and not k_video and k_prompt:
            rep.kind = "cross"
            rep.extra["kv_from"] = f"{k_prompt} (as long as the video)"
    return reports
