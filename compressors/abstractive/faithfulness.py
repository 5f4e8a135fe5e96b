"""Keep generated text honest: drop summary sentences the sources do not support.

A summary sentence is supported when some source sentence covers most of its
content words (lexical recall) or says the same thing (embedding cosine), and every
number it states appears in the sources. Everything else is dropped and counted, so a
summariser cannot add facts that were never retrieved. The same embedder scores how
relevant the sources are to the query (selective augmentation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from ctxzip.encoder import get_encoder
from ctxzip.models import MINILM
from ctxzip.units import Unit, split_sentences

DEFAULT_EMBEDDER = MINILM

_WORD = regex.compile(r"[\p{L}\p{N}]+(?:['’][\p{L}]+)?")
_NUMBER = regex.compile(r"\d+(?:[.,]\d+)*")
_STOPWORDS = frozenset(
    """a an the this that these those of in on at to for from by with about as into onto over under
    after before between during through and or but nor so yet because although while if when where
    which who whom whose what is are was were be been being has have had do does did will would can
    could should may might must it its they them their he she his her we our you your i my me us not
    no than then there here also very more most such only same other some any each all both it's""".split()  # noqa: SIM905
)


def content_words(text: str) -> set[str]:
    """Lower-cased words minus function words, with a light plural/possessive strip."""
    words = set()
    for w in _WORD.findall(text.lower()):
        w = w.replace("’", "'")
        if w.endswith("'s"):
            w = w[:-2]
        if w in _STOPWORDS or (len(w) < 2 and not w.isdigit()):
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        words.add(w)
    return words


def numbers(text: str) -> set[str]:
    """Numbers as written, thousands separators removed ("1,000" == "1000")."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


@dataclass
class GuardResult:
    """The supported part of one summary and what was dropped from it."""

    text: str
    checked: int = 0
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "dropped": len(self.dropped),
            "dropped_sentences": self.dropped,
        }


class SupportChecker:
    """Sentence-level support and query relevance, one embedder pass per call.

    `lexical`: the least share of a sentence's content words one source sentence must
    hold; `semantic`: the least cosine to one source sentence; either suffices, and
    with `check_numbers` every number must also occur in the sources.
    """

    def __init__(
        self,
        embedder: str = DEFAULT_EMBEDDER,
        *,
        lexical: float = 0.5,
        semantic: float = 0.6,
        check_numbers: bool = True,
        device: str = "auto",
    ) -> None:
        self.embedder_id = embedder
        self.lexical = lexical
        self.semantic = semantic
        self.check_numbers = check_numbers
        self.device = device

    def _encode(self, texts: Sequence[str]) -> Any:
        """Unit vectors from the process-wide encoder (`ctxzip.encoder`: its LRU cache is shared
        with `extractive`, so the sources embedded for relevance are not re-encoded by the guard)."""
        return get_encoder(self.embedder_id, device=self.device).encode(list(texts))

    def relevance(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        """For each (query, sources): the best cosine between the query and a source sentence."""
        sentences = [[u.text for s in srcs for u in split_sentences(s)] for _, srcs in pairs]
        flat = [q for q, _ in pairs] + [t for ss in sentences for t in ss]
        if not flat:
            return []
        vectors = self._encode(flat)
        queries, pos, out = vectors[: len(pairs)], len(pairs), []
        for i, ss in enumerate(sentences):
            block = vectors[pos : pos + len(ss)]
            pos += len(ss)
            out.append(float((block @ queries[i]).max()) if len(ss) else 0.0)
        return out

    def filter(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[GuardResult]:
        """For each (summary, sources): the summary without its unsupported sentences."""
        summaries = [split_sentences(s) for s, _ in pairs]
        sources = [[u.text for s in srcs for u in split_sentences(s)] for _, srcs in pairs]
        flat = [u.text for us in summaries for u in us] + [t for ss in sources for t in ss]
        vectors = self._encode(flat) if flat else None
        n_summary = sum(len(us) for us in summaries)
        s_pos, src_pos, results = 0, n_summary, []
        for (_summary, srcs), units, src_sents in zip(pairs, summaries, sources, strict=True):
            src_words = [content_words(t) for t in src_sents]
            src_numbers = numbers(" ".join(srcs))
            kept: list[Unit] = []
            dropped: list[Unit] = []
            for unit in units:
                words = content_words(unit.text)
                lexical = (
                    max((len(words & sw) / len(words) for sw in src_words), default=0.0)
                    if words
                    else 1.0
                )
                semantic = 0.0
                if vectors is not None and src_sents:
                    block = vectors[src_pos : src_pos + len(src_sents)]
                    semantic = float((block @ vectors[s_pos]).max())
                s_pos += 1
                novel = numbers(unit.text) - src_numbers if self.check_numbers else set()
                supported = (lexical >= self.lexical or semantic >= self.semantic) and not novel
                (kept if supported else dropped).append(unit)
            src_pos += len(src_sents)
            text = " ".join(u.text for u in kept)
            results.append(GuardResult(text, len(units), [u.text for u in dropped]))
        return results
