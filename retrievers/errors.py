"""Errors the retrieval store raises on purpose (all are `CtxzipError`, so the CLI prints one line)."""

from __future__ import annotations

from ctxzip.errors import CtxzipError


class StoreError(CtxzipError):
    """A store operation cannot be done (unknown id, duplicate id, missing store...)."""


class StoreMismatchError(StoreError):
    """The store on disk was built with another embedding model, dimension or format."""


class StoreCorruptError(StoreError):
    """Files on disk do not match their manifest (checksum, counts, dimension)."""
