"""One client for OpenAI-compatible `/chat/completions` endpoints, with retries.

The abstractive method's remote backend and the eval harness's remote reader both
talk to hosted models (or to the ctxzip proxy) through it. The API key is sent only
as a bearer token to `base_url` and never appears in errors or logs.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ctxzip.errors import CtxzipError

RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass
class ChatReply:
    """The assistant text of one completion, with the usage and wall time the server reported."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class ChatClient:
    """A thread-safe `httpx.Client` bound to one endpoint; `complete(body)` retries 429 and 5xx."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_connections: int = 8,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        self.retries = retries
        self.backoff = backoff
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChatClient(base_url={self.base_url!r})"

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                headers = {"Content-Type": "application/json"}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._client = httpx.Client(
                    base_url=self.base_url,
                    headers=headers,
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=self.max_connections),
                    transport=httpx.HTTPTransport(retries=1),
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def complete(self, body: dict[str, Any]) -> ChatReply:
        """POST one chat completion; retries connection errors, 429 and 5xx with backoff."""
        response: httpx.Response | None = None
        seconds = 0.0
        for attempt in range(self.retries + 1):
            start = time.perf_counter()
            try:
                response = self._http().post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                if attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise CtxzipError(
                    f"chat endpoint {self.base_url} unreachable: the request failed "
                    f"({type(exc).__name__})"
                ) from None
            seconds = time.perf_counter() - start
            if response.status_code in RETRYABLE and attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
                continue
            break
        assert response is not None
        if response.status_code != 200:
            detail = response.text[:200].replace("\n", " ")
            raise CtxzipError(
                f"chat endpoint {self.base_url} answered HTTP {response.status_code}: {detail}"
            )
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            return ChatReply(
                str(content or ""),
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
                seconds,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise CtxzipError(f"chat endpoint {self.base_url} sent no chat completion") from None
