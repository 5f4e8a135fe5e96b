"""Errors ctxzip raises on purpose; anything else is a bug."""

from __future__ import annotations


class CtxzipError(Exception):
    """Base class: the CLI prints these as one line and exits 1."""


class InputError(CtxzipError, ValueError):
    """The caller sent something a compressor cannot work on (wrong type, bad encoding...)."""


class ModelNotFoundError(CtxzipError, OSError):
    """A model id resolves to no packaged copy and cannot be loaded from the hub."""


class PluginError(CtxzipError, LookupError):
    """A compressor name is unknown or its plugin failed to load."""
