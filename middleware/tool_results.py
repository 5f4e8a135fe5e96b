"""The tool-result policy: which tool results may be compressed, and splicing them back.

Tool results above `min_tokens` are compressed (by the `content` compressor in the
proxy) at `rate`, guided by the last user text before their tool call. Tool calls are
never touched, so every call keeps its result. `include`/`exclude` select tools by
name (shell-style globs); a result whose call is not in the body matches only an empty
`include`. In Anthropic requests, results at or before the last ``cache_control``
breakpoint stay as they are (the same rule as for message text).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.middleware.agent_items import AgentProtocol, ToolSlot, query_before, tool_slots
from ctxzip.middleware.agent_items import user_texts as _user_texts
from ctxzip.result import CompressionRequest


@dataclass(frozen=True)
class ToolResultPolicy:
    """What may change in tool results. `enabled=False` is the off switch."""

    enabled: bool = True
    min_tokens: int = 400
    rate: float = 0.3
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        Budget(rate=self.rate)  # validates
        if self.min_tokens < 0:
            raise ValueError("min_tokens must be >= 0")

    def allows(self, tool: str | None) -> bool:
        """Whether results of `tool` (None: call not found) may be compressed."""
        if tool is not None and any(fnmatch.fnmatchcase(tool, g) for g in self.exclude):
            return False
        if not self.include:
            return True
        return tool is not None and any(fnmatch.fnmatchcase(tool, g) for g in self.include)


@dataclass
class ToolUnit:
    """One tool-result string to compress."""

    slot: ToolSlot
    query: str | None
    tokens: int


@dataclass
class ToolPlan:
    """What `plan_tool_results` found in a deep copy of the body."""

    body: dict[str, Any]
    protocol: AgentProtocol
    units: list[ToolUnit]
    rate: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> results

    @property
    def tokens_in(self) -> int:
        return sum(u.tokens for u in self.units)

    def requests(self) -> list[CompressionRequest]:
        """One request per unit, in order."""
        return [
            CompressionRequest(
                contexts=(u.slot.text,), query=u.query, budget=Budget(rate=self.rate)
            )
            for u in self.units
        ]

    def apply(self, texts: Sequence[str]) -> dict[str, Any]:
        """Put one new text per unit into the body copy and return it."""
        if len(texts) != len(self.units):
            raise ValueError(f"expected {len(self.units)} texts, got {len(texts)}")
        for unit, text in zip(self.units, texts, strict=True):
            unit.slot.container[unit.slot.key] = text
        return self.body


def _marked(block: Any) -> bool:
    if not isinstance(block, dict):
        return False
    if block.get("cache_control") is not None:
        return True
    inner = block.get("content")
    return isinstance(inner, list) and any(
        isinstance(b, dict) and b.get("cache_control") is not None for b in inner
    )


def _breakpoint(body: dict[str, Any]) -> tuple[int, int] | None:
    """(message, block) of the last Anthropic cache breakpoint in messages, or None."""
    last = None
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, block in enumerate(content if isinstance(content, list) else []):
            if _marked(block):
                last = (i, j)
    return last


def plan_tool_results(
    body: dict[str, Any],
    protocol: AgentProtocol,
    policy: ToolResultPolicy,
    count: Callable[[str], int],
) -> ToolPlan:
    """Find the tool results of `body` to compress.

    `body` is only read; when something is to be compressed the plan holds a deep copy
    (its units point into the copy), otherwise the body itself."""
    plan = ToolPlan(body, protocol, [], policy.rate)
    slots = tool_slots(body, protocol)
    if not slots:
        return plan

    def skip(reason: str) -> None:
        plan.skipped[reason] = plan.skipped.get(reason, 0) + 1

    if not policy.enabled:
        for _ in slots:
            skip("disabled")
        return plan
    texts = _user_texts(body, protocol)
    mark = _breakpoint(body) if protocol == "anthropic" else None
    for slot in slots:
        if mark is not None and (slot.index, slot.block) <= mark:
            skip("cache_breakpoint")
            continue
        if slot.is_error:
            skip("is_error")
            continue
        if not policy.allows(slot.tool):
            skip("excluded")
            continue
        text = slot.text
        tokens = count(text) if text.strip() else 0
        if len(text) < policy.min_tokens:  # a token is at least one character
            skip("below_threshold")
            continue
        tokens = count(text) if text.strip() else 0
        if tokens < max(policy.min_tokens, 1):
            skip("below_threshold")
            continue
        where = slot.call_index if slot.call_index >= 0 else slot.index
        plan.units.append(ToolUnit(slot, query_before(texts, where), tokens))
    if plan.units:  # copy only now, and point the units at the copy's strings
        plan.body = copy.deepcopy(body)
        position = {id(slot): k for k, slot in enumerate(slots)}
        fresh = tool_slots(plan.body, protocol)  # the same walk, so the same order
        for unit in plan.units:
            unit.slot = fresh[position[id(unit.slot)]]
    return plan


def compress_tool_results(
    body: dict[str, Any],
    protocol: AgentProtocol,
    compressor: Compressor,
    policy: ToolResultPolicy | None = None,
    count: Callable[[str], int] | None = None,
) -> tuple[dict[str, Any], dict[str, str], ToolPlan]:
    """Compress a body's tool results in one call (library use; the proxy's service adds
    caching, time limits and metrics). `compressor` is the ``content`` compressor.

    Returns (the new body, marker key -> omitted original, the plan). A result whose
    compression left nothing out keeps its text; `body` itself is never changed."""
    policy = policy or ToolResultPolicy()
    if count is None:
        tokenizer = getattr(compressor, "tokenizer", None)
        count = tokenizer.count if tokenizer is not None else (lambda s: len(s.split()))
    plan = plan_tool_results(body, protocol, policy, count)
    if not plan.units:
        return body, {}, plan
    results = compressor.compress_batch(plan.requests())
    texts: list[str] = []
    originals: dict[str, str] = {}
    for unit, result in zip(plan.units, results, strict=True):
        info = result.extra.get("contexts", [{}])[0]
        if info.get("omitted", 0) > 0 and result.texts[0] != unit.slot.text:
            texts.append(result.texts[0])
            originals.update(info.get("originals") or {})
        else:
            texts.append(unit.slot.text)
    return plan.apply(texts), originals, plan
