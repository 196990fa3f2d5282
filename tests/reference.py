"""A slow, obviously-correct AsymRnR written for the tests, sharing no code with asymrnr_fx.ops.

Everything is plain Python loops over batch elements, heads and tokens, in float64. The
only thing borrowed from the library is the *random draw* (which cell of each tile is
the dst), so both implementations see the same partition; turning that draw into a
partition, matching, ranking, counting, reducing, attending and restoring is redone here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from asymrnr_fx.ops import derive_seed, draw_tile_choices


def ref_partition(grid, stride, choices):
    f, h, w = grid
    sf, sh, sw = stride
    dst = []
    for tf in range(f // sf):
        for th in range(h // sh):
            for tw in range(w // sw):
                c = int(choices[tf, th, tw])
                of, rem = divmod(c, sh * sw)
                oh, ow = divmod(rem, sw)
                dst.append(((tf * sf + of) * h + (th * sh + oh)) * w + (tw * sw + ow))
    dst = sorted(dst)
    dst_set = set(dst)
    src = [p for p in range(f * h * w) if p not in dst_set]
    return dst, src


def ref_similarity(a, b, similarity):
    a = a.double()
    b = b.double()
    if similarity == "euclidean":
        return -float(((a - b) ** 2).sum())
    if similarity == "cosine":
        return float((a * b).sum() / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12)))
    if similarity == "dot":
        return float((a * b).sum())
    raise ValueError(similarity)


def ref_match_one(x, dst, src, similarity, window=None, grid=None, stride=None, offset=0):
    """For one (batch, head): nearest dst of every src (first on ties) and src ranked most similar first.

    With ``window`` (tiles per axis), a src only sees the dst of the full tiles within that many
    tiles of its own (a border cell belongs to the nearest full tile); on ties the first such
    dst in raster tile order wins. ``offset``: ``x`` is a shard starting at that raster position
    of ``grid`` (``dst``, ``src`` relative to it); a src with no dst of the shard in its window
    takes the nearest of all of them (first in slot order on ties), as without a window."""
    in_order = list(range(len(dst)))
    candidates = in_order
    if window is not None:
        tile = ref_tile_of(grid, stride)
        candidates = sorted(in_order, key=lambda j: tile(offset + dst[j]))  # raster tile order
    nearest, score = [], []
    for s in src:
        best_j, best = None, None
        for j in candidates:
            if window is not None and any(abs(a - b) > w for a, b, w in zip(tile(offset + s), tile(offset + dst[j]), window)):
                continue
            v = ref_similarity(x[s], x[dst[j]], similarity)
            if best is None or v > best:
                best_j, best = j, v
        if best_j is None:  # only in a shard: no dst of it within the window
            for j in in_order:
                v = ref_similarity(x[s], x[dst[j]], similarity)
                if best is None or v > best:
                    best_j, best = j, v
        nearest.append(best_j)
        score.append(best)
    order = sorted(range(len(src)), key=lambda i: -score[i])  # Python's sort is stable
    return nearest, order


def ref_tile_of(grid, stride):
    """Raster position -> (frame, row, column) of its tile, a border cell clamped to the last full tile."""
    f, h, w = grid
    tiles = [max(g // s, 1) for g, s in zip(grid, stride)]

    def tile(p):
        cell = (p // (h * w), (p // w) % h, p % w)
        return tuple(min(c // s, t - 1) for c, s, t in zip(cell, stride, tiles))

    return tile


def ref_slots(num_video, ratio, dst, src, nearest, order, n_keep=None):
    """Kept video positions (ascending) and the reduced slot of every video position
    (``n_keep`` kept, default ``floor(num_video (1 - ratio))``)."""
    n_keep = int(num_video * (1 - ratio)) if n_keep is None else n_keep
    n_src_keep = max(n_keep - len(dst), 0)
    n_remove = len(src) - min(n_src_keep, len(src))
    removed = set(order[:n_remove])
    kept = sorted(dst + [src[i] for i in range(len(src)) if i not in removed])
    slot = {p: i for i, p in enumerate(kept)}
    for i in range(len(src)):
        if i in removed:
            slot[src[i]] = slot[dst[nearest[i]]]
    return kept, [slot[p] for p in range(num_video)]


def ref_full_slots(kept_video, slot_video, num_video, text_len, text_first):
    """Extend video-only keep/slot lists with the text tokens (always kept)."""
    if text_first:
        keep = list(range(text_len)) + [p + text_len for p in kept_video]
        slot = list(range(text_len)) + [s + text_len for s in slot_video]
    else:
        keep = kept_video + [num_video + i for i in range(text_len)]
        slot = slot_video + [len(kept_video) + i for i in range(text_len)]
    return keep, slot


def ref_reduce(x, keep, slot, mode):
    """x: [L, d] for one (batch, head) -> [len(keep), d]."""
    if mode == "replace":
        return torch.stack([x[p] for p in keep])
    groups = [[] for _ in keep]
    for p, s in enumerate(slot):
        groups[s].append(x[p].double())
    return torch.stack([torch.stack(g).mean(0) for g in groups]).to(x.dtype)


def ref_attention(q, k, v, mask, scale):
    """softmax(q k^T * scale + mask) v in float64 for one (batch, head)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.double() @ k.double().T * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, float("-inf"))
        else:
            s = s + mask.double()
    return torch.softmax(s, dim=-1) @ v.double()


def ref_lse(q, k, mask, scale):
    """log(sum_j exp(q k_j * scale + mask_j)) per query, in float64, for one (batch, head)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q.double() @ k.double().T * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return torch.logsumexp(s, dim=-1)


@dataclass
class RefMatching:
    dst: list
    src: list
    nearest: dict  # (b, h) -> list
    order: dict  # (b, h) -> list


def ref_matching(x_video, grid, stride, seed, similarity, window=None):
    """Matching for a [B, H, N, d] video tensor from the seeded draw."""
    dst, src = ref_partition(grid, stride, draw_tile_choices(grid, stride, seed))
    nearest, order = {}, {}
    for b in range(x_video.shape[0]):
        for h in range(x_video.shape[1]):
            nearest[b, h], order[b, h] = ref_match_one(x_video[b, h], dst, src, similarity, window, grid, stride)
    return RefMatching(dst, src, nearest, order)


def ref_shard_matchings(x_video, grid, stride, seed, similarity, shards, window=None):
    """Shard-local matchings: the whole grid's seeded partition cut into ``shards`` contiguous
    raster pieces, each matched within itself (positions relative to the piece; with ``window``,
    see :func:`ref_match_one`). A piece without dst tokens gets None (it is kept whole)."""
    dst, src = ref_partition(grid, stride, draw_tile_choices(grid, stride, seed))
    size = len(dst + src) // shards
    out = []
    for s in range(shards):
        lo, hi = s * size, (s + 1) * size
        d = [p - lo for p in dst if lo <= p < hi]
        r = [p - lo for p in src if lo <= p < hi]
        if not d:
            out.append(None)
            continue
        nearest, order = {}, {}
        piece = x_video[:, :, lo:hi]
        for b in range(x_video.shape[0]):
            for h in range(x_video.shape[1]):
                nearest[b, h], order[b, h] = ref_match_one(piece[b, h], d, r, similarity, window, grid, stride, lo)
        out.append(RefMatching(d, r, nearest, order))
    return out


def ref_keep_slots(match, n, ratio, b, h):
    """Kept video positions and slots for one (batch, head): one matching, shard-local ones (a list), or none."""
    if match is None:
        return list(range(n)), list(range(n))
    if isinstance(match, RefMatching):
        return ref_slots(n, ratio, match.dst, match.src, match.nearest[b, h], match.order[b, h])
    size = n // len(match)
    # every shard keeps one count: the plan's, or the largest number of dst any shard holds
    n_keep = max([int(size * (1 - ratio))] + [len(m.dst) for m in match if m is not None])
    kept, slots = [], []
    for s, m in enumerate(match):
        k, sl = (ref_slots(size, ratio, m.dst, m.src, m.nearest[b, h], m.order[b, h], n_keep) if m is not None
                 else (list(range(size)), list(range(size))))
        slots += [x + len(kept) for x in sl]
        kept += [p + s * size for p in k]
    return kept, slots


def ref_asymrnr_attention(
    q, k, v, *, grid, q_ratio, kv_ratio, q_match, kv_match, text_len=0, text_first=True, mask=None, scale=None, mode="replace",
    return_lse=False,
):
    """Reduced attention with restoration, one (batch, head) at a time. Returns q's dtype.

    With ``return_lse``: ``(output, lse)``, the log-sum-exp of each reduced query row over the
    reduced keys, restored with the same slots as the output. ``q_match`` / ``kv_match`` may be
    lists of shard-local matchings (:func:`ref_shard_matchings`)."""
    B, H, L, _ = q.shape
    Hk, Lk = k.shape[1], k.shape[2]  # grouped-query attention: query head h reads key/value head h // (H // Hk)
    n = grid[0] * grid[1] * grid[2]
    q_text = L - n  # video queries over [text, video] keys hold no text of their own
    out = torch.empty(B, H, L, v.shape[-1], dtype=torch.float64)
    lse = torch.empty(B, H, L, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // Hk)
            kept, slots = ref_keep_slots(q_match, n, q_ratio, b, h)
            q_keep, q_slot = ref_full_slots(kept, slots, n, q_text, text_first)
            kept, slots = ref_keep_slots(kv_match, n, kv_ratio, b, g)
            kv_keep, kv_slot = ref_full_slots(kept, slots, n, Lk - n, text_first)
            m = None
            if mask is not None:
                mm = mask.expand(B, H, *mask.shape[-2:])[b, h] if mask.dim() == 4 else mask
                rows = q_keep if mm.shape[0] != 1 else [0]
                cols = kv_keep if mm.shape[1] != 1 else [0]
                m = mm[rows][:, cols]
            qr, kr = ref_reduce(q[b, h], q_keep, q_slot, mode), ref_reduce(k[b, g], kv_keep, kv_slot, mode)
            o = ref_attention(qr, kr, ref_reduce(v[b, g], kv_keep, kv_slot, mode), m, scale)
            out[b, h] = torch.stack([o[q_slot[p]] for p in range(L)])
            if return_lse:
                s = ref_lse(qr, kr, m, scale)
                lse[b, h] = torch.stack([s[q_slot[p]] for p in range(L)])
    return (out.to(q.dtype), lse.to(q.dtype)) if return_lse else out.to(q.dtype)


@dataclass
class RefSite:
    grid: tuple
    text_len: int = 0
    text_first: bool = True


@dataclass
class ReferenceAsymRnR:
    """Stateful reference for whole-model runs: sites are the SDPA calls of a forward, in call order.

    Matches at the first step of each cache window in which a feature is reduced at all (even
    if its ratio is 0 at that very step), reuses the matching for the rest of the window,
    and draws partitions from the same seeds as the library.
    """

    plan: object
    sites: list  # RefSite per site ordinal, in call order
    step: int = 0
    cache: dict = field(default_factory=dict)
    calls: int = 0
    matched_at: list = field(default_factory=list)

    def start_forward(self, step):
        self.step = step
        self.calls = 0

    def __call__(self, query=None, key=None, value=None, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                 return_lse=False):
        assert not is_causal and dropout_p == 0.0
        ordinal = self.calls
        self.calls += 1
        site = self.sites[ordinal]
        plan = self.plan
        n = site.grid[0] * site.grid[1] * site.grid[2]
        window = self.step // plan.cache_window
        matches = {}
        symmetric = getattr(plan, "symmetric", False)
        features = (("q", key),) if symmetric else (("q", query), ("kv", value))
        for feature, x in features:
            r = plan.ratio(ordinal, self.step, feature)
            first = window * plan.cache_window
            last = first + plan.cache_window if plan.num_steps is None else min(first + plan.cache_window, plan.num_steps)
            window_reduces = any(plan.ratio(ordinal, s, feature) > 0 for s in range(first, last))
            key_ = (ordinal, feature)
            size = n // getattr(plan, "shards", 1)  # shard-local: each shard keeps its own share
            if int(size * (1 - r)) >= size and not window_reduces:
                matches[feature] = (None, r)
                continue
            cached = self.cache.get(key_)
            if cached is None or cached[0] != window:
                seed = derive_seed(plan.seed, ordinal, 0, feature, window)
                start = x.shape[2] - n if site.text_first else 0  # the text this tensor holds comes first
                video = x[:, :, start : start + n]
                shards = getattr(plan, "shards", 1)
                # the tile never exceeds the grid: a one-frame grid is tiled (1, sh, sw)
                stride = tuple(min(g, st) for g, st in zip(site.grid, plan.stride))
                cached = (window, ref_matching(video, site.grid, stride, seed, plan.similarity, getattr(plan, "window", None))
                          if shards == 1
                          else ref_shard_matchings(video, site.grid, stride, seed, plan.similarity, shards,
                                                   getattr(plan, "window", None)))
                self.cache[key_] = cached
                self.matched_at.append((self.step, ordinal, feature))
            matches[feature] = (cached[1] if int(size * (1 - r)) < size else None, r)
        if symmetric:  # one matching (on K) and one ratio for Q, K and V
            matches["kv"] = matches["q"]
        return ref_asymrnr_attention(
            query, key, value, grid=site.grid, q_ratio=matches["q"][1], kv_ratio=matches["kv"][1],
            q_match=matches["q"][0], kv_match=matches["kv"][0], text_len=site.text_len,
            text_first=site.text_first, mask=attn_mask, scale=scale, mode=plan.mode, return_lse=return_lse,
        )


def patched_sdpa(reference):
    """Context manager: every F.scaled_dot_product_attention call goes through ``reference``."""
    import contextlib

    import torch.nn.functional as F

    @contextlib.contextmanager
    def ctx():
        original = F.scaled_dot_product_attention

        def fn(*args, **kwargs):
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            kwargs.update(zip(names, args))
            return reference(**kwargs)

        F.scaled_dot_product_attention = fn
        try:
            yield reference
        finally:
            F.scaled_dot_product_attention = original

    return ctx()
