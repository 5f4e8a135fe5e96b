"""What the MCP wrapper does to one ``tools/call`` result (a plain dict, wire field names).

Lossless first, always (for tools the include/exclude lists allow):

1. a text block that only repeats ``structuredContent`` (the same JSON value) is dropped;
2. a JSON text block is minified, and its records (arrays or objects of them, optional
   keys and nested records included) written as tables that are still valid JSON
   (`ctxzip.compressors.content.json_compact`).

Lossy only when on and the text is still above the tool's token floor: the text goes
through the content router (`content` compressor) with the call's arguments as the
query; each omitted stretch leaves a marker whose key `ctxzip_expand` resolves from the
originals store, byte for byte. ``isError`` results, images, audio, resources and
``structuredContent`` itself are never changed (so it stays valid against the tool's
``outputSchema``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctxzip.budget import Budget
from ctxzip.compressor import Compressor
from ctxzip.compressors.content.json_compact import compact
from ctxzip.middleware.originals import OriginalsStore
from ctxzip.middleware.tool_results import ToolResultPolicy
from ctxzip.registry import get_compressor
from ctxzip.tokens import get_tokenizer

EXPAND_TOOL = "ctxzip_expand"
EXPAND_DEFINITION: dict[str, Any] = {
    "name": EXPAND_TOOL,
    "description": (
        "Return the original text that a '[ctxzip: ... omitted; expand key K]' marker or a "
        '"ctxzip_omitted" note with "key": K left out of an earlier tool result.'
    ),
    "inputSchema": {
        "type": "object",
        "properties": {"key": {"type": "string", "description": "the 12-hex-digit key"}},
        "required": ["key"],
    },
}


@dataclass(frozen=True)
class McpSettings:
    """How tool results are shrunk. `floor`: lossy compression only for texts above this
    many tokens (`floors` per tool name); `rate`: the kept fraction when lossy."""

    lossy: bool = True
    floor: int = 2000
    floors: Mapping[str, int] = field(default_factory=dict)
    rate: float = 0.3
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dedupe: bool = True
    tokenizer: str = "gpt-4o"
    prose_method: str = "none"  # a text method for prose results; "none": passed through

    def policy(self) -> ToolResultPolicy:
        """The include/exclude rules (validated like the proxy's tool-result policy)."""
        return ToolResultPolicy(min_tokens=self.floor, rate=self.rate,
                                include=self.include, exclude=self.exclude)  # fmt: skip

    def floor_for(self, tool: str) -> int:
        return int(self.floors.get(tool, self.floor))


@dataclass
class Shrunk:
    """One result's numbers: tokens of its text blocks before and after each stage."""

    tokens_in: int = 0
    lossless_out: int = 0
    tokens_out: int = 0
    dropped: int = 0  # text blocks that only repeated structuredContent
    originals: dict[str, str] = field(default_factory=dict)  # marker key -> omitted text
    reason: str | None = None  # why the result passed through untouched


def _same_json(text: str, structured: Any) -> bool:
    """Whether `text` holds the same JSON value as `structured` (or as its ``result``, the
    wrapper servers put around a value that is not an object)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if value == structured:
        return True
    return (
        isinstance(structured, dict)
        and list(structured) == ["result"]
        and bool(value == structured["result"])
    )


def query_of(arguments: Mapping[str, Any] | None) -> str | None:
    """The call's arguments as the query that guides what lossy compression keeps."""
    if not arguments:
        return None
    return json.dumps(arguments, ensure_ascii=False)


class ResultShrinker:
    """Shrinks ``tools/call`` results; keeps what lossy compression omitted in `store`."""

    def __init__(self, settings: McpSettings, store: OriginalsStore | None = None) -> None:
        self.settings = settings
        self.policy = settings.policy()
        Budget(rate=settings.rate)  # validates
        self.store = store if store is not None else OriginalsStore()
        self.count = get_tokenizer(settings.tokenizer).count
        self._compressor: Compressor | None = None

    def compressor(self) -> Compressor:
        if self._compressor is None:
            self._compressor = get_compressor("content", tokenizer=self.settings.tokenizer,
                                              prose_method=self.settings.prose_method)  # fmt: skip
        return self._compressor

    def shrink(self, result: dict[str, Any], tool: str,
               arguments: Mapping[str, Any] | None) -> tuple[dict[str, Any], Shrunk]:  # fmt: skip
        """(the result to send on, what happened); the input dict is never modified."""
        stats = Shrunk()
        content = result.get("content")
        if result.get("isError") is True:
            stats.reason = "is_error"
        elif not isinstance(content, list):
            stats.reason = "no_content"
        elif not self.policy.allows(tool):
            stats.reason = "excluded"
        if stats.reason is not None:
            return result, stats
        assert isinstance(content, list)
        structured = result.get("structuredContent")
        blocks: list[Any] = []
        for block in content:
            text = block.get("text") if isinstance(block, dict) else None
            if not isinstance(text, str) or block.get("type") != "text":
                blocks.append(block)
                continue
            tokens = self.count(text)
            stats.tokens_in += tokens
            if self.settings.dedupe and structured is not None and _same_json(text, structured):
                stats.dropped += 1
                continue
            small = compact(text)
            if small is not None and len(small) < len(text):
                text, tokens = small, self.count(small)
            stats.lossless_out += tokens
            if self.settings.lossy and tokens > self.settings.floor_for(tool):
                text, tokens = self._lossy(text, tokens, query_of(arguments), stats)
            stats.tokens_out += tokens
            blocks.append({**block, "text": text})
        if stats.tokens_in == stats.tokens_out and not stats.dropped:
            stats.reason = "no_gain"
            return result, stats
        if stats.originals:
            self.store.put(stats.originals)
        return {**result, "content": blocks}, stats

    def _lossy(self, text: str, tokens: int, query: str | None,
               stats: Shrunk) -> tuple[str, int]:  # fmt: skip
        out = self.compressor().compress([text], query=query,
                                         budget=Budget(rate=self.settings.rate))  # fmt: skip
        info = out.extra["contexts"][0]
        new = out.texts[0]
        if info.get("omitted", 0) <= 0 or len(new) >= len(text):
            return text, tokens
        stats.originals.update(info.get("originals") or {})
        return new, self.count(new)

    def expand(self, key: str) -> str | None:
        """What a marker with `key` left out (None: unknown or expired)."""
        return self.store.get(key.strip())
