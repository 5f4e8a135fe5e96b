"""`self-information`: drop the text a small causal LM finds least surprising.

Selective Context / LLMLingua-1 style, no training. A local causal LM (default
SmolLM2-135M-Instruct) gives every token its surprisal ``-log p(token | preceding
text)``. With a query, by default, LongLLMLingua's contrast is added: how much likelier
the question makes each token (a second pass with the question in front), so text about
the question outranks text that is merely unpredictable. Surprisal is summed per word,
phrase or sentence and ranked per reader token; the least informative units are dropped
until the whole request (all contexts together) fits the budget in the reader's
tokenizer. Protected spans are always kept. Words are whitespace-delimited
(`ctxzip.units.split_whitespace_words`): a flag, path, URL, version or dotted name is
kept whole or dropped whole, never altered; phrases are runs of such words.

Known limit: facts the scorer already knows (famous dates) are predictable, hence cheap
to drop; retrieved text the model has never seen fares better.

Long contexts are scored in overlapping windows so every token sees at least
`overlap` tokens of left context; windows of all contexts of all requests in a
`compress_batch` call share batched forward passes.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ctxzip.compressor import BaseCompressor, Compressed
from ctxzip.errors import InputError
from ctxzip.models import SMOLLM, load_causal_lm
from ctxzip.protect import NO_PROTECT, Protect
from ctxzip.result import CompressionRequest, Span
from ctxzip.spans import join_spans
from ctxzip.tokens import DEFAULT_TOKENIZER
from ctxzip.units import Unit, split_sentences, split_whitespace_words

DEFAULT_MODEL = SMOLLM
UNITS = ("word", "phrase", "sentence")

# Function words start a new phrase: "the cat sat | on the mat | because ...".
_PHRASE_BREAKERS = frozenset(
    """a an the this that these those of in on at to for from by with about as into onto over under
    after before between during through without within and or but nor so yet because although though
    while if when where which who whom whose what is are was were be been being has have had do does
    did will would can could should may might must it its they them their he she his her we our you
    your i my not no than then there here also""".split()  # noqa: SIM905
)
_MAX_PHRASE_WORDS = 6


def as_protect(value: Protect | Mapping[str, Any] | None) -> Protect:
    """A `Protect` from itself, a dict of its fields (CLI JSON), or None."""
    if value is None:
        return NO_PROTECT
    if isinstance(value, Protect):
        return value
    if isinstance(value, Mapping):
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in value.items()
        }
        return Protect(**fields)
    raise TypeError(f"protect must be a Protect or a dict, got {type(value).__name__}")


def split_phrases(text: str, protect: Protect = NO_PROTECT) -> list[Unit]:
    """Short phrases: runs of whitespace words cut before function words and after punctuation.

    A cheap stand-in for noun-phrase chunking (no parser needed): units still tile the
    text exactly, blocks and atoms stay whole.
    """
    phrases: list[Unit] = []
    group: list[Unit] = []

    def flush() -> None:
        if group:
            start, end = group[0].start, group[-1].end
            prot = any(u.protected for u in group)
            phrases.append(Unit(text[start:end], start, end, "text", prot))
            group.clear()

    for unit in split_whitespace_words(text, protect):
        if unit.kind != "text":
            flush()
            phrases.append(unit)
            continue
        is_word = unit.text[0].isalnum() or unit.text[0] in "$€£¥"
        newline_before = group and "\n" in text[group[-1].end : unit.start]
        if (
            is_word
            and group
            and (
                newline_before
                or len(group) >= _MAX_PHRASE_WORDS
                or (
                    unit.text.lower() in _PHRASE_BREAKERS
                    and group[-1].text.lower() not in _PHRASE_BREAKERS
                )
            )
        ):
            flush()
        group.append(unit)
        if unit.text[-1] in '.,;:!?)]}"”’':
            flush()  # punctuation closes the phrase it ends
    flush()
    return phrases


@dataclass
class _Window:
    context: int  # index into the flat list of contexts
    start: int  # first context token in this window
    score_from: int  # first context token whose surprisal this window provides
    ids: list[int]  # prefix + context tokens
    n_context: int  # how many of `ids` are context tokens (the rest is the prefix)


class SelfInformationCompressor(BaseCompressor):
    """Keeps the most surprising words, phrases or sentences (per-token LM surprisal).

    Options: `model` (any causal LM id or folder), `unit` ("word", the default, "phrase",
    "sentence"), `condition_on_query` (False: ignore the query; True: score the context
    after the question; "contrastive", the default: also add `contrast_weight` times how
    much likelier the question makes each token, as LongLLMLingua does, at the cost of a
    second pass),
    `window`/`overlap` (tokens per forward window and carried-over left context),
    `batch_tokens` (padded tokens per forward pass), `protect` (a `Protect` or its
    fields as a dict), `device`, `dtype`, `progress` (a tqdm bar; None = when long).
    """

    name = "self-information"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        unit: str = "word",
        condition_on_query: bool | str = "contrastive",
        contrast_weight: float = 1.0,
        window: int = 512,
        overlap: int = 64,
        batch_tokens: int | None = None,
        protect: Protect | Mapping[str, Any] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        progress: bool | None = None,
        tokenizer: str = DEFAULT_TOKENIZER,
    ) -> None:
        super().__init__(tokenizer=tokenizer)
        if unit not in UNITS:
            raise InputError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        if window < 16:
            raise InputError(f"window must be at least 16 tokens, got {window}")
        if not 0 <= overlap < window // 2:
            raise InputError(f"overlap must be in [0, window/2), got {overlap}")
        self.model_id = model
        self.unit = unit
        if condition_on_query not in (True, False, "contrastive"):
            raise InputError(
                f"condition_on_query must be true, false or 'contrastive', got {condition_on_query!r}"
            )
        self.condition_on_query = condition_on_query
        self.contrast_weight = contrast_weight
        self.window = window
        self.overlap = overlap
        self.batch_tokens = batch_tokens
        self.protect = as_protect(protect)
        self.device = device
        self.dtype = dtype
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"SelfInformationCompressor(model={self.model_id!r}, unit={self.unit!r}, "
            f"condition_on_query={self.condition_on_query}, tokenizer={self.tokenizer_name!r})"
        )

    # -- scoring -------------------------------------------------------------------------

    def _lm(self) -> tuple[Any, Any]:
        return load_causal_lm(self.model_id, device=self.device, dtype=self.dtype)

    def token_surprisal(
        self, texts: Sequence[str], queries: Sequence[str | None] | None = None
    ) -> list[tuple[list[Span], list[float]]]:
        """Per-token (char span, surprisal in nats) for each text, in batched windows.

        With `queries`, each text is scored after its question ("Question: ...\nContext:").
        """
        model, hf_tok = self._lm()
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(
            model.config, "n_positions", None
        )
        window = min(self.window, int(limit)) if limit else self.window  # never past the model
        queries = list(queries) if queries is not None else [None] * len(texts)
        start_id = hf_tok.bos_token_id if hf_tok.bos_token_id is not None else hf_tok.eos_token_id
        encoded, windows = [], []
        for i, (text, query) in enumerate(zip(texts, queries, strict=True)):
            enc = hf_tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
            encoded.append((ids, offsets))
            prefix = [start_id] if start_id is not None else []
            if query:
                q_ids = hf_tok(f"Question: {query}\nContext:", add_special_tokens=False)[
                    "input_ids"
                ]
                prefix += list(q_ids)[-(window // 4) :]
            if not prefix:  # no start token: the first token is predicted from a newline
                prefix = list(hf_tok("\n", add_special_tokens=False)["input_ids"])
            windows += self._windows(i, ids, prefix, window)
        surprisal: list[list[float]] = [[0.0] * len(ids) for ids, _ in encoded]
        for window, values in self._score_windows(model, hf_tok, windows):
            row = surprisal[window.context]
            for j in range(window.score_from - window.start, len(values)):
                row[window.start + j] = values[j]
        return [(offsets, s) for (_, offsets), s in zip(encoded, surprisal, strict=True)]

    def _windows(
        self, context: int, ids: list[int], prefix: list[int], window: int
    ) -> list[_Window]:
        size = max(8, window - len(prefix))
        overlap = min(self.overlap, size // 2)
        windows, start = [], 0
        while start < len(ids):
            end = min(len(ids), start + size)
            score_from = start + (overlap if start else 0)
            windows.append(
                _Window(context, start, score_from, prefix + ids[start:end], end - start)
            )
            if end == len(ids):
                break
            start = end - overlap
        return windows

    def _score_windows(self, model: Any, hf_tok: Any, windows: list[_Window]) -> Any:
        """Yield (window, surprisal of each of its context tokens), longest windows first."""
        import torch
        import torch.nn.functional as F

        device = next(model.parameters()).device
        budget = self.batch_tokens or (8192 if device.type == "cuda" else 2048)
        pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
        batches: list[list[int]] = []
        for i in order:
            if batches and (len(batches[-1]) + 1) * len(windows[batches[-1][0]].ids) <= budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        show = self.progress if self.progress is not None else len(batches) >= 20
        from tqdm.auto import tqdm

        for batch in tqdm(batches, desc="self-information", unit="batch", disable=not show):
            width = len(windows[batch[0]].ids)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = windows[i].ids
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device)
                ).logits
                for row, i in enumerate(batch):
                    window = windows[i]
                    n_ctx = window.n_context
                    n = len(window.ids)
                    # logits at position p predict token p + 1
                    pred = logits[row, n - n_ctx - 1 : n - 1].float()
                    target = input_ids[row, n - n_ctx : n].to(device)
                    values = F.cross_entropy(pred, target, reduction="none")
                    yield window, values.cpu().tolist()

    # -- selection -----------------------------------------------------------------------

    def _split(self, text: str) -> list[Unit]:
        if self.unit == "word":
            return split_whitespace_words(text, self.protect)
        if self.unit == "sentence":
            return split_sentences(text, self.protect)
        return split_phrases(text, self.protect)

    def _compress_requests(self, requests: list[CompressionRequest]) -> list[Compressed]:
        flat = [(r, c) for r in requests for c in r.contexts]
        texts, queries = [c for _, c in flat], [r.query for r, _ in flat]
        if self.condition_on_query == "contrastive" and any(queries):
            # LongLLMLingua's contrast: tokens the question makes likelier are about it.
            both = self.token_surprisal(texts + texts, [None] * len(texts) + queries)
            scored = []
            for (offsets, plain), (_, given), query in zip(
                both[: len(texts)], both[len(texts) :], queries, strict=True
            ):
                if query:
                    w = self.contrast_weight
                    plain = [p + w * (p - g) for p, g in zip(plain, given, strict=True)]
                scored.append((offsets, plain))
        elif self.condition_on_query:
            scored = self.token_surprisal(texts, queries)
        else:
            scored = self.token_surprisal(texts)
        outcomes, pos = [], 0
        for request in requests:
            n = len(request.contexts)
            outcomes.append(self._select(request, scored[pos : pos + n]))
            pos += n
        return outcomes

    def _select(
        self, request: CompressionRequest, scored: list[tuple[list[Span], list[float]]]
    ) -> Compressed:
        tok = self.tokenizer
        contexts = request.contexts
        units = [self._split(c) for c in contexts]
        scores = [
            _unit_scores(u, offs, vals, c)
            for u, (offs, vals), c in zip(units, scored, contexts, strict=True)
        ]
        tokens_in = self.count(contexts)
        budget = request.budget.tokens_for(tokens_in)
        # Candidates: (context, unit index); cost counts the leading space the unit joins with.
        cost: dict[tuple[int, int], int] = {}
        for ci, (context, us) in enumerate(zip(contexts, units, strict=True)):
            for ui, u in enumerate(us):
                lead = " " if u.start > 0 and context[u.start - 1].isspace() else ""
                cost[(ci, ui)] = tok.count(lead + u.text)
        # Information per reader token: the greedy answer to "most surprisal within the budget".
        density = {k: scores[k[0]][k[1]] / max(1, c) for k, c in cost.items()}
        keep = {k for k in cost if units[k[0]][k[1]].protected}
        used = sum(cost[k] for k in keep)
        ranked = sorted((k for k in cost if k not in keep), key=lambda k: (-density[k], k))
        for k in ranked:
            if used + cost[k] <= budget:
                keep.add(k)
                used += cost[k]

        def build() -> tuple[list[list[Span]], int]:
            kept = [
                [u.span for ui, u in enumerate(us) if (ci, ui) in keep]
                for ci, us in enumerate(units)
            ]
            texts = [join_spans(c, k) for c, k in zip(contexts, kept, strict=True)]
            return kept, self.count(texts)

        kept, tokens_out = build()
        # Joining can cost a few tokens more than the units alone: drop the weakest until it fits.
        for _ in range(20):
            if tokens_out <= budget:
                break
            excess = tokens_out - budget
            for k in sorted(
                (k for k in keep if not units[k[0]][k[1]].protected),
                key=lambda k: (density[k], k),
            ):
                keep.discard(k)
                excess -= cost[k]
                if excess <= 0:
                    break
            else:
                break  # only protected units left
            kept, tokens_out = build()
        reason = None
        if tokens_out > budget:
            reason = "protected spans alone exceed the budget"
        elif budget == 0 and tokens_in:
            reason = "budget too small for any unit"
        extra = {
            "unit": self.unit,
            "units_total": len(cost),
            "units_kept": len(keep),
            "model": self.model_id,
            "condition_on_query": self.condition_on_query,
        }
        return Compressed(kept=kept, reason=reason, extra=extra)


def _unit_scores(
    units: list[Unit], offsets: list[Span], values: list[float], text: str
) -> list[float]:
    """Total surprisal (nats) per unit; a token belongs to the unit holding its first non-space char."""
    starts = [u.start for u in units]
    token_starts = [a for a, _ in offsets]
    sums = [0.0] * len(units)
    counts = [0] * len(units)
    for (a, b), value in zip(offsets, values, strict=True):
        end = b
        while a < b and text[a].isspace():
            a += 1
        if a >= b:  # a whitespace-only token (" " before digits) belongs to the next unit
            i = bisect.bisect_left(starts, end)
            if i < len(units):
                sums[i] += value
                counts[i] += 1
            continue
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and units[i].start <= a < units[i].end:
            sums[i] += value
            counts[i] += 1
    out = []
    for u, s, c in zip(units, sums, counts, strict=True):
        if c:
            out.append(s)
        else:  # the unit lies inside a token that starts in another unit ("1889" + ".")
            j = bisect.bisect_right(token_starts, u.start) - 1
            out.append(values[j] if 0 <= j < len(values) else 0.0)
    return out
