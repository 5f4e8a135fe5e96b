"""Request handlers: chat (OpenAI and Anthropic), Responses, Gemini, /v1/compress,
pass-through, originals, health, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ctxzip.errors import CtxzipError
from ctxzip.middleware.agent_items import AgentProtocol
from ctxzip.proxy import expand, gemini
from ctxzip.proxy.admission import ClientGone, unless_disconnected
from ctxzip.proxy.compression import CompressionFailed, CompressionService, Outcome
from ctxzip.proxy.config import ProxyConfig
from ctxzip.proxy.errors import Protocol, ProxyError, error_body, protocol_for_path
from ctxzip.proxy.images import ImageBudgetOutcome, aapply_images
from ctxzip.proxy.ledger import Recorder
from ctxzip.proxy.local_upstream import LocalModel, check_params
from ctxzip.proxy.metrics import Metrics
from ctxzip.proxy.soft_tokens import SoftTokens
from ctxzip.proxy.state import open_state
from ctxzip.proxy.streaming import Relay
from ctxzip.proxy.tool_results import ToolOutcome, ToolResultService
from ctxzip.proxy.upstream import Target, Upstreams, join_url, response_headers, safe_subpath

log = logging.getLogger("ctxzip.proxy")
# routes whose replies must arrive whole: a cut stream ends with an error event, a cut or
# malformed body becomes a 502 (proxy.streaming.Relay)
COMPLETE_ROUTES = ("chat", "messages", "responses", "gemini")
Reply = Response | Relay  # what a route answers: a plain response or a relayed stream
_TRUE = {"1", "true", "yes", "on"}
_FAIL_CLOSED_STATUS = {"compression_timeout": 504, "overloaded": 503, "invalid_text": 400}
_FALSE = {"0", "false", "no", "off", ""}


class State:
    """Everything one app owns; built in the app factory, closed on shutdown."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        c = config.compression
        policy = c.policy()  # one message policy for text and soft-token compression
        self.metrics = Metrics()
        self.service = CompressionService(
            method=c.method, options=c.options, tokenizer=c.tokenizer, policy=policy,
            timeout_s=c.timeout_s, cache_size=c.cache_size, max_batch=c.max_batch,
            cache=open_state(config.state, "compression", max_items=c.cache_size,
                             max_bytes=c.cache_bytes),
            latency_budget_s=c.latency_budget_s,
        )  # fmt: skip
        self.images = config.images
        self.tools = ToolResultService(config.tool_results, tokenizer=c.tokenizer,
                                       text_method=c.method, text_options=c.options)  # fmt: skip
        self.upstreams = Upstreams(config)
        self.local = LocalModel(config.local.model, config.local.device, config.local.max_tokens)
        self.soft = SoftTokens(self.local, policy, method=c.method, options=c.options,
                               timeout_s=c.timeout_s)  # fmt: skip
        self.ready = False
        self.ready_error: str | None = None
        self.recorder = Recorder.from_config(config, self.metrics.registry)  # savings ledger

    @property
    def needs_local(self) -> bool:
        names = (self.config.routes.chat, self.config.routes.messages)
        return any(n not in self.config.upstreams for n in names)

    async def warm(self) -> None:
        try:
            if self.config.compression.enabled:
                soft = self.needs_local and self.soft.handles(self.config.compression.method)
                await asyncio.to_thread(self.soft.warm if soft else self.service.warm)
            if self.needs_local:
                await asyncio.to_thread(self.local.load)
            self.ready = True
        except Exception as exc:
            self.ready_error = f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.ready_error)

    async def close(self) -> None:
        await self.service.close()
        await self.upstreams.close()
        await asyncio.to_thread(self.recorder.close)
        self.tools.close()


def error_response(protocol: Protocol, error: ProxyError) -> Response:
    body = error_body(protocol, error.status, error.message, error.code, error.param)
    response = Response(body, status_code=error.status, media_type="application/json")
    if error.status in (408, 413):  # the rest of the body is never read: close the link
        response.headers["connection"] = "close"
    return response


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, counted as it arrives (413 as soon as it passes `limit`)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProxyError(413, f"request body is larger than {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    if not raw:
        raise ProxyError(400, "the request body is empty; send a JSON object", "invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProxyError(
            400, f"the request body is not valid UTF-8 (byte {exc.start})", "invalid_encoding"
        ) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProxyError(400, "the JSON body is nested too deeply", "invalid_json") from None
    except ValueError as exc:
        raise ProxyError(
            400, f"the request body is not valid JSON: {exc}", "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise ProxyError(400, "the request body must be a JSON object", "invalid_json")
    if not _depth_ok(data, max_depth):
        raise ProxyError(400, f"the JSON body is nested deeper than {max_depth}", "invalid_json")
    return data


def _bad(message: str, param: str) -> ProxyError:
    return ProxyError(400, message, "invalid_request", param)


def validate_chat(data: dict[str, Any], protocol: Protocol) -> None:
    """Top-level shape checks; the upstream validates the rest in its own words."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a non-empty string", "model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is required and must be a non-empty array", "messages")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream")
    roles = ("user", "assistant") if protocol == "anthropic" else (
        "system", "developer", "user", "assistant", "tool", "function")  # fmt: skip
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object", where)
        if message.get("role") not in roles:
            raise _bad(f"{where}.role must be one of {', '.join(roles)}", f"{where}.role")
        content = message.get("content")
        if not (content is None or isinstance(content, (str, list))):
            raise _bad(f"{where}.content must be a string or an array", f"{where}.content")
        if protocol == "anthropic" and content is None:
            raise _bad(f"{where}.content is required", f"{where}.content")
    if protocol == "anthropic":
        max_tokens = data.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _bad("'max_tokens' is required and must be a positive integer", "max_tokens")
        system = data.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise _bad("'system' must be a string or an array", "system")


def validate_responses(data: dict[str, Any]) -> None:
    """Top-level shape checks of a Responses request (the upstream checks the rest)."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a non-empty string", "model")
    value = data.get("input")
    if value is not None and not isinstance(value, (str, list)):
        raise _bad("'input' must be a string or an array", "input")
    for i, item in enumerate(value if isinstance(value, list) else []):
        if not isinstance(item, dict):
            raise _bad(f"input[{i}] must be an object", f"input[{i}]")
    if "stream" in data and not isinstance(data["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream")
    if data.get("instructions") is not None and not isinstance(data["instructions"], str):
        raise _bad("'instructions' must be a string", "instructions")


def parse_overrides(request: Request, config: ProxyConfig) -> tuple[bool, float | None, str | None]:
    """(disable, rate, method) from X-Ctxzip-* headers, refused when not allowed."""
    allow = set(config.overrides.allow)
    headers = request.headers
    disable = False
    rate = None
    method = None
    raw = headers.get("x-ctxzip-disable")
    if raw is not None:
        if "disable" not in allow:
            raise ProxyError(403, "X-Ctxzip-Disable is not allowed here", "override_not_allowed")
        if raw.strip().lower() not in _TRUE | _FALSE:
            raise _bad("X-Ctxzip-Disable must be true or false", "X-Ctxzip-Disable")
        disable = raw.strip().lower() in _TRUE
    raw = headers.get("x-ctxzip-rate")
    if raw is not None:
        if "rate" not in allow:
            raise ProxyError(403, "X-Ctxzip-Rate is not allowed here", "override_not_allowed")
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not 0.0 < rate <= 1.0:
            raise _bad("X-Ctxzip-Rate must be a number in (0, 1]", "X-Ctxzip-Rate")
    raw = headers.get("x-ctxzip-method")
    if raw is not None:
        allowed = {config.compression.method, *config.overrides.methods}
        if "method" not in allow or raw not in allowed:
            raise ProxyError(
                403, f"X-Ctxzip-Method {raw!r} is not allowed here", "override_not_allowed"
            )
        method = raw
    return disable, rate, method


class Handlers:
    def __init__(self, state: State) -> None:
        self.state = state
        self.config = state.config
        self.metrics = state.metrics

    # ---- compression -------------------------------------------------------------------

    async def _compress(self, data: dict[str, Any], protocol: AgentProtocol, route: str,
                        overrides: tuple[bool, float | None, str | None],
                        size: int = 0, local: bool = False,
                        request: Request | None = None) -> Outcome:  # fmt: skip
        """Compress per the config and headers; `local`: the embedded model will answer, so
        soft-token methods (xrag) may run (a remote upstream takes text only). Every
        outcome that leaves the body as it was is counted by its reason."""
        outcome = await self._compress_once(data, protocol, overrides, size, local, request)
        if outcome.status != "applied":
            self.metrics.uncompressed.labels(reason=outcome.reason or outcome.status).inc()
        if outcome.failure is None and outcome.status != "disabled":
            self.metrics.tokens(route, outcome.tokens_in, outcome.tokens_out)
        return outcome

    async def _compress_once(self, data: dict[str, Any], protocol: AgentProtocol,
                             overrides: tuple[bool, float | None, str | None], size: int,
                             local: bool, request: Request | None) -> Outcome:  # fmt: skip
        disable, rate, method = overrides
        c = self.config.compression
        if not c.enabled or disable:
            return Outcome(None, "disabled", method or c.method)
        soft = local and self.state.soft.handles(method or c.method)
        service = self.state.soft if soft else self.state.service
        try:
            work = service.compress(
                data, protocol, method=method, rate=rate, large=size > 256 * 1024
            )
            if request is None:
                outcome = await work
            else:  # a client that leaves takes its compression work with it
                outcome = await unless_disconnected(request.receive, work)
        except CompressionFailed as exc:
            self.metrics.fail(exc.kind)
            if exc.kind == "overloaded":
                log.debug("compression skipped: %s", exc)
            else:
                log.warning("compression failed (%s): %s", exc.kind, exc)
            if c.on_error == "fail_closed":
                status = _FAIL_CLOSED_STATUS.get(exc.kind, 500)
                raise ProxyError(status, f"compression failed: {exc}", exc.kind) from None
            return Outcome(None, "skipped", method or c.method, reason=exc.kind, failure=exc.kind)
        self.metrics.compression_seconds.labels(method=outcome.method).observe(outcome.seconds)
        return outcome

    async def _tool_results(self, data: dict[str, Any], protocol: AgentProtocol,
                            overrides: tuple[bool, float | None, str | None]) -> ToolOutcome:  # fmt: skip
        """Compress tool results per the tool-result policy (fail-open), with metrics."""
        disabled = overrides[0] or not self.config.compression.enabled
        outcome = await self.state.tools.apply(data, protocol, disabled)
        self.metrics.tool_results(protocol, outcome.by_type, outcome.skipped)
        return outcome

    async def _fit_images(self, data: dict[str, Any], protocol: Protocol,
                          route: str) -> ImageBudgetOutcome | None:  # fmt: skip
        """Shrink images to the configured per-request image-token budget (fail-open)."""
        if protocol == "gemini":  # Gemini's inlineData parts are never touched
            return None
        try:
            out = await aapply_images(self.state.images, data, protocol)
        except (CtxzipError, OSError, ValueError) as exc:
            self.metrics.fail("image_budget")
            log.warning("image budget failed: %s", exc)
            return None
        if out is not None and out.tokens_in:
            self.metrics.tokens(f"{route}_images", out.tokens_in, out.tokens_out)
        return out

    @staticmethod
    def image_headers(out: ImageBudgetOutcome | None) -> list[tuple[bytes, bytes]]:
        if out is None or not out.tokens_in:
            return []
        return [
            (b"x-ctxzip-image-tokens-in", str(out.tokens_in).encode()),
            (b"x-ctxzip-image-tokens-out", str(out.tokens_out).encode()),
        ]

    def _encode(self, outcome: Outcome, raw: bytes) -> bytes:
        if outcome.body is None:
            return raw
        try:
            return json.dumps(outcome.body, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode("utf-8")  # fmt: skip
        except ValueError:
            outcome.status, outcome.reason, outcome.body = "skipped", "unencodable", None
            return raw

    @staticmethod
    def ctx_headers(outcome: Outcome) -> list[tuple[bytes, bytes]]:
        status = outcome.status + (f"; reason={outcome.reason}" if outcome.reason else "")
        out = [(b"x-ctxzip-compression", status.encode())]
        if outcome.status in ("applied", "unchanged"):
            out += [
                (b"x-ctxzip-tokens-in", str(outcome.tokens_in).encode()),
                (b"x-ctxzip-tokens-out", str(outcome.tokens_out).encode()),
                (b"x-ctxzip-method", outcome.method.encode()),
                (b"x-ctxzip-compression-ms", f"{outcome.seconds * 1000:.2f}".encode()),
            ]
        return out

    # ---- routes ------------------------------------------------------------------------

    async def openai_chat(self, request: Request) -> Reply:
        return await self._chat(request, "openai", "chat")

    async def anthropic_messages(self, request: Request) -> Reply:
        return await self._chat(request, "anthropic", "messages")

    async def openai_responses(self, request: Request) -> Reply:
        return await self._chat(request, "openai", "responses", "responses")

    async def _chat(self, request: Request, protocol: Protocol, route: str,
                    agent: AgentProtocol | None = None) -> Reply:  # fmt: skip
        """Chat, messages and responses: check, compress tool results and then messages,
        forward (or answer locally). `agent` names the body's format (default: `protocol`)."""
        start = time.perf_counter()
        path = request.url.path
        kind: AgentProtocol = agent or protocol
        try:
            overrides = parse_overrides(request, self.config)
            raw = await read_body(request, self.config.limits.max_body_bytes)
            data = parse_json(raw, self.config.limits.max_json_depth)
            if kind == "responses":
                validate_responses(data)
            else:
                validate_chat(data, protocol)
            size = len(raw)
            images = None if kind == "responses" else await self._fit_images(data, protocol, route)
            if images is not None and images.body is not None:
                data, raw = images.body, b""  # re-encoded below
            tools = await self._tool_results(data, kind, overrides)
            if tools.body is not None:
                data, raw = tools.body, b""
            target = self.state.upstreams.pick(route, data.get("model"))
            if target is None and kind == "responses":
                raise ProxyError(404, "no upstream is configured for /v1/responses "
                                 "(routes.responses); the local model does not serve it",
                                 "not_found")  # fmt: skip
            outcome = await self._compress(data, kind, route, overrides, size, target is None,
                                           request)  # fmt: skip
            self.state.recorder.begin(route, protocol, data, outcome)
            if not raw and outcome.body is None:
                outcome.body = data
            body = self._encode(outcome, raw)
            stream = bool(data.get("stream"))
            extra = self.ctx_headers(outcome) + tools.headers() + self.image_headers(images)
            if target is None:
                forwarded = outcome.body if outcome.body is not None else data
                soft = outcome.extra.get("soft") if outcome.body is not None else None
                return await self._local(forwarded, protocol, stream, extra, route, start, soft)
            headers = self.state.upstreams.headers(request.headers, target, protocol)
            headers["content-type"] = "application/json"
            url = join_url(target.upstream.url, safe_subpath(path))
            forwarded = outcome.body if outcome.body is not None else data
            if (self.config.tool_results.expand_tool and not overrides[0]
                    and expand.declares_tools(forwarded)):  # fmt: skip
                return await self._expanding(url, headers, forwarded, kind, protocol, route,
                                             extra, start)  # fmt: skip
            return await self._forward("POST", url, headers, body, protocol, route, extra, start,
                                       target)  # fmt: skip
        except ProxyError as exc:
            return self._error(protocol, exc, route, start)
        except ClientGone:
            self.metrics.fail("client_disconnect")
            self.metrics.uncompressed.labels(reason="client_disconnect").inc()
            return Response(status_code=499)  # nobody is listening

    async def gemini(self, request: Request) -> Reply:
        """``/v1beta/...``: ``generateContent`` and ``streamGenerateContent`` have their tool
        results and user text compressed; every other Gemini path passes through. The key
        (``x-goog-api-key`` or ``?key=``) travels as sent unless the upstream has its own."""
        start = time.perf_counter()
        route = "gemini"
        try:
            version, rest = gemini.subpath(request.url.path)
            model, action = gemini.model_action(rest)
            target = self.state.upstreams.pick(route, model)
            assert target is not None  # Gemini always has an upstream
            headers = self.state.upstreams.headers(request.headers, target, "gemini")
            query = request.scope.get("query_string", b"").decode("latin-1")
            query = gemini.upstream_query(query, bool(target.upstream.api_key))
            url = gemini.upstream_url(target.upstream.url, version, rest)
            url += f"?{query}" if query else ""
            if request.method != "POST" or action not in gemini.COMPRESSED:
                body = await read_body(request, self.config.limits.max_body_bytes)
                if "content-type" in request.headers:
                    headers["content-type"] = request.headers["content-type"]
                return await self._forward(request.method, url, headers, body or None, "gemini",
                                           "passthrough", [], start, target)  # fmt: skip
            overrides = parse_overrides(request, self.config)
            raw = await read_body(request, self.config.limits.max_body_bytes)
            data = parse_json(raw, self.config.limits.max_json_depth)
            gemini.validate(data)
            tools = await self._tool_results(data, "gemini", overrides)
            if tools.body is not None:
                data, raw = tools.body, b""
            outcome = await self._compress(data, "gemini", route, overrides, len(raw), False,
                                           request)  # fmt: skip
            self.state.recorder.begin(route, "gemini", {**data, "model": model}, outcome)
            if not raw and outcome.body is None:
                outcome.body = data
            body = self._encode(outcome, raw)
            headers["content-type"] = "application/json"
            extra = self.ctx_headers(outcome) + tools.headers()
            return await self._forward("POST", url, headers, body, "gemini", route, extra, start,
                                       target)  # fmt: skip
        except ProxyError as exc:
            return self._error("gemini", exc, route, start)
        except ClientGone:
            self.metrics.fail("client_disconnect")
            self.metrics.uncompressed.labels(reason="client_disconnect").inc()
            return Response(status_code=499)

    async def compress(self, request: Request) -> Response:
        """Return the compressed request body without forwarding it.

        ``?protocol=openai|anthropic|responses|gemini``; without it, ``anthropic-version``
        means Anthropic, a body with ``input`` but no ``messages`` means Responses and one
        with ``contents`` but no ``messages`` means Gemini."""
        start = time.perf_counter()
        param = request.query_params.get("protocol")
        if param is None:
            param = "anthropic" if "anthropic-version" in request.headers else "openai"
            guess = True
        else:
            guess = False
        protocol: Protocol = param if param in ("anthropic", "gemini") else "openai"  # type: ignore[assignment]
        try:
            if param not in ("openai", "anthropic", "responses", "gemini"):
                raise _bad("protocol must be 'openai', 'anthropic', 'responses' or 'gemini'",
                           "protocol")  # fmt: skip
            overrides = parse_overrides(request, self.config)
            raw = await read_body(request, self.config.limits.max_body_bytes)
            data = parse_json(raw, self.config.limits.max_json_depth)
            if guess and protocol == "openai" and "input" in data and "messages" not in data:
                param = "responses"
            if guess and protocol == "openai" and "contents" in data and "messages" not in data:
                param, protocol = "gemini", "gemini"
            kind: AgentProtocol = "responses" if param == "responses" else protocol
            if kind == "responses":
                validate_responses(data)
            elif kind == "gemini":
                gemini.validate(data)
            else:
                validate_chat(data, protocol)
            tools = await self._tool_results(data, kind, overrides)
            if tools.body is not None:
                data, raw = tools.body, b""
            outcome = await self._compress(data, kind, "compress", overrides, len(raw))
            if not raw and outcome.body is None:
                outcome.body = data
            body = self._encode(outcome, raw)
        except ProxyError as exc:
            return self._error(protocol, exc, "compress", start)
        self.metrics.requests.labels(route="compress", status="200").inc()
        response = Response(body, media_type="application/json")
        for k, v in self.ctx_headers(outcome) + tools.headers():
            response.headers[k.decode()] = v.decode()
        return response

    async def original(self, request: Request) -> Response:
        """``GET /v1/ctxzip/originals/{key}``: what a compression marker left out."""
        key = request.path_params.get("key", "")
        text = await asyncio.to_thread(self.state.tools.store.get, key)
        if text is None:
            error = ProxyError(404, f"no original stored under key {key!r} (unknown or expired)",
                               "not_found")  # fmt: skip
            return self._error("openai", error, "originals", time.perf_counter())
        self.metrics.requests.labels(route="originals", status="200").inc()
        return Response(text, media_type="text/plain; charset=utf-8")

    async def passthrough(self, request: Request) -> Reply:
        start = time.perf_counter()
        path = request.url.path
        if gemini.is_gemini(path):  # google-genai 3.x speaks /v1/models/{model}:{action}
            return await self.gemini(request)
        protocol = protocol_for_path(path, request.headers)
        try:
            subpath = safe_subpath(path)
            if subpath == "/compress":
                raise ProxyError(405, "/v1/compress takes POST only", "method_not_allowed")
            # Anthropic's own paths (count_tokens, batches) go where /v1/messages goes
            route = "messages" if protocol == "anthropic" else "passthrough"
            target = self.state.upstreams.pick(route, None)
            if target is None:
                if request.method == "GET" and subpath == "/models":
                    return JSONResponse({"object": "list", "data": [{
                        "id": self.config.local.model, "object": "model", "created": 0,
                        "owned_by": "ctxzip-local"}]})  # fmt: skip
                raise ProxyError(404, f"no upstream configured for {path}", "not_found")
            body = await read_body(request, self.config.limits.max_body_bytes)
            headers = self.state.upstreams.headers(request.headers, target, protocol)
            if "content-type" in request.headers:
                headers["content-type"] = request.headers["content-type"]
            url = join_url(target.upstream.url, subpath)
            query = request.scope.get("query_string", b"").decode("latin-1")
            if query:
                url += "?" + query
            return await self._forward(request.method, url, headers, body or None, protocol,
                                       "passthrough", [], start, target)  # fmt: skip
        except ProxyError as exc:
            return self._error(protocol, exc, "passthrough", start)

    # ---- forwarding --------------------------------------------------------------------

    async def _expanding(self, url: str, headers: dict[str, str], data: dict[str, Any],
                         kind: AgentProtocol, protocol: Protocol, route: str,
                         extra: list[tuple[bytes, bytes]], start: float) -> Response:  # fmt: skip
        """Forward with the `ctxzip_expand` tool and answer its calls here (see proxy.expand)."""
        headers = {**headers, "accept-encoding": "identity"}  # answers are parsed here
        stream = bool(data.get("stream"))
        body = expand.with_tool(data, kind)
        rounds = self.config.tool_results.expand_rounds
        answered = 0
        for n in range(rounds + 1):
            if n == rounds:
                body = expand.final_round(body, kind)
            raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            sent = time.perf_counter()
            try:
                upstream = await self.state.upstreams.send("POST", url, headers, raw)
            except ProxyError as exc:
                self.metrics.fail(exc.code if exc.code.startswith("upstream_") else
                                  "upstream_connect")  # fmt: skip
                raise
            try:
                content = await upstream.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.metrics.fail("upstream_stream")
                raise ProxyError(502, "the upstream answer broke off", "upstream_stream") from exc
            finally:
                upstream.release()
            self.metrics.upstream_seconds.labels(route=route).observe(time.perf_counter() - sent)
            status = upstream.status
            if status != 200:
                break
            try:
                if "text/event-stream" in upstream.headers.get("content-type", ""):
                    answer = expand.assemble(content, kind)
                else:
                    answer = json.loads(content)
            except ValueError:
                break
            found, others = expand.calls(answer, kind)
            if not found or n == rounds:
                break
            if others:  # the client's tools too: the client gets the answer minus our calls
                if not stream:
                    content = json.dumps(expand.strip_calls(answer, kind)).encode("utf-8")
                break
            store = self.state.tools.store
            results = {}
            for call in found:
                text = await asyncio.to_thread(store.get, call.key)
                results[call.id] = text if text is not None else (
                    f"no original is stored under key {call.key!r} (unknown or expired)")  # fmt: skip
            answered += len(found)
            self.metrics.expand_calls.inc(len(found))
            body = expand.next_body(body, answer, kind, results)
        hop = {b"content-length", b"transfer-encoding", b"content-encoding"}
        out = [(k, v) for k, v in response_headers(upstream) if k not in hop]
        out += [*extra, (b"x-ctxzip-expand-calls", str(answered).encode())]
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        log.info("%s expand -> %d after %d expand calls (%.1fms)", route, status, answered,
                 (time.perf_counter() - start) * 1000)  # fmt: skip
        response = Response(content, status_code=status)
        response.raw_headers = [*out, (b"content-length", str(len(content)).encode())]
        return response

    async def _forward(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
                       protocol: Protocol, route: str, extra: list[tuple[bytes, bytes]],
                       start: float, target: Target) -> Reply:  # fmt: skip
        sent = time.perf_counter()
        try:
            upstream = await self.state.upstreams.send(method, url, headers, body)
        except ProxyError as exc:
            self.metrics.fail(exc.code if exc.code.startswith("upstream_") else "upstream_connect")
            raise
        self.metrics.upstream_seconds.labels(route=route).observe(time.perf_counter() - sent)
        status = upstream.status
        content_type = upstream.headers.get("content-type", "")
        metrics = self.metrics
        tap = self.state.recorder.tap(route, protocol, url, status, upstream.headers)

        def on_close(result: str) -> None:
            if tap is not None:
                tap.finish(result)
            if result != "ok":
                metrics.fail(result)
            metrics.requests.labels(route=route, status=str(relay.status)).inc()
            log.info("%s %s -> %s %d %s %.1fms", method, route, target.name, relay.status,
                     result, (time.perf_counter() - start) * 1000)  # fmt: skip

        async def aclose() -> None:
            upstream.close()  # read to the end: already back in the pool; else the link is cut

        chunks = upstream.content.iter_any()
        relay = Relay(status, response_headers(upstream) + extra,
                      tap.wrap(chunks) if tap else chunks, protocol=protocol,
                      is_sse="text/event-stream" in content_type,
                      aclose=aclose, on_close=on_close, expect_end=route in COMPLETE_ROUTES,
                      buffer_limit=self.config.limits.max_response_buffer_bytes)  # fmt: skip
        return relay

    async def _local(
        self, data: dict[str, Any], protocol: Protocol, stream: bool,
        extra: list[tuple[bytes, bytes]], route: str, start: float, soft: Any = None,
    ) -> Reply:  # fmt: skip
        """Answer with the embedded model (`soft`: xrag vectors for its placeholders)."""
        local = self.state.local
        check_params(data)
        if stream:
            metrics = self.metrics

            def on_close(result: str) -> None:
                if result != "ok":
                    metrics.fail(result)
                metrics.requests.labels(route=route, status="200").inc()

            headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                       (b"cache-control", b"no-cache"), *extra]  # fmt: skip
            chunks = local.stream(data, protocol, soft)
            return Relay(200, headers, chunks, protocol=protocol, is_sse=True,
                         aclose=chunks.aclose, on_close=on_close, expect_end=True)  # fmt: skip
        try:
            answer = await local.complete(data, protocol, soft)
        except ProxyError:
            self.metrics.fail("local_model")
            raise
        self.metrics.requests.labels(route=route, status="200").inc()
        response = JSONResponse(answer)
        for k, v in extra:
            response.headers[k.decode()] = v.decode()
        return response

    def _error(self, protocol: Protocol, exc: ProxyError, route: str, start: float) -> Response:
        kind = {"too_large": "too_large", "override_not_allowed": "forbidden_override"}.get(
            exc.code, "bad_request" if exc.status < 500 else None
        )
        if kind:
            self.metrics.fail(kind)
        self.metrics.requests.labels(route=route, status=str(exc.status)).inc()
        log.info("%s -> %d %s (%.1fms)", route, exc.status, exc.code,
                 (time.perf_counter() - start) * 1000)  # fmt: skip
        return error_response(protocol, exc)

    # ---- health ------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        s = self.state
        if s.ready:
            return JSONResponse({"status": "ready", "method": self.config.compression.method})
        if s.ready_error:
            return JSONResponse({"status": "failed", "error": s.ready_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)
