"""Proxy configuration: a TOML or YAML file, then environment overrides, then CLI flags.

Secrets are never written inline: ``api_key = "env:OPENAI_API_KEY"`` (or LiteLLM's
``os.environ/OPENAI_API_KEY``) is resolved at load time and printed as ``***``.
Environment overrides use ``CTXZIP_PROXY__<SECTION>__<KEY>=value`` (values parse as
JSON when they can), e.g. ``CTXZIP_PROXY__COMPRESSION__METHOD=extractive``.
Unknown keys are errors, so a typo never silently disables a setting.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ctxzip.compressors.images.fitting import MODES, Mode
from ctxzip.errors import CtxzipError
from ctxzip.middleware.messages import MessagePolicy, RateRange
from ctxzip.middleware.tool_results import ToolResultPolicy
from ctxzip.proxy.state import StateConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ENV_PREFIX = "CTXZIP_PROXY__"
SECRET = "***"
OVERRIDES = ("disable", "rate", "method")
DEFAULT_FORWARD_HEADERS = (
    "authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "accept",
    "accept-encoding",
    "user-agent",
    "idempotency-key",
    "x-goog-api-key",  # Gemini's key header
    "x-goog-api-client",
)
GEMINI_URL = "https://generativelanguage.googleapis.com/v1beta"
"""Where Gemini requests go when no upstream named `gemini` is configured."""


class ConfigError(CtxzipError):
    """The configuration is invalid; the proxy refuses to start."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    log_level: str = "info"
    # request headers that may travel upstream (lower case); everything else is dropped
    forward_headers: list[str] = field(default_factory=lambda: list(DEFAULT_FORWARD_HEADERS))
    # X-Forwarded-For / -Proto are believed only when on, and only from these addresses
    proxy_headers: bool = False
    forwarded_allow_ips: list[str] = field(default_factory=list)
    header_timeout_s: float = 10.0  # request line + headers must arrive within this
    body_timeout_s: float = 60.0  # the whole request body must arrive within this
    idle_timeout_s: float = 5.0  # a keep-alive connection idle this long is closed
    max_connections: int = 1024  # open connections past this are closed at once


@dataclass
class UpstreamConfig:
    """An API base including its version path, e.g. ``https://api.openai.com/v1``."""

    url: str
    # a server-side key: replaces whatever key the client sent
    api_key: str | None = None


@dataclass
class RoutesConfig:
    """Which upstream (by name) serves each route; a missing name means the local model.

    Pass-through requests in Anthropic's shape (paths under /v1/messages/, or an
    ``anthropic-version`` header) go to the `messages` upstream; the rest to `passthrough`.
    """

    chat: str = "openai"
    messages: str = "anthropic"
    passthrough: str = "openai"
    responses: str = "openai"  # /v1/responses (the local model does not serve it)
    gemini: str = "gemini"  # /v1beta/models/...; default upstream: GEMINI_URL


@dataclass
class CompressionConfig:
    enabled: bool = True
    method: str = "extractive"  # query-aware; "truncate" needs no model
    options: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "gpt-4o"
    rate: float = 0.5
    min_tokens: int = 200
    ranges: list[dict[str, Any]] = field(default_factory=list)  # [{above = 1000, rate = 0.4}]
    roles: list[str] = field(default_factory=lambda: ["user"])
    parts: list[str] = field(default_factory=lambda: ["text"])
    tags: list[str] = field(default_factory=list)
    timeout_s: float = 10.0
    # the most compression may add to a request: work estimated to take longer is not
    # queued (the request goes uncompressed at once, reason=overloaded), and a request
    # waits at most min(timeout_s, latency_budget_s) for its result; null: timeout_s only
    latency_budget_s: float | None = 1.0
    on_error: str = "fail_open"  # or "fail_closed"
    cache_size: int = 4096
    cache_bytes: int = 64 * 1024 * 1024  # the result cache's bound in bytes (about)
    max_batch: int = 32

    def policy(self) -> MessagePolicy:
        return MessagePolicy(
            roles=tuple(self.roles),
            parts=tuple(self.parts),
            tags=tuple(self.tags),
            min_tokens=self.min_tokens,
            rate=self.rate,
            ranges=tuple(RateRange(int(r["above"]), float(r["rate"])) for r in self.ranges),
        )


@dataclass
class ToolResultsConfig:
    """Tool-result compression (docs/tool-results.md); `enabled = false` turns it off."""

    enabled: bool = True
    min_tokens: int = 400  # results with fewer tokens pass through
    rate: float = 0.3  # kept fraction of a compressed result
    include: list[str] = field(default_factory=list)  # tool-name globs; empty: every tool
    exclude: list[str] = field(default_factory=list)  # tool-name globs never compressed
    prose_method: str = ""  # text method for prose results; "": compression.method
    timeout_s: float = 10.0
    cache_size: int = 2048  # compressed results remembered (repeated history is free)
    store_path: str = ":memory:"  # SQLite file for omitted originals
    store_ttl_s: float = 86400.0
    store_max_bytes: int = 256 * 1024 * 1024
    expand_tool: bool = False  # add `ctxzip_expand` to requests that declare tools
    expand_rounds: int = 2  # most rounds the proxy answers `ctxzip_expand` itself

    def policy(self) -> ToolResultPolicy:
        return ToolResultPolicy(
            enabled=self.enabled, min_tokens=self.min_tokens, rate=self.rate,
            include=tuple(self.include), exclude=tuple(self.exclude),
        )  # fmt: skip


@dataclass
class OverridesConfig:
    """Per-request headers clients may use: subset of disable, rate, method."""

    allow: list[str] = field(default_factory=lambda: ["disable", "rate"])
    methods: list[str] = field(default_factory=list)  # names X-Ctxzip-Method may pick


@dataclass
class LimitsConfig:
    max_body_bytes: int = 32 * 1024 * 1024
    # a non-streaming upstream reply is read whole (up to this) before it is relayed, so a
    # reply the upstream breaks off becomes a 502, never a 200 with half a JSON document
    max_response_buffer_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 64


@dataclass
class TimeoutsConfig:
    connect_s: float = 5.0  # TCP (and TLS) connect to the upstream
    read_s: float = 600.0  # longest silence while waiting for response bytes
    pool_s: float = 10.0  # longest wait for a free pooled connection
    retries: int = 2  # extra attempts after a connect error
    backoff_s: float = 0.2


@dataclass
class LocalConfig:
    """The embedded upstream used when a route has no upstream configured."""

    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    device: str = "auto"
    max_tokens: int = 256


@dataclass
class ImagesConfig:
    """Per-request image-token budgets (off by default), applied by `ctxzip.proxy.images`."""

    enabled: bool = False
    max_tokens: int = 1500  # per request, in the provider's image tokens
    mode: Mode = "downscale"  # or "crop" (to the salient region first)
    allow_remote_urls: bool = False  # never fetch client-named URLs unless this is set
    allowed_hosts: list[str] = field(default_factory=list)
    max_image_bytes: int = 20 * 1024 * 1024

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError for settings that cannot work."""
        if self.mode not in MODES:
            raise ConfigError(f"images.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ConfigError("images.max_tokens must be an integer")
        if self.max_tokens < 1:
            raise ConfigError("images.max_tokens must be >= 1")
        if self.allow_remote_urls and not self.allowed_hosts:
            raise ConfigError("images.allow_remote_urls needs images.allowed_hosts")


@dataclass
class LedgerConfig:
    """The savings ledger (see ctxzip.proxy.ledger); `path` "" means the cache dir's."""

    enabled: bool = True
    path: str = ""  # default: $CTXZIP_CACHE_DIR/ledger.sqlite3 (~/.cache/ctxzip)
    max_rows: int = 1_000_000  # past this, the oldest rows are dropped
    cache_ttl_s: float = 300.0  # prompt-cache lifetime assumed by the savings estimate


@dataclass
class PricingConfig:
    """A TOML/YAML price table overriding the shipped one (ctxzip/proxy/prices.toml)."""

    path: str = ""


@dataclass
class ProxyConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    routes: RoutesConfig = field(default_factory=RoutesConfig)
    models: dict[str, str] = field(default_factory=dict)  # model glob -> upstream name
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    tool_results: ToolResultsConfig = field(default_factory=ToolResultsConfig)
    overrides: OverridesConfig = field(default_factory=OverridesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)
    state: StateConfig = field(default_factory=StateConfig)  # shared by replicas (Redis)

    def validate(self) -> ProxyConfig:
        """Check cross-field rules; raise ConfigError with one clear line."""
        try:
            self.compression.policy()
        except ValueError as exc:
            raise ConfigError(f"compression: {exc}") from None
        if self.compression.on_error not in ("fail_open", "fail_closed"):
            raise ConfigError("compression.on_error must be 'fail_open' or 'fail_closed'")
        if self.compression.timeout_s <= 0:
            raise ConfigError("compression.timeout_s must be > 0")
        budget = self.compression.latency_budget_s
        if budget is not None and budget <= 0:
            raise ConfigError("compression.latency_budget_s must be > 0 (or null)")
        try:
            self.tool_results.policy()
        except ValueError as exc:
            raise ConfigError(f"tool_results: {exc}") from None
        t = self.tool_results
        if t.timeout_s <= 0 or t.store_ttl_s <= 0 or t.store_max_bytes <= 0:
            raise ConfigError("tool_results: timeout_s, store_ttl_s, store_max_bytes must be > 0")
        if not 1 <= t.expand_rounds <= 8:
            raise ConfigError("tool_results.expand_rounds must be between 1 and 8")
        bad = set(self.overrides.allow) - set(OVERRIDES)
        if bad:
            raise ConfigError(f"overrides.allow: unknown {sorted(bad)} (allowed: {OVERRIDES})")
        for name, upstream in self.upstreams.items():
            parts = urlsplit(upstream.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"upstreams.{name}.url must be an http(s) URL")
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ConfigError(
                    f"upstreams.{name}.url must not carry a query, fragment or credentials "
                    "(put keys in api_key)"
                )
        for glob, name in self.models.items():
            if name not in self.upstreams:
                raise ConfigError(f"models.{glob!r} names unknown upstream {name!r}")
        if self.limits.max_body_bytes < 1024:
            raise ConfigError("limits.max_body_bytes must be at least 1024")
        self.images.check()
        if self.ledger.max_rows < 1 or self.ledger.cache_ttl_s < 0:
            raise ConfigError("ledger.max_rows must be >= 1 and ledger.cache_ttl_s >= 0")
        try:
            self.state.check()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.timeouts.retries < 0 or self.timeouts.retries > 10:
            raise ConfigError("timeouts.retries must be between 0 and 10")
        s = self.server
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if getattr(s, name) <= 0:
                raise ConfigError(f"server.{name} must be > 0")
        if s.max_connections < 1:
            raise ConfigError("server.max_connections must be >= 1")
        self.server.forward_headers = [h.lower() for h in self.server.forward_headers]
        for h in ("host", "content-length", "transfer-encoding", "connection"):
            if h in self.server.forward_headers:
                raise ConfigError(f"server.forward_headers may not include {h!r}")
        return self

    def secrets(self) -> list[str]:
        """Every configured secret value (for log redaction)."""
        return [u.api_key for u in self.upstreams.values() if u.api_key]

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if redact:
            for upstream in data["upstreams"].values():
                if upstream["api_key"]:
                    upstream["api_key"] = SECRET
        return data


def _resolve_secret(value: Any, where: str, env: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    for prefix in ("env:", "os.environ/"):
        if value.startswith(prefix):
            name = value[len(prefix) :]
            if name not in env:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return env[name]
    return value


def _build(cls: type, data: Any, where: str, env: dict[str, str]) -> Any:
    """A dataclass from a dict, rejecting unknown keys and wrong types."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table/mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown keys {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        f = known[name]
        hint = f.type if isinstance(f.type, str) else str(f.type)
        if name == "upstreams" and cls is ProxyConfig:
            if not isinstance(value, dict):
                raise ConfigError("upstreams must be a table of named upstreams")
            kwargs[name] = {
                k: _build(UpstreamConfig, _upstream_dict(v), f"upstreams.{k}", env)
                for k, v in value.items()
            }
            for k, up in kwargs[name].items():
                up.api_key = _resolve_secret(up.api_key, f"upstreams.{k}.api_key", env)
        elif hint.endswith("Config"):
            kwargs[name] = _build(globals()[hint], value, path, env)
        else:
            kwargs[name] = _check_type(value, hint, path)
    return cls(**kwargs)


def _upstream_dict(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


def _check_type(value: Any, hint: str, path: str) -> Any:
    base = hint.split("[")[0].split(" |")[0]
    expected: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "list": (list,),
        "dict": (dict,),
    }
    types = expected.get(base)
    if value is None and "None" in hint:
        return None
    if types is None:
        return value
    if isinstance(value, bool) and base in ("int", "float"):
        raise ConfigError(f"{path} must be {base}, got a boolean")
    if not isinstance(value, types):
        raise ConfigError(f"{path} must be {base}, got {type(value).__name__}")
    return float(value) if base == "float" else value  # type: ignore[arg-type]


def _read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw.decode("utf-8")) or {}
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            raise ConfigError(f"config {path} must end in .toml, .yaml or .yml")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config {path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a table/mapping at the top")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key} conflicts with another override")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ProxyConfig:
    """File, then `CTXZIP_PROXY__*` environment variables, then explicit `overrides`."""
    data = _read_file(path) if path else {}
    env = dict(os.environ if environ is None else environ)
    data = _merge(data, _env_overrides(env))
    data = _merge(data, overrides or {})
    if "upstreams" in data and isinstance(data["upstreams"], dict):
        data["upstreams"] = {k: _upstream_dict(v) for k, v in data["upstreams"].items()}
    return _build(ProxyConfig, data, "", env).validate()
