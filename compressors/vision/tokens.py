"""Merging and selection of vision tokens on plain tensors, written from the papers.

- `bipartite_merge`: ToMe's bipartite soft matching (Bolya et al., ICLR 2023): split tokens
  alternately into sets A and B, match each A token to its most similar B token by cosine of
  the keys, merge the `r` best-matched A tokens into their partners by a size-weighted average.
- `select_dominant_contextual`: VisionZip (Yang et al., CVPR 2025): keep the tokens the CLS
  token attends to most ("dominant"), then fold the rest into a few "contextual" tokens by key
  similarity to evenly spaced targets. `select_tokens` does it from an encoder layer's captured
  q/k projections, optionally mixed with similarity to a question vector (`guided_scores`).

Every function keeps three things in step: the tokens `[B, N, C]`, their sizes `[B, N]` (how many
original patches each token stands for; they always sum to the original count) and `source`
`[B, N0]` (for each original patch, the index of the output token that holds it). Sizes matter:
without them mean pooling and proportional attention drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "delayed", "decreasing", "front")


@dataclass
class TokenState:
    """Tokens with the bookkeeping that makes merges reversible in accounting."""

    tokens: torch.Tensor  # [B, N, C]
    sizes: torch.Tensor  # [B, N], float (patches per token)
    source: torch.Tensor  # [B, N0], long (output index of each original token)

    @classmethod
    def start(cls, tokens: torch.Tensor) -> TokenState:
        b, n, _ = tokens.shape
        sizes = torch.ones(b, n, device=tokens.device, dtype=tokens.dtype)
        source = torch.arange(n, device=tokens.device).expand(b, n).clone()
        return cls(tokens, sizes, source)


def _expand(index: torch.Tensor, channels: int) -> torch.Tensor:
    return index.unsqueeze(-1).expand(-1, -1, channels)


def bipartite_matching(
    metric: torch.Tensor, r: int, protect_first: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Which A tokens (even positions) merge into which B tokens (odd positions).

    Returns `(src, dst, keep)`: indices into A of merged tokens, their B partners, and the
    A tokens that stay (in original order). `None` when nothing merges. At most half of
    the tokens merge per call (the bipartite split's limit); the first token (CLS) never does.
    """
    n = metric.shape[1]
    r = min(r, (n - int(protect_first)) // 2)
    if r <= 0:
        return None
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(-1, -2)
    if protect_first:
        scores[:, 0, :] = -math.inf
    best, partner = scores.max(dim=-1)  # [B, Na]
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :r]
    keep = order[:, r:].sort(dim=-1).values
    dst = partner.gather(1, src)
    return src, dst, keep


def bipartite_merge(state: TokenState, metric: torch.Tensor, r: int) -> TokenState:
    """Merge `r` tokens away (size-weighted average); CLS stays first; order otherwise kept
    as [unmerged A..., B...]."""
    match = bipartite_matching(metric, r)
    if match is None:
        return state
    src, dst, keep = match
    x, size = state.tokens, state.sizes
    channels = x.shape[-1]
    xa, xb = x[:, ::2], x[:, 1::2]
    sa, sb = size[:, ::2], size[:, 1::2]
    # size-weighted sums in float32: in half precision they overflow for large tokens
    weighted_a = xa.float() * sa.float().unsqueeze(-1)
    b_sum = (xb.float() * sb.float().unsqueeze(-1)).scatter_add(
        1, _expand(dst, channels), weighted_a.gather(1, _expand(src, channels))
    )
    b_size = sb.scatter_add(1, dst, sa.gather(1, src))
    b_mean = (b_sum / b_size.float().unsqueeze(-1)).to(x.dtype)
    tokens = torch.cat([xa.gather(1, _expand(keep, channels)), b_mean], dim=1)
    sizes = torch.cat([sa.gather(1, keep), b_size], dim=1)
    # where each current token goes, then compose with the running source map
    batch, n_a, n_b = x.shape[0], xa.shape[1], xb.shape[1]
    n_keep = keep.shape[1]
    dev = x.device
    pos_a = torch.empty(batch, n_a, dtype=torch.long, device=dev)
    pos_a.scatter_(1, keep, torch.arange(n_keep, device=dev).expand(batch, n_keep))
    pos_a.scatter_(1, src, n_keep + dst)
    new_pos = torch.empty(batch, x.shape[1], dtype=torch.long, device=dev)
    new_pos[:, ::2] = pos_a
    new_pos[:, 1::2] = n_keep + torch.arange(n_b, device=dev).expand(batch, n_b)
    return TokenState(tokens, sizes, new_pos.gather(1, state.source))


def proportional_attention_mask(sizes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ToMe's proportional attention as an additive mask `[B, 1, 1, N]`: log(size) added to
    every query's logits toward a key, so a token standing for s patches weighs as s copies."""
    return sizes.log().to(dtype)[:, None, None, :]


def merge_schedule(
    n_tokens: int,
    n_target: int,
    n_layers: int,
    schedule: str = "constant",
    protect_first: bool = True,
) -> list[int]:
    """Tokens to merge away per layer so `n_tokens` ends at `n_target` (or as close as the
    half-per-layer limit allows).

    `constant` spreads merges evenly (ToMe's fixed r); `delayed` spreads them evenly over
    all layers but the first (whose keys are still low-level and match poorly: on the real
    ViT-S it keeps more fidelity per unit of compute saved than `constant`); `decreasing`
    weights layer i by (L - i) (ToMe's inflection -1); `front` merges in the first half of the
    layers only, most at the start, so later layers run on few tokens.
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"unknown merge schedule {schedule!r} (choose from {', '.join(SCHEDULES)})"
        )
    total = max(0, n_tokens - n_target)
    if total == 0 or n_layers == 0:
        return [0] * n_layers
    if schedule == "constant" or (schedule == "delayed" and n_layers == 1):
        weights = [1.0] * n_layers
    elif schedule == "delayed":
        weights = [0.0] + [1.0] * (n_layers - 1)
    elif schedule == "decreasing":
        weights = [float(n_layers - i) for i in range(n_layers)]
    else:
        half = max(1, n_layers // 2)
        weights = [float(half - i) if i < half else 0.0 for i in range(n_layers)]
    norm = sum(weights)
    raw = [total * w / norm for w in weights]
    plan = [math.floor(v) for v in raw]
    for i in sorted(range(n_layers), key=lambda i: (-(raw[i] - plan[i]), i))[: total - sum(plan)]:
        plan[i] += 1
    # respect the per-layer limit, carrying any excess to the next layers
    out, n, carry = [], n_tokens, 0
    for want in plan:
        r = min(want + carry, (n - int(protect_first)) // 2)
        carry = want + carry - r
        out.append(r)
        n -= r
    return out


def select_dominant_contextual(
    tokens: torch.Tensor,
    scores: torch.Tensor,
    keys: torch.Tensor,
    n_dominant: int,
    n_contextual: int,
    keep_first: bool = True,
    sizes: torch.Tensor | None = None,
) -> TokenState:
    """VisionZip-style reduction to `keep_first + n_dominant + n_contextual` tokens.

    `scores` `[B, N]` rank tokens (CLS attention, or a text-guided score); `keys` `[B, N, D]`
    give the similarity used to fold the remaining tokens into `n_contextual` tokens (targets
    spaced evenly over the remainder; each other token joins its most similar target; merged
    by size-weighted average). The output order is [CLS, dominant by position, contextual].
    """
    b, n, c = tokens.shape
    dev = tokens.device
    state = TokenState.start(tokens)
    if sizes is not None:
        state.sizes = sizes.to(tokens.dtype)
    first = int(keep_first)
    body = n - first
    n_dominant = max(0, min(n_dominant, body))
    n_contextual = max(0, min(n_contextual, body - n_dominant))
    if n_dominant + n_contextual >= body:
        return state
    body_scores = scores[:, first:].float()
    ranked = body_scores.argsort(dim=-1, descending=True, stable=True) + first
    dominant = ranked[:, :n_dominant].sort(dim=-1).values
    rest = ranked[:, n_dominant:].sort(dim=-1).values  # [B, n_rest], original order
    n_rest = rest.shape[1]
    parts_x = [tokens[:, :first]] if first else []
    parts_s = [state.sizes[:, :first]] if first else []
    parts_x.append(tokens.gather(1, _expand(dominant, c)))
    parts_s.append(state.sizes.gather(1, dominant))
    pos = torch.empty(b, n, dtype=torch.long, device=dev)
    if first:
        pos[:, 0] = 0
    base = first + n_dominant
    pos.scatter_(1, dominant, first + torch.arange(n_dominant, device=dev).expand(b, n_dominant))
    if n_contextual > 0:
        step = n_rest / n_contextual
        target_slots = torch.tensor(
            [int(i * step) for i in range(n_contextual)], device=dev, dtype=torch.long
        )
        k_rest = keys.gather(1, _expand(rest, keys.shape[-1])).float()
        k_rest = k_rest / k_rest.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        sim = k_rest @ k_rest[:, target_slots].transpose(-1, -2)  # [B, n_rest, M]
        assign = sim.argmax(dim=-1)  # targets match themselves first
        assign[:, target_slots] = torch.arange(n_contextual, device=dev)
        s_rest = state.sizes.gather(1, rest)
        x_rest = tokens.gather(1, _expand(rest, c))
        sums = torch.zeros(b, n_contextual, c, device=dev, dtype=torch.float32)
        sums.scatter_add_(1, _expand(assign, c), x_rest.float() * s_rest.float().unsqueeze(-1))
        size_ctx = torch.zeros(b, n_contextual, device=dev, dtype=state.sizes.dtype)
        size_ctx.scatter_add_(1, assign, s_rest)
        parts_x.append((sums / size_ctx.float().unsqueeze(-1)).to(tokens.dtype))
        parts_s.append(size_ctx)
        pos.scatter_(1, rest, base + assign)
    else:
        pos.scatter_(1, rest, -1)  # dropped: no output token holds them
    return TokenState(torch.cat(parts_x, 1), torch.cat(parts_s, 1), pos)


def cls_attention(query: torch.Tensor, keys: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Head-averaged attention of token 0 (CLS) over all tokens, from projected q/k `[B, N, H*D]`.

    Computed directly from the captured projections, so the encoder can keep SDPA/flash
    attention (which never materialise attention weights)."""
    b, n, hd = keys.shape
    d = hd // n_heads
    q = query[:, :1].float().view(b, 1, n_heads, d).transpose(1, 2)  # [B, H, 1, D]
    k = keys.float().view(b, n, n_heads, d).transpose(1, 2)  # [B, H, N, D]
    attn = torch.softmax((q @ k.transpose(-1, -2)) * d**-0.5, dim=-1)  # [B, H, 1, N]
    return attn.mean(dim=1)[:, 0]


def head_mean(keys: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Keys `[B, N, H*D]` averaged over heads to `[B, N, D]` (ToMe's similarity metric)."""
    b, n, hd = keys.shape
    return keys.view(b, n, n_heads, hd // n_heads).mean(dim=2)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo = x.min(dim=-1, keepdim=True).values
    hi = x.max(dim=-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def guided_scores(
    attention: torch.Tensor, tokens: torch.Tensor, query_vec: torch.Tensor, weight: float
) -> torch.Tensor:
    """CLS attention mixed with cosine similarity to a question vector (both min-max scaled)."""
    sim = torch.nn.functional.cosine_similarity(
        tokens.float(), query_vec.float().reshape(-1, 1, tokens.shape[-1]), dim=-1
    )
    return (1 - weight) * _minmax(attention.float()) + weight * _minmax(sim)


def select_tokens(
    tokens: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    n_heads: int,
    n_keep: int,
    *,
    has_cls: bool = True,
    dominant_share: float = 54 / 64,
    query_vec: torch.Tensor | None = None,
    text_weight: float = 0.5,
    guide_tokens: torch.Tensor | None = None,
) -> TokenState:
    """Reduce `tokens` `[B, N, C]` to `n_keep` tokens from the captured q/k of the same N tokens.

    When `has_cls` is false (LLaVA's default feature strategy drops CLS), q/k must still include
    CLS at index 0 and `tokens` must be the N-1 patch tokens. `guide_tokens` (default `tokens`)
    are what the question vector is compared with, e.g. the tokens after a LLaVA projector.
    """
    attention = cls_attention(q, k, n_heads)  # [B, N]
    keys = head_mean(k, n_heads)
    if not has_cls:
        attention, keys = attention[:, 1:], keys[:, 1:]
    if query_vec is not None:
        guide = tokens if guide_tokens is None else guide_tokens
        attention = guided_scores(attention, guide, query_vec, text_weight)
    body = n_keep - int(has_cls)
    dominant, contextual = split_budget(max(0, body), dominant_share)
    return select_dominant_contextual(
        tokens, attention, keys, dominant, contextual, keep_first=has_cls
    )


def split_budget(n_keep: int, dominant_share: float = 54 / 64) -> tuple[int, int]:
    """Dominant and contextual counts for `n_keep` tokens (VisionZip's 54+10 split by default)."""
    if n_keep <= 1:
        return max(0, n_keep), 0
    if dominant_share >= 1.0:
        return n_keep, 0  # pure pruning: the rest is dropped
    contextual = max(1, round(n_keep * (1 - dominant_share)))
    return n_keep - contextual, contextual


def weighted_mean(
    tokens: torch.Tensor, sizes: torch.Tensor, skip_first: bool = True
) -> torch.Tensor:
    """Size-weighted mean of the (patch) tokens: equals the plain mean before any merge."""
    start = int(skip_first)
    w = sizes[:, start:].unsqueeze(-1).float()
    return ((tokens[:, start:].float() * w).sum(1) / w.sum(1)).to(tokens.dtype)


def unmerge(state: TokenState) -> torch.Tensor:
    """Each original token's value read back from the token that holds it `[B, N0, C]`
    (dropped tokens come back as zeros)."""
    c = state.tokens.shape[-1]
    index = state.source.clamp_min(0)
    out = state.tokens.gather(1, _expand(index, c))
    return out * (state.source >= 0).unsqueeze(-1).to(out.dtype)


def as_list(value: int | Sequence[int], n_layers: int) -> list[int]:
    """An explicit ToMe-style `r`: one int for every layer, or one per layer."""
    if isinstance(value, int):
        return [value] * n_layers
    values = [int(v) for v in value]
    if len(values) != n_layers:
        raise ValueError(f"need {n_layers} per-layer merge counts, got {len(values)}")
    return values
