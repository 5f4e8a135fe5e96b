"""The upstream's own usage figures, read from the bytes the proxy relays.

`UsageTap` sits on the relayed stream: it sees each chunk after it was handed on and
keeps only what can carry usage (a JSON body up to a cap; of server-sent events, only
those that mention ``"usage"``, each under a cap), so the relay is never delayed and
memory stays bounded. Parsing happens later, off the event loop (`UsageTap.usage`).
Compressed responses (the proxy relays bytes as the upstream sent them, and clients ask
for gzip) are decoded on the way in: gzip and deflate always, zstd when `zstandard` is
installed; other encodings leave the row without usage.

The figures are normalised to one shape, `Usage`, whose `input` is the whole prompt:

- OpenAI chat: ``prompt_tokens`` (cached included), ``prompt_tokens_details.cached_tokens``,
  ``completion_tokens``; streamed in the last chunk when ``stream_options.include_usage``.
- Anthropic messages: ``input_tokens`` (uncached only) + ``cache_read_input_tokens`` +
  ``cache_creation_input_tokens`` (``cache_creation.ephemeral_1h_input_tokens`` of them at
  the 1-hour rate), ``output_tokens``; streamed in ``message_start``, then updated by
  ``message_delta``.
- OpenAI Responses: ``input_tokens`` (cached included), ``input_tokens_details.cached_tokens``,
  ``output_tokens``; streamed in the ``response.completed`` event.
- Gemini: ``usageMetadata`` with ``promptTokenCount`` (cached content included),
  ``cachedContentTokenCount``, ``candidatesTokenCount`` + ``thoughtsTokenCount`` (both
  billed as output); every streamed chunk carries the running figures.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

UsageKind = Literal["openai", "anthropic", "responses", "gemini"]

MAX_JSON_BYTES = 4 * 1024 * 1024  # a whole JSON response kept for parsing, at most
TAIL_BYTES = 256 * 1024  # past that, only its tail (where usage sits) is kept
MAX_EVENT_BYTES = 2 * 1024 * 1024  # one server-sent event kept, at most
KEPT_EVENTS = 4  # the last events that mention usage (plus the first)

_NULL_USAGE = re.compile(rb'"(?:usage|usageMetadata)"\s*:\s*null')
_USAGE_KEY = re.compile(r'"(?:usage|usageMetadata)"\s*:\s*\{')
_MENTIONS = (b'"usage"', b'"usageMetadata"')
_DELIMS = (b"\n\n", b"\r\n\r\n")


@dataclass
class Usage:
    """One response's billed tokens: `input` is the whole prompt, cache reads and writes
    included."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    output: int = 0
    model: str | None = None  # the model the upstream says answered


def usage_kind(path: str, protocol: str) -> UsageKind:
    """Which usage shape a response to `path` carries."""
    if protocol == "gemini" or ":generateContent" in path or ":streamGenerateContent" in path:
        return "gemini"
    if path.split("?", 1)[0].rstrip("/").endswith("/responses"):
        return "responses"
    return "anthropic" if protocol == "anthropic" else "openai"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _merge_usage(usage: Usage, raw: dict[str, Any], kind: UsageKind) -> None:
    """Fold one usage object into `usage` (later events override what they carry)."""
    if kind == "gemini":
        if "promptTokenCount" in raw:
            usage.input = _int(raw["promptTokenCount"])
        if "cachedContentTokenCount" in raw:
            usage.cache_read = _int(raw["cachedContentTokenCount"])
        if "candidatesTokenCount" in raw or "thoughtsTokenCount" in raw:
            usage.output = _int(raw.get("candidatesTokenCount")) + _int(
                raw.get("thoughtsTokenCount"))  # fmt: skip
        return
    if kind == "anthropic":
        fields = (("input_tokens", "input"), ("cache_read_input_tokens", "cache_read"),
                  ("cache_creation_input_tokens", "cache_write"), ("output_tokens", "output"))  # fmt: skip
        for key, attr in fields:
            if key in raw:
                setattr(usage, attr, _int(raw[key]))
        creation = raw.get("cache_creation")
        if isinstance(creation, dict) and "ephemeral_1h_input_tokens" in creation:
            usage.cache_write_1h = _int(creation["ephemeral_1h_input_tokens"])
        return
    prompt, completion, details = (
        ("input_tokens", "output_tokens", "input_tokens_details")
        if kind == "responses"
        else ("prompt_tokens", "completion_tokens", "prompt_tokens_details")
    )
    if prompt in raw:
        usage.input = _int(raw[prompt])
    if completion in raw:
        usage.output = _int(raw[completion])
    cached = raw.get(details)
    if isinstance(cached, dict) and "cached_tokens" in cached:
        usage.cache_read = _int(cached["cached_tokens"])


def _finish(usage: Usage, kind: UsageKind) -> Usage:
    if kind == "anthropic":  # Anthropic's input_tokens leaves the cache out
        usage.input += usage.cache_read + usage.cache_write
    usage.cache_read = min(usage.cache_read, usage.input)
    usage.cache_write_1h = min(usage.cache_write_1h, usage.cache_write)
    return usage


def usage_from_objects(objects: list[Any], kind: UsageKind) -> Usage | None:
    """Usage from parsed response objects or stream events, in order (None: none found)."""
    usage, found = Usage(), False
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        holder = obj
        if kind == "anthropic" and isinstance(obj.get("message"), dict):
            holder = obj["message"]  # message_start
        elif kind == "responses" and isinstance(obj.get("response"), dict):
            holder = obj["response"]  # response.completed
        raw = holder.get("usageMetadata" if kind == "gemini" else "usage")
        model = holder.get("modelVersion" if kind == "gemini" else "model")
        if isinstance(model, str) and model:
            usage.model = model
        if isinstance(raw, dict):
            _merge_usage(usage, raw, kind)
            found = True
    return _finish(usage, kind) if found else None


def _sse_data(event: bytes) -> Any:
    lines = [
        line[5:].lstrip()
        for line in event.decode("utf-8", "replace").splitlines()
        if line.startswith("data:")
    ]
    data = "\n".join(lines)
    if not data or data == "[DONE]":
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _tail_usage(text: str) -> dict[str, Any] | None:
    """The last ``"usage": {...}`` object in a truncated JSON body."""
    matches = list(_USAGE_KEY.finditer(text))
    decoder = json.JSONDecoder()
    for match in reversed(matches):
        try:
            value, _ = decoder.raw_decode(text, match.end() - 1)
        except ValueError:
            continue
        if isinstance(value, dict):
            return {"usage": value, "usageMetadata": value}
    return None


Decoder = Callable[[bytes], Iterable[bytes]]  # pieces of at most MAX_EVENT_BYTES (gzip)


def _identity(chunk: bytes) -> list[bytes]:
    return [chunk]


def decoder(encoding: str) -> Decoder | None:
    """A chunk decoder for a Content-Encoding, or None when it cannot be read."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return _identity
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(47)  # gzip or zlib framing, detected from the header

        def gunzip(chunk: bytes) -> Iterator[bytes]:
            while chunk:  # one bounded piece at a time, however far the chunk expands
                yield inflate.decompress(chunk, MAX_EVENT_BYTES)
                chunk = inflate.unconsumed_tail

        return gunzip
    if encoding == "zstd":
        try:
            import zstandard
        except ImportError:
            return None
        unzstd = zstandard.ZstdDecompressor().decompressobj()
        return lambda chunk: [unzstd.decompress(chunk)]
    return None


class UsageTap:
    """Watches relayed chunks and keeps, within fixed bounds, what carries usage.

    `feed` runs on the event loop for every chunk and never raises; `usage` parses what
    was kept and is meant for a worker thread.
    """

    def __init__(self, kind: UsageKind, is_sse: bool, encoding: str = "") -> None:
        self.kind = kind
        self.is_sse = is_sse
        self._decode = decoder(encoding)
        self._buf = bytearray()
        self._scanned = 0
        self._skipping = False  # inside an over-long event: drop until its end
        self._truncated = False
        self._first: bytes | None = None
        self._last: deque[bytes] = deque(maxlen=KEPT_EVENTS)

    def feed(self, chunk: bytes) -> None:
        """Look at one relayed chunk (cheap: byte searches, no parsing)."""
        if self._decode is None:
            return  # an encoding we cannot read
        try:
            for piece in self._decode(chunk):
                if self.is_sse:
                    self._feed_sse(piece)
                else:
                    self._feed_json(piece)
        except Exception:  # a tap must never break the relay
            self._buf.clear()
            self._decode = None

    def _feed_json(self, chunk: bytes) -> None:
        self._buf += chunk
        if len(self._buf) > MAX_JSON_BYTES:
            del self._buf[:-TAIL_BYTES]
            self._truncated = True

    def _feed_sse(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        while True:
            start = max(0, self._scanned - 3)
            ends = [(i, len(d)) for d in _DELIMS if (i := buf.find(d, start)) >= 0]
            if not ends:
                self._scanned = len(buf)
                if len(buf) > MAX_EVENT_BYTES:
                    buf.clear()
                    self._scanned = 0
                    self._skipping = True
                return
            i, size = min(ends)
            event = bytes(buf[:i])
            del buf[: i + size]
            self._scanned = 0
            if self._skipping:
                self._skipping = False
                continue
            if any(m in event for m in _MENTIONS) and not _NULL_USAGE.search(event):
                if self._first is None:
                    self._first = event
                else:
                    self._last.append(event)

    def usage(self) -> Usage | None:
        """The usage figures seen, or None (no usage in the response, or unreadable)."""
        if self.is_sse:
            events = [e for e in (self._first, *self._last) if e is not None]
            if self._buf and any(m in self._buf for m in _MENTIONS) and not self._skipping:
                events.append(bytes(self._buf))  # a last event without its blank line
            return usage_from_objects([_sse_data(e) for e in events], self.kind)
        text = self._buf.decode("utf-8", "replace")
        if not self._truncated:
            try:
                return usage_from_objects([json.loads(text)], self.kind)
            except ValueError:
                pass
        found = _tail_usage(text)
        return usage_from_objects([found], self.kind) if found else None
