"""Shared pieces of the content compressors: results, markers, query terms, line selection.

Every content compressor returns a `Shrunk`: the new text, the content type, how many
units (lines, records, rows) it left out, and the originals of each omitted stretch by
key. A key is the first 12 hex digits of the SHA-256 of the omitted text, so the same
input always yields the same marker (prompt caches keep hitting) and the original can be
fetched again (`ctxzip.middleware.originals`).
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MARKER_PREFIX = "[ctxzip:"
MARKER_COST = 56  # characters of a marker line; shorter runs of lines are kept instead
MARKER = re.compile(r"\[ctxzip: (\d+) (\w+) omitted; expand key ([0-9a-f]{12})\]")

_UPPER_ALERT = r"\b(?:ERROR|ERR!?|WARN|WARNING|FATAL|CRITICAL|PANIC|SEVERE)\b"
_LOWER_ALERT = (
    r"^[^\w\n]{0,3}(?:error|warning|warn|fatal|traceback|exception|panic|failed|failure)\b"
    r"|(?:error|warning|exception|failed|failure|fatal)[ \t]*[:!]"
    r"|traceback \(most recent call last\)"
)
UPPER_ALERT = re.compile(_UPPER_ALERT, re.M)
LOWER_ALERT = re.compile(_LOWER_ALERT, re.M)
"""An error or warning line: a level word in capitals (`UPPER_ALERT`, on the text), or, in
any case (`LOWER_ALERT`, on `ascii_lower(text)`), a line that starts with one or one
followed by a colon ("SomeError: ...", "warning: ...")."""
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """`text` with A-Z lowered only, so every offset stays where it was."""
    return text.translate(_ASCII_LOWER)


_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*[A-Za-z0-9_]|[A-Za-z0-9]")
STOPWORDS = frozenset(
    """a an and are as at be but by can did do does for from has have how i if in into is it
    its of on or our say says should so than that the their them then there these they this
    to was we were what when where which who why will with would you your about all any
    which whose give tell show list find line lines file files number value named name""".split()  # noqa: SIM905
)
"""Question words that say nothing about which lines answer it."""


def key_for(text: str) -> str:
    """The marker key of an omitted stretch: 12 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def marker(count: int, unit: str, key: str) -> str:
    """The in-band note left where `count` `unit`s were omitted."""
    return f"{MARKER_PREFIX} {count} {unit} omitted; expand key {key}]"


@dataclass
class Shrunk:
    """What a content compressor did to one text."""

    text: str
    content_type: str
    omitted: int = 0  # units left out
    total: int = 0  # units seen
    originals: dict[str, str] = field(default_factory=dict)  # marker key -> omitted text
    reason: str | None = None  # why it passed through, when it did

    @property
    def changed(self) -> bool:
        return self.omitted > 0


def passthrough(text: str, content_type: str, reason: str) -> Shrunk:
    """`text` unchanged, with why."""
    return Shrunk(text, content_type, reason=reason)


QUERY_TAIL = 400


def query_terms(query: str | None) -> list[str]:
    """Lower-cased words of the query worth matching (no stop words, no 1-letter words
    unless they carry a digit). Of a long query only the last `QUERY_TAIL` characters
    count: a user turn that pastes context usually ends with its question."""
    if not query:
        return []
    if len(query) > QUERY_TAIL:
        query = query[-QUERY_TAIL:].split(None, 1)[-1]
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        word = word.strip(".-/")
        if len(word) < 2 or word in STOPWORDS:
            continue
        if len(word) < 3 and not any(c.isdigit() for c in word):
            continue
        seen[word] = None
    return list(seen)


def _starts(texts: Sequence[str], sep: int) -> list[int]:
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + sep
    return starts


def matching(pattern: re.Pattern[str], texts: Sequence[str], joined: str | None = None) -> set[int]:
    """Indices of the `texts` (lines, with their endings) where a multi-line `pattern` matches.

    One scan of the joined text instead of one regex call per line (``^`` must be compiled
    with ``re.M``; a match is attributed to the line it starts in)."""
    joined = "".join(texts) if joined is None else joined
    starts = _starts(texts, 0)
    return {bisect.bisect_right(starts, m.start()) - 1 for m in pattern.finditer(joined)}


def term_scores(texts: Sequence[str], terms: Sequence[str]) -> list[float]:
    """Per text, the summed rarity (IDF-like) of the query terms it contains."""
    if not terms or not texts:
        return [0.0] * len(texts)
    lowered = ascii_lower("\x00".join(texts))  # offsets must not move
    starts = _starts(texts, 1)
    scores = [0.0] * len(texts)
    n = len(texts)
    for term in terms:
        hits: set[int] = set()
        pos = lowered.find(term)
        while pos >= 0:
            i = bisect.bisect_right(starts, pos) - 1
            hits.add(i)
            # on to the next text: one hit per text is enough
            nxt = starts[i + 1] if i + 1 < n else len(lowered)
            pos = lowered.find(term, max(pos + 1, nxt))
        if not hits or len(hits) > max(3, n // 2):
            # a term on most lines tells nothing apart (but still counts a little)
            weight = 0.1 if hits else 0.0
        else:
            weight = 1.0 + (n / len(hits)) ** 0.5 / 10
        for i in hits:
            scores[i] += weight
    return scores


_ALERT_HINTS = (
    "err",
    "warn",
    "fatal",
    "fail",
    "critical",
    "panic",
    "exception",
    "traceback",
    "severe",
)


def is_alert(text: str) -> bool:
    """An error or warning line/record (always kept)."""
    lowered = ascii_lower(text)
    if not any(hint in lowered for hint in _ALERT_HINTS):
        return False  # the cheap test first: most records and lines hold none of these
    return UPPER_ALERT.search(text) is not None or LOWER_ALERT.search(lowered) is not None


def alert_lines(lines: Sequence[str], text: str) -> set[int]:
    """Indices of the error/warning lines of `text` (split into `lines`, endings kept)."""
    lowered = ascii_lower(text)
    if not any(hint in lowered for hint in _ALERT_HINTS):
        return set()
    return matching(UPPER_ALERT, lines, text) | matching(LOWER_ALERT, lines, lowered)


def select(
    costs: Sequence[int], scores: Sequence[float], must: Iterable[int], budget: int
) -> set[int]:
    """Indices to keep: every `must`, then the best-scored (ties: earlier first) while the
    summed `costs` stay within `budget`. Zero-score units are never picked by score."""
    kept = set(must)
    used = sum(costs[i] for i in kept)
    order = sorted((i for i in range(len(costs)) if scores[i] > 0 and i not in kept),
                   key=lambda i: (-scores[i], i))  # fmt: skip
    for i in order:
        if used + costs[i] > budget:
            continue
        kept.add(i)
        used += costs[i]
    return kept


def render_lines(lines: Sequence[str], kept: set[int], unit: str = "lines") -> Shrunk:
    """Kept lines verbatim and in order; each run of omitted lines becomes one marker line.

    `lines` carry their line endings (``str.splitlines(keepends=True)``), so the kept lines
    are byte-identical to the input's."""
    out: list[str] = []
    originals: dict[str, str] = {}
    omitted = 0
    i, n = 0, len(lines)
    while i < n:
        if i in kept:
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < n and j not in kept:
            j += 1
        block = "".join(lines[i:j])
        if len(block) <= MARKER_COST:  # a marker would cost more than the lines it hides
            out.append(block)
            i = j
            continue
        key = key_for(block)
        originals[key] = block
        omitted += j - i
        if out and not out[-1].endswith(("\n", "\r")):
            out.append("\n")
        end = "\n" if block.endswith(("\n", "\r")) else ""
        out.append(marker(j - i, unit, key) + end)
        i = j
    return Shrunk("".join(out), "", omitted, n, originals)


def window(kept: set[int], around: Iterable[int], before: int, after: int, n: int) -> set[int]:
    """`kept` plus the lines within `before`/`after` of each index in `around`."""
    out = set(kept)
    for i in around:
        out.update(range(max(0, i - before), min(n, i + after + 1)))
    return out
