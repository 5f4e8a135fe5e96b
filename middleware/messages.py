"""Which parts of a chat request may be compressed, and how to put the results back.

A chat request (OpenAI chat completions, Anthropic messages, an OpenAI Responses
``input`` or Gemini ``contents``, as parsed JSON) is walked once to find *regions*: text inside allowed messages that a compressor may
shorten. Everything else is left as the very same Python object, so system and
developer prompts, tool definitions, tool calls and results, thinking blocks, images,
unknown fields and every block at or before an Anthropic ``cache_control`` breakpoint
come back unchanged. One `CompressionRequest` is built per message (its regions are
the contexts, so the budget is met across the message), with the rate picked from a
token-range table, and `Plan.apply` splices the compressed texts back in. The query
that guides a message is the last user text at or before it, never a later one, so a
message compresses the same way on every later turn (prompt caches keep hitting).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import regex

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.middleware import gemini_items as gemini
from ctxzip.middleware.agent_items import is_message, items, query_before, user_texts
from ctxzip.result import CompressionRequest, CompressionResult

Protocol = Literal["openai", "anthropic", "responses", "gemini"]
NEVER_COMPRESSED_ROLES = frozenset({"system", "developer", "tool", "function"})
COMPRESSIBLE_ROLES = frozenset({"user", "assistant"})
PARTS = frozenset({"text", "document"})
_TEXT_BLOCKS = {"openai": ("text",), "anthropic": ("text",),
                "responses": ("input_text", "output_text"), "gemini": ()}  # fmt: skip


@dataclass(frozen=True)
class RateRange:
    """Messages with at least `above` tokens are kept at `rate` (1.0 leaves them alone)."""

    above: int
    rate: float


@dataclass(frozen=True)
class MessagePolicy:
    """What may change in a chat request.

    `roles`: roles whose text may be compressed (only ``user`` and ``assistant`` exist
    for this; system/developer/tool never change). `parts`: ``text`` (string content and
    text parts/blocks) and ``document`` (Anthropic plain-text document blocks).
    `tags`: when set, only text inside ``<tag>...</tag>`` is compressed (tags kept).
    `min_tokens`: messages with fewer compressible tokens are untouched. `ranges` pick
    the rate by the message's compressible tokens (the last range whose `above` is met);
    `rate` applies when none does.
    """

    roles: tuple[str, ...] = ("user",)
    parts: tuple[str, ...] = ("text",)
    tags: tuple[str, ...] = ()
    min_tokens: int = 200
    rate: float = 0.5
    ranges: tuple[RateRange, ...] = ()

    def __post_init__(self) -> None:
        bad = set(self.roles) - COMPRESSIBLE_ROLES
        if bad:
            raise ValueError(
                f"roles {sorted(bad)} can never be compressed (allowed: user, assistant)"
            )
        bad = set(self.parts) - PARTS
        if bad:
            raise ValueError(f"unknown parts {sorted(bad)} (allowed: text, document)")
        for tag in self.tags:
            if not regex.fullmatch(r"[A-Za-z][\w.-]*", tag):
                raise ValueError(f"tag {tag!r} is not a plain tag name")
        Budget(rate=self.rate)  # validates
        for r in self.ranges:
            Budget(rate=r.rate)
            if r.above < 0:
                raise ValueError("range 'above' must be >= 0")
        if self.min_tokens < 0:
            raise ValueError("min_tokens must be >= 0")

    def rate_for(self, tokens: int) -> float | None:
        """The kept fraction for a message of `tokens` compressible tokens; None: untouched."""
        if tokens == 0 or tokens < self.min_tokens:
            return None
        rate = self.rate
        for r in sorted(self.ranges, key=lambda r: r.above):
            if tokens >= r.above:
                rate = r.rate
        return None if rate >= 1.0 else rate


@dataclass
class Region:
    """A compressible stretch `[start, end)` of the string at `container[key]`."""

    container: Any
    key: Any
    start: int
    end: int

    @property
    def text(self) -> str:
        return str(self.container[self.key][self.start : self.end])


@dataclass
class MessageUnit:
    """All regions of one message, compressed together under one budget."""

    index: int
    role: str
    regions: list[Region]
    tokens: int = 0
    rate: float | None = None
    query: str | None = None  # the last user text at or before this message


@dataclass
class Plan:
    """What `plan_request` found: a deep copy of the body and the units to compress.

    The prefix rule: each unit's query comes from its own message and the ones before it
    (the latest user text up to there), never from later turns, so message *i* compresses
    the same way whatever follows it and provider prompt caches keep hitting.
    `query` is the request's last user text (kept for callers that want it).
    """

    body: dict[str, Any]
    protocol: Protocol
    units: list[MessageUnit]
    query: str | None
    skipped: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[MessageUnit]:
        return [u for u in self.units if u.rate is not None]

    @property
    def tokens_in(self) -> int:
        return sum(u.tokens for u in self.units)

    def requests(self) -> list[CompressionRequest]:
        """One request per message that will be compressed, in `active` order."""
        return [
            CompressionRequest(
                contexts=tuple(r.text for r in u.regions),
                query=u.query,
                budget=Budget(rate=u.rate),
            )
            for u in self.active
        ]

    def apply(self, texts: Sequence[Sequence[str]]) -> dict[str, Any]:
        """Splice compressed texts (per active unit, per region) into the body copy."""
        units = self.active
        if len(texts) != len(units):
            raise ValueError(f"expected {len(units)} results, got {len(texts)}")
        edits: dict[tuple[int, Any], list[tuple[Region, str]]] = {}
        for unit, unit_texts in zip(units, texts, strict=True):
            if len(unit_texts) != len(unit.regions):
                raise ValueError("a compressor returned the wrong number of texts")
            for region, new in zip(unit.regions, unit_texts, strict=True):
                edits.setdefault((id(region.container), region.key), []).append((region, new))
        for pieces in edits.values():
            region0 = pieces[0][0]
            original = region0.container[region0.key]
            out, pos = [], 0
            for region, new in sorted(pieces, key=lambda p: p[0].start):
                out += [original[pos : region.start], new]
                pos = region.end
            out.append(original[pos:])
            region0.container[region0.key] = "".join(out)
        return self.body


def _tag_regions(text: str, tags: Sequence[str]) -> list[tuple[int, int]]:
    """Inner spans of ``<tag ...>inner</tag>`` for the given tags (not nested)."""
    if not tags:
        return [(0, len(text))] if text.strip() else []
    names = "|".join(regex.escape(t) for t in tags)
    pattern = regex.compile(rf"(?s)<({names})(?:\s[^>]*)?>(.*?)</\1>")
    return [m.span(2) for m in pattern.finditer(text) if m.group(2).strip()]


def _text_slots(
    message: dict[str, Any], parts: Sequence[str], protocol: Protocol, first_block: int
) -> list[tuple[Any, Any]]:
    """(container, key) pairs holding compressible strings of one message's content.

    Blocks before `first_block` are left alone (they sit at or before a cache breakpoint).
    """
    if protocol == "gemini":  # text parts only: no thought, no signature, no call
        return [(p, "text") for p in gemini.text_parts(message)] if "text" in parts else []
    content = message.get("content")
    if isinstance(content, str):
        return [(message, "content")] if "text" in parts and first_block == 0 else []
    if not isinstance(content, list):
        return []
    slots: list[tuple[Any, Any]] = []
    for block in content[first_block:]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if (
            kind in _TEXT_BLOCKS[protocol]
            and "text" in parts
            and isinstance(block.get("text"), str)
        ):
            slots.append((block, "text"))
        elif (
            protocol == "anthropic"
            and kind == "document"
            and "document" in parts
            and isinstance(block.get("source"), dict)
            and block["source"].get("type") == "text"
            and isinstance(block["source"].get("data"), str)
        ):
            slots.append((block["source"], "data"))
    return slots


def _last_breakpoint(body: dict[str, Any]) -> tuple[int, int] | None:
    """(message index, block index) of the last Anthropic cache breakpoint in messages.

    Breakpoints on tools or system protect only those (they come first in the cache
    prefix, and they are never compressed anyway). None when messages hold none.
    """
    last = None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for j, block in enumerate(content):
                if isinstance(block, dict) and block.get("cache_control") is not None:
                    last = (i, j)
    return last


def _strip_tagged(text: str, tags: Sequence[str]) -> str:
    """`text` without its tagged regions (what is left is the question)."""
    names = "|".join(map(regex.escape, tags))
    return str(regex.sub(rf"(?s)<({names})(?:\s[^>]*)?>.*?</\1>", " ", text))


def plan_request(
    body: dict[str, Any],
    protocol: Protocol,
    policy: MessagePolicy,
    count: Callable[[str], int],
    rate: float | None = None,
) -> Plan:
    """Find what may be compressed in `body` (left untouched: the plan holds a deep copy).

    `count` counts tokens in the reader's tokenizer; `rate`, when given, replaces the
    range table for messages at or above `min_tokens`.
    """
    body = copy.deepcopy(body)
    units: list[MessageUnit] = []
    skipped: list[str] = []
    if protocol == "responses" and isinstance(body.get("input"), str):
        return _plan_string_input(body, policy, count, rate)
    messages = items(body, protocol)
    if not messages:
        return Plan(body, protocol, units, None, ["no messages"])
    breakpoint_at = _last_breakpoint(body) if protocol == "anthropic" else None
    texts = []
    for index, text in user_texts(body, protocol):
        if policy.tags:
            text = _strip_tagged(text, policy.tags).strip()
        if text:
            texts.append((index, text))
    query = texts[-1][1] if texts else None
    for i, message in enumerate(messages):
        if protocol == "gemini":
            role = gemini.role(message)
        elif is_message(message):
            role = message.get("role")
        else:
            continue
        if role not in policy.roles:
            continue
        if (message.get("tool_calls") or message.get("function_call")
                or any("functionCall" in p for p in gemini.parts(message))):  # fmt: skip
            skipped.append(f"message {i}: carries tool calls")
            continue
        if breakpoint_at is not None and i < breakpoint_at[0]:
            continue

        first_block = 0
        if breakpoint_at is not None and i == breakpoint_at[0]:
            first_block = breakpoint_at[1] + 1
        regions: list[Region] = []
        for container, key in _text_slots(message, policy.parts, protocol, first_block):
            for start, end in _tag_regions(container[key], policy.tags):
                regions.append(Region(container, key, start, end))
        if not regions:
            continue
        unit = MessageUnit(i, str(role), regions, query=query_before(texts, i + 1))
        unit.tokens = sum(count(r.text) for r in regions)
        if rate is None:
            unit.rate = policy.rate_for(unit.tokens)
        elif rate < 1.0 and unit.tokens >= max(policy.min_tokens, 1):
            unit.rate = rate
        units.append(unit)
    return Plan(body, protocol, units, query, skipped)


def _plan_string_input(
    body: dict[str, Any], policy: MessagePolicy, count: Callable[[str], int], rate: float | None
) -> Plan:
    """A Responses request whose ``input`` is one string: one user message."""
    text = body["input"]
    query = text.strip() or None
    if "user" not in policy.roles or "text" not in policy.parts:
        return Plan(body, "responses", [], query)
    regions = [Region(body, "input", s, e) for s, e in _tag_regions(text, policy.tags)]
    if not regions:
        return Plan(body, "responses", [], query)
    unit = MessageUnit(0, "user", regions, query=query)
    unit.tokens = sum(count(r.text) for r in regions)
    if rate is None:
        unit.rate = policy.rate_for(unit.tokens)
    elif rate < 1.0 and unit.tokens >= max(policy.min_tokens, 1):
        unit.rate = rate
    return Plan(body, "responses", [unit], query)


def compress_messages(
    body: dict[str, Any],
    compressor: Compressor,
    protocol: Protocol = "openai",
    policy: MessagePolicy | None = None,
) -> tuple[dict[str, Any], list[CompressionResult]]:
    """Compress a chat request in one call (library use); returns the new body and results."""
    policy = policy or MessagePolicy()
    tokenizer = getattr(compressor, "tokenizer", None)
    count = tokenizer.count if tokenizer is not None else (lambda s: len(s.split()))
    plan = plan_request(body, protocol, policy, count)
    requests = plan.requests()
    if not requests:
        return plan.body, []
    results = compressor.compress_batch(requests)
    return plan.apply([r.texts for r in results]), results
