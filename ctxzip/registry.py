"""Look compressors up by name (entry points) or by `module:attr` reference."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

from ctxzip.compressor import Compressor
from ctxzip.errors import PluginError
from ctxzip.plugins import PluginEntry, discover

_lock = threading.Lock()
_entries: dict[str, PluginEntry] | None = None


def _all_entries() -> dict[str, PluginEntry]:
    global _entries
    with _lock:
        if _entries is None:
            _entries = discover()
        return _entries


def refresh() -> None:
    """Forget discovered plugins (after installing one into a running process)."""
    global _entries
    with _lock:
        _entries = None


def _import_target(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PluginError(f"{target!r} is not a 'module:attr' reference")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise PluginError(f"cannot load {target!r}: {exc.__class__.__name__}: {exc}") from exc
    return obj


def compressor_class(name: str) -> Any:
    """The factory registered as `name`, or a `module:attr` reference imported directly."""
    if ":" in name:
        return _import_target(name)
    entries = _all_entries()
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise PluginError(f"unknown compressor {name!r} (known: {known})")
    return _import_target(entries[name].target)


def get_compressor(name: str, **options: Any) -> Compressor:
    """A ready compressor: `get_compressor("truncate", tokenizer="gpt-4o")`."""
    factory = compressor_class(name)
    try:
        compressor = factory(**options)
    except TypeError as exc:
        raise PluginError(f"bad options for compressor {name!r}: {exc}") from exc
    if not isinstance(compressor, Compressor):
        raise PluginError(
            f"{name!r} did not produce a compressor (got {type(compressor).__name__})"
        )
    return compressor


@dataclass(frozen=True)
class CompressorInfo:
    name: str
    target: str
    source: str
    error: str | None = None


def available_compressors(check: bool = True) -> list[CompressorInfo]:
    """Every registered compressor with its origin; `check` imports each to report failures."""
    infos = []
    for entry in _all_entries().values():
        error = None
        if check:
            try:
                _import_target(entry.target)
            except PluginError as exc:
                error = str(exc)
        infos.append(CompressorInfo(entry.name, entry.target, entry.distribution, error))
    return infos


def compressor_names() -> list[str]:
    """Names of the compressors that load (broken plugins left out)."""
    return [i.name for i in available_compressors() if i.error is None]
