"""Prometheus metrics for one proxy app (its own registry, so many apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

FAILURE_KINDS = (
    "bad_request",
    "too_large",
    "forbidden_override",
    "compression_error",
    "compression_timeout",
    "upstream_connect",
    "upstream_timeout",
    "upstream_error",
    "upstream_stream",
    "upstream_malformed",
    "client_disconnect",
    "local_model",
    "invalid_text",
    "overloaded",
)
# why a request went upstream uncompressed (the X-Ctxzip-Compression reason)
UNCOMPRESSED_REASONS = (
    "disabled",
    "nothing to compress",
    "nothing removed",
    "overloaded",
    "compression_timeout",
    "compression_error",
    "invalid_text",
    "client_disconnect",
)


class Metrics:
    """Requests, tokens in/out/saved, compression and upstream latency, failures by kind."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ctxzip_proxy_requests", "Requests answered, by route and status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.tokens_in = Counter(
            "ctxzip_proxy_tokens_in", "Compressible tokens before compression.", ["route"],
            registry=r,
        )  # fmt: skip
        self.tokens_out = Counter(
            "ctxzip_proxy_tokens_out", "Compressible tokens after compression.", ["route"],
            registry=r,
        )  # fmt: skip
        self.tokens_saved = Counter(
            "ctxzip_proxy_tokens_saved", "Tokens removed by compression.", ["route"], registry=r
        )
        self.compression_seconds = Histogram(
            "ctxzip_proxy_compression_seconds", "Time spent compressing one request.",
            ["method"], registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "ctxzip_proxy_upstream_seconds", "Time until the upstream's response headers.",
            ["route"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.tool_tokens_in = Counter(
            "ctxzip_proxy_tool_result_tokens_in", "Tool-result tokens before compression.",
            ["protocol", "content_type"], registry=r,
        )  # fmt: skip
        self.tool_tokens_out = Counter(
            "ctxzip_proxy_tool_result_tokens_out", "Tool-result tokens after compression.",
            ["protocol", "content_type"], registry=r,
        )  # fmt: skip
        self.tool_tokens_saved = Counter(
            "ctxzip_proxy_tool_result_tokens_saved", "Tool-result tokens removed.",
            ["protocol", "content_type"], registry=r,
        )  # fmt: skip
        self.tool_results_skipped = Counter(
            "ctxzip_proxy_tool_results_skipped", "Tool results left as they were, by reason.",
            ["protocol", "reason"], registry=r,
        )  # fmt: skip
        self.expand_calls = Counter(
            "ctxzip_proxy_expand_calls", "ctxzip_expand calls the proxy answered itself.",
            registry=r,
        )  # fmt: skip
        self.failures = Counter("ctxzip_proxy_failures", "Failures by kind.", ["kind"], registry=r)
        self.uncompressed = Counter(
            "ctxzip_proxy_uncompressed", "Requests forwarded uncompressed, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in UNCOMPRESSED_REASONS:
            self.uncompressed.labels(reason=reason)
        self.in_flight = Gauge("ctxzip_proxy_in_flight", "Requests being served now.", registry=r)
        for kind in FAILURE_KINDS:
            self.failures.labels(kind=kind)

    def fail(self, kind: str) -> None:
        self.failures.labels(kind=kind).inc()

    def tokens(self, route: str, tokens_in: int, tokens_out: int) -> None:
        self.tokens_in.labels(route=route).inc(tokens_in)
        self.tokens_out.labels(route=route).inc(tokens_out)
        self.tokens_saved.labels(route=route).inc(max(0, tokens_in - tokens_out))

    def tool_results(self, protocol: str, by_type: dict[str, list[int]],
                     skipped: dict[str, int]) -> None:  # fmt: skip
        """Count one request's tool results: tokens per content type, skips per reason."""
        for kind, (tokens_in, tokens_out) in by_type.items():
            self.tool_tokens_in.labels(protocol=protocol, content_type=kind).inc(tokens_in)
            self.tool_tokens_out.labels(protocol=protocol, content_type=kind).inc(tokens_out)
            saved = max(0, tokens_in - tokens_out)
            self.tool_tokens_saved.labels(protocol=protocol, content_type=kind).inc(saved)
        for reason, n in skipped.items():
            self.tool_results_skipped.labels(protocol=protocol, reason=reason).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
