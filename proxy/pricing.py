"""Token figures to dollars, at the provider's cache mix.

Providers bill prompt tokens three ways: uncached at the list price, read from the prompt
cache at a discount (`cache_read` x input) and written to it at a premium (Anthropic's
`cache_write` x input). Pricing the tokens compression removed at list price overstates
what it saved; so every cost here takes the split into account, and the savings of a
request are the cost of its uncompressed counterpart (estimated with the cache behaviour
it would have had, see `ctxzip.proxy.ledger`) minus what was paid.

The defaults live in ``prices.toml`` next to this module (dated; edit a copy and point
``[pricing] path`` or ``ctxzip savings --prices`` at it).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ctxzip.errors import CtxzipError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PER_TOKENS = 1_000_000


class PricingError(CtxzipError):
    """The price table does not parse or has an invalid entry."""


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million tokens for one model pattern, with its cache factors."""

    match: str
    provider: str
    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float


@dataclass(frozen=True)
class TokenSplit:
    """How a request's tokens were (or would have been) billed.

    `uncached` + `cache_read` + `cache_write` is the whole prompt; `cache_write_1h` is
    the part of `cache_write` written with the one-hour lifetime.
    """

    uncached: int
    cache_read: int
    cache_write: int
    output: int
    cache_write_1h: int = 0


def cost(price: ModelPrice, split: TokenSplit) -> float:
    """Dollars billed for `split` at `price`."""
    write_5m = max(0, split.cache_write - split.cache_write_1h)
    units = (
        split.uncached
        + split.cache_read * price.cache_read
        + write_5m * price.cache_write
        + split.cache_write_1h * price.cache_write_1h
    )
    return (units * price.input + split.output * price.output) / PER_TOKENS


def _number(entry: dict[str, Any], key: str, where: str, default: float | None) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise PricingError(f"{where}.{key} must be a number >= 0")
    return float(value)


def _literal_prefix(pattern: str) -> int:
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return i
    return len(pattern) + 1  # an exact name beats any glob


class PriceTable:
    """Model name -> `ModelPrice`, the most specific matching pattern first."""

    def __init__(self, prices: list[ModelPrice], as_of: str = "",
                 providers: dict[str, dict[str, float]] | None = None) -> None:  # fmt: skip
        self.as_of = as_of
        self.providers = providers or {}
        self.prices = sorted(prices, key=lambda p: -_literal_prefix(p.match))
        self._cache: dict[str, ModelPrice | None] = {}

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None when no pattern matches (then it is not priced)."""
        if model not in self._cache:
            name = model.lower()
            found = next((p for p in self.prices if fnmatch.fnmatchcase(name, p.match)), None)
            if len(self._cache) < 4096:
                self._cache[model] = found
            return found
        return self._cache[model]

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: PriceTable | None = None) -> PriceTable:
        """A table from parsed TOML/YAML; entries override `base`'s of the same pattern."""
        providers = dict(base.providers) if base else {}
        for name, factors in (data.get("providers") or {}).items():
            if not isinstance(factors, dict):
                raise PricingError(f"providers.{name} must be a table")
            known = providers.get(name, {"cache_read": 1.0, "cache_write": 1.0})
            providers[name] = {
                k: _number(factors, k, f"providers.{name}", known.get(k, 1.0))
                for k in ("cache_read", "cache_write", "cache_write_1h")
            }
        entries = {p.match: p for p in (base.prices if base else [])}
        models = data.get("models") or []
        if not isinstance(models, list):
            raise PricingError("models must be a list of tables ([[models]])")
        for i, entry in enumerate(models):
            where = f"models[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("match"), str):
                raise PricingError(f"{where} needs a 'match' glob")
            provider = entry.get("provider", "openai")
            factors = providers.get(provider)
            if factors is None:
                raise PricingError(f"{where}.provider {provider!r} has no [providers] factors")
            match = entry["match"].lower()
            entries[match] = ModelPrice(
                match=match,
                provider=provider,
                input=_number(entry, "input", where, None),
                output=_number(entry, "output", where, None),
                cache_read=_number(entry, "cache_read", where, factors["cache_read"]),
                cache_write=_number(entry, "cache_write", where, factors["cache_write"]),
                cache_write_1h=_number(
                    entry, "cache_write_1h", where, factors.get("cache_write_1h", 1.0)
                ),
            )
        as_of = str(data.get("as_of") or (base.as_of if base else ""))
        return cls(list(entries.values()), as_of, providers)


def _read(path: Path, text: str) -> dict[str, Any]:
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:
        raise PricingError(f"price table {path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise PricingError(f"price table {path} must hold a table at the top")
    return data


def default_prices() -> PriceTable:
    """The shipped table (``prices.toml``, dated by its `as_of`)."""
    text = resources.files("ctxzip.proxy").joinpath("prices.toml").read_text("utf-8")
    return PriceTable.from_dict(_read(Path("prices.toml"), text))


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The shipped table, overridden entry by entry by the TOML/YAML file at `path`."""
    table = default_prices()
    if not path:
        return table
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise PricingError(f"cannot read price table {path}: {exc.strerror}") from None
    return PriceTable.from_dict(_read(path, text), base=table)
