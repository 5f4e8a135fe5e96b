"""The savings ledger: one SQLite row per proxied request, and the running dollar totals.

What a row holds: time, route, protocol, model, compression method/status/reason, the
compressible tokens before and after compression (the reader's tokenizer), the
upstream's usage figures (see `ctxzip.proxy.usage`) and the estimated usage of the
uncompressed counterpart. Never request or response text, never headers or keys.

Nothing here may slow or fail a request: the hook on the request path only keeps a
few numbers and a reference to the parsed body; parsing usage, estimating the
counterfactual, pricing and writing happen on one background thread fed by a bounded
queue (when it is full, records are dropped and counted). The table is bounded: past
`max_rows`, the oldest rows go.

The counterfactual (what the request would have cost uncompressed, with the same cache
behaviour) -- see docs/savings.md:

- its prompt is the billed prompt plus the tokens compression removed;
- its cache reads are the larger of the real ones and what a simulated prefix cache over
  the *original* request bodies says would have hit (message-level prefixes, keyed
  hashes kept in memory only, the provider's lifetime and minimum size);
- its cache writes shrink by whatever it would have read in addition;
- its output is the real output.

So when compression rewrote history that the provider had cached in its original form,
the real request misses the cache, the counterfactual hits, and the row shows a loss.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import queue
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ctxzip.models import cache_dir
from ctxzip.proxy.compression import Outcome
from ctxzip.proxy.config import ProxyConfig
from ctxzip.proxy.pricing import PER_TOKENS, PriceTable, TokenSplit, cost, load_prices
from ctxzip.proxy.usage import Usage, UsageTap, usage_kind

log = logging.getLogger("ctxzip.proxy")

SCHEMA_VERSION = 1
MAX_MODEL_CHARS = 128
MIN_CACHED_TOKENS = 1024  # neither provider caches a shorter prefix
OPENAI_CACHE_BLOCK = 128  # OpenAI caches in 128-token steps past the minimum


def default_ledger_path() -> Path:
    """``$CTXZIP_CACHE_DIR/ledger.sqlite3`` (default ``~/.cache/ctxzip``)."""
    return cache_dir() / "ledger.sqlite3"


@dataclass
class Record:
    """One ledger row (token counts only; see the module docstring)."""

    ts: float
    route: str
    protocol: str
    model: str
    method: str
    compression: str  # applied | unchanged | disabled | skipped | none
    reason: str
    http_status: int
    result: str  # ok | client_disconnect | upstream_stream
    stream: int
    tokens_before: int  # compressible tokens, reader's tokenizer
    tokens_after: int
    has_usage: int  # 0: the upstream reported no usage (the money columns are 0)
    input_tokens: int  # the whole billed prompt (cache reads and writes included)
    cache_read_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    est_input_tokens: int  # the uncompressed counterpart, estimated
    est_cache_read_tokens: int
    est_cache_write_tokens: int

    @property
    def removed(self) -> int:
        """Tokens compression took out (reader's tokenizer)."""
        return max(0, self.tokens_before - self.tokens_after)

    def paid_split(self) -> TokenSplit:
        """The billed tokens, split the way the provider prices them."""
        return TokenSplit(
            uncached=max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens),
            cache_read=self.cache_read_tokens,
            cache_write=self.cache_write_tokens,
            output=self.output_tokens,
            cache_write_1h=self.cache_write_1h_tokens,
        )

    def counterfactual_split(self) -> TokenSplit:
        """The estimated tokens of the uncompressed request, split the same way."""
        read, write = self.est_cache_read_tokens, self.est_cache_write_tokens
        return TokenSplit(
            uncached=max(0, self.est_input_tokens - read - write),
            cache_read=read,
            cache_write=write,
            output=self.output_tokens,
            cache_write_1h=min(self.cache_write_1h_tokens, write),
        )

    def dollars(self, prices: PriceTable) -> tuple[float, float] | None:
        """(paid, uncompressed estimate) in dollars; None when the model has no price."""
        price = prices.lookup(self.model)
        if price is None or not self.has_usage:
            return None
        return cost(price, self.paid_split()), cost(price, self.counterfactual_split())

    def list_price_saving(self, prices: PriceTable) -> float:
        """The naive figure: removed tokens at the uncached input price (no cache effects),
        shown next to the estimate so the difference is visible."""
        price = prices.lookup(self.model)
        return self.removed * price.input / PER_TOKENS if price and self.has_usage else 0.0


COLUMNS = tuple(f.name for f in fields(Record))
_TYPES = {"ts": "REAL", "route": "TEXT", "protocol": "TEXT", "model": "TEXT", "method": "TEXT",
          "compression": "TEXT", "reason": "TEXT", "result": "TEXT"}  # fmt: skip


class Ledger:
    """The SQLite table of `Record`s, bounded to `max_rows` (oldest rows dropped)."""

    def __init__(self, path: str | Path, max_rows: int = 1_000_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # usage data is private: owner-only from the start
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        # Two openers at once (the proxy's writer and `ctxzip savings`) can meet while one of
        # them switches to WAL; SQLite answers that with "locked" at once, without waiting
        # out the busy timeout, so the set-up is tried again for a while.
        deadline = time.monotonic() + 10
        while True:
            try:
                self._set_up()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    self.db.close()
                    raise
                time.sleep(0.05)

    def _set_up(self) -> None:
        # switching to WAL needs the file to itself: only the first opener does it
        # (a reader opening the ledger while the proxy writes would otherwise get "locked")
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.db.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{c} {_TYPES.get(c, 'INTEGER')} NOT NULL" for c in COLUMNS)
        with self.db:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS requests "
                            f"(id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})")  # fmt: skip
            self.db.execute("CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts)")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def add(self, records: Iterable[Record]) -> None:
        """Insert `records` and drop the oldest rows past `max_rows`, in one transaction."""
        marks = ", ".join("?" * len(COLUMNS))
        with self.db:
            self.db.executemany(
                f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({marks})",
                [astuple(r) for r in records],
            )
            self.db.execute(
                "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?",
                (self.max_rows,),
            )

    def records(self, since: float | None = None) -> list[Record]:
        """Rows at or after `since` (a Unix time), oldest first."""
        query = f"SELECT {', '.join(COLUMNS)} FROM requests"
        args: tuple[Any, ...] = ()
        if since is not None:
            query, args = query + " WHERE ts >= ?", (since,)
        return [Record(*row) for row in self.db.execute(query + " ORDER BY ts, id", args)]

    def close(self) -> None:
        self.db.close()


# ---- the counterfactual's cache ----------------------------------------------------------


def prefix_marks(body: dict[str, Any], kind: str) -> tuple[list[tuple[bytes, int]], int]:
    """Fingerprints of the body's message-level prefixes with their lengths in characters,
    and how many of them the provider would cache (all for OpenAI's automatic caching;
    for Anthropic, those up to the last ``cache_control`` breakpoint, or all with
    top-level automatic caching)."""
    if kind == "responses":
        head = [body.get("instructions"), body.get("tools")]
        items = body.get("input")
        items = items if isinstance(items, list) else [items]
    elif kind == "gemini":
        head = [body.get("tools"), body.get("systemInstruction")]
        items = body.get("contents") or []
    else:
        head = [body.get("tools"), body.get("system")]
        items = body.get("messages") or []
    blocks = [json.dumps([head, body.get("model")], sort_keys=True, default=str)]
    blocks += [json.dumps(m, sort_keys=True, default=str) for m in items]
    digest = hashlib.blake2b(key=_KEY, digest_size=16)
    marks, chars = [], 0
    for block in blocks:
        digest.update(block.encode("utf-8", "replace"))
        chars += len(block)
        marks.append((digest.copy().digest(), chars))
    if kind != "anthropic" or "cache_control" in body:
        return marks, len(marks)
    marked = [i for i, b in enumerate(blocks) if '"cache_control"' in b]
    return marks, (marked[-1] + 1 if marked else 0)


_KEY = secrets.token_bytes(32)  # prefixes are fingerprinted with a key that dies with us


class CacheModel:
    """A provider's prompt cache, simulated over original (uncompressed) request bodies.

    In memory only, bounded; entries live `ttl_s` and are refreshed by a hit, as the
    providers' are.
    """

    def __init__(self, ttl_s: float = 300.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def observe(self, marks: list[tuple[bytes, int]], cacheable: int, tokens: int,
                kind: str, now: float) -> int:  # fmt: skip
        """Tokens of this prompt (`tokens` long) the cache would have served; then remember
        its first `cacheable` prefixes (those the provider would cache)."""
        total = marks[-1][1] if marks else 0
        hit = 0
        for mark, chars in reversed(marks[:cacheable]):
            expires = self._seen.get(mark)
            if expires is not None and expires >= now:
                hit = int(tokens * chars / total) if total else 0
                break
        if hit < MIN_CACHED_TOKENS:
            hit = 0
        elif kind != "anthropic":
            hit -= hit % OPENAI_CACHE_BLOCK
        if cacheable and tokens * marks[cacheable - 1][1] >= MIN_CACHED_TOKENS * total:
            for mark, _ in marks[:cacheable]:
                self._seen[mark] = now + self.ttl_s
                self._seen.move_to_end(mark)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
        return hit


# ---- metrics -------------------------------------------------------------------------------


class SavingsMetrics:
    """Running totals on the proxy's registry, labelled by price-table model and method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "method"]
        self.tokens_saved = Counter("ctxzip_proxy_savings_tokens", "Prompt tokens compression "
                                    "removed (reader's tokenizer).", labels, registry=registry)  # fmt: skip
        self.paid = Counter("ctxzip_proxy_dollars_paid", "Dollars billed, at the price table.",
                            labels, registry=registry)  # fmt: skip
        self.uncompressed = Counter(
            "ctxzip_proxy_dollars_uncompressed", "Estimated dollars the same requests would "
            "have cost uncompressed, cache effects included.", labels, registry=registry,
        )  # fmt: skip
        self.saved = Gauge("ctxzip_proxy_dollars_saved", "Net dollars saved (uncompressed "
                           "estimate minus paid; negative is a loss).", labels, registry=registry)  # fmt: skip
        self.dropped = Counter("ctxzip_proxy_ledger_dropped", "Ledger records dropped (queue "
                               "full or write failed).", registry=registry)  # fmt: skip

    def add(self, record: Record, prices: PriceTable) -> None:
        """Count one record in the running totals."""
        price = prices.lookup(record.model)
        labels = {"model": price.match if price else "unpriced", "method": record.method or "none"}
        self.tokens_saved.labels(**labels).inc(record.removed)
        money = record.dollars(prices)
        if money is not None:
            self.paid.labels(**labels).inc(money[0])
            self.uncompressed.labels(**labels).inc(money[1])
            self.saved.labels(**labels).inc(money[1] - money[0])


# ---- the hook on the request path --------------------------------------------------------


@dataclass
class _Draft:
    route: str
    protocol: str
    model: str
    method: str
    compression: str
    reason: str
    tokens_before: int
    tokens_after: int
    stream: bool
    original: dict[str, Any] | None  # the body as the client sent it (kept in memory only)


_Begun = tuple[str, str, dict[str, Any], Outcome]
_DRAFT: contextvars.ContextVar[_Begun | None] = contextvars.ContextVar("ctxzip_ledger_draft",
                                                                       default=None)  # fmt: skip
_STOP = object()


class Tap:
    """One response on its way to the client: feeds a `UsageTap`, records at the end."""

    def __init__(self, recorder: Recorder, draft: _Draft, status: int, usage: UsageTap) -> None:
        self.recorder = recorder
        self.draft = draft
        self.status = status
        self.usage = usage
        self._done = False

    async def wrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks`, unchanged, each shown to the usage tap after it is handed on."""
        async for chunk in chunks:
            yield chunk
            self.usage.feed(chunk)

    def finish(self, result: str) -> None:
        """Queue the record (once); `result` is the relay's outcome."""
        if not self._done:
            self._done = True
            self.recorder.submit((self.draft, self.status, result, self.usage, time.time()))


class Recorder:
    """What the proxy calls: `begin` after compression, `tap` around the relayed response.

    Disabled (`enabled=False`) it records nothing and `tap` returns None.
    """

    def __init__(self, path: str | Path | None, *, enabled: bool, max_rows: int,
                 prices: PriceTable, registry: CollectorRegistry, cache_ttl_s: float = 300.0,
                 queue_size: int = 10_000) -> None:  # fmt: skip
        self.enabled = enabled
        self.path = Path(path) if path else default_ledger_path()
        self.max_rows = max_rows
        self.prices = prices
        self.metrics = SavingsMetrics(registry)
        self.cache = CacheModel(cache_ttl_s)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_config(cls, config: ProxyConfig, registry: CollectorRegistry) -> Recorder:
        """The recorder for a `ProxyConfig` (its [ledger] and [pricing] sections)."""
        c = config.ledger
        return cls(c.path or None, enabled=c.enabled, max_rows=c.max_rows,
                   prices=load_prices(config.pricing.path or None), registry=registry,
                   cache_ttl_s=c.cache_ttl_s)  # fmt: skip

    def begin(self, route: str, protocol: str, data: dict[str, Any], outcome: Outcome) -> None:
        """Note this request's compression outcome for the response about to be relayed."""
        if not self.enabled:
            return
        _DRAFT.set((route, protocol, data, outcome))  # read at `tap`, after the body is encoded

    def tap(self, route: str, protocol: str, path: str, status: int,
            headers: Mapping[str, str]) -> Tap | None:  # fmt: skip
        """A tap for the response (its `headers`) to the request `begin` saw, or to a
        pass-through one."""
        if not self.enabled:
            return None
        begun = _DRAFT.get()
        _DRAFT.set(None)
        if begun is None:
            draft = _Draft(route, protocol, "", "", "none", "", 0, 0, False, None)
        else:
            route, protocol, data, outcome = begun
            model = data.get("model")
            draft = _Draft(
                route=route, protocol=protocol,
                model=model[:MAX_MODEL_CHARS] if isinstance(model, str) else "",
                method=str(outcome.method), compression=str(outcome.status),
                reason=str(outcome.reason or ""), tokens_before=int(outcome.tokens_in),
                tokens_after=int(outcome.tokens_out), stream=bool(data.get("stream")),
                original=data,
            )  # fmt: skip
        is_sse = "text/event-stream" in headers.get("content-type", "")
        draft.stream = draft.stream or is_sse
        usage = UsageTap(usage_kind(path, protocol), is_sse, headers.get("content-encoding", ""))
        return Tap(self, draft, status, usage)

    def submit(self, item: Any) -> None:
        """Hand a finished response to the writer thread (dropped, and counted, if full)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="ctxzip-ledger",
                                                    daemon=True)  # fmt: skip
                    self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.metrics.dropped.inc()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    # ---- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        ledger: Ledger | None = None
        try:
            ledger = Ledger(self.path, self.max_rows)
        except (OSError, sqlite3.Error) as exc:
            log.warning("savings ledger disabled: cannot open %s (%s)", self.path, exc)
        while True:
            items = [self._queue.get()]
            while len(items) < 256:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in items)
            records = []
            for item in items:
                if item is _STOP:
                    continue
                try:
                    record = self._record(*item)
                    if record is not None:
                        records.append(record)
                except Exception as exc:  # never let one odd response stop the writer
                    self._warn("record", exc)
            try:
                if ledger is not None and records:
                    ledger.add(records)
                for record in records:
                    self.metrics.add(record, self.prices)
            except Exception as exc:
                self._warn("write", exc)
            for _ in items:
                self._queue.task_done()
            if stop:
                if ledger is not None:
                    ledger.close()
                return

    def _warn(self, what: str, exc: Exception) -> None:
        self.metrics.dropped.inc()
        if not self._warned:
            self._warned = True
            log.warning("savings ledger: %s failed (%s)", what, type(exc).__name__)

    def _record(self, draft: _Draft, status: int, result: str, tap: UsageTap,
                ts: float) -> Record | None:  # fmt: skip
        usage = tap.usage() if 200 <= status < 300 else None
        if usage is None and draft.compression == "none":
            return None  # a pass-through request with no usage (model lists, files...)
        found = usage is not None
        usage = usage or Usage()
        model = draft.model or (usage.model or "")[:MAX_MODEL_CHARS]
        est_in, est_read, est_write = usage.input, usage.cache_read, usage.cache_write
        if found and draft.original is not None:
            # every original body feeds the simulated cache; only a compressed request's
            # counterfactual differs from what was billed
            applied = draft.compression == "applied"
            if applied:
                est_in += max(0, draft.tokens_before - draft.tokens_after)
            marks, cacheable = prefix_marks(draft.original, tap.kind)
            simulated = self.cache.observe(marks, cacheable, est_in, tap.kind, ts)
            if applied:
                est_read = min(est_in, max(usage.cache_read, simulated))
                est_write = max(0, usage.cache_write - (est_read - usage.cache_read))
                est_write = min(est_write, est_in - est_read)
        return Record(
            ts=ts, route=draft.route, protocol=draft.protocol, model=model, method=draft.method,
            compression=draft.compression, reason=draft.reason, http_status=status,
            result=result, stream=int(draft.stream), tokens_before=draft.tokens_before,
            tokens_after=draft.tokens_after, has_usage=int(found), input_tokens=usage.input,
            cache_read_tokens=usage.cache_read, cache_write_tokens=usage.cache_write,
            cache_write_1h_tokens=usage.cache_write_1h, output_tokens=usage.output,
            est_input_tokens=est_in, est_cache_read_tokens=est_read,
            est_cache_write_tokens=est_write,
        )  # fmt: skip
